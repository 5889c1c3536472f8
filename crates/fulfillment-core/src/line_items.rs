//! Line items on `order.paid` (contract 8.3): which messages wait for them,
//! what one line says, how a stored message gets them, and how long to wait
//! before asking Stripe again. Webhook payloads never carry line items
//! (Stripe's fulfillment guide has the server fetch them), so with
//! `STRIPE_API_KEY` set an `order.paid` of a Checkout order is written to the
//! outbox held back, and the `fulfillment` crate's enrichment job fetches
//! the items and releases it. Everything here is pure; that job is the IO.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::message::{MessageType, OrderMessage};

/// One line of what the customer bought, as `order.paid` carries it: a
/// Checkout Session line item (`object: "item"`) reduced to what a
/// warehouse needs. `quantity`, `description` and the price may be absent
/// at Stripe (`null`); they are `null` here too, never invented.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    pub price_id: Option<String>,
    pub product_id: Option<String>,
    pub description: Option<String>,
    pub quantity: Option<u64>,
    /// In the currency's minor unit, discounts and taxes included.
    pub amount_total: i64,
    pub currency: String,
}

impl OrderMessage {
    /// The Checkout Session whose line items this message must carry before
    /// it is published, when line items are fetched at all: an `order.paid`
    /// of an order that came from a Checkout Session (whatever paid it).
    /// `None`: the message is published as it is (every other message, and
    /// an order paid without a session, such as a server-side PaymentIntent
    /// naming its order in metadata).
    pub fn line_items_session(&self) -> Option<&str> {
        match self.message_type {
            MessageType::OrderPaid => self.checkout_session_id.as_deref(),
            _ => None,
        }
    }
}

/// Why a stored message could not be given its line items. Either means the
/// row was not written by [`OrderMessage::to_json`] for a message that waits:
/// a person has to look at it.
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error("the stored message is not an order message: {0}")]
    NotAMessage(#[from] serde_json::Error),
    #[error("the stored message ({0}) does not wait for line items")]
    DoesNotWait(String),
}

/// `body`, an outbox message as stored, with `line_items` set to `items`.
/// Everything else, `message_id` first, is unchanged: downstream
/// deduplicates on it, and a message enriched twice (two fetches racing
/// after a lost lease) is still one message.
pub fn with_line_items(body: &[u8], items: Vec<LineItem>) -> Result<Vec<u8>, EnrichError> {
    let mut message: OrderMessage = serde_json::from_slice(body)?;
    if message.line_items_session().is_none() {
        return Err(EnrichError::DoesNotWait(message.message_id));
    }
    message.line_items = Some(items);
    Ok(message.to_json())
}

/// The wait before the first retry of a fetch that failed in a way waiting
/// can fix (Stripe down, rate limited, a timeout).
pub const FIRST_RETRY: Duration = Duration::from_secs(2);
/// The longest wait between two tries: an outage of hours costs each
/// waiting order one call per this, and a recovered Stripe is noticed
/// within it.
pub const MAX_RETRY: Duration = Duration::from_secs(300);

