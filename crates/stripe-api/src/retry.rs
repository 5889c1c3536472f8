//! When to try a request again, and how long to wait first (pure).
//!
//! The decision is stripe-node's `RequestSender._shouldRetry` and
//! stripe-python's `HTTPClient._should_retry` (read at stripe-node
//! `663942164d38`, stripe-python `6c6e3736d16d`), in their order:
//!
//! 1. out of retries: no;
//! 2. no answer at all (connection refused or reset, timeout): yes;
//! 3. `Stripe-Should-Retry: false`: no; `Stripe-Should-Retry: true`: yes
//!    (the header overrides the status: Stripe knows, for example, that a
//!    500 was already saved under the idempotency key, or that a lock
//!    timeout is worth another go);
//! 4. 409 (a concurrent request holds the idempotency key): yes;
//! 5. 5xx: yes;
//! 6. anything else: no.
//!
//! One deliberate addition: a 429 without the header is retried too. The
//! libraries leave 429 to their caller; ours are background jobs with their
//! own rate budget, for which waiting and trying again is the right answer
//! (Stripe's rate-limit guide says so). A 429 carrying `Stripe-Should-Retry:
//! false` is still not retried: the header wins, as in step 3.
//!
//! The delay is the libraries' too: `initial * 2^(n-1)` capped at `max`,
//! times a jitter factor in `[0.5, 1)`, never below `initial`
//! (0.5 s and 5 s in both libraries).

use std::time::Duration;

/// What one attempt came back with, as far as retrying is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// No HTTP answer: the connection failed, was cut, or timed out.
    NoAnswer,
    /// An HTTP answer (any status, success included).
    Status {
        status: u16,
        /// The `Stripe-Should-Retry` header: `Some(true)` for exactly
        /// `true`, `Some(false)` for exactly `false`, else `None` (the
        /// libraries compare the exact strings).
        should_retry: Option<bool>,
    },
}

impl Answer {
    /// Reads `Stripe-Should-Retry` as the official libraries do.
    pub fn status(status: u16, should_retry_header: Option<&str>) -> Answer {
        let should_retry = match should_retry_header {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => None,
        };
        Answer::Status {
            status,
            should_retry,
        }
    }
}

/// Whether to send the request again after `answer`, when `retries_done`
/// retries have already been made and at most `max_retries` are allowed.
pub fn should_retry(answer: Answer, retries_done: u32, max_retries: u32) -> bool {
    if retries_done >= max_retries {
        return false;
    }
    let (status, header) = match answer {
        Answer::NoAnswer => return true,
        Answer::Status {
            status,
            should_retry,
        } => (status, should_retry),
    };
    if let Some(said) = header {
        return said;
    }
    matches!(status, 409 | 429) || status >= 500
}

/// Exponential backoff with jitter, as Stripe's libraries wait between tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// The libraries' values: 0.5 s, doubling, at most 5 s.
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The wait before retry number `retry` (1 for the first retry), with
    /// `jitter` drawn uniformly from `[0, 1)` by the caller.
    pub fn delay(&self, retry: u32, jitter: f64) -> Duration {
        let exponent = retry.saturating_sub(1).min(30);
        let doubled = self.initial.saturating_mul(1 << exponent);
        let capped = doubled.min(self.max);
        let jitter = jitter.clamp(0.0, 1.0);
        let jittered = capped.mul_f64(0.5 * (1.0 + jitter));
        jittered.max(self.initial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u32 = 3;

    fn status(code: u16) -> Answer {
        Answer::status(code, None)
    }

    #[test]
    fn the_statuses_the_libraries_retry() {
        for code in [409, 429, 500, 502, 503, 504, 599] {
            assert!(should_retry(status(code), 0, MAX), "{code}");
        }
        for code in [200, 201, 301, 400, 401, 402, 403, 404, 410, 422] {
            assert!(!should_retry(status(code), 0, MAX), "{code}");
        }
        assert!(should_retry(Answer::NoAnswer, 0, MAX));
    }

    #[test]
    fn the_header_overrides_the_status() {
        assert!(!should_retry(Answer::status(500, Some("false")), 0, MAX));
        assert!(!should_retry(Answer::status(503, Some("false")), 0, MAX));
        assert!(!should_retry(Answer::status(429, Some("false")), 0, MAX));
        assert!(!should_retry(Answer::status(409, Some("false")), 0, MAX));
        assert!(should_retry(Answer::status(400, Some("true")), 0, MAX));
        assert!(should_retry(Answer::status(402, Some("true")), 0, MAX));
        // Only the exact strings count, as in stripe-node and stripe-python.
        assert!(should_retry(Answer::status(500, Some("False")), 0, MAX));
        assert!(!should_retry(Answer::status(400, Some("TRUE")), 0, MAX));
    }

    #[test]
    fn never_beyond_the_retry_budget() {
        for answer in [
            Answer::NoAnswer,
            status(500),
            status(429),
            Answer::status(400, Some("true")),
        ] {
            assert!(should_retry(answer, MAX - 1, MAX));
            assert!(!should_retry(answer, MAX, MAX));
            assert!(!should_retry(answer, 0, 0));
        }
    }

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_in_the_upper_half() {
        let b = Backoff::default();
        // The lowest jitter still never sleeps less than `initial`.
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(500));
        assert_eq!(b.delay(2, 0.0), Duration::from_millis(500));
        assert_eq!(b.delay(3, 0.0), Duration::from_millis(1000));
        let top = b.delay(3, 0.999_999);
        assert!(top < Duration::from_millis(2000) && top > Duration::from_millis(1999));
        assert_eq!(b.delay(10, 0.0), Duration::from_millis(2500));
        assert!(b.delay(10, 1.0) <= Duration::from_secs(5));
        assert!(b.delay(u32::MAX, 0.5) <= Duration::from_secs(5));
    }
}
