mod common;

use OrderStatus::{AwaitingPayment, Expired, Paid, PaymentFailed};
use common::*;
use fulfillment_core::{
    Applied, Decision, MessageType, Order, OrderEvent, OrderMessage, OrderStatus, PaymentStatus,
    Transition, decide,
};
use time::OffsetDateTime;

/// `fulfillment_core::apply` for the status events these tests use, which always apply.
fn apply(order: Option<Order>, order_id: &str, event: &OrderEvent, now: OffsetDateTime) -> Applied {
    fulfillment_core::apply(order, order_id, event, now).expect("a status event applies")
}

/// Applies events in sequence to one order, returning the final order and the messages.
fn run(order_id: &str, events: &[OrderEvent]) -> (Order, Vec<OrderMessage>) {
    let mut order = None;
    let mut messages = Vec::new();
    for event in events {
        let applied = apply(order, order_id, event, NOW);
        assert_eq!(
            applied.message.is_some(),
            matches!(applied.decision, Some(Decision::Transition(_)))
        );
        messages.extend(applied.message);
        order = Some(applied.order);
    }
    (order.expect("at least one event"), messages)
}

fn routing_keys(messages: &[OrderMessage]) -> Vec<&'static str> {
    messages.iter().map(OrderMessage::routing_key).collect()
}

// ---- the contract's effects table, one row each, on a new and on an awaiting order

#[test]
fn effects_table() {
    let rows: [(OrderEvent, OrderStatus); 7] = [
        (completed("evt_1", "ord_1", PaymentStatus::Paid), Paid),
        (
            completed("evt_1", "ord_1", PaymentStatus::NoPaymentRequired),
            Paid,
        ),
        (
            completed("evt_1", "ord_1", PaymentStatus::Unpaid),
            AwaitingPayment,
        ),
        (async_succeeded("evt_1", "ord_1"), Paid),
        (async_failed("evt_1", "ord_1"), PaymentFailed),
        (expired("evt_1", "ord_1"), Expired),
        (intent_succeeded("evt_1", "pi_ord_1", Some("ord_1")), Paid),
    ];
    for (event, expected) in rows {
        assert_eq!(
            event.kind.target_status(),
            Some(expected),
            "{}",
            event.event_type
        );
        let applied = apply(None, "ord_1", &event, NOW);
        assert_eq!(applied.order.status, expected, "{}", event.event_type);
        assert_eq!(
            applied.decision.unwrap(),
            Decision::Transition(Transition {
                from: None,
                to: expected
            })
        );
        let message = applied.message.expect("new order always transitions");
        assert_eq!(message.message_type, MessageType::from(expected));
        assert_eq!(message.previous_status, None);
        assert_eq!(message.event_id, "evt_1");
    }
}

#[test]
fn expired_never_overrides_paid() {
    let (order, messages) = run(
        "ord_1",
        &[
            completed("evt_1", "ord_1", PaymentStatus::Paid),
            expired("evt_2", "ord_1"),
        ],
    );
    assert_eq!(order.status, Paid);
    assert_eq!(routing_keys(&messages), ["order.paid"]);

    let paid = Order::new("ord_1", Paid);
    let applied = apply(Some(paid), "ord_1", &expired("evt_3", "ord_1"), NOW);
    assert_eq!(
        applied.decision.unwrap(),
        Decision::Stale {
            current: Paid,
            target: Expired
        }
    );
    assert_eq!(applied.order.status, Paid);
    assert!(applied.message.is_none());
}

#[test]
fn expired_overrides_awaiting_payment() {
    let (order, messages) = run(
        "ord_1",
        &[
            completed("evt_1", "ord_1", PaymentStatus::Unpaid),
            expired("evt_2", "ord_1"),
        ],
    );
    assert_eq!(order.status, Expired);
    assert_eq!(
        routing_keys(&messages),
        ["order.awaiting_payment", "order.expired"]
    );
}

#[test]
fn delayed_payment_succeeds() {
    let (order, messages) = run(
        "ord_1",
        &[
            completed("evt_1", "ord_1", PaymentStatus::Unpaid),
            async_succeeded("evt_2", "ord_1"),
        ],
    );
    assert_eq!(order.status, Paid);
    assert_eq!(
        routing_keys(&messages),
        ["order.awaiting_payment", "order.paid"]
    );
    assert_eq!(messages[1].previous_status, Some(AwaitingPayment));
    assert_eq!(messages[1].message_id, "ord_1/paid");
    assert_eq!(messages[1].event_id, "evt_2");
}

