//! Realistic sample Stripe events (shaped like API version 2025-04-30.basil),
//! for `fulfillment send-event`, demos and tests. Pure: the caller passes ids
//! and the `created` time.

use serde_json::{Value, json};

/// Event types [`event`] can build: the handled ones and a few that are not.
pub const SAMPLE_TYPES: &[&str] = &[
    "checkout.session.completed",
    "checkout.session.expired",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "payment_intent.succeeded",
    "customer.created",
    "invoice.paid",
    "charge.succeeded",
];

/// What a sample event is about.
#[derive(Clone, Debug)]
pub struct SampleSpec<'a> {
    pub event_id: &'a str,
    pub order_id: &'a str,
    pub payment_intent_id: Option<&'a str>,
    /// For `checkout.session.completed`: `paid`, `unpaid` or `no_payment_required`.
    pub payment_status: &'a str,
    /// For `payment_intent.succeeded`: name the order in `metadata.order_id`.
    pub order_in_metadata: bool,
    pub created: i64,
}

/// Builds a sample event of `event_type`; None for a type not in [`SAMPLE_TYPES`].
pub fn event(event_type: &str, spec: &SampleSpec) -> Option<Vec<u8>> {
    let object = match event_type {
        "checkout.session.completed" => checkout_session(spec, "complete", spec.payment_status),
        "checkout.session.expired" => checkout_session(spec, "expired", "unpaid"),
        "checkout.session.async_payment_succeeded" => checkout_session(spec, "complete", "paid"),
        "checkout.session.async_payment_failed" => checkout_session(spec, "complete", "unpaid"),
        "payment_intent.succeeded" => payment_intent(spec),
        "customer.created" => json!({
            "id": "cus_sample", "object": "customer", "email": "buyer@example.com", "livemode": false
        }),
        "invoice.paid" => json!({
            "id": "in_sample", "object": "invoice", "amount_paid": 4200, "currency": "eur",
            "status": "paid", "livemode": false
        }),
        "charge.succeeded" => json!({
            "id": "ch_sample", "object": "charge", "amount": 4200, "currency": "eur",
            "payment_intent": spec.payment_intent_id, "status": "succeeded", "livemode": false
        }),
        _ => return None,
    };
    Some(envelope(spec, event_type, object))
}

fn checkout_session(spec: &SampleSpec, status: &str, payment_status: &str) -> Value {
    json!({
        "id": format!("cs_test_{}", spec.order_id),
        "object": "checkout.session",
        "amount_subtotal": 4200,
        "amount_total": 4200,
        "client_reference_id": spec.order_id,
        "currency": "eur",
        "customer": null,
        "customer_details": { "email": "buyer@example.com", "name": "Sample Buyer", "phone": null },
        "customer_email": null,
        "livemode": false,
        "metadata": {},
        "mode": "payment",
        "payment_intent": spec.payment_intent_id,
        "payment_method_types": ["card", "sepa_debit"],
        "payment_status": payment_status,
        "status": status,
        "success_url": "https://shop.example.com/success",
        "url": null
    })
}

fn payment_intent(spec: &SampleSpec) -> Value {
    let metadata = if spec.order_in_metadata {
        json!({ "order_id": spec.order_id })
    } else {
        json!({})
    };
    json!({
        "id": spec.payment_intent_id.unwrap_or("pi_sample"),
        "object": "payment_intent",
        "amount": 4200,
        "amount_received": 4200,
        "currency": "eur",
        "livemode": false,
        "metadata": metadata,
        "payment_method_types": ["card"],
        "receipt_email": null,
        "status": "succeeded"
    })
}

fn envelope(spec: &SampleSpec, event_type: &str, object: Value) -> Vec<u8> {
    json!({
        "id": spec.event_id,
        "object": "event",
        "api_version": "2025-04-30.basil",
        "created": spec.created,
        "data": { "object": object },
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": event_type
    })
    .to_string()
    .into_bytes()
}

/// A realistic custom-payment report (contract 8.2), as a merchant's backend
/// sends it after its own processor completed the payment at `completed_at`
/// (a minute after it started); for `send-custom-payment` and tests.
pub fn custom_payment(
    report_id: &str,
    order_id: &str,
    outcome: crate::CustomOutcome,
    completed_at: i64,
) -> crate::CustomPaymentReport {
    crate::CustomPaymentReport {
        id: report_id.to_owned(),
        order_id: order_id.to_owned(),
        outcome,
        amount: 4200,
        currency: "eur".to_owned(),
        custom_payment_method_type: "cpmt_sample".to_owned(),
        payment_reference: format!("psp_{report_id}"),
        initiated_at: completed_at - 60,
        completed_at,
        customer_email: Some("buyer@example.com".to_owned()),
        stripe_customer: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OrderStatus, Parsed, parse_event};

    fn spec<'a>(payment_status: &'a str, order_in_metadata: bool) -> SampleSpec<'a> {
        SampleSpec {
            event_id: "evt_sample",
            order_id: "ord_sample",
            payment_intent_id: Some("pi_sample"),
            payment_status,
            order_in_metadata,
            created: 1_700_000_000,
        }
    }

    #[test]
    fn every_sample_parses_and_handled_ones_target_the_right_status() {
        let expected = [
            ("checkout.session.completed", Some(OrderStatus::Paid)),
            ("checkout.session.expired", Some(OrderStatus::Expired)),
            (
                "checkout.session.async_payment_succeeded",
                Some(OrderStatus::Paid),
            ),
            (
                "checkout.session.async_payment_failed",
                Some(OrderStatus::PaymentFailed),
            ),
            ("payment_intent.succeeded", Some(OrderStatus::Paid)),
            ("customer.created", None),
            ("invoice.paid", None),
            ("charge.succeeded", None),
        ];
        assert_eq!(expected.len(), SAMPLE_TYPES.len());
        for (event_type, target) in expected {
            let body = event(event_type, &spec("paid", true)).unwrap();
            match (parse_event(&body).unwrap(), target) {
                (Parsed::Handled(e), Some(t)) => {
                    assert_eq!(e.target_status(), t, "{event_type}");
                    assert_eq!(e.order_id(), Some("ord_sample"), "{event_type}");
                }
                (
                    Parsed::Unhandled {
                        event_type: got, ..
                    },
                    None,
                ) => assert_eq!(got, event_type),
                (other, _) => panic!("{event_type}: {other:?}"),
            }
        }
    }

    #[test]
    fn unpaid_completion_awaits_and_bare_payment_intents_name_no_order() {
        let body = event("checkout.session.completed", &spec("unpaid", true)).unwrap();
        let Parsed::Handled(e) = parse_event(&body).unwrap() else {
            panic!()
        };
        assert_eq!(e.target_status(), OrderStatus::AwaitingPayment);
        let body = event("payment_intent.succeeded", &spec("paid", false)).unwrap();
        let Parsed::Handled(e) = parse_event(&body).unwrap() else {
            panic!()
        };
        assert_eq!(e.order_id(), None);
        assert!(event("nope.nope", &spec("paid", true)).is_none());
    }
}
