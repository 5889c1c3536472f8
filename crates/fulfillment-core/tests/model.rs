mod common;

use common::*;
use fulfillment_core::{EventKind, Model, OrderMessage, OrderStatus, Outcome, PaymentStatus};

fn paid_messages(model: &Model) -> Vec<&OrderMessage> {
    model
        .outbox()
        .iter()
        .filter(|message| message.routing_key() == "order.paid")
        .collect()
}

#[test]
fn unmatched_payment_intent_waits_for_its_session() {
    for payment_status in [PaymentStatus::Unpaid, PaymentStatus::Paid] {
        let mut model = Model::new();
        let intent = intent_succeeded("evt_pi", "pi_ord_1", None);
        assert_eq!(intent.order_id(), None);
        assert_eq!(model.handle(&intent, NOW), Outcome::Unmatched);
        assert_eq!(model.parked(), 1);
        assert!(model.orders().is_empty());
        assert!(model.outbox().is_empty());

        let session = completed("evt_cs", "ord_1", payment_status);
        assert_eq!(model.handle(&session, NOW), Outcome::Applied);
        assert_eq!(model.parked(), 0);
        let order = &model.orders()["ord_1"];
        assert_eq!(order.status, OrderStatus::Paid);

        let paid = paid_messages(&model);
        assert_eq!(paid.len(), 1, "{payment_status}");
        assert_eq!(paid[0].message_id, "ord_1/paid");
        let expected_cause = match payment_status {
            PaymentStatus::Unpaid => "evt_pi",
            _ => "evt_cs",
        };
        assert_eq!(paid[0].event_id, expected_cause);
        assert_eq!(
            paid[0].checkout_session_id.as_deref(),
            Some("cs_test_ord_1")
        );

        // Redelivery of either event changes nothing.
        assert_eq!(model.handle(&intent, NOW), Outcome::Duplicate);
        assert_eq!(model.handle(&session, NOW), Outcome::Duplicate);
        assert_eq!(paid_messages(&model).len(), 1);
    }
}

#[test]
fn payment_intent_after_its_session_is_matched_by_lookup() {
    let mut model = Model::new();
    let session = completed("evt_cs", "ord_1", PaymentStatus::Unpaid);
    assert_eq!(model.handle(&session, NOW), Outcome::Applied);
    let intent = intent_succeeded("evt_pi", "pi_ord_1", None);
    assert_eq!(model.handle(&intent, NOW), Outcome::Applied);
    assert_eq!(model.orders()["ord_1"].status, OrderStatus::Paid);
    let keys: Vec<_> = model.outbox().iter().map(|m| m.routing_key()).collect();
    assert_eq!(keys, ["order.awaiting_payment", "order.paid"]);
}

#[test]
fn session_without_payment_intent_leaves_event_parked() {
    let mut model = Model::new();
    let intent = intent_succeeded("evt_pi", "pi_ord_1", None);
    let mut session = expired("evt_cs", "ord_1");
    if let EventKind::CheckoutSessionExpired(facts) = &mut session.kind {
        facts.payment_intent_id = None;
    }
    assert_eq!(model.handle(&intent, NOW), Outcome::Unmatched);
    assert_eq!(model.handle(&session, NOW), Outcome::Applied);
    assert_eq!(model.parked(), 1);
    assert_eq!(model.orders()["ord_1"].status, OrderStatus::Expired);
}

#[test]
fn payment_intent_with_metadata_creates_the_order() {
    let mut model = Model::new();
    let intent = intent_succeeded("evt_pi", "pi_x", Some("ord_1"));
    assert_eq!(model.handle(&intent, NOW), Outcome::Applied);
    let expiry = expired("evt_cs", "ord_1");
    assert_eq!(model.handle(&expiry, NOW), Outcome::Stale);
    let order = &model.orders()["ord_1"];
    assert_eq!(order.status, OrderStatus::Paid);
    // The stale session event still contributed its details.
    assert_eq!(order.checkout_session_id.as_deref(), Some("cs_test_ord_1"));
    assert_eq!(model.outbox().len(), 1);
}

#[test]
fn dedup_is_by_event_id_only() {
    let mut model = Model::new();
    let first = completed("evt_same", "ord_1", PaymentStatus::Unpaid);
    let other_type = async_succeeded("evt_same", "ord_1");
    assert_eq!(model.handle(&first, NOW), Outcome::Applied);
    assert_eq!(model.handle(&other_type, NOW), Outcome::Duplicate);
    assert_eq!(model.orders()["ord_1"].status, OrderStatus::AwaitingPayment);
}

#[test]
fn retried_checkout_links_every_session_to_the_order() {
    let mut model = Model::new();
    // First session: delayed payment started on pi_1, then the customer retried.
    let mut first = completed("evt_cs1", "ord_1", PaymentStatus::Unpaid);
    if let EventKind::CheckoutSessionCompleted(facts) = &mut first.kind {
        facts.session_id = "cs_test_first".to_owned();
        facts.payment_intent_id = Some("pi_1".to_owned());
    }
    let second = expired("evt_cs2", "ord_1");
    let late_success = intent_succeeded("evt_pi1", "pi_1", None);

    assert_eq!(model.handle(&late_success, NOW), Outcome::Unmatched);
    assert_eq!(model.handle(&second, NOW), Outcome::Applied);
    assert_eq!(model.parked(), 1);
    // Stale for the order and another session, yet it still links pi_1 to the order.
    assert_eq!(model.handle(&first, NOW), Outcome::Stale);
    assert_eq!(model.parked(), 0);
    assert_eq!(model.orders()["ord_1"].status, OrderStatus::Paid);
    assert_eq!(
        model
            .order_for_payment_intent("pi_1")
            .map(|o| o.order_id.as_str()),
        Some("ord_1")
    );
    assert_eq!(paid_messages(&model).len(), 1);
}
