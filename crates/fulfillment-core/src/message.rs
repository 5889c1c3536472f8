use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::event::OrderEvent;
use crate::order::{Order, Transition};
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
    /// The Stripe event that caused the transition.
    pub event_id: String,
    /// RFC 3339, UTC.
    pub occurred_at: String,
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
            event_id: event.id.clone(),
            occurred_at: rfc3339(now),
        }
    }

    pub fn routing_key(&self) -> &'static str {
        self.message_type.routing_key()
    }

    /// Stable and unique because an order enters each status at most once.
    pub fn message_id(order_id: &str, status: OrderStatus) -> String {
        format!("{order_id}/{status}")
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Only strings, integers, booleans and unit enums: serialisation cannot fail.
        serde_json::to_vec(self).expect("OrderMessage serialises to JSON")
    }
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
