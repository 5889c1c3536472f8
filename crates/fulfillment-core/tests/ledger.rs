//! The batch rules ([`Ledger`]) and the batch plan ([`BatchPlan`]): a batch
//! does what its events one by one do, and the plan locks and loads exactly
//! what the batch's events name.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use fulfillment_core::scenario::{batches, scenario};
use fulfillment_core::{
    BatchPlan, EventKind, Ledger, LockKey, Model, OrderEvent, OrderStatus, Outcome, ParkedEvent,
    PaymentStatus, fresh,
};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Batching changes nothing: the same events in batches of any size end
    /// with the same orders, links, parked events, transitions, messages and
    /// per-event outcomes as one at a time.
    #[test]
    fn a_batch_does_what_its_events_do_one_by_one(
        (_, _, delivered) in scenario(2),
        sizes in proptest::collection::vec(1..=6usize, 1..=4),
    ) {
        let mut model = Model::new();
        let one_by_one: Vec<Outcome> = delivered.iter().map(|e| model.handle(e, NOW)).collect();

        let mut ledger = Ledger::default();
        let mut seen = BTreeSet::new();
        let (mut outcomes, mut transitions, mut messages) = (Vec::new(), Vec::new(), Vec::new());
        let (mut anomalies, mut reports) = (Vec::new(), Vec::new());
        for batch in batches(&delivered, &sizes) {
            let events: Vec<(&OrderEvent, &[u8])> = batch.iter().map(|e| (e, &[][..])).collect();
            let before = seen.clone();
            seen.extend(batch.iter().map(|e| e.id.clone()));
            let effects = ledger.apply(&events, |id| !before.contains(id), NOW);
            outcomes.extend(effects.results.into_iter().map(|(o, _)| o));
            transitions.extend(effects.transitions);
            messages.extend(effects.messages);
            anomalies.extend(effects.anomalies);
            reports.extend(effects.custom_reports);
        }
        prop_assert_eq!(outcomes, one_by_one);
        prop_assert_eq!(ledger.orders(), model.orders());
        prop_assert_eq!(&transitions[..], model.transitions());
        prop_assert_eq!(&messages[..], model.outbox());
        prop_assert_eq!(&anomalies[..], model.anomalies());
        prop_assert_eq!(&reports[..], model.custom_reports());
        prop_assert_eq!(ledger.payments(), model.payment_sources());
        let parked: Vec<&OrderEvent> = ledger.parked().iter().map(|p| &p.event).collect();
        prop_assert_eq!(parked, model.parked_events().collect::<Vec<_>>());
    }

    /// The plan applies the first copy of each new id, and locks up front
    /// exactly the orders and PaymentIntents those copies name.
    #[test]
    fn the_plan_locks_what_the_fresh_events_name(
        (_, _, delivered) in scenario(2),
        old in proptest::collection::vec(any::<bool>(), 64),
    ) {
        let is_new = |id: &str| !old[id.len() % old.len()] || id.ends_with("_pi");
        let plan = BatchPlan::new(delivered.iter(), is_new);
        let marks = fresh(delivered.iter(), is_new);

        let mut first = BTreeSet::new();
        let mut expected = Vec::new();
        for (event, fresh) in delivered.iter().zip(&marks) {
            prop_assert_eq!(*fresh, is_new(&event.id) && first.insert(event.id.clone()));
            if *fresh {
                expected.push(event);
            }
        }
        prop_assert_eq!(plan.events(), &expected[..]);

        let mut keys = BTreeSet::new();
        for event in &expected {
            keys.extend(event.order_id().map(LockKey::order));
            keys.extend(event.kind.payment_intent_id().map(LockKey::payment_intent));
        }
        prop_assert_eq!(plan.first_locks(), keys);
    }
}

