//! Order-independence of the whole worker, checked on the reference [`Model`]: any
//! permutation of a set of events, with any duplication, ends in the same place.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{NOW, event};
use fulfillment_core::{
    EventKind, Model, OrderEvent, OrderStatus, PaymentIntentFacts, PaymentStatus, SessionFacts,
};
use proptest::collection::vec;
use proptest::prelude::*;

/// One order: one or more Checkout Sessions (a retried checkout), each with some events
/// and maybe a PaymentIntent.
#[derive(Clone, Debug)]
struct OrderSpec {
    /// No `client_reference_id`/metadata: the order is named after its first session.
    named_by_session: bool,
    sessions: Vec<SessionSpec>,
    livemode: bool,
}

#[derive(Clone, Debug)]
struct SessionSpec {
    /// The session references its PaymentIntent (in the events that show it).
    has_intent: bool,
    events: Vec<SessionEventSpec>,
    intent: Option<IntentSpec>,
}

#[derive(Clone, Debug)]
struct SessionEventSpec {
    kind: SessionEventKind,
    /// Whether this payload carries `payment_intent` (it may be null before payment).
    shows_intent: bool,
    shows_email: bool,
}

#[derive(Clone, Copy, Debug)]
enum SessionEventKind {
    Completed(PaymentStatus),
    Expired,
    AsyncSucceeded,
    AsyncFailed,
}

#[derive(Clone, Debug)]
struct IntentSpec {
    has_metadata: bool,
    shows_email: bool,
}

impl OrderSpec {
    fn order_id(&self, k: usize) -> String {
        if self.named_by_session {
            session_id(k, 0)
        } else {
            format!("ord_{k}")
        }
    }

    fn events(&self, k: usize) -> Vec<OrderEvent> {
        let mut events = Vec::new();
        for (j, session) in self.sessions.iter().enumerate() {
            for (i, spec) in session.events.iter().enumerate() {
                let kind = self.session_kind(k, j, spec);
                events.push(event(&format!("evt_{k}_{j}_{i}"), kind));
            }
            if let Some(intent) = &session.intent {
                let kind = self.intent_kind(k, j, intent);
                events.push(event(&format!("evt_{k}_{j}_pi"), kind));
            }
        }
        events
    }

    fn session_kind(&self, k: usize, j: usize, spec: &SessionEventSpec) -> EventKind {
        let session = &self.sessions[j];
        let facts = |payment_status| SessionFacts {
            session_id: session_id(k, j),
            order_id: self.order_id(k),
            payment_intent_id: (session.has_intent && spec.shows_intent).then(|| intent_id(k, j)),
            payment_status,
            amount_total: Some(amount(k, j)),
            currency: Some("usd".to_owned()),
            customer_email: spec.shows_email.then(|| format!("c{k}@example.com")),
            livemode: self.livemode,
        };
        match spec.kind {
            SessionEventKind::Completed(status) => {
                EventKind::CheckoutSessionCompleted(facts(status))
            }
            SessionEventKind::Expired => {
                EventKind::CheckoutSessionExpired(facts(PaymentStatus::Unpaid))
            }
            SessionEventKind::AsyncSucceeded => {
                EventKind::CheckoutSessionAsyncPaymentSucceeded(facts(PaymentStatus::Paid))
            }
            SessionEventKind::AsyncFailed => {
                EventKind::CheckoutSessionAsyncPaymentFailed(facts(PaymentStatus::Unpaid))
            }
        }
    }

    fn intent_kind(&self, k: usize, j: usize, spec: &IntentSpec) -> EventKind {
        // Deliberately different from the session's facts, so the merge rule matters.
        EventKind::PaymentIntentSucceeded(PaymentIntentFacts {
            payment_intent_id: intent_id(k, j),
            order_id: spec.has_metadata.then(|| self.order_id(k)),
            amount: Some(amount(k, j) + 1),
            currency: Some("eur".to_owned()),
            receipt_email: spec.shows_email.then(|| format!("r{k}@example.com")),
            livemode: self.livemode,
        })
    }

