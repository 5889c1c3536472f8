//! Rules for keeping state and metrics bounded: which lags are believable,
//! and the duration syntax of the settings that bound state (`PARKED_TTL`,
//! the retention job's interval).

use std::time::Duration;

/// An event whose `created` is further than this from our clock, either way,
/// is not a real lag: Stripe retries for three days and keeps events for 30,
/// so anything beyond that is a broken clock or a forged field.
pub const MAX_BELIEVABLE_LAG: Duration = Duration::from_secs(30 * 86_400);

/// What to do with one event's lag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lag {
    /// Seconds from `created` to now, never negative (small clock skew
    /// towards the future reads as zero).
    Observed(f64),
    /// More than [`MAX_BELIEVABLE_LAG`] off: count it, keep it out of the
    /// histogram (one such value would own its sum for good).
    Absurd,
}

/// The lag of an event created at `created` (Unix seconds) seen at `now`.
pub fn lag(now_unix: f64, created: i64) -> Lag {
    let lag = now_unix - created as f64;
    if !lag.is_finite() || lag.abs() > MAX_BELIEVABLE_LAG.as_secs_f64() {
        Lag::Absurd
    } else {
        Lag::Observed(lag.max(0.0))
    }
}

/// Parses `90s`, `10m`, `74h`, `7d` or `250ms` (a whole number and a unit).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?}: missing unit (ms, s, m, h, d)"))?;
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("{s:?}: not a number"))?;
    let scale = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: unknown unit (ms, s, m, h, d)")),
    };
    n.checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?}: too large"))
}

/// A retention period in days: positive and finite. Fractions are allowed
/// (tests compress time with them; `0.5` is twelve hours).
pub fn parse_days(s: &str) -> Result<Duration, String> {
    let days: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: not a number of days"))?;
    if !days.is_finite() || days <= 0.0 || days > 36_500.0 {
        return Err(format!("{s:?}: must be more than 0 and at most 36500 days"));
    }
    Ok(Duration::from_secs_f64(days * 86_400.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_800_000_000.0;

    #[test]
    fn believable_lags_are_observed() {
        assert_eq!(lag(NOW, 1_800_000_000 - 12), Lag::Observed(12.0));
        // Three days of Stripe retries is a real lag.
        assert_eq!(
            lag(NOW, 1_800_000_000 - 3 * 86_400),
            Lag::Observed(259_200.0)
        );
        // A little clock skew towards the future reads as no lag.
        assert_eq!(lag(NOW, 1_800_000_005), Lag::Observed(0.0));
        // Exactly 30 days either way is still believable.
        assert_eq!(
            lag(NOW, 1_800_000_000 - 30 * 86_400),
            Lag::Observed(2_592_000.0)
        );
        assert_eq!(lag(NOW, 1_800_000_000 + 30 * 86_400), Lag::Observed(0.0));
    }

    #[test]
    fn absurd_created_times_are_not_lags() {
        assert_eq!(lag(NOW, i64::MIN), Lag::Absurd);
        assert_eq!(lag(NOW, i64::MAX), Lag::Absurd);
        assert_eq!(lag(NOW, 0), Lag::Absurd);
        assert_eq!(lag(NOW, 1_800_000_000 - 30 * 86_400 - 1), Lag::Absurd);
        assert_eq!(lag(NOW, 1_800_000_000 + 30 * 86_400 + 1), Lag::Absurd);
    }

    #[test]
    fn durations_parse_with_their_unit() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("74h"), Ok(Duration::from_secs(74 * 3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "7", "d", "7w", "-1s", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn days_are_positive_and_may_be_fractional() {
        assert_eq!(parse_days("35"), Ok(Duration::from_secs(35 * 86_400)));
        assert_eq!(parse_days("0.5"), Ok(Duration::from_secs(43_200)));
        for bad in ["0", "-1", "NaN", "inf", "x", "", "1e9"] {
            assert!(parse_days(bad).is_err(), "{bad:?}");
        }
    }
}
