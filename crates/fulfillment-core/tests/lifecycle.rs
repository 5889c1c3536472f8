//! Contract 8.6, rule by rule, on the reference [`Model`] (which drives the
//! same `Ledger` as the store): server-confirmed PaymentIntents, refunds and
//! disputes, and the messages announcing them.

mod common;

use common::*;
use fulfillment_core::{
    Detail, DisputeFacts, DisputeStatus, EventKind, FailedAttempt, Model, OrderEvent, OrderMessage,
    OrderStatus, Outcome, PaymentError, PaymentStatus, RefundFacts, RefundStatus,
};
use serde_json::json;

fn failed(id: &str, pi: &str, order: Option<&str>, decline: Option<&str>) -> OrderEvent {
    event(
        id,
        EventKind::PaymentIntentPaymentFailed(Box::new(FailedAttempt {
            intent: intent(pi, order),
            error: PaymentError {
                failure_code: Some("card_declined".to_owned()),
                decline_code: decline.map(str::to_owned),
                failure_message: Some("Your card was declined.".to_owned()),
            },
        })),
    )
}

fn processing(id: &str, pi: &str, order: Option<&str>) -> OrderEvent {
    event(id, EventKind::PaymentIntentProcessing(intent(pi, order)))
}

fn canceled(id: &str, pi: &str, order: Option<&str>) -> OrderEvent {
    event(id, EventKind::PaymentIntentCanceled(intent(pi, order)))
}

fn refunded(id: &str, pi: &str, amount_refunded: i64) -> OrderEvent {
    event(
        id,
        EventKind::ChargeRefunded(RefundFacts {
            charge_id: format!("ch_{pi}"),
            payment_intent_id: pi.to_owned(),
            amount_refunded,
            refund_status: if amount_refunded >= 2000 {
                RefundStatus::Full
            } else {
                RefundStatus::Partial
            },
            currency: Some("usd".to_owned()),
            livemode: false,
        }),
    )
}

fn dispute(id: &str, pi: &str, status: DisputeStatus) -> OrderEvent {
    let facts = DisputeFacts {
        dispute_id: "du_1".to_owned(),
        payment_intent_id: pi.to_owned(),
        charge_id: Some(format!("ch_{pi}")),
        status,
        reason: Some("fraudulent".to_owned()),
        amount: Some(2000),
        currency: Some("usd".to_owned()),
        evidence_due_by: Some(1_746_403_200),
        livemode: false,
    };
    event(
        id,
        match status {
            DisputeStatus::Open => EventKind::ChargeDisputeCreated(facts),
            _ => EventKind::ChargeDisputeClosed(facts),
        },
    )
}

fn keys(model: &Model) -> Vec<&'static str> {
    model
        .outbox()
        .iter()
        .map(OrderMessage::routing_key)
        .collect()
}

fn handle_all(model: &mut Model, events: &[&OrderEvent]) -> Vec<Outcome> {
    events.iter().map(|e| model.handle(e, NOW)).collect()
}

#[test]
fn a_payment_intent_that_fails_then_succeeds_ends_paid() {
    let mut model = Model::new();
    let first = failed("evt_f1", "pi_1", Some("ord_1"), Some("insufficient_funds"));
    let mut second = failed("evt_f2", "pi_1", Some("ord_1"), Some("generic_decline"));
    second.created += 60;
    let success = intent_succeeded("evt_ok", "pi_1", Some("ord_1"));
    let outcomes = handle_all(&mut model, &[&first, &second, &first, &success, &second]);
    use Outcome::*;
    assert_eq!(outcomes, [Applied, Applied, Duplicate, Applied, Duplicate]);
    let order = &model.orders()["ord_1"];
    assert_eq!(order.status, OrderStatus::Paid);
    assert_eq!(order.lifecycle.failed_attempts, 2);
    let last = order.lifecycle.last_failure.as_ref().unwrap();
    assert_eq!(last.event_id, "evt_f2", "the later one");
    assert_eq!(last.error.decline_code.as_deref(), Some("generic_decline"));
    assert_eq!(
        keys(&model),
        [
            "order.awaiting_payment",
            "order.payment_attempt_failed",
            "order.payment_attempt_failed",
            "order.paid"
        ]
    );
    let ids: Vec<&str> = model
        .outbox()
        .iter()
        .map(|m| m.message_id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "ord_1/awaiting_payment",
            "ord_1/evt_f1/payment_attempt_failed",
            "ord_1/evt_f2/payment_attempt_failed",
            "ord_1/paid"
        ]
    );
}