#[test]
fn delayed_payment_fails() {
    let (order, messages) = run(
        "ord_1",
        &[
            completed("evt_1", "ord_1", PaymentStatus::Unpaid),
            async_failed("evt_2", "ord_1"),
        ],
    );
    assert_eq!(order.status, PaymentFailed);
    assert_eq!(
        routing_keys(&messages),
        ["order.awaiting_payment", "order.payment_failed"]
    );
}

#[test]
fn late_unpaid_completion_does_not_resurrect_awaiting() {
    for first in [async_failed("evt_2", "ord_1"), expired("evt_2", "ord_1")] {
        let (order, messages) = run(
            "ord_1",
            &[first, completed("evt_1", "ord_1", PaymentStatus::Unpaid)],
        );
        assert_ne!(order.status, AwaitingPayment);
        assert_eq!(messages.len(), 1);
    }
}

#[test]
fn paid_first_sends_no_intermediate_messages() {
    let (order, messages) = run(
        "ord_1",
        &[
            async_succeeded("evt_2", "ord_1"),
            completed("evt_1", "ord_1", PaymentStatus::Unpaid),
            async_failed("evt_3", "ord_1"),
            expired("evt_4", "ord_1"),
        ],
    );
    assert_eq!(order.status, Paid);
    assert_eq!(routing_keys(&messages), ["order.paid"]);
}

#[test]
fn duplicates_are_stale() {
    let event = completed("evt_1", "ord_1", PaymentStatus::Paid);
    let (order, messages) = run("ord_1", &[event.clone(), event.clone(), event]);
    assert_eq!(order.status, Paid);
    assert_eq!(messages.len(), 1);
}

// ---- decide: every (current, target) pair, written out rather than re-derived

#[test]
fn decide_exhaustive() {
    const T: bool = true;
    const S: bool = false;
    let targets = [AwaitingPayment, Expired, PaymentFailed, Paid];
    let table: [(Option<OrderStatus>, [bool; 4]); 5] = [
        (None, [T, T, T, T]),
        (Some(AwaitingPayment), [S, T, T, T]),
        (Some(Expired), [S, S, T, T]),
        (Some(PaymentFailed), [S, S, S, T]),
        (Some(Paid), [S, S, S, S]),
    ];
    for (current, row) in table {
        for (target, transitions) in targets.into_iter().zip(row) {
            let expected = match current {
                Some(current) if !transitions => Decision::Stale { current, target },
                from => Decision::Transition(Transition { from, to: target }),
            };
            assert_eq!(decide(current, target), expected, "{current:?} -> {target}");
        }
    }
}

// ---- details merge and message body

#[test]
fn message_carries_order_details() {
    let applied = apply(
        None,
        "ord_1",
        &completed("evt_1", "ord_1", PaymentStatus::Paid),
        NOW,
    );
    let message = applied.message.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&message.to_json()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "type": "order.paid",
            "message_id": "ord_1/paid",
            "order_id": "ord_1",
            "status": "paid",
            "previous_status": null,
            "checkout_session_id": "cs_test_ord_1",
            "payment_intent_id": "pi_ord_1",
            "amount_total": 2000,
            "currency": "usd",
            "customer_email": "a@example.com",
            "livemode": false,
            "account": null,
            "event_id": "evt_1",
            "payment_method": {"kind": "stripe"},
            "occurred_at": "2025-05-01T12:00:00Z",
        })
    );
    let back: OrderMessage = serde_json::from_value(json).unwrap();
    assert_eq!(back, message);
}

#[test]
fn session_facts_override_payment_intent_facts() {
    let intent_first = run(
        "ord_1",
        &[
            intent_succeeded("evt_1", "pi_ord_1", Some("ord_1")),
            completed("evt_2", "ord_1", PaymentStatus::Paid),
        ],
    )
    .0;
    let session_first = run(
        "ord_1",
        &[
            completed("evt_2", "ord_1", PaymentStatus::Paid),
            intent_succeeded("evt_1", "pi_ord_1", Some("ord_1")),
        ],
    )
    .0;
    assert_eq!(intent_first, session_first);
    assert_eq!(
        intent_first.customer_email.as_deref(),
        Some("a@example.com")
    );
    assert_eq!(
        intent_first.checkout_session_id.as_deref(),
        Some("cs_test_ord_1")
    );
}

