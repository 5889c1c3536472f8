//! The one home of retry timing for services that are down: every backoff
//! grows from a short first delay to a few seconds at most, so a service
//! coming back is noticed soon, and none spins.

use std::time::Duration;

use backon::ExponentialBuilder;

/// The longest wait between two connection attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

fn growing_from(first: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(MAX_DELAY)
}

/// A one-shot step at start (`migrate` declaring the topology): about half
/// a minute of attempts, then a clear error instead of a crash loop.
pub fn at_start() -> ExponentialBuilder {
    growing_from(Duration::from_millis(200)).with_max_times(10)
}

/// Connecting to PostgreSQL: a bounded number of attempts, jittered so
/// replicas restarted together do not reconnect in lockstep.
pub fn database_connect() -> ExponentialBuilder {
    growing_from(Duration::from_millis(200))
        .with_jitter()
        .with_max_times(8)
}

/// A broker link of a running process: reconnects for as long as the
/// process runs.
pub fn reconnect() -> ExponentialBuilder {
    growing_from(Duration::from_millis(100))
        .with_jitter()
        .without_max_times()
}

/// The longest wait while holding a message the database would not store.
pub const HOLD_MAX_DELAY: Duration = Duration::from_secs(10);

/// Holding a message until the database stores it (the dead-letter mover):
/// doubling from 200ms, never giving up (the message must not be lost).
pub fn holding() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(HOLD_MAX_DELAY)
        .without_max_times()
}
