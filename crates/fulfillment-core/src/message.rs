use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::event::OrderEvent;
use crate::lifecycle::{DisputeStatus, Note, RefundStatus};
use crate::line_items::LineItem;
use crate::order::{Order, Transition};
use crate::payment::PaymentMethod;
use crate::status::OrderStatus;

/// Kind of downstream message: one per status, and one per lifecycle fact
/// (contract 8.6). Serialised as its routing key.
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
    #[serde(rename = "order.canceled")]
    OrderCanceled,
    #[serde(rename = "order.payment_attempt_failed")]
    OrderPaymentAttemptFailed,
    #[serde(rename = "order.refunded")]
    OrderRefunded,
    #[serde(rename = "order.disputed")]
    OrderDisputed,
    #[serde(rename = "order.dispute_closed")]
    OrderDisputeClosed,
}

impl MessageType {
    pub const fn routing_key(self) -> &'static str {
        match self {
            MessageType::OrderPaid => "order.paid",
            MessageType::OrderAwaitingPayment => "order.awaiting_payment",
            MessageType::OrderPaymentFailed => "order.payment_failed",
            MessageType::OrderExpired => "order.expired",
            MessageType::OrderCanceled => "order.canceled",
            MessageType::OrderPaymentAttemptFailed => "order.payment_attempt_failed",
            MessageType::OrderRefunded => "order.refunded",
            MessageType::OrderDisputed => "order.disputed",
            MessageType::OrderDisputeClosed => "order.dispute_closed",
        }
    }

    /// The status a status message announces; `None` for the lifecycle messages,
    /// which announce a fact beside the status.
    pub const fn status(self) -> Option<OrderStatus> {
        Some(match self {
            MessageType::OrderPaid => OrderStatus::Paid,
            MessageType::OrderAwaitingPayment => OrderStatus::AwaitingPayment,
            MessageType::OrderPaymentFailed => OrderStatus::PaymentFailed,
            MessageType::OrderExpired => OrderStatus::Expired,
            MessageType::OrderCanceled => OrderStatus::Canceled,
            MessageType::OrderPaymentAttemptFailed
            | MessageType::OrderRefunded
            | MessageType::OrderDisputed
            | MessageType::OrderDisputeClosed => return None,
        })
    }
}

impl From<OrderStatus> for MessageType {
    fn from(status: OrderStatus) -> Self {
        match status {
            OrderStatus::Paid => MessageType::OrderPaid,
            OrderStatus::AwaitingPayment => MessageType::OrderAwaitingPayment,
            OrderStatus::PaymentFailed => MessageType::OrderPaymentFailed,
            OrderStatus::Expired => MessageType::OrderExpired,
            OrderStatus::Canceled => MessageType::OrderCanceled,
        }
    }
}

/// The downstream message announcing that an order entered `status`, or (a
/// lifecycle message, [`OrderMessage::detail`] set) what happened beside it.
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
    /// What a lifecycle message adds, as members of the body; `None` (nothing
    /// added) for a status message.
    #[serde(flatten)]
    pub detail: Option<Detail>,
}

/// The members a lifecycle message adds to the common ones. Untagged: the
/// members themselves tell which (each variant has members the others lack),
/// and `type` says the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Detail {
    Dispute(DisputeDetail),
    Refund(RefundDetail),
    AttemptFailed(AttemptDetail),
}

/// `order.payment_attempt_failed`: from the PaymentIntent's `last_payment_error`.
/// The three members are always there, `null` when Stripe did not say.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptDetail {
    // `deserialize_with` makes them required (present, maybe null), so a status
    // message never reads back as this variant.
    #[serde(deserialize_with = "nullable")]
    pub failure_code: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub decline_code: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub failure_message: Option<String>,
}

/// `order.refunded`: the order's refunded total so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundDetail {
    pub amount_refunded: i64,
    pub refund_status: RefundStatus,
}

/// `order.disputed` and `order.dispute_closed`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeDetail {
    pub dispute_id: String,
    pub dispute_status: DisputeStatus,
    pub dispute_reason: Option<String>,
    pub dispute_amount: Option<i64>,
    pub dispute_currency: Option<String>,
    pub charge_id: Option<String>,
    /// Stripe's deadline for evidence (`evidence_details.due_by`), RFC 3339 UTC.
    pub evidence_due_by: Option<String>,
}