    /// PaymentIntent events the worker can never attribute to this order.
    fn unmatchable_intents(&self) -> usize {
        self.sessions
            .iter()
            .filter(|session| session.intent.is_some() && !session.intent_matchable())
            .count()
    }

    /// Independent oracle: the highest target among the events that reach the order.
    fn expected_status(&self, k: usize) -> Option<OrderStatus> {
        let mut targets = Vec::new();
        for (j, session) in self.sessions.iter().enumerate() {
            for spec in &session.events {
                targets.push(self.session_kind(k, j, spec).target_status());
            }
            if session.intent_matchable() {
                targets.push(OrderStatus::Paid);
            }
        }
        targets.into_iter().max()
    }
}

impl SessionSpec {
    fn intent_matchable(&self) -> bool {
        self.intent.as_ref().is_some_and(|intent| {
            intent.has_metadata || (self.has_intent && self.events.iter().any(|e| e.shows_intent))
        })
    }
}

fn session_id(k: usize, j: usize) -> String {
    format!("cs_test_{k}_{j}")
}

fn intent_id(k: usize, j: usize) -> String {
    format!("pi_{k}_{j}")
}

fn amount(k: usize, j: usize) -> i64 {
    (1000 * (k + 1) + 10 * j) as i64
}

fn session_event_kind() -> impl Strategy<Value = SessionEventKind> {
    prop_oneof![
        Just(SessionEventKind::Completed(PaymentStatus::Paid)),
        Just(SessionEventKind::Completed(PaymentStatus::Unpaid)),
        Just(SessionEventKind::Completed(
            PaymentStatus::NoPaymentRequired
        )),
        Just(SessionEventKind::Expired),
        Just(SessionEventKind::AsyncSucceeded),
        Just(SessionEventKind::AsyncFailed),
    ]
}

fn session_spec() -> impl Strategy<Value = SessionSpec> {
    let event = (session_event_kind(), any::<bool>(), any::<bool>()).prop_map(
        |(kind, shows_intent, shows_email)| SessionEventSpec {
            kind,
            shows_intent,
            shows_email,
        },
    );
    let intent = proptest::option::of((any::<bool>(), any::<bool>()).prop_map(
        |(has_metadata, shows_email)| IntentSpec {
            has_metadata,
            shows_email,
        },
    ));
    (any::<bool>(), vec(event, 0..=4), intent).prop_map(|(has_intent, events, intent)| {
        SessionSpec {
            has_intent,
            events,
            intent,
        }
    })
}

fn order_spec(max_sessions: usize) -> impl Strategy<Value = OrderSpec> {
    (
        any::<bool>(),
        vec(session_spec(), 1..=max_sessions),
        any::<bool>(),
    )
        .prop_map(|(named_by_session, sessions, livemode)| OrderSpec {
            named_by_session,
            sessions,
            livemode,
        })
}

/// The orders, their events in canonical order, and a delivery of those events: each
/// delivered 1..=3 times, shuffled.
fn scenario(
    max_sessions: usize,
) -> impl Strategy<Value = (Vec<OrderSpec>, Vec<OrderEvent>, Vec<OrderEvent>)> {
    vec(order_spec(max_sessions), 1..=3).prop_flat_map(|specs| {
        let canonical: Vec<OrderEvent> = specs
            .iter()
            .enumerate()
            .flat_map(|(k, spec)| spec.events(k))
            .collect();
        let copies = vec(1..=3usize, canonical.len());
        (Just(specs), Just(canonical), copies).prop_flat_map(|(specs, canonical, copies)| {
            let delivered: Vec<OrderEvent> = canonical
                .iter()
                .zip(copies)
                .flat_map(|(event, n)| std::iter::repeat_n(event.clone(), n))
                .collect();
            (Just(specs), Just(canonical), Just(delivered).prop_shuffle())
        })
    })
}

