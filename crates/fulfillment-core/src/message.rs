use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::event::OrderEvent;
use crate::line_items::LineItem;
use crate::order::{Order, Transition};
use crate::payment::PaymentMethod;
use crate::status::OrderStatus;

/// Kind of downstream message; one per status. Serialised as its routing key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MessageType {
    #[serde(rename = "order.paid")]
    OrderPaid,
    #[serde(rename = "order.awaiting_payment")]
    OrderAwaitingPayment,
    #[serde(rename = "order.payment_failed")]
    OrderPaymentFailed,
    #[serde(rename = "order.expired")]
    OrderExpired,
}

impl MessageType {
    pub const fn routing_key(self) -> &'static str {
        match self {
            MessageType::OrderPaid => "order.paid",
            MessageType::OrderAwaitingPayment => "order.awaiting_payment",
            MessageType::OrderPaymentFailed => "order.payment_failed",
            MessageType::OrderExpired => "order.expired",
        }
    }

    pub const fn status(self) -> OrderStatus {
        match self {
            MessageType::OrderPaid => OrderStatus::Paid,
            MessageType::OrderAwaitingPayment => OrderStatus::AwaitingPayment,
            MessageType::OrderPaymentFailed => OrderStatus::PaymentFailed,
            MessageType::OrderExpired => OrderStatus::Expired,
        }
    }
}

impl From<OrderStatus> for MessageType {
    fn from(status: OrderStatus) -> Self {
        match status {
            OrderStatus::Paid => MessageType::OrderPaid,
            OrderStatus::AwaitingPayment => MessageType::OrderAwaitingPayment,
            OrderStatus::PaymentFailed => MessageType::OrderPaymentFailed,
            OrderStatus::Expired => MessageType::OrderExpired,
        }
    }
}

/// The downstream message announcing that an order entered `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderMessage {
    #[serde(rename = "type")]
    pub message_type: MessageType,
    pub message_id: String,
    pub order_id: String,
    pub status: OrderStatus,
    /// `None` (JSON `null`) when the order is new.
    pub previous_status: Option<OrderStatus>,
    pub checkout_session_id: Option<String>,
    pub payment_intent_id: Option<String>,
    pub amount_total: Option<i64>,
    pub currency: Option<String>,
    pub customer_email: Option<String>,
    pub livemode: bool,
    /// The order's Connect account (`null` for the platform's own orders):
    /// act for it (`Stripe-Account`) when asking Stripe about the order.
    pub account: Option<String>,
    /// The Stripe event (or `custom_payment:{report id}`) that caused the transition.
    pub event_id: String,
    /// How the payment behind the transition was made (contract 8.3): the
    /// causing event's, so an `order.paid` says what paid the order.
    pub payment_method: PaymentMethod,
    /// RFC 3339, UTC.
    pub occurred_at: String,
    /// What was bought (contract 8.3): on `order.paid` of a Checkout order
    /// when `STRIPE_API_KEY` is set, fetched from Stripe before the message
    /// is published (`line_items.rs`). Absent from the JSON otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_items: Option<Vec<LineItem>>,
}

impl OrderMessage {
    /// Describes `transition` of `order` (whose details are already merged).
    pub fn for_transition(
        order: &Order,
        transition: Transition,
        event: &OrderEvent,
        now: OffsetDateTime,
    ) -> Self {
        OrderMessage {
            message_type: transition.to.into(),
            message_id: Self::message_id(&order.order_id, transition.to),
            order_id: order.order_id.clone(),
            status: transition.to,
            previous_status: transition.from,
            checkout_session_id: order.checkout_session_id.clone(),
            payment_intent_id: order.payment_intent_id.clone(),
            amount_total: order.amount_total,
            currency: order.currency.clone(),
            customer_email: order.customer_email.clone(),
            livemode: order.livemode,
            account: order.account.clone(),
            event_id: event.id.clone(),
            payment_method: event.kind.payment_method(),
            occurred_at: rfc3339(now),
            line_items: None,
        }
    }

    pub fn routing_key(&self) -> &'static str {
        self.message_type.routing_key()
    }

    /// `"{order key}/{status}"`: stable (a pure function of the order id and the
    /// status) and unique, because an order enters each status at most once. The
    /// order key is the order id itself when it is at most [`VERBATIM_ORDER_ID_MAX`]
    /// bytes, else a readable prefix plus the SHA-256 of the whole id (see
    /// [`order_key`]), so the result always fits an AMQP short string
    /// ([`MAX_MESSAGE_ID_BYTES`]) and is never cut: two long ids sharing their
    /// first few hundred characters still get different message ids.
    pub fn message_id(order_id: &str, status: OrderStatus) -> String {
        format!("{}/{status}", order_key(order_id))
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Only strings, integers, booleans and enums of them: serialisation cannot fail.
        serde_json::to_vec(self).expect("OrderMessage serialises to JSON")
    }
}

