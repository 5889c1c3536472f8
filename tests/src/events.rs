//! Our own realistic Stripe events (shaped like API version 2025-04-30.basil).

use serde_json::{Value, json};

/// A Checkout Session event of `event_type` for `order_id`.
pub fn session(
    event_id: &str,
    event_type: &str,
    order_id: &str,
    payment_status: &str,
    payment_intent: Option<&str>,
) -> Vec<u8> {
    let status = match event_type {
        "checkout.session.expired" => "expired",
        _ => "complete",
    };
    envelope(
        event_id,
        event_type,
        json!({
            "id": format!("cs_test_{order_id}"),
            "object": "checkout.session",
            "client_reference_id": order_id,
            "metadata": {},
            "mode": "payment",
            "payment_intent": payment_intent,
            "payment_status": payment_status,
            "status": status,
            "amount_total": 4200,
            "currency": "eur",
            "customer_details": { "email": "buyer@example.com", "name": "Test Buyer" },
            "customer_email": null,
            "livemode": false,
            "url": null
        }),
    )
}

/// `payment_intent.succeeded`, naming its order in metadata or not.
pub fn payment_intent_succeeded(
    event_id: &str,
    payment_intent: &str,
    order_id: Option<&str>,
) -> Vec<u8> {
    let metadata = match order_id {
        Some(id) => json!({ "order_id": id }),
        None => json!({}),
    };
    envelope(
        event_id,
        "payment_intent.succeeded",
        json!({
            "id": payment_intent,
            "object": "payment_intent",
            "amount": 4200,
            "amount_received": 4200,
            "currency": "eur",
            "metadata": metadata,
            "receipt_email": null,
            "status": "succeeded",
            "livemode": false
        }),
    )
}

fn envelope(event_id: &str, event_type: &str, object: Value) -> Vec<u8> {
    json!({
        "id": event_id,
        "object": "event",
        "api_version": "2025-04-30.basil",
        "created": crate::unix_now(),
        "data": { "object": object },
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": event_type
    })
    .to_string()
    .into_bytes()
}