/// Feeds `events` to a fresh model, checking the step invariants after every event.
fn run(events: &[OrderEvent]) -> Result<Model, TestCaseError> {
    let mut model = Model::new();
    for event in events {
        let paid_before: Vec<String> = paid_orders(&model);
        model.handle(event, NOW);
        for order_id in paid_before {
            prop_assert_eq!(model.orders()[&order_id].status, OrderStatus::Paid);
        }
        check_outbox(&model)?;
    }
    Ok(model)
}

fn paid_orders(model: &Model) -> Vec<String> {
    model
        .orders()
        .values()
        .filter(|order| order.status == OrderStatus::Paid)
        .map(|order| order.order_id.clone())
        .collect()
}

fn check_outbox(model: &Model) -> Result<(), TestCaseError> {
    let mut ids = BTreeSet::new();
    let mut paid = BTreeSet::new();
    for message in model.outbox() {
        prop_assert!(
            ids.insert(&message.message_id),
            "duplicate {}",
            message.message_id
        );
        prop_assert!(
            !paid.contains(&message.order_id),
            "{} after order.paid",
            message.message_id
        );
        if message.status == OrderStatus::Paid {
            paid.insert(&message.order_id);
        }
    }
    Ok(())
}

/// message_id of every message announcing an order's end status.
fn terminal_message_ids(model: &Model) -> BTreeSet<String> {
    model
        .outbox()
        .iter()
        .filter(|m| model.orders()[&m.order_id].status == m.status)
        .map(|m| m.message_id.clone())
        .collect()
}

fn paid_message_counts(model: &Model) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for message in model.outbox() {
        if message.routing_key() == "order.paid" {
            *counts.entry(message.order_id.clone()).or_insert(0) += 1;
        }
    }
    counts
}

/// Everything that must not depend on delivery order, whatever the number of sessions.
fn check_converged(
    specs: &[OrderSpec],
    model: &Model,
    reference: &Model,
) -> Result<(), TestCaseError> {
    let statuses = |m: &Model| -> BTreeMap<String, OrderStatus> {
        m.orders()
            .values()
            .map(|order| (order.order_id.clone(), order.status))
            .collect()
    };
    prop_assert_eq!(statuses(model), statuses(reference));
    prop_assert_eq!(model.parked(), reference.parked());
    prop_assert_eq!(terminal_message_ids(model), terminal_message_ids(reference));

    for (k, spec) in specs.iter().enumerate() {
        let order_id = spec.order_id(k);
        let status = model.orders().get(&order_id).map(|order| order.status);
        prop_assert_eq!(status, spec.expected_status(k), "order {}", order_id);
    }
    let expected_parked: usize = specs.iter().map(OrderSpec::unmatchable_intents).sum();
    prop_assert_eq!(model.parked(), expected_parked);

    let expected_paid: BTreeMap<String, usize> = model
        .orders()
        .values()
        .filter(|order| order.status == OrderStatus::Paid)
        .map(|order| (order.order_id.clone(), 1))
        .collect();
    prop_assert_eq!(paid_message_counts(model), expected_paid);

    let every_end_status: BTreeSet<String> = model
        .orders()
        .values()
        .map(|order| format!("{}/{}", order.order_id, order.status))
        .collect();
    prop_assert_eq!(terminal_message_ids(model), every_end_status);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// One Checkout Session per order: the whole order row, details included, converges.
    #[test]
    fn any_delivery_order_converges((specs, canonical, delivered) in scenario(1)) {
        let reference = run(&canonical)?;
        let model = run(&delivered)?;
        check_converged(&specs, &model, &reference)?;
        prop_assert_eq!(model.orders(), reference.orders());
    }

    /// Retried checkouts: statuses, parking and messages still converge.
    #[test]
    fn any_delivery_order_converges_with_several_sessions(
        (specs, canonical, delivered) in scenario(2),
    ) {
        let reference = run(&canonical)?;
        let model = run(&delivered)?;
        check_converged(&specs, &model, &reference)?;
    }
}
