//! Realistic sample Stripe events (shaped like API version 2025-04-30.basil),
//! for `fulfillment send-event`, demos and tests. Pure: the caller passes ids
//! and the `created` time. The lifecycle types (contract 8.6) are shaped on
//! the real payloads in the shared fixtures (stripe-ruby-mock's and lago's
//! `payment_intent.*`, their charges) and Stripe's Dispute object.

use serde_json::{Value, json};

/// Event types [`event`] can build: the handled ones and a few that are not.
pub const SAMPLE_TYPES: &[&str] = &[
    "checkout.session.completed",
    "checkout.session.expired",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "payment_intent.succeeded",
    "payment_intent.processing",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.closed",
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

/// What the lifecycle samples vary. The default: a card declined as
/// `generic_decline`, a full refund of the 4200 charge, a dispute lost.
#[derive(Clone, Debug)]
pub struct LifecycleSpec<'a> {
    /// For `payment_intent.payment_failed`: `last_payment_error.decline_code`.
    pub decline_code: &'a str,
    /// For `charge.refunded`: the charge's `amount_refunded` so far (of 4200).
    pub amount_refunded: i64,
    /// For `charge.dispute.closed`: Stripe's status, `won` or `lost` (or
    /// `warning_closed`, `prevented`, `charge_refunded`).
    pub dispute_status: &'a str,
    /// For the dispute events; default `du_<PaymentIntent id>`.
    pub dispute_id: Option<&'a str>,
}

impl Default for LifecycleSpec<'_> {
    fn default() -> Self {
        LifecycleSpec {
            decline_code: "generic_decline",
            amount_refunded: AMOUNT,
            dispute_status: "lost",
            dispute_id: None,
        }
    }
}

/// Every sample charges this much (minor units, eur).
pub const AMOUNT: i64 = 4200;
/// Stripe gives a few days to a few weeks for dispute evidence; a week here.
const EVIDENCE_WINDOW_SECS: i64 = 7 * 86_400;

/// Builds a sample event of `event_type`; None for a type not in [`SAMPLE_TYPES`].
/// Lifecycle types get [`LifecycleSpec::default`].
pub fn event(event_type: &str, spec: &SampleSpec) -> Option<Vec<u8>> {
    event_with(event_type, spec, &LifecycleSpec::default())
}

/// [`event`], with the lifecycle types shaped by `lifecycle`.
pub fn event_with(
    event_type: &str,
    spec: &SampleSpec,
    lifecycle: &LifecycleSpec,
) -> Option<Vec<u8>> {
    let object = match event_type {
        "checkout.session.completed" => checkout_session(spec, "complete", spec.payment_status),
        "checkout.session.expired" => checkout_session(spec, "expired", "unpaid"),
        "checkout.session.async_payment_succeeded" => checkout_session(spec, "complete", "paid"),
        "checkout.session.async_payment_failed" => checkout_session(spec, "complete", "unpaid"),
        "payment_intent.succeeded" => payment_intent(spec),
        "payment_intent.processing" => intent_with(spec, "processing", 0, Value::Null),
        "payment_intent.payment_failed" => intent_with(
            spec,
            "requires_payment_method",
            0,
            declined(spec, lifecycle),
        ),
        "payment_intent.canceled" => intent_with(spec, "canceled", 0, Value::Null),
        "charge.refunded" => refunded_charge(spec, lifecycle.amount_refunded),
        "charge.dispute.created" => dispute(spec, lifecycle, "needs_response"),
        "charge.dispute.closed" => dispute(spec, lifecycle, lifecycle.dispute_status),
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

/// A PaymentIntent that has not succeeded (yet): nothing received.
fn intent_with(spec: &SampleSpec, status: &str, received: i64, error: Value) -> Value {
    let mut object = payment_intent(spec);
    object["status"] = json!(status);
    object["amount_received"] = json!(received);
    object["last_payment_error"] = error;
    if status == "canceled" {
        object["canceled_at"] = json!(spec.created);
        object["cancellation_reason"] = json!("abandoned");
    }
    object
}

fn pi_id<'a>(spec: &SampleSpec<'a>) -> &'a str {
    spec.payment_intent_id.unwrap_or("pi_sample")
}

fn charge_id(spec: &SampleSpec) -> String {
    format!("ch_{}", pi_id(spec).trim_start_matches("pi_"))
}

/// `last_payment_error` of a declined card, as in stripe-ruby-mock's fixture.
fn declined(spec: &SampleSpec, lifecycle: &LifecycleSpec) -> Value {
    json!({
        "charge": charge_id(spec),
        "code": "card_declined",
        "decline_code": lifecycle.decline_code,
        "doc_url": "https://stripe.com/docs/error-codes/card-declined",
        "message": "Your card was declined.",
        "payment_method": { "id": "pm_sample", "object": "payment_method", "type": "card" },
        "type": "card_error"
    })
}