#[test]
fn a_late_failure_never_unpays_and_still_says_paid() {
    let mut model = Model::new();
    model.handle(&intent_succeeded("evt_ok", "pi_1", Some("ord_1")), NOW);
    assert_eq!(
        model.handle(&failed("evt_f", "pi_1", Some("ord_1"), None), NOW),
        Outcome::Applied
    );
    let order = &model.orders()["ord_1"];
    assert_eq!(order.status, OrderStatus::Paid);
    let message = model.outbox().last().unwrap();
    assert_eq!(message.routing_key(), "order.payment_attempt_failed");
    // A consumer about to ask the customer for another card sees it is paid.
    assert_eq!(message.status, OrderStatus::Paid);
    assert_eq!(message.previous_status, Some(OrderStatus::Paid));
}

#[test]
fn processing_only_makes_a_new_order_await_payment() {
    let mut model = Model::new();
    assert_eq!(
        model.handle(&processing("evt_p", "pi_1", Some("ord_1")), NOW),
        Outcome::Applied
    );
    assert_eq!(model.orders()["ord_1"].status, OrderStatus::AwaitingPayment);
    assert_eq!(keys(&model), ["order.awaiting_payment"]);

    let mut paid = Model::new();
    paid.handle(&intent_succeeded("evt_ok", "pi_1", Some("ord_1")), NOW);
    assert_eq!(
        paid.handle(&processing("evt_p", "pi_1", Some("ord_1")), NOW),
        Outcome::Stale
    );
    assert_eq!(keys(&paid), ["order.paid"]);
}

#[test]
fn canceled_sits_between_awaiting_payment_and_expired() {
    use OrderStatus::*;
    let cases: [(Vec<OrderEvent>, OrderStatus, Vec<&str>); 5] = [
        (vec![], Canceled, vec!["order.canceled"]),
        (
            vec![processing("evt_p", "pi_ord_1", Some("ord_1"))],
            Canceled,
            vec!["order.awaiting_payment", "order.canceled"],
        ),
        (
            vec![completed("evt_c", "ord_1", PaymentStatus::Paid)],
            Paid,
            vec!["order.paid"],
        ),
        (
            vec![expired("evt_e", "ord_1")],
            Expired,
            vec!["order.expired"],
        ),
        (
            vec![async_failed("evt_af", "ord_1")],
            PaymentFailed,
            vec!["order.payment_failed"],
        ),
    ];
    for (before, end, messages) in cases {
        let mut model = Model::new();
        for e in &before {
            model.handle(e, NOW);
        }
        model.handle(&canceled("evt_x", "pi_ord_1", Some("ord_1")), NOW);
        // Nothing below reopens it either.
        model.handle(&processing("evt_late", "pi_ord_1", Some("ord_1")), NOW);
        assert_eq!(model.orders()["ord_1"].status, end, "{before:?}");
        assert_eq!(keys(&model), messages, "{before:?}");
    }
}

