//! Delayed retries: one queue per delay tier, each with a queue-level TTL that
//! dead-letters back to the work queue. Per-message TTLs would get stuck
//! behind longer ones in the same queue; a queue per tier cannot. Which
//! tier a failed message goes to is decided by `failure::route`.

use std::time::Duration;

/// The delay tiers, shortest first. A message that fails for the n-th time
/// waits in tier n; one that fails after the last tier is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    delays: Vec<Duration>,
}

impl RetryPolicy {
    /// Parses `"1s,10s,1m,5m"` (units `ms`, `s`, `m`, `h`, `d`).
    pub fn parse(spec: &str) -> Result<RetryPolicy, String> {
        let mut delays = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            // The one duration syntax of every setting (`config`).
            let delay = fulfillment_core::upkeep::parse_duration(part)?;
            if delay.is_zero() {
                return Err(format!("{part:?}: must be positive"));
            }
            delays.push(delay);
        }
        if delays.windows(2).any(|w| w[0] >= w[1]) {
            return Err("delays must grow".into());
        }
        Ok(RetryPolicy { delays })
    }

    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// Attempts in all: the first plus one per tier.
    pub fn max_attempts(&self) -> u32 {
        self.delays.len() as u32 + 1
    }
}

/// The tier's queue name says its delay, so changing the delays creates new
/// queues instead of clashing with the old ones' fixed arguments.
pub fn queue_name(delay: Duration) -> String {
    let ms = delay.as_millis();
    let human = if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    };
    format!("{}.retry.{human}", crate::topology::WORK_QUEUE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_specs() {
        for bad in ["1", "1x", "s", "0s", "10s,1s", "1s,1s", "-1s"] {
            assert!(RetryPolicy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn queue_names_say_the_delay() {
        assert_eq!(
            queue_name(Duration::from_millis(250)),
            "stripe.fulfillment.retry.250ms"
        );
        assert_eq!(
            queue_name(Duration::from_secs(10)),
            "stripe.fulfillment.retry.10s"
        );
        assert_eq!(
            queue_name(Duration::from_secs(300)),
            "stripe.fulfillment.retry.5m"
        );
        assert_eq!(
            queue_name(Duration::from_secs(7200)),
            "stripe.fulfillment.retry.2h"
        );
    }
}
