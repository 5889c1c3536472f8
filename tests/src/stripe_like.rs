//! The senders' side of the long end-to-end runs (`make chaos`, `make
//! cluster`): a reproducible set of orders with their Stripe events and
//! custom-payment reports (`POST /payments/custom`, as a merchant's backend
//! sends them), delivered the way Stripe delivers (duplicates, neighbours out
//! of order, every non-2xx answer or broken connection retried later with
//! backoff and a fresh signature). One home, so both runs send the same kind
//! of stream.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fulfillment_core::{OrderEvent, Parsed, custom, parse_custom_payment, parse_event};

use crate::events::{custom_payment, payment_intent_succeeded, session};
use crate::{CUSTOM_TEST_SECRET, TEST_SECRET};

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

/// One POST: a Stripe event to the webhook, or a custom-payment report.
#[derive(Clone)]
pub struct Post {
    custom: bool,
    body: Vec<u8>,
}

impl Post {
    fn stripe(body: Vec<u8>) -> Post {
        Post {
            custom: false,
            body,
        }
    }

    fn custom(id: &str, order: &str, guaranteed: bool) -> Post {
        Post {
            custom: true,
            body: custom_payment(id, order, guaranteed),
        }
    }

    /// What the worker will see: the event itself, or the report's envelope.
    pub fn event(&self) -> OrderEvent {
        let body = if self.custom {
            let report = parse_custom_payment(&self.body).expect("a valid report");
            custom::envelope(&self.body, &report.id, 0)
        } else {
            self.body.clone()
        };
        let Ok(Parsed::Handled(event)) = parse_event(&body) else {
            panic!("sample events parse")
        };
        event
    }

    /// Where it goes, the secret it is signed with, and the header that carries it.
    fn route(&self) -> (&'static str, &'static str, &'static str) {
        if self.custom {
            (
                "/payments/custom",
                CUSTOM_TEST_SECRET,
                "fulfillment-signature",
            )
        } else {
            ("/webhooks/stripe", TEST_SECRET, "stripe-signature")
        }
    }
}

/// The unique posts of order `n` (ids `evt_{tag}_{n}_…`, `cpay_{tag}_{n}_…`,
/// `ord_{tag}_{n}`): paid off Stripe only; failed, then paid by another
/// report; Stripe's events and a guaranteed report (paid twice if Stripe
/// paid: an anomaly); or Stripe's events alone.
fn scenario(rng: &mut Rng, tag: &str, n: usize) -> Vec<Post> {
    let order = format!("ord_{tag}_{n}");
    let pi = format!("pi_{tag}_{n}");
    let id = |k: &str| format!("evt_{tag}_{n}_{k}");
    let report = |k: &str| format!("cpay_{tag}_{n}_{k}");
    let stripe = scenario_stripe(rng, &order, &pi, &id);
    match rng.below(4) {
        0 => vec![Post::custom(&report("ok"), &order, true)],
        1 => vec![
            Post::custom(&report("fail"), &order, false),
            Post::custom(&report("ok"), &order, true),
        ],
        2 => {
            let mut posts: Vec<Post> = stripe.into_iter().map(Post::stripe).collect();
            posts.push(Post::custom(&report("ok"), &order, true));
            posts
        }
        _ => stripe.into_iter().map(Post::stripe).collect(),
    }
}

/// Stripe's events for one order, by scenario: paid, paid later, failed
/// later, expired, PaymentIntent before its session (parked, then linked),
/// paid then expired.
fn scenario_stripe(
    rng: &mut Rng,
    order: &str,
    pi: &str,
    id: &dyn Fn(&str) -> String,
) -> Vec<Vec<u8>> {
    let (order, pi) = (order, Some(pi));
    match rng.below(6) {
        0 => vec![
            session(&id("cs"), COMPLETED, order, "paid", pi),
            payment_intent_succeeded(&id("pi"), pi.unwrap(), Some(order)),
        ],
        1 => vec![
            session(&id("cs"), COMPLETED, order, "unpaid", pi),
            session(&id("ok"), ASYNC_OK, order, "paid", pi),
        ],
        2 => vec![
            session(&id("cs"), COMPLETED, order, "unpaid", pi),
            session(&id("fail"), ASYNC_FAILED, order, "unpaid", pi),
        ],
        3 => vec![session(&id("exp"), EXPIRED, order, "unpaid", None)],
        // The PaymentIntent comes first and names no order: parked, then linked.
        4 => vec![
            payment_intent_succeeded(&id("pi"), pi.unwrap(), None),
            session(&id("cs"), COMPLETED, order, "unpaid", pi),
        ],
        _ => vec![
            session(&id("cs"), COMPLETED, order, "paid", pi),
            session(&id("exp"), EXPIRED, order, "paid", pi),
        ],
    }
}

/// The posts of `orders` orders: the unique ones, and the stream of
/// deliveries in Stripe's manner (every post at least once, ~30% twice,
/// neighbours swapped so pairs arrive out of order).
pub fn deliveries(rng: &mut Rng, tag: &str, orders: usize) -> (Vec<Post>, Vec<Post>) {
    let mut unique = Vec::new();
    for n in 0..orders {
        let mut posts = scenario(rng, tag, n);
        if rng.below(2) == 0 {
            posts.reverse();
        }
        unique.extend(posts);
    }
    let mut stream: Vec<Post> = Vec::new();
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
    stream: Vec<Post>,
    pace: Duration,
    ports: Ports,
    counters: Arc<Counters>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        for (i, post) in stream.into_iter().enumerate() {
            tasks.push(tokio::spawn(deliver(
                post,
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

/// One delivery, retried like Stripe (or a careful merchant) until a 2xx:
/// new signature each time, the next receiver each time.
async fn deliver(post: Post, i: usize, ports: Ports, counters: Arc<Counters>) {
    let (path, secret, header_name) = post.route();
    let body = post.body;
    let mut backoff = Duration::from_millis(200);
    for attempt in 0u32.. {
        let port = {
            let ports = ports.read().unwrap();
            ports[(i + attempt as usize) % ports.len()]
        };
        counters.attempts.fetch_add(1, Ordering::Relaxed);
        let header = stripe_webhook_signature::sign_header(secret, crate::unix_now(), &body);
        let signed = (header_name, header.as_str());
        let posted = try_post(port, path, &body, signed);
        let status = tokio::time::timeout(Duration::from_secs(10), posted)
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
/// test: these posts are correctly signed.
async fn try_post(port: u16, path: &str, body: &[u8], signed: (&str, &str)) -> Option<u16> {
    let headers = [("content-type", "application/json"), signed];
    let reply = crate::http::request(port, "POST", path, &headers, body.to_vec())
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
        let ids = |v: &[Post]| -> Vec<String> {
            v.iter()
                .map(|p| {
                    serde_json::from_slice::<serde_json::Value>(&p.body).unwrap()["id"].to_string()
                })
                .collect()
        };
        assert_eq!(ids(&s1), ids(&s2));
        let mut distinct = ids(&u1);
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), u1.len(), "unique posts have unique ids");
        assert!(u1.iter().any(|p| p.custom) && u1.iter().any(|p| !p.custom));
        for post in &u1 {
            post.event(); // every post is one the worker can apply
        }
    }
}
