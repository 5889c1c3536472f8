//! The load: 2 KiB `checkout.session.completed` events (payment_status
//! `paid`), each with its own event, order and PaymentIntent id, signed like
//! Stripe signs them.
//!
//! Building JSON for every request would cost the generator more than the
//! receiver spends on it, so one template is built with
//! `fulfillment_core::sample::event`, padded to 2 KiB with a metadata field,
//! and each request copies it and writes its sequence number into the id
//! slots. Signing (HMAC-SHA256 over the body) is done per request, as a real
//! client does.

use bytes::Bytes;
use fulfillment_core::sample::{SampleSpec, event};
use serde_json::Value;

/// Size of every event body.
pub const BODY_BYTES: usize = 2048;
/// Stands for the 10-digit sequence number in the template's ids.
const SLOT: &[u8] = b"QQQQQQQQQQ";

/// Makes the events of one run: ids `evt_{tag}_{seq:010}`, `ord_{tag}_{seq:010}`.
pub struct Events {
    tag: String,
    secret: String,
    template: Vec<u8>,
    /// Byte offsets of every [`SLOT`] in `template`.
    slots: Vec<usize>,
}

impl Events {
    /// `tag` keeps ids unique across runs; `created` is the events' Stripe `created`.
    pub fn new(tag: &str, secret: &str, created: i64) -> Events {
        let slot = std::str::from_utf8(SLOT).expect("ascii");
        let (event_id, order_id, pi) = (
            format!("evt_{tag}_{slot}"),
            format!("ord_{tag}_{slot}"),
            format!("pi_{tag}_{slot}"),
        );
        let spec = SampleSpec {
            event_id: &event_id,
            order_id: &order_id,
            payment_intent_id: Some(&pi),
            payment_status: "paid",
            order_in_metadata: true,
            created,
        };
        let sample = event("checkout.session.completed", &spec).expect("a sample type");
        let template = pad(&sample, BODY_BYTES);
        let slots = template
            .windows(SLOT.len())
            .enumerate()
            .filter(|(_, w)| *w == SLOT)
            .map(|(i, _)| i)
            .collect();
        Events {
            tag: tag.to_owned(),
            secret: secret.to_owned(),
            template,
            slots,
        }
    }

    /// The sequence number in an order id this run made.
    pub fn seq_of(&self, order_id: &str) -> Option<u64> {
        order_id
            .strip_prefix(&format!("ord_{}_", self.tag))?
            .parse()
            .ok()
    }

    /// Event number `seq`, unsigned.
    pub fn body(&self, seq: u64) -> Vec<u8> {
        assert!(seq < 10_000_000_000, "sequence numbers have 10 digits");
        let digits = format!("{seq:010}");
        let mut body = self.template.clone();
        for &at in &self.slots {
            body[at..at + SLOT.len()].copy_from_slice(digits.as_bytes());
        }
        body
    }

    /// Event number `seq` and its `Stripe-Signature` header for time `now`.
    pub fn signed(&self, seq: u64, now: i64) -> (Bytes, String) {
        let body = self.body(seq);
        let header = stripe_webhook_signature::sign_header(&self.secret, now, &body);
        (Bytes::from(body), header)
    }
}

/// Adds `data.object.metadata.bench_padding` so the body is `size` bytes.
fn pad(body: &[u8], size: usize) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(body).expect("the sample is JSON");
    let mut with_padding = |n: usize| {
        value["data"]["object"]["metadata"]["bench_padding"] = Value::String("x".repeat(n));
        serde_json::to_vec(&value).expect("serialises")
    };
    let bare = with_padding(0).len();
    with_padding(size.saturating_sub(bare))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulfillment_core::{OrderStatus, Parsed, parse_event};

    #[test]
    fn bodies_are_2_kib_unique_and_parse_as_paid_checkouts() {
        let events = Events::new("t1", "whsec_x", 1_700_000_000);
        let (a, b) = (events.body(7), events.body(8));
        assert_eq!(a.len(), BODY_BYTES);
        assert_ne!(a, b);
        let Parsed::Handled(e) = parse_event(&a).unwrap() else {
            panic!("not handled")
        };
        assert_eq!(e.id, "evt_t1_0000000007");
        assert_eq!(e.order_id(), Some("ord_t1_0000000007"));
        assert_eq!(e.target_status(), Some(OrderStatus::Paid));
        assert_eq!(events.seq_of("ord_t1_0000000042"), Some(42));
        assert_eq!(events.seq_of("ord_t2_0000000042"), None);
    }

    #[test]
    fn signatures_verify() {
        let events = Events::new("t1", "whsec_x", 1_700_000_000);
        let (body, header) = events.signed(1, 1_700_000_000);
        let secrets = stripe_webhook_signature::Secrets::parse_list("whsec_x").unwrap();
        let verifier = stripe_webhook_signature::Verifier::new(secrets, 300);
        assert!(verifier.verify(&header, &body, 1_700_000_000).is_ok());
    }
}
