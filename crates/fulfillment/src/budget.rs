//! The memory budget for request bodies read before their signature is
//! checked (`MAX_INFLIGHT_BODY_BYTES`).
//!
//! Anyone can send a body; only Stripe can sign one. Without a shared cap,
//! N strangers each sending `MAX_BODY_BYTES` cost N MiB before we can tell
//! them apart from Stripe. The budget never waits: a request that does not
//! fit is shed at once (503, Stripe retries), so an attacker cannot queue up
//! work or memory either.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::metrics as m;

/// One budget shared by every connection of a listener. Cheap to clone.
#[derive(Clone, Debug)]
pub struct BodyBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limit: usize,
    used: AtomicUsize,
}

/// The budget had no room for the bytes asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("in-flight body budget of {limit} bytes exhausted")]
pub struct Exhausted {
    pub limit: usize,
}

impl BodyBudget {
    pub fn new(limit: usize) -> BodyBudget {
        metrics::gauge!(m::WEBHOOK_INFLIGHT_BODY_LIMIT_BYTES).set(limit as f64);
        BodyBudget {
            inner: Arc::new(Inner {
                limit,
                used: AtomicUsize::new(0),
            }),
        }
    }

    /// The configured limit, `MAX_INFLIGHT_BODY_BYTES`.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Bytes reserved right now.
    pub fn in_use(&self) -> usize {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// An empty reservation; grow it as bytes are promised or arrive.
    pub fn reservation(&self) -> Reservation {
        Reservation {
            budget: self.clone(),
            held: 0,
        }
    }

    fn take(&self, bytes: usize) -> Result<(), Exhausted> {
        let limit = self.inner.limit;
        self.inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= limit)
            })
            .map(|_| self.publish())
            .map_err(|_| Exhausted { limit })
    }

    fn give_back(&self, bytes: usize) {
        if bytes > 0 {
            self.inner.used.fetch_sub(bytes, Ordering::AcqRel);
            self.publish();
        }
    }

    fn publish(&self) {
        metrics::gauge!(m::WEBHOOK_INFLIGHT_BODY_BYTES).set(self.in_use() as f64);
    }
}

/// Bytes held for one request. Dropping it (body verified, rejected, or the
/// connection gone mid-body) returns them, so no path can leak budget.
#[derive(Debug)]
pub struct Reservation {
    budget: BodyBudget,
    held: usize,
}

impl Reservation {
    /// Holds `bytes` more, or nothing at all if they do not fit.
    pub fn grow(&mut self, bytes: usize) -> Result<(), Exhausted> {
        self.budget.take(bytes)?;
        self.held += bytes;
        Ok(())
    }

    /// Bytes this reservation holds.
    pub fn held(&self) -> usize {
        self.held
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_one_limit_and_return_bytes_on_drop() {
        let budget = BodyBudget::new(100);
        let mut a = budget.reservation();
        let mut b = budget.reservation();
        assert_eq!(a.grow(60), Ok(()));
        assert_eq!(b.grow(50), Err(Exhausted { limit: 100 }));
        assert_eq!(b.held(), 0, "a refused grow holds nothing");
        assert_eq!(b.grow(40), Ok(()));
        assert_eq!(budget.in_use(), 100);
        drop(a);
        assert_eq!(budget.in_use(), 40);
        assert_eq!(b.grow(60), Ok(()));
        assert_eq!(b.held(), 100);
        drop(b);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_reservation_never_overflows_the_counter() {
        let budget = BodyBudget::new(usize::MAX);
        let mut a = budget.reservation();
        a.grow(usize::MAX).unwrap();
        let mut b = budget.reservation();
        assert!(b.grow(1).is_err());
        drop(a);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn concurrent_reservations_never_exceed_the_limit() {
        let budget = BodyBudget::new(1000);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let mut r = budget.reservation();
                        if r.grow(300).is_ok() {
                            assert!(budget.in_use() <= 1000);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(budget.in_use(), 0);
    }
}