fn nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
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
            detail: None,
            line_items: None,
        }
    }

    /// Announces `note`, recorded on `order` (already updated) by `event`;
    /// `before` is the order's status before the event (`None`: new order).
    pub fn for_note(
        order: &Order,
        before: Option<OrderStatus>,
        note: &Note,
        event: &OrderEvent,
        now: OffsetDateTime,
    ) -> Self {
        let id = |part: &str, kind: &str| Self::note_id(&order.order_id, part, kind);
        let (message_type, message_id, detail) = match note {
            Note::AttemptFailed { error, .. } => (
                MessageType::OrderPaymentAttemptFailed,
                id(&event.id, "payment_attempt_failed"),
                Detail::AttemptFailed(AttemptDetail {
                    failure_code: error.failure_code.clone(),
                    decline_code: error.decline_code.clone(),
                    failure_message: error.failure_message.clone(),
                }),
            ),
            Note::Refunded(refund) => (
                MessageType::OrderRefunded,
                id(&refund.amount_refunded.to_string(), "refunded"),
                Detail::Refund(RefundDetail {
                    amount_refunded: refund.amount_refunded,
                    refund_status: refund.status,
                }),
            ),
            Note::Dispute {
                dispute_id,
                dispute,
            } => (
                match dispute.status {
                    DisputeStatus::Open => MessageType::OrderDisputed,
                    DisputeStatus::Won | DisputeStatus::Lost => MessageType::OrderDisputeClosed,
                },
                id(dispute_id, &format!("dispute_{}", dispute.status)),
                Detail::Dispute(DisputeDetail {
                    dispute_id: dispute_id.clone(),
                    dispute_status: dispute.status,
                    dispute_reason: dispute.reason.clone(),
                    dispute_amount: dispute.amount,
                    dispute_currency: dispute.currency.clone(),
                    charge_id: dispute.charge_id.clone(),
                    evidence_due_by: dispute.evidence_due_by.and_then(unix_rfc3339),
                }),
            ),
        };
        OrderMessage {
            message_type,
            message_id,
            order_id: order.order_id.clone(),
            status: order.status,
            previous_status: before,
            checkout_session_id: order.checkout_session_id.clone(),
            payment_intent_id: order.payment_intent_id.clone(),
            amount_total: order.amount_total,
            currency: order.currency.clone(),
            customer_email: order.customer_email.clone(),
            livemode: order.livemode,
            event_id: event.id.clone(),
            payment_method: event.kind.payment_method(),
            account: order.account.clone(),
            occurred_at: rfc3339(now),
            line_items: None,
            detail: Some(detail),
        }
    }

    /// A status message (`order.paid`, ...), as opposed to a lifecycle one.
    pub fn is_status(&self) -> bool {
        self.message_type.status().is_some()
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

    /// The id of a lifecycle message: `"{order id}/{part}/{kind}"`, e.g.
    /// `ord_1/evt_123/payment_attempt_failed`, `ord_1/1500/refunded`,
    /// `ord_1/du_9/dispute_open`. Unique per (order, part, kind), stable, and
    /// at most [`MAX_MESSAGE_ID_BYTES`]:
    ///
    /// - verbatim when it fits and `part` holds no `/`: the last two segments
    ///   are then `part` and `kind`, and the rest is the order id, so two
    ///   verbatim ids are equal only if all three are;
    /// - otherwise the order id's first bytes (at most 140, cut at a character
    ///   boundary), `~` and the SHA-256 of an unambiguous (length-prefixed)
    ///   encoding of all three: at most 205 bytes, equal only if the hashes are.
    ///
    /// A verbatim one ends with `/{kind}`, a hashed one with 64 hex digits, a
    /// status message id ([`OrderMessage::message_id`]) with `/{status}`, an
    /// `order.payment_recorded` one with `/payment_recorded`. The kinds are no
    /// status, not `payment_recorded` and not hex, so the forms never meet.
    pub fn note_id(order_id: &str, part: &str, kind: &str) -> String {
        let natural = format!("{order_id}/{part}/{kind}");
        if natural.len() <= MAX_MESSAGE_ID_BYTES && !part.contains('/') {
            return natural;
        }
        let mut hasher = Sha256::new();
        for field in [kind, order_id, part] {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field.as_bytes());
        }
        format!("{}~{}", prefix(order_id), hex::encode(hasher.finalize()))
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
    let digest = Sha256::digest(order_id.as_bytes());
    Cow::Owned(format!("{}~{}", prefix(order_id), hex::encode(digest)))
}

/// The readable front of a long order id, cut at a character boundary.
fn prefix(order_id: &str) -> &str {
    let mut cut = HASHED_PREFIX_MAX.min(order_id.len());
    while !order_id.is_char_boundary(cut) {
        cut -= 1;
    }
    &order_id[..cut]
}

/// Unix seconds as RFC 3339 UTC; `None` out of `time`'s range.
fn unix_rfc3339(seconds: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .map(rfc3339)
}

/// RFC 3339 in UTC. Formatting only fails before year 0, which no clock reports; the
/// fallback keeps this function total instead of panicking in the worker.
pub(crate) fn rfc3339(now: OffsetDateTime) -> String {
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
            assert_eq!(message_type.status(), Some(status));
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