/// AMQP short strings (the `message_id` property) hold at most 255 bytes.
pub const MAX_MESSAGE_ID_BYTES: usize = 255;
/// Order ids up to this many bytes appear verbatim in message ids.
pub const VERBATIM_ORDER_ID_MAX: usize = 200;
/// Bytes of a longer order id kept in front of its hash, for people reading it.
const HASHED_PREFIX_MAX: usize = 140;

/// The order's part of its message ids.
///
/// Why this is injective: a verbatim key is at most 200 bytes; a hashed key is a
/// prefix of 137 to 140 bytes (cut at a character boundary), `~` and 64 hex digits,
/// so 202 to 205 bytes: the two kinds never have the same length. Two hashed keys
/// are equal only if their last 64 characters, the SHA-256 of the whole id, are.
/// With the longest status (16 bytes) a message id is at most 222 bytes. Statuses
/// hold no `/`, so the last `/` of a message id separates key and status.
fn order_key(order_id: &str) -> Cow<'_, str> {
    if order_id.len() <= VERBATIM_ORDER_ID_MAX {
        return Cow::Borrowed(order_id);
    }
    let mut cut = HASHED_PREFIX_MAX;
    while !order_id.is_char_boundary(cut) {
        cut -= 1;
    }
    let digest = Sha256::digest(order_id.as_bytes());
    Cow::Owned(format!("{}~{}", &order_id[..cut], hex::encode(digest)))
}

/// RFC 3339 in UTC. Formatting only fails before year 0, which no clock reports; the
/// fallback keeps this function total instead of panicking in the worker.
fn rfc3339(now: OffsetDateTime) -> String {
    now.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "0000-01-01T00:00:00Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn message_type_matches_status() {
        for status in OrderStatus::ALL {
            let message_type = MessageType::from(status);
            assert_eq!(message_type.status(), status);
            assert_eq!(message_type.routing_key(), format!("order.{status}"));
            let json = serde_json::to_string(&message_type).unwrap();
            assert_eq!(json, format!("\"order.{status}\""));
        }
    }

    #[test]
    fn message_id_is_order_slash_status() {
        assert_eq!(
            OrderMessage::message_id("ord_1", OrderStatus::Paid),
            "ord_1/paid"
        );
        assert_eq!(
            OrderMessage::message_id("ord_1", OrderStatus::AwaitingPayment),
            "ord_1/awaiting_payment"
        );
    }

    #[test]
    fn long_order_ids_are_hashed_not_cut() {
        let shared = "o".repeat(299);
        let a = OrderMessage::message_id(&format!("{shared}a"), OrderStatus::Paid);
        let b = OrderMessage::message_id(&format!("{shared}b"), OrderStatus::Paid);
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert!(id.len() <= MAX_MESSAGE_ID_BYTES, "{} bytes", id.len());
            assert!(id.starts_with(&shared[..HASHED_PREFIX_MAX]));
            assert!(id.ends_with("/paid"));
        }
    }

    #[test]
    fn the_boundary_between_verbatim_and_hashed() {
        let at = "x".repeat(VERBATIM_ORDER_ID_MAX);
        let over = "x".repeat(VERBATIM_ORDER_ID_MAX + 1);
        assert_eq!(
            OrderMessage::message_id(&at, OrderStatus::Paid),
            format!("{at}/paid")
        );
        let hashed = OrderMessage::message_id(&over, OrderStatus::Paid);
        assert_eq!(hashed.len(), 140 + 1 + 64 + "/paid".len());
    }

    #[test]
    fn a_short_id_that_imitates_a_hashed_key_is_hashed_itself() {
        let long = "L".repeat(500);
        let key = order_key(&long).into_owned();
        // Someone names an order exactly like the hashed key of another.
        assert!(key.len() > VERBATIM_ORDER_ID_MAX);
        assert_ne!(order_key(&key), order_key(&long));
    }

    #[test]
    fn the_prefix_is_cut_at_a_character_boundary() {
        for lead in 0..4 {
            let id = format!("{}{}", "a".repeat(lead), "€".repeat(200));
            let message_id = OrderMessage::message_id(&id, OrderStatus::AwaitingPayment);
            assert!(message_id.len() <= MAX_MESSAGE_ID_BYTES);
            assert!(message_id.ends_with("/awaiting_payment"));
        }
    }

    #[test]
    fn occurred_at_is_utc_rfc3339() {
        assert_eq!(
            rfc3339(datetime!(2025-05-01 14:30:00 +02:00)),
            "2025-05-01T12:30:00Z"
        );
        assert_eq!(
            rfc3339(datetime!(2025-05-01 12:30:00.25 UTC)),
            "2025-05-01T12:30:00.25Z"
        );
        assert_eq!(
            rfc3339(datetime!(-0001-01-01 00:00 UTC)),
            "0000-01-01T00:00:00Z"
        );
    }
}
