//! The per-process request budget (pure: the caller passes the time).
//!
//! A token bucket of `burst` tokens refilled at `rate` per second, kept in
//! its GCRA form (the "theoretical arrival time" of the next request): one
//! `Instant` instead of a fractional token count, so the arithmetic is exact
//! `Duration`s, and a caller is told how long to wait instead of polling.
//! [`TokenBucket::reserve`] always grants a slot, possibly in the future,
//! and books it at once, so waiting callers are served in the order they
//! asked and never race each other for the next token.
//!
//! With `burst = 1` requests are spaced at least `1/rate` apart, so any
//! window of one second holds at most `rate` of them: "at most N requests
//! per second" holds for every second, not only on average.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Time between two tokens: `1 / rate`.
    interval: Duration,
    /// How far before its theoretical time a request may go: `(burst - 1)`
    /// intervals.
    tolerance: Duration,
    /// When the next request would be due if requests came evenly spaced.
    next_due: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`: `rate` requests per second, at most `burst`
    /// at once. A rate that is not positive and finite is refused.
    pub fn new(rate: f64, burst: NonZeroU32, now: Instant) -> Option<TokenBucket> {
        if !(rate.is_finite() && rate > 0.0) {
            return None;
        }
        let interval = Duration::try_from_secs_f64(1.0 / rate).ok()?;
        Some(TokenBucket {
            interval,
            tolerance: interval.saturating_mul(burst.get() - 1),
            next_due: now,
        })
    }

    /// How long a request that wants to go at `now` would wait, without
    /// taking the token (what [`TokenBucket::reserve`] would answer).
    pub fn ready_in(&self, now: Instant) -> Duration {
        self.next_due
            .checked_sub(self.tolerance)
            .map_or(now, |t| t.max(now))
            - now
    }

    /// Takes a token for a request that wants to go at `now`; returns how
    /// long it must wait before it goes (zero when a token is there).
    pub fn reserve(&mut self, now: Instant) -> Duration {
        let earliest = self
            .next_due
            .checked_sub(self.tolerance)
            .map_or(now, |t| t.max(now));
        self.next_due = self.next_due.max(now) + self.interval;
        earliest - now
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bucket(rate: f64, burst: u32, now: Instant) -> TokenBucket {
        TokenBucket::new(rate, NonZeroU32::new(burst).unwrap(), now).unwrap()
    }

    #[test]
    fn refuses_nonsense_rates() {
        let now = Instant::now();
        let one = NonZeroU32::MIN;
        assert!(TokenBucket::new(0.0, one, now).is_none());
        assert!(TokenBucket::new(-1.0, one, now).is_none());
        assert!(TokenBucket::new(f64::NAN, one, now).is_none());
        assert!(TokenBucket::new(f64::INFINITY, one, now).is_none());
    }

    #[test]
    fn a_burst_goes_at_once_then_the_rate_spaces_requests() {
        let t0 = Instant::now();
        let mut b = bucket(20.0, 3, t0);
        let waits: Vec<Duration> = (0..6).map(|_| b.reserve(t0)).collect();
        let ms = Duration::from_millis;
        assert_eq!(waits, [ms(0), ms(0), ms(0), ms(50), ms(100), ms(150)]);
    }

    #[test]
    fn an_idle_bucket_refills_but_not_beyond_the_burst() {
        let t0 = Instant::now();
        let mut b = bucket(10.0, 2, t0);
        b.reserve(t0);
        b.reserve(t0);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(b.reserve(later), Duration::ZERO);
        assert_eq!(b.reserve(later), Duration::ZERO);
        assert_eq!(b.reserve(later), Duration::from_millis(100));
    }

    proptest! {
        /// Whatever the arrival times, the granted send times of any
        /// `burst + k` consecutive requests span at least `k` intervals: no
        /// window of length `W` holds more than `burst + W * rate` requests.
        #[test]
        fn never_faster_than_the_rate(
            rate in 1u32..200,
            burst in 1u32..10,
            gaps_ms in proptest::collection::vec(0u64..120, 1..200),
        ) {
            let t0 = Instant::now();
            let mut b = bucket(f64::from(rate), burst, t0);
            let mut now = t0;
            let mut sends = Vec::new();
            for gap in gaps_ms {
                now += Duration::from_millis(gap);
                let wait = b.reserve(now);
                sends.push(now + wait);
            }
            prop_assert!(sends.windows(2).all(|w| w[0] <= w[1]), "served in order");
            let burst = burst as usize;
            for k in 1..sends.len().saturating_sub(burst) + 1 {
                for start in 0..sends.len() - burst - k + 1 {
                    let span = sends[start + burst + k - 1] - sends[start];
                    prop_assert!(span >= b.interval() * k as u32);
                }
            }
        }

        /// `ready_in` is what `reserve` would answer, and takes nothing.
        #[test]
        fn ready_in_is_reserve_without_taking(
            rate in 1u32..200,
            burst in 1u32..10,
            gaps_ms in proptest::collection::vec(0u64..120, 1..100),
        ) {
            let t0 = Instant::now();
            let mut b = bucket(f64::from(rate), burst, t0);
            let mut now = t0;
            for gap in gaps_ms {
                now += Duration::from_millis(gap);
                let peeked = b.ready_in(now);
                prop_assert_eq!(b.ready_in(now), peeked);
                prop_assert_eq!(b.reserve(now), peeked);
            }
        }

        /// A request never waits when the bucket had time to refill a token.
        #[test]
        fn no_wait_when_spaced_out(rate in 1u32..100, n in 1usize..50) {
            let t0 = Instant::now();
            let mut b = bucket(f64::from(rate), 1, t0);
            let step = b.interval();
            for i in 0..n {
                prop_assert_eq!(b.reserve(t0 + step * i as u32), Duration::ZERO);
            }
        }
    }
}