#[test]
fn orders_found_through_links_are_locked_after_the_known_keys() {
    let intent = event(
        "evt_pi",
        EventKind::PaymentIntentSucceeded(intent("pi_1", None)),
    );
    let session = completed("evt_cs", "ord_2", PaymentStatus::Paid);
    let plan = BatchPlan::new([&intent, &session], |_| true);
    assert_eq!(
        plan.first_locks().into_iter().collect::<Vec<_>>(),
        [
            LockKey::order("ord_2"),
            LockKey::payment_intent("pi_1"),
            LockKey::payment_intent("pi_ord_2"),
        ]
    );
    let links = BTreeMap::from([
        ("pi_1".to_owned(), "ord_1".to_owned()),
        ("pi_ord_2".to_owned(), "ord_2".to_owned()),
    ]);
    // ord_2 is locked already; only the order found through pi_1 is new.
    assert_eq!(
        plan.link_locks(&links).into_iter().collect::<Vec<_>>(),
        [LockKey::order("ord_1")]
    );
    assert_eq!(plan.order_ids(&links), ["ord_2", "ord_1", "ord_2"]);
    assert_eq!(plan.linking_payment_intents(), ["pi_ord_2"]);
}

#[test]
fn a_duplicate_or_old_event_is_neither_locked_nor_loaded() {
    let session = completed("evt_cs", "ord_1", PaymentStatus::Paid);
    let plan = BatchPlan::new([&session, &session], |_| false);
    assert!(plan.events().is_empty());
    assert!(plan.first_locks().is_empty());
    assert!(plan.payment_intents().is_empty());
}

/// Released events end with the outcome they finally had, on the linked
/// order; their raw bodies travel with them while they are parked.
#[test]
fn released_events_record_their_final_outcome() {
    let early = event(
        "evt_pi",
        EventKind::PaymentIntentSucceeded(intent("pi_ord_1", None)),
    );
    let mut ledger = Ledger::default();
    let parked = ledger.apply(&[(&early, b"{raw}")], |_| true, NOW);
    assert_eq!(parked.results[0].0, Outcome::Unmatched);
    assert_eq!(parked.processed["evt_pi"], (Outcome::Unmatched, None));
    assert_eq!(ledger.parked()[0].body, b"{raw}");

    let session = completed("evt_cs", "ord_1", PaymentStatus::Unpaid);
    let effects = ledger.apply(&[(&session, b""), (&session, b"")], |_| true, NOW);
    assert_eq!(effects.results[0].0, Outcome::Applied);
    assert_eq!(effects.results[0].1.released, 1);
    assert_eq!(effects.results[1].0, Outcome::Duplicate);
    assert_eq!(effects.released, ["evt_pi"]);
    assert_eq!(
        effects.processed["evt_pi"],
        (Outcome::Applied, Some("ord_1".to_owned()))
    );
    assert_eq!(
        effects.new_links,
        [("pi_ord_1".to_owned(), "ord_1".to_owned())]
    );
    assert_eq!(effects.orders.len(), 1);
    assert_eq!(effects.orders[0].status, OrderStatus::Paid);
    assert!(ledger.parked().is_empty());
}

/// A PaymentIntent can park several events (its refunds, say), and which
/// `order.refunded` messages are sent depends on the order they apply in: the
/// ledger releases them by (created, id), whatever order its driver loaded
/// them in (the store's are by park time, equal within one batch).
#[test]
fn parked_events_are_released_in_the_ledgers_order_not_the_drivers() {
    let refund = |id: &str, amount| {
        event(
            id,
            EventKind::ChargeRefunded(fulfillment_core::RefundFacts {
                charge_id: "ch_1".to_owned(),
                payment_intent_id: "pi_1".to_owned(),
                amount_refunded: amount,
                refund_status: fulfillment_core::RefundStatus::Partial,
                currency: None,
                livemode: false,
            }),
        )
    };
    let (small, large) = (refund("evt_r1", 500), refund("evt_r2", 900));
    let parked = |events: [&OrderEvent; 2]| -> Vec<ParkedEvent> {
        events
            .iter()
            .map(|e| ParkedEvent {
                event: (*e).clone(),
                body: Vec::new(),
            })
            .collect()
    };
    let linking = intent_succeeded("evt_pi", "pi_1", Some("ord_1"));
    let mut released = Vec::new();
    for loaded in [parked([&small, &large]), parked([&large, &small])] {
        let mut ledger = Ledger::new(BTreeMap::new(), BTreeMap::new(), loaded);
        let effects = ledger.apply(&[(&linking, b"")], |_| true, NOW);
        let ids: Vec<String> = effects
            .messages
            .iter()
            .map(|m| m.message_id.clone())
            .collect();
        released.push(ids);
    }
    assert_eq!(released[0], released[1]);
    assert_eq!(
        released[0],
        ["ord_1/paid", "ord_1/500/refunded", "ord_1/900/refunded"]
    );
}
