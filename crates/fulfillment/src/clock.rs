//! The wall clock, in the shapes the edges need: Unix seconds for
//! signatures and AMQP timestamps, fractional seconds for lag, RFC 3339 for
//! headers. The one place that reads `SystemTime`, so a clock before 1970
//! is handled once (as 0) rather than by each caller.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    since_epoch().as_secs() as i64
}

/// Nanoseconds since the Unix epoch (for ids that must differ per call).
pub fn unix_now_nanos() -> u128 {
    since_epoch().as_nanos()
}

/// Seconds since the Unix epoch, with the fraction.
pub fn unix_now_f64() -> f64 {
    since_epoch().as_secs_f64()
}

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// Now as an RFC 3339 timestamp, for headers an operator reads.
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}
