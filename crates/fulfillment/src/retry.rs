//! Delayed retries: one queue per delay tier, each with a queue-level TTL that
//! dead-letters back to the work queue. Per-message TTLs would get stuck
//! behind longer ones in the same queue; a queue per tier cannot.

use std::time::Duration;

/// The delay tiers, shortest first. A message that fails for the n-th time
/// waits in tier n; one that fails after the last tier is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    delays: Vec<Duration>,
}

/// Whether trying again can help: the one distinction routing needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Something outside the event (a bug since fixed, a trigger, a
    /// constraint another event will satisfy): worth the delay tiers.
    Transient,
    /// The event itself cannot be processed as it is (unparseable, data
    /// PostgreSQL cannot store): every retry would fail the same way.
    Permanent,
}

/// Why a message went to the DLQ; the `x-error-kind` header and the
/// `kind` label of `fulfillment_dead_letters_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterKind {
    /// Failed in a way no retry can fix; sent at once.
    Permanent,
    /// Failed transiently on every tier.
    Exhausted,
}

impl DeadLetterKind {
    pub fn label(self) -> &'static str {
        match self {
            DeadLetterKind::Permanent => "permanent",
            DeadLetterKind::Exhausted => "exhausted",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait in this tier, then try again.
    Retry {
        tier: usize,
        delay: Duration,
    },
    DeadLetter(DeadLetterKind),
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

    /// Where a message goes after its `failures`-th failure (1-based),
    /// given what kind of failure it was. The only place that decides
    /// between a delay tier and the DLQ.
    pub fn route(&self, failures: u32, failure: Failure) -> Next {
        if failure == Failure::Permanent {
            // Whatever the attempt count (a replayed permanent failure
            // included): the tiers would only delay the same answer.
            return Next::DeadLetter(DeadLetterKind::Permanent);
        }
        match self.delays.get(failures.saturating_sub(1) as usize) {
            Some(&delay) => Next::Retry {
                tier: failures as usize - 1,
                delay,
            },
            None => Next::DeadLetter(DeadLetterKind::Exhausted),
        }
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
    fn parses_and_routes_failures_through_the_tiers() {
        let p = RetryPolicy::parse("1s, 10s,1m,5m").unwrap();
        assert_eq!(p.max_attempts(), 5);
        let t = Failure::Transient;
        assert_eq!(
            p.route(1, t),
            Next::Retry {
                tier: 0,
                delay: Duration::from_secs(1)
            }
        );
        assert_eq!(
            p.route(4, t),
            Next::Retry {
                tier: 3,
                delay: Duration::from_secs(300)
            }
        );
        let exhausted = Next::DeadLetter(DeadLetterKind::Exhausted);
        assert_eq!(p.route(5, t), exhausted);
        assert_eq!(p.route(500, t), exhausted);
    }

    #[test]
    fn permanent_failures_skip_the_tiers_on_every_attempt() {
        let p = RetryPolicy::parse("1s,10s,1m,5m").unwrap();
        // 1: first delivery; 2: a replayed permanent failure (its attempts
        // are kept); 0: a header-less message.
        for failures in [0, 1, 2, 5, 500] {
            assert_eq!(
                p.route(failures, Failure::Permanent),
                Next::DeadLetter(DeadLetterKind::Permanent),
                "{failures}"
            );
        }
    }

    #[test]
    fn no_tiers_means_dead_letter_at_once() {
        let p = RetryPolicy::parse("").unwrap();
        assert_eq!(
            p.route(1, Failure::Transient),
            Next::DeadLetter(DeadLetterKind::Exhausted)
        );
    }

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
