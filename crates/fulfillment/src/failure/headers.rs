//! The AMQP headers a failed message carries: how often it failed, when
//! first and last, why, and of which kind. Written by the workers when they
//! route a failure, read by the dead-letter mover and the `dlq` commands.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, ShortString};

pub const ATTEMPTS: &str = "x-attempts";
pub const FIRST_FAILURE_AT: &str = "x-first-failure-at";
pub const LAST_FAILURE_AT: &str = "x-last-failure-at";
pub const ERROR: &str = "x-error";
pub const ERROR_KIND: &str = "x-error-kind";
pub const REPLAYED_AT: &str = "x-replayed-at";

/// `x-error` is cut to this many bytes: a header is not a log.
const MAX_ERROR_BYTES: usize = 1000;

/// An integer header, whatever integer type the writer chose; 0 when
/// absent or negative.
pub fn int(properties: &BasicProperties, name: &str) -> u32 {
    let value = properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name).cloned());
    match value {
        Some(AMQPValue::LongLongInt(n)) => n.clamp(0, i64::from(u32::MAX)) as u32,
        Some(AMQPValue::LongInt(n)) => n.max(0) as u32,
        Some(AMQPValue::LongUInt(n)) => n,
        Some(AMQPValue::ShortInt(n)) => n.max(0) as u32,
        _ => 0,
    }
}

/// A text header (long or short string).
pub fn text(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// The original properties plus what an operator needs: how often, when
/// first and last (`now`, RFC 3339), and why. Persistent.
pub fn on_failure(
    original: &BasicProperties,
    attempts: u32,
    error: &str,
    kind: &str,
    now: &str,
) -> BasicProperties {
    let first = text(original, FIRST_FAILURE_AT).unwrap_or_else(|| now.to_owned());
    let mut table = original.headers().clone().unwrap_or_default();
    let long = |s: &str| AMQPValue::LongString(s.into());
    table.insert(
        ShortString::from(ATTEMPTS),
        AMQPValue::LongLongInt(i64::from(attempts)),
    );
    table.insert(ShortString::from(FIRST_FAILURE_AT), long(&first));
    table.insert(ShortString::from(LAST_FAILURE_AT), long(now));
    table.insert(
        ShortString::from(ERROR),
        long(crate::relay::truncate(error, MAX_ERROR_BYTES)),
    );
    table.insert(ShortString::from(ERROR_KIND), long(kind));
    original.clone().with_headers(table).with_delivery_mode(2)
}

/// The properties of a replayed dead letter, stamped with the replay time
/// (`now`, RFC 3339). A transient failure gets a fresh retry budget; a
/// permanent one keeps its attempts, so the history shows every time it was
/// tried (it goes straight back to the DLQ if it fails the same way).
pub fn on_replay(stored: &BasicProperties, permanent: bool, now: &str) -> BasicProperties {
    let mut table = stored.headers().clone().unwrap_or_default();
    if !permanent {
        table.insert(ShortString::from(ATTEMPTS), AMQPValue::LongLongInt(0));
    }
    table.insert(
        ShortString::from(REPLAYED_AT),
        AMQPValue::LongString(now.into()),
    );
    stored.clone().with_headers(table).with_delivery_mode(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_failure_keeps_the_first_time_and_counts() {
        let first = on_failure(&BasicProperties::default(), 1, "boom", "transient", "T1");
        let second = on_failure(&first, 2, "again", "transient", "T2");
        assert_eq!(int(&second, ATTEMPTS), 2);
        assert_eq!(text(&second, FIRST_FAILURE_AT).as_deref(), Some("T1"));
        assert_eq!(text(&second, LAST_FAILURE_AT).as_deref(), Some("T2"));
        assert_eq!(text(&second, ERROR).as_deref(), Some("again"));
        assert_eq!(second.delivery_mode(), &Some(2));
    }

    #[test]
    fn absent_or_negative_counts_read_as_zero() {
        assert_eq!(int(&BasicProperties::default(), ATTEMPTS), 0);
        let mut table = lapin::types::FieldTable::default();
        table.insert(ATTEMPTS.into(), AMQPValue::LongInt(-4));
        assert_eq!(
            int(&BasicProperties::default().with_headers(table), ATTEMPTS),
            0
        );
    }

    #[test]
    fn a_replay_resets_the_budget_of_a_transient_failure_only() {
        let failed = on_failure(&BasicProperties::default(), 5, "boom", "exhausted", "T1");
        let transient = on_replay(&failed, false, "T2");
        assert_eq!(int(&transient, ATTEMPTS), 0);
        assert_eq!(text(&transient, REPLAYED_AT).as_deref(), Some("T2"));
        let permanent = on_replay(&failed, true, "T2");
        assert_eq!(int(&permanent, ATTEMPTS), 5);
    }
}
