//! Builders shared by the integration tests.
#![allow(dead_code)]

use fulfillment_core::{EventKind, OrderEvent, PaymentIntentFacts, PaymentStatus, SessionFacts};
use time::OffsetDateTime;
use time::macros::datetime;

pub const NOW: OffsetDateTime = datetime!(2025-05-01 12:00:00 UTC);

pub fn session(order_id: &str, payment_status: PaymentStatus) -> SessionFacts {
    SessionFacts {
        session_id: format!("cs_test_{order_id}"),
        order_id: order_id.to_owned(),
        payment_intent_id: Some(format!("pi_{order_id}")),
        payment_status,
        amount_total: Some(2000),
        currency: Some("usd".to_owned()),
        customer_email: Some("a@example.com".to_owned()),
        livemode: false,
    }
}

pub fn intent(payment_intent_id: &str, order_id: Option<&str>) -> PaymentIntentFacts {
    PaymentIntentFacts {
        payment_intent_id: payment_intent_id.to_owned(),
        order_id: order_id.map(str::to_owned),
        amount: Some(2000),
        currency: Some("usd".to_owned()),
        receipt_email: Some("receipt@example.com".to_owned()),
        livemode: false,
    }
}

pub fn event(id: &str, kind: EventKind) -> OrderEvent {
    OrderEvent {
        id: id.to_owned(),
        event_type: kind.event_type().to_owned(),
        created: 1_700_000_000,
        account: None,
        kind,
    }
}

pub fn completed(id: &str, order_id: &str, payment_status: PaymentStatus) -> OrderEvent {
    event(
        id,
        EventKind::CheckoutSessionCompleted(session(order_id, payment_status)),
    )
}

pub fn expired(id: &str, order_id: &str) -> OrderEvent {
    event(
        id,
        EventKind::CheckoutSessionExpired(session(order_id, PaymentStatus::Unpaid)),
    )
}

pub fn async_succeeded(id: &str, order_id: &str) -> OrderEvent {
    event(
        id,
        EventKind::CheckoutSessionAsyncPaymentSucceeded(session(order_id, PaymentStatus::Paid)),
    )
}

pub fn async_failed(id: &str, order_id: &str) -> OrderEvent {
    event(
        id,
        EventKind::CheckoutSessionAsyncPaymentFailed(session(order_id, PaymentStatus::Unpaid)),
    )
}

pub fn intent_succeeded(id: &str, payment_intent_id: &str, order_id: Option<&str>) -> OrderEvent {
    event(
        id,
        EventKind::PaymentIntentSucceeded(intent(payment_intent_id, order_id)),
    )
}
