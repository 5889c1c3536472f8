//! Stripe's side of the long end-to-end runs (`make chaos`, `make cluster`):
//! a reproducible set of orders and their events, delivered the way Stripe
//! delivers them (duplicates, neighbours out of order, every non-2xx answer
//! or broken connection retried later with backoff and a fresh signature).
//! One home, so both runs send the same kind of stream.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::TEST_SECRET;
use crate::events::{payment_intent_succeeded, session};

const COMPLETED: &str = "checkout.session.completed";
const EXPIRED: &str = "checkout.session.expired";
const ASYNC_OK: &str = "checkout.session.async_payment_succeeded";
const ASYNC_FAILED: &str = "checkout.session.async_payment_failed";

/// Small deterministic PRNG (xorshift64*): a run is reproducible from its seed.
pub struct Rng(u64);

impl Rng {
    /// Any seed (a zero state would stay zero, so the low bit is set).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The unique events of order `n` (ids `evt_{tag}_{n}_…`, `ord_{tag}_{n}`),
/// by scenario: paid, paid later, failed later, expired, PaymentIntent
/// before its session (parked, then linked), paid then expired.
fn scenario(rng: &mut Rng, tag: &str, n: usize) -> Vec<Vec<u8>> {
    let order = format!("ord_{tag}_{n}");
    let pi = format!("pi_{tag}_{n}");
    let id = |k: &str| format!("evt_{tag}_{n}_{k}");
    match rng.below(6) {
        0 => vec![
            session(&id("cs"), COMPLETED, &order, "paid", Some(&pi)),
            payment_intent_succeeded(&id("pi"), &pi, Some(&order)),
        ],
        1 => vec![
            session(&id("cs"), COMPLETED, &order, "unpaid", Some(&pi)),
            session(&id("ok"), ASYNC_OK, &order, "paid", Some(&pi)),
        ],
        2 => vec![
            session(&id("cs"), COMPLETED, &order, "unpaid", Some(&pi)),
            session(&id("fail"), ASYNC_FAILED, &order, "unpaid", Some(&pi)),
        ],
        3 => vec![session(&id("exp"), EXPIRED, &order, "unpaid", None)],
        // The PaymentIntent comes first and names no order: parked, then linked.
        4 => vec![
            payment_intent_succeeded(&id("pi"), &pi, None),
            session(&id("cs"), COMPLETED, &order, "unpaid", Some(&pi)),
        ],
        _ => vec![
            session(&id("cs"), COMPLETED, &order, "paid", Some(&pi)),
            session(&id("exp"), EXPIRED, &order, "paid", Some(&pi)),
        ],
    }
}

/// The events of `orders` orders: the unique ones, and the stream of
/// deliveries in Stripe's manner (every event at least once, ~30% twice,
/// neighbours swapped so pairs arrive out of order).
pub fn deliveries(rng: &mut Rng, tag: &str, orders: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut unique = Vec::new();
    for n in 0..orders {
        let mut events = scenario(rng, tag, n);
        if rng.below(2) == 0 {
            events.reverse();
        }
        unique.extend(events);
    }
    let mut stream: Vec<Vec<u8>> = Vec::new();
    for e in &unique {
        stream.push(e.clone());
        if rng.below(10) < 3 {
            stream.push(e.clone());
        }
    }
    for i in (1..stream.len()).rev() {
        // A local shuffle: late duplicates and reorderings, not total chaos.
        let j = i.saturating_sub(rng.below(40) as usize);
        stream.swap(i, j);
    }
    (unique, stream)
}

/// What the sender saw.
#[derive(Default)]
pub struct Counters {
    pub attempts: AtomicU64,
    pub retries: AtomicU64,
    pub accepted: AtomicU64,
    /// 503s: the receiver could not get a confirm (the broker was away).
    pub unavailable: AtomicU64,
    /// Refused or broken connections (a receiver was killed).
    pub connection_errors: AtomicU64,
}

impl Counters {
    pub fn get(field: &AtomicU64) -> u64 {
        field.load(Ordering::Relaxed)
    }
}

/// The receivers' HTTP ports; a test replaces one when it replaces a receiver.
pub type Ports = Arc<RwLock<Vec<u16>>>;

/// Sends the whole stream, one task per delivery, one delivery every
/// `pace`; resolves when every delivery was accepted.
pub fn send(
    stream: Vec<Vec<u8>>,
    pace: Duration,
    ports: Ports,
    counters: Arc<Counters>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        for (i, body) in stream.into_iter().enumerate() {
            tasks.push(tokio::spawn(deliver(
                body,
                i,
                ports.clone(),
                counters.clone(),
            )));
            tokio::time::sleep(pace).await;
        }
        for t in tasks {
            t.await.unwrap();
        }
    })
}

/// One delivery, retried like Stripe until a 2xx: new signature each time,
/// the next receiver each time.
async fn deliver(body: Vec<u8>, i: usize, ports: Ports, counters: Arc<Counters>) {
    let mut backoff = Duration::from_millis(200);
    for attempt in 0u32.. {
        let port = {
            let ports = ports.read().unwrap();
            ports[(i + attempt as usize) % ports.len()]
        };
        counters.attempts.fetch_add(1, Ordering::Relaxed);
        let header = stripe_webhook_signature::sign_header(TEST_SECRET, crate::unix_now(), &body);
        let status = tokio::time::timeout(Duration::from_secs(10), try_post(port, &body, &header))
            .await
            .unwrap_or(None);
        match status {
            Some(503) => counters.unavailable.fetch_add(1, Ordering::Relaxed),
            None => counters.connection_errors.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        if status.is_some_and(|s| (200..300).contains(&s)) {
            counters.accepted.fetch_add(1, Ordering::Relaxed);
            return;
        }
        counters.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(3));
    }
}

/// The HTTP status, or None when the connection failed. A 400 fails the
/// test: these events are correctly signed.
async fn try_post(port: u16, body: &[u8], header: &str) -> Option<u16> {
    let headers = [
        ("content-type", "application/json"),
        ("stripe-signature", header),
    ];
    let reply = crate::http::request(port, "POST", "/webhooks/stripe", &headers, body.to_vec())
        .await
        .ok()?;
    assert_ne!(
        reply.status,
        400,
        "a correctly signed event was refused: {}",
        reply.text()
    );
    Some(reply.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let (u1, s1) = deliveries(&mut Rng::new(7), "t", 50);
        let (u2, s2) = deliveries(&mut Rng::new(7), "t", 50);
        assert_eq!((u1.len(), s1.len()), (u2.len(), s2.len()));
        assert!(s1.len() > u1.len(), "some events are delivered twice");
        // Ids are stable; `created` (the clock) is the only thing that may differ.
        let ids = |v: &[Vec<u8>]| -> Vec<String> {
            v.iter()
                .map(|b| serde_json::from_slice::<serde_json::Value>(b).unwrap()["id"].to_string())
                .collect()
        };
        assert_eq!(ids(&s1), ids(&s2));
        let mut distinct = ids(&u1);
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), u1.len(), "unique events have unique ids");
    }
}
