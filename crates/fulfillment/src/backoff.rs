//! The one home of retry timing for services that are down: every backoff
//! grows from a short first delay to at most [`MAX_DELAY`], so a service
//! coming back is noticed within seconds, and none spins.

use std::time::Duration;

use backon::ExponentialBuilder;

/// The longest wait between two attempts, everywhere.
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
