//! Our own realistic Stripe events, built by `fulfillment_core::sample` (the
//! same builder `fulfillment send-event` uses), signed at the current time.

use fulfillment_core::sample::{SampleSpec, event};

/// A Checkout Session event of `event_type` for `order_id`.
pub fn session(
    event_id: &str,
    event_type: &str,
    order_id: &str,
    payment_status: &str,
    payment_intent: Option<&str>,
) -> Vec<u8> {
    let spec = SampleSpec {
        event_id,
        order_id,
        payment_intent_id: payment_intent,
        payment_status,
        order_in_metadata: false,
        created: crate::unix_now(),
    };
    event(event_type, &spec).expect("a sample type")
}

/// `payment_intent.succeeded`, naming its order in metadata or not.
pub fn payment_intent_succeeded(
    event_id: &str,
    payment_intent: &str,
    order_id: Option<&str>,
) -> Vec<u8> {
    let spec = SampleSpec {
        event_id,
        order_id: order_id.unwrap_or(""),
        payment_intent_id: Some(payment_intent),
        payment_status: "paid",
        order_in_metadata: order_id.is_some(),
        created: crate::unix_now(),
    };
    event("payment_intent.succeeded", &spec).expect("a sample type")
}

/// A `checkout.session.completed` for `order_id` with `payment_status`, its
/// PaymentIntent `pi_{event_id}`.
pub fn checkout_completed(event_id: &str, order_id: &str, payment_status: &str) -> Vec<u8> {
    let pi = format!("pi_{event_id}");
    session(
        event_id,
        "checkout.session.completed",
        order_id,
        payment_status,
        Some(&pi),
    )
}

/// A lifecycle event (contract 8.6) about PaymentIntent `payment_intent`:
/// `payment_intent.*` events name `order` in metadata when given; charges and
/// disputes name no order (they are found through the PaymentIntent).
pub fn lifecycle(
    event_id: &str,
    event_type: &str,
    payment_intent: &str,
    order: Option<&str>,
    lifecycle: &fulfillment_core::sample::LifecycleSpec,
) -> Vec<u8> {
    let spec = SampleSpec {
        event_id,
        order_id: order.unwrap_or(""),
        payment_intent_id: Some(payment_intent),
        payment_status: "paid",
        order_in_metadata: order.is_some(),
        created: crate::unix_now(),
    };
    fulfillment_core::sample::event_with(event_type, &spec, lifecycle).expect("a sample type")
}

/// A custom-payment report body for `order_id` (see
/// `fulfillment_core::sample::custom_payment`), completed now.
pub fn custom_payment(report_id: &str, order_id: &str, guaranteed: bool) -> Vec<u8> {
    let outcome = if guaranteed {
        fulfillment_core::CustomOutcome::Guaranteed
    } else {
        fulfillment_core::CustomOutcome::Failed
    };
    fulfillment_core::sample::custom_payment(report_id, order_id, outcome, crate::unix_now())
        .to_json()
}