/// How long to wait after the `attempts`-th failed try (1 for the first):
/// [`FIRST_RETRY`] doubled per attempt, at most [`MAX_RETRY`]. No jitter
/// needed: the process's rate budget already spaces the calls.
pub fn retry_delay(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payment::PaymentMethod;
    use crate::status::OrderStatus;
    use proptest::prelude::*;

    fn paid(session: Option<&str>) -> OrderMessage {
        OrderMessage {
            message_type: MessageType::OrderPaid,
            message_id: "ord_1/paid".into(),
            order_id: "ord_1".into(),
            status: OrderStatus::Paid,
            previous_status: None,
            checkout_session_id: session.map(str::to_owned),
            payment_intent_id: Some("pi_1".into()),
            amount_total: Some(4200),
            currency: Some("eur".into()),
            customer_email: None,
            livemode: false,
            event_id: "evt_1".into(),
            payment_method: PaymentMethod::Stripe,
            occurred_at: "2026-01-01T00:00:00Z".into(),
            account: None,
            line_items: None,
            detail: None,
        }
    }

    fn item(n: u64) -> LineItem {
        LineItem {
            price_id: Some(format!("price_{n}")),
            product_id: Some(format!("prod_{n}")),
            description: Some(format!("Item {n}")),
            quantity: Some(n),
            amount_total: 100 * n as i64,
            currency: "eur".into(),
        }
    }

    #[test]
    fn only_order_paid_of_a_checkout_order_waits() {
        assert_eq!(paid(Some("cs_1")).line_items_session(), Some("cs_1"));
        assert_eq!(paid(None).line_items_session(), None);
        for status in OrderStatus::ALL {
            let mut m = paid(Some("cs_1"));
            m.message_type = status.into();
            m.status = status;
            let waits = status == OrderStatus::Paid;
            assert_eq!(m.line_items_session().is_some(), waits, "{status}");
        }
    }

    #[test]
    fn without_line_items_the_member_is_absent() {
        let json: serde_json::Value =
            serde_json::from_slice(&paid(Some("cs_1")).to_json()).unwrap();
        assert!(json.get("line_items").is_none(), "{json}");
    }

    #[test]
    fn enriching_adds_the_items_in_the_contract_shape() {
        let body = with_line_items(&paid(Some("cs_1")).to_json(), vec![item(2)]).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json["line_items"],
            serde_json::json!([{"price_id": "price_2", "product_id": "prod_2",
                "description": "Item 2", "quantity": 2, "amount_total": 200, "currency": "eur"}])
        );
        assert_eq!(json["message_id"], "ord_1/paid");
    }

    #[test]
    fn only_a_waiting_message_is_enriched() {
        let err = with_line_items(&paid(None).to_json(), vec![]).unwrap_err();
        assert!(matches!(err, EnrichError::DoesNotWait(ref id) if id == "ord_1/paid"));
        let err = with_line_items(b"{\"not\":\"a message\"}", vec![]).unwrap_err();
        assert!(matches!(err, EnrichError::NotAMessage(_)));
    }

    #[test]
    fn retries_wait_longer_each_time_up_to_a_bound() {
        assert_eq!(retry_delay(0), FIRST_RETRY);
        assert_eq!(retry_delay(1), FIRST_RETRY);
        assert_eq!(retry_delay(2), FIRST_RETRY * 2);
        assert_eq!(retry_delay(3), FIRST_RETRY * 4);
        assert_eq!(retry_delay(9), MAX_RETRY);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY);
    }

    proptest! {
        #[test]
        fn delays_never_shrink(a in 0u32..100, b in 0u32..100) {
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(retry_delay(lo) <= retry_delay(hi));
            prop_assert!(retry_delay(hi) <= MAX_RETRY);
        }

        /// Enriching changes nothing but `line_items`, and doing it again
        /// (a second fetch after a lost lease) gives the same message.
        #[test]
        fn enriching_changes_only_the_items(
            order in "[a-z0-9_]{1,20}",
            session in "cs_[a-zA-Z0-9]{1,20}",
            email in proptest::option::of("[a-z]{1,8}@example\\.com"),
            amount in proptest::option::of(0i64..1_000_000),
            n in 0u64..120,
        ) {
            let mut m = paid(Some(&session));
            m.order_id = order.clone();
            m.message_id = OrderMessage::message_id(&order, OrderStatus::Paid);
            m.customer_email = email;
            m.amount_total = amount;
            let items: Vec<LineItem> = (1..=n).map(item).collect();
            let once = with_line_items(&m.to_json(), items.clone()).unwrap();
            let twice = with_line_items(&once, items.clone()).unwrap();
            prop_assert_eq!(&once, &twice);
            let read: OrderMessage = serde_json::from_slice(&once).unwrap();
            let mut want = m.clone();
            want.line_items = Some(items);
            prop_assert_eq!(read, want);
        }
    }
}