fn refunded_charge(spec: &SampleSpec, amount_refunded: i64) -> Value {
    json!({
        "id": charge_id(spec),
        "object": "charge",
        "amount": AMOUNT,
        "amount_captured": AMOUNT,
        "amount_refunded": amount_refunded,
        "captured": true,
        "currency": "eur",
        "disputed": false,
        "livemode": false,
        "metadata": {},
        "paid": true,
        "payment_intent": pi_id(spec),
        "refunded": amount_refunded >= AMOUNT,
        "status": "succeeded"
    })
}

fn dispute(spec: &SampleSpec, lifecycle: &LifecycleSpec, status: &str) -> Value {
    let id = match lifecycle.dispute_id {
        Some(id) => id.to_owned(),
        None => format!("du_{}", pi_id(spec).trim_start_matches("pi_")),
    };
    json!({
        "id": id,
        "object": "dispute",
        "amount": AMOUNT,
        "balance_transactions": [],
        "charge": charge_id(spec),
        "created": spec.created,
        "currency": "eur",
        "evidence_details": {
            "due_by": spec.created + EVIDENCE_WINDOW_SECS,
            "has_evidence": false,
            "past_due": false,
            "submission_count": 0
        },
        "is_charge_refundable": false,
        "livemode": false,
        "metadata": {},
        "payment_intent": pi_id(spec),
        "reason": "fraudulent",
        "status": status
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
        use OrderStatus::*;
        // None: not handled; Some(None): handled, a fact beside the status.
        let expected = [
            ("checkout.session.completed", Some(Some(Paid))),
            ("checkout.session.expired", Some(Some(Expired))),
            ("checkout.session.async_payment_succeeded", Some(Some(Paid))),
            (
                "checkout.session.async_payment_failed",
                Some(Some(PaymentFailed)),
            ),
            ("payment_intent.succeeded", Some(Some(Paid))),
            ("payment_intent.processing", Some(Some(AwaitingPayment))),
            ("payment_intent.payment_failed", Some(Some(AwaitingPayment))),
            ("payment_intent.canceled", Some(Some(Canceled))),
            ("charge.refunded", Some(None)),
            ("charge.dispute.created", Some(None)),
            ("charge.dispute.closed", Some(None)),
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
                    assert_eq!(e.kind.payment_intent_id(), Some("pi_sample"));
                    if t.is_some() {
                        assert_eq!(e.order_id(), Some("ord_sample"), "{event_type}");
                    } else {
                        assert_eq!(
                            e.order_id(),
                            None,
                            "{event_type}: found by its PaymentIntent"
                        );
                    }
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
        assert_eq!(e.target_status(), Some(OrderStatus::AwaitingPayment));
        let body = event("payment_intent.succeeded", &spec("paid", false)).unwrap();
        let Parsed::Handled(e) = parse_event(&body).unwrap() else {
            panic!()
        };
        assert_eq!(e.order_id(), None);
        assert!(event("nope.nope", &spec("paid", true)).is_none());
    }

    #[test]
    fn lifecycle_samples_carry_what_send_event_was_asked_for() {
        use crate::{DisputeStatus, EventKind, RefundStatus};
        let parse = |event_type, lifecycle: &LifecycleSpec| {
            let body = event_with(event_type, &spec("paid", false), lifecycle).unwrap();
            match parse_event(&body).unwrap() {
                Parsed::Handled(e) => e.kind,
                other => panic!("{event_type}: {other:?}"),
            }
        };
        let asked = LifecycleSpec {
            decline_code: "insufficient_funds",
            amount_refunded: 1000,
            dispute_status: "won",
            dispute_id: Some("du_mine"),
        };
        let EventKind::PaymentIntentPaymentFailed(attempt) =
            parse("payment_intent.payment_failed", &asked)
        else {
            panic!()
        };
        assert_eq!(
            attempt.error.decline_code.as_deref(),
            Some("insufficient_funds")
        );
        assert_eq!(attempt.error.failure_code.as_deref(), Some("card_declined"));
        assert_eq!(
            attempt.intent.amount,
            Some(AMOUNT),
            "requested, not received"
        );
        let EventKind::ChargeRefunded(refund) = parse("charge.refunded", &asked) else {
            panic!()
        };
        assert_eq!(
            (refund.amount_refunded, refund.refund_status),
            (1000, RefundStatus::Partial)
        );
        let EventKind::ChargeRefunded(refund) = parse("charge.refunded", &LifecycleSpec::default())
        else {
            panic!()
        };
        assert_eq!(refund.refund_status, RefundStatus::Full);
        let EventKind::ChargeDisputeClosed(dispute) = parse("charge.dispute.closed", &asked) else {
            panic!()
        };
        assert_eq!(dispute.status, DisputeStatus::Won);
        assert_eq!(dispute.dispute_id, "du_mine");
        assert_eq!(
            dispute.evidence_due_by,
            Some(1_700_000_000 + EVIDENCE_WINDOW_SECS)
        );
        let EventKind::ChargeDisputeCreated(dispute) =
            parse("charge.dispute.created", &LifecycleSpec::default())
        else {
            panic!()
        };
        assert_eq!(dispute.status, DisputeStatus::Open);
        assert_eq!(dispute.dispute_id, "du_sample");
    }
}