#[test]
fn refunds_only_grow_and_are_announced_once_per_amount() {
    let mut model = Model::new();
    model.handle(&intent_succeeded("evt_ok", "pi_1", Some("ord_1")), NOW);
    let partial = refunded("evt_r1", "pi_1", 500);
    let full = refunded("evt_r2", "pi_1", 2000);
    let same_amount_again = refunded("evt_r3", "pi_1", 2000);
    let outcomes = handle_all(
        &mut model,
        &[&full, &partial, &full, &same_amount_again, &partial],
    );
    use Outcome::*;
    assert_eq!(outcomes, [Applied, Stale, Duplicate, Stale, Duplicate]);
    let order = &model.orders()["ord_1"];
    assert_eq!(order.status, OrderStatus::Paid, "a refund is no status");
    let refund = order.lifecycle.refund.unwrap();
    assert_eq!(
        (refund.amount_refunded, refund.status),
        (2000, RefundStatus::Full)
    );
    assert_eq!(keys(&model), ["order.paid", "order.refunded"]);
    assert_eq!(model.outbox()[1].message_id, "ord_1/2000/refunded");

    // In order, each growth is announced.
    let mut model = Model::new();
    model.handle(&intent_succeeded("evt_ok", "pi_1", Some("ord_1")), NOW);
    handle_all(&mut model, &[&partial, &full]);
    let refunds: Vec<_> = model
        .outbox()
        .iter()
        .filter_map(|m| match &m.detail {
            Some(Detail::Refund(r)) => {
                Some((m.message_id.as_str(), r.amount_refunded, r.refund_status))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        refunds,
        [
            ("ord_1/500/refunded", 500, RefundStatus::Partial),
            ("ord_1/2000/refunded", 2000, RefundStatus::Full)
        ]
    );
    // Nothing refunded is no refund.
    assert_eq!(
        model.handle(&refunded("evt_r0", "pi_1", 0), NOW),
        Outcome::Stale
    );
}

#[test]
fn a_refund_before_its_order_is_known_waits_for_the_link() {
    let mut model = Model::new();
    let refund = refunded("evt_r", "pi_1", 700);
    assert_eq!(model.handle(&refund, NOW), Outcome::Unmatched);
    assert_eq!(model.parked(), 1);
    assert!(model.orders().is_empty(), "a refund creates no order");
    // A PaymentIntent event naming its order links it, like a session does.
    let success = intent_succeeded("evt_ok", "pi_1", Some("ord_1"));
    assert_eq!(model.handle(&success, NOW), Outcome::Applied);
    assert_eq!(model.parked(), 0);
    assert_eq!(
        model.processed()["evt_r"],
        (Outcome::Applied, Some("ord_1".to_owned()))
    );
    assert_eq!(keys(&model), ["order.paid", "order.refunded"]);
    assert_eq!(
        model.orders()["ord_1"]
            .lifecycle
            .refund
            .unwrap()
            .amount_refunded,
        700
    );
}

#[test]
fn a_refund_of_a_payment_intent_nobody_names_stays_parked() {
    let mut model = Model::new();
    model.handle(&intent_succeeded("evt_ok", "pi_1", None), NOW);
    model.handle(&refunded("evt_r", "pi_1", 700), NOW);
    assert_eq!(model.parked(), 2);
    // The session that references the PaymentIntent releases both.
    model.handle(&completed("evt_cs", "ord_1", PaymentStatus::Unpaid), NOW);
    let mut with_pi = completed("evt_cs2", "ord_1", PaymentStatus::Unpaid);
    if let EventKind::CheckoutSessionCompleted(s) = &mut with_pi.kind {
        s.payment_intent_id = Some("pi_1".to_owned());
    }
    model.handle(&with_pi, NOW);
    assert_eq!(model.parked(), 0);
    assert_eq!(model.orders()["ord_1"].status, OrderStatus::Paid);
}

#[test]
fn a_dispute_opens_and_is_lost_whatever_the_order_of_its_events() {
    let created = dispute("evt_dc", "pi_1", DisputeStatus::Open);
    let lost = dispute("evt_dx", "pi_1", DisputeStatus::Lost);
    for events in [[&created, &lost], [&lost, &created]] {
        let mut model = Model::new();
        model.handle(&intent_succeeded("evt_ok", "pi_1", Some("ord_1")), NOW);
        handle_all(&mut model, &events);
        let order = &model.orders()["ord_1"];
        assert_eq!(order.status, OrderStatus::Paid);
        assert_eq!(order.lifecycle.disputes["du_1"].status, DisputeStatus::Lost);
        let last = model.outbox().last().unwrap();
        assert_eq!(last.routing_key(), "order.dispute_closed");
        assert_eq!(last.message_id, "ord_1/du_1/dispute_lost");
    }
    // In order: open, then closed; reversed: the late `created` reopens nothing.
    let mut model = Model::new();
    model.handle(&intent_succeeded("evt_ok", "pi_1", Some("ord_1")), NOW);
    assert_eq!(
        handle_all(&mut model, &[&lost, &created]),
        [Outcome::Applied, Outcome::Stale]
    );
    assert_eq!(keys(&model), ["order.paid", "order.dispute_closed"]);
}

#[test]
fn lifecycle_messages_in_full() {
    let mut model = Model::new();
    let mut success = intent_succeeded("evt_ok", "pi_1", Some("ord_1"));
    success.created = 1_700_000_000;
    handle_all(
        &mut model,
        &[
            &failed("evt_f", "pi_1", Some("ord_1"), Some("insufficient_funds")),
            &success,
            &refunded("evt_r", "pi_1", 500),
            &dispute("evt_dc", "pi_1", DisputeStatus::Open),
        ],
    );
    let bodies: Vec<serde_json::Value> = model
        .outbox()
        .iter()
        .map(|m| serde_json::from_slice(&m.to_json()).unwrap())
        .collect();
    let common = json!({
        "order_id": "ord_1",
        "checkout_session_id": null,
        "payment_intent_id": "pi_1",
        "amount_total": 2000,
        "currency": "usd",
        "customer_email": "receipt@example.com",
        "livemode": false,
        "account": null,
        "payment_method": { "kind": "stripe" },
        "occurred_at": "2025-05-01T12:00:00Z",
    });
    let with = |extra: serde_json::Value| {
        let mut body = common.clone();
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    assert_eq!(
        bodies[1],
        with(json!({
            "type": "order.payment_attempt_failed",
            "message_id": "ord_1/evt_f/payment_attempt_failed",
            "status": "awaiting_payment",
            "previous_status": null,
            "event_id": "evt_f",
            "failure_code": "card_declined",
            "decline_code": "insufficient_funds",
            "failure_message": "Your card was declined.",
        }))
    );
    assert_eq!(
        bodies[3],
        with(json!({
            "type": "order.refunded",
            "message_id": "ord_1/500/refunded",
            "status": "paid",
            "previous_status": "paid",
            "event_id": "evt_r",
            "amount_refunded": 500,
            "refund_status": "partial",
        }))
    );
    assert_eq!(
        bodies[4],
        with(json!({
            "type": "order.disputed",
            "message_id": "ord_1/du_1/dispute_open",
            "status": "paid",
            "previous_status": "paid",
            "event_id": "evt_dc",
            "dispute_id": "du_1",
            "dispute_status": "open",
            "dispute_reason": "fraudulent",
            "dispute_amount": 2000,
            "dispute_currency": "usd",
            "charge_id": "ch_pi_1",
            "evidence_due_by": "2025-05-05T00:00:00Z",
        }))
    );
    // Every message reads back as itself; a status message has no detail.
    for (message, body) in model.outbox().iter().zip(&bodies) {
        let back: OrderMessage = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(&back, message);
    }
    assert_eq!(model.outbox()[2].detail, None);
}

#[test]
fn note_ids_fit_are_readable_and_hash_what_does_not_fit() {
    assert_eq!(
        OrderMessage::note_id("ord_1", "evt_1", "payment_attempt_failed"),
        "ord_1/evt_1/payment_attempt_failed"
    );
    let long = "o".repeat(300);
    let a = OrderMessage::note_id(&long, "evt_1", "payment_attempt_failed");
    let b = OrderMessage::note_id(&long, "evt_2", "payment_attempt_failed");
    assert_ne!(a, b);
    assert!(a.len() <= 205 && a.starts_with(&long[..140]), "{a}");
    // A part with a `/` could be confused with the order's: hashed.
    let slash = OrderMessage::note_id("ord/x", "y", "refunded");
    assert_ne!(slash, OrderMessage::note_id("ord", "x/y", "refunded"));
    assert!(!OrderMessage::note_id("ord", "x/y", "refunded").ends_with("/refunded"));
}