#[test]
fn payment_intent_fills_unknown_details() {
    let mut bare = completed("evt_1", "ord_1", PaymentStatus::Unpaid);
    if let fulfillment_core::EventKind::CheckoutSessionCompleted(session) = &mut bare.kind {
        session.customer_email = None;
        session.payment_intent_id = None;
    }
    let (order, _) = run(
        "ord_1",
        &[bare, intent_succeeded("evt_2", "pi_other", Some("ord_1"))],
    );
    assert_eq!(order.status, Paid);
    assert_eq!(order.customer_email.as_deref(), Some("receipt@example.com"));
    assert_eq!(order.payment_intent_id.as_deref(), Some("pi_other"));
    assert_eq!(order.amount_total, Some(2000));
}

#[test]
fn null_never_erases_a_known_detail() {
    let mut later = expired("evt_2", "ord_1");
    if let fulfillment_core::EventKind::CheckoutSessionExpired(session) = &mut later.kind {
        session.customer_email = None;
        session.payment_intent_id = None;
    }
    let (order, _) = run(
        "ord_1",
        &[completed("evt_1", "ord_1", PaymentStatus::Unpaid), later],
    );
    assert_eq!(order.status, Expired);
    assert_eq!(order.customer_email.as_deref(), Some("a@example.com"));
    assert_eq!(order.payment_intent_id.as_deref(), Some("pi_ord_1"));
}

#[test]
fn stale_event_of_another_session_changes_nothing() {
    let paid = completed("evt_2", "ord_1", PaymentStatus::Paid);
    let mut abandoned = expired("evt_1", "ord_1");
    if let fulfillment_core::EventKind::CheckoutSessionExpired(session) = &mut abandoned.kind {
        session.session_id = "cs_test_abandoned".to_owned();
        session.amount_total = Some(999);
    }
    let (order, messages) = run("ord_1", &[paid, abandoned]);
    assert_eq!(order.checkout_session_id.as_deref(), Some("cs_test_ord_1"));
    assert_eq!(order.amount_total, Some(2000));
    assert_eq!(messages.len(), 1);
}

#[test]
fn livemode_is_sticky() {
    let mut live = intent_succeeded("evt_1", "pi_1", Some("ord_1"));
    if let fulfillment_core::EventKind::PaymentIntentSucceeded(intent) = &mut live.kind {
        intent.livemode = true;
    }
    let (order, _) = run(
        "ord_1",
        &[live, completed("evt_2", "ord_1", PaymentStatus::Paid)],
    );
    assert!(order.livemode);
}

#[test]
fn the_connect_account_is_kept_and_on_every_message() {
    let of = |account: &str, event: OrderEvent| OrderEvent {
        account: Some(account.to_owned()),
        ..event
    };
    // The PaymentIntent (no account of its own here) and a session of the
    // account: the first account known stays, and every message carries it.
    let (order, messages) = run(
        "ord_1",
        &[
            completed("evt_1", "ord_1", PaymentStatus::Unpaid),
            of("acct_1", async_succeeded("evt_2", "ord_1")),
            of("acct_2", expired("evt_3", "ord_1")),
        ],
    );
    assert_eq!(order.account.as_deref(), Some("acct_1"));
    assert_eq!(
        routing_keys(&messages),
        ["order.awaiting_payment", "order.paid"]
    );
    assert_eq!(
        messages[0].account, None,
        "not known yet when the order was new"
    );
    assert_eq!(messages[1].account.as_deref(), Some("acct_1"));
}

#[test]
fn existing_row_keeps_its_own_id() {
    let order = Order::new("ord_row", AwaitingPayment);
    let applied = apply(
        Some(order),
        "ignored",
        &async_succeeded("evt_1", "ord_row"),
        NOW,
    );
    assert_eq!(applied.order.order_id, "ord_row");
    assert_eq!(applied.message.unwrap().message_id, "ord_row/paid");
}
