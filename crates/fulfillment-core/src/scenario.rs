//! Random scenarios of Stripe events for property tests (feature `scenarios`):
//! orders with one or more Checkout Sessions, their events and PaymentIntents,
//! and custom-payment reports for the same orders (some guaranteed, some
//! failed, sometimes two), delivered in any order with duplicates, plus an
//! independent oracle of the end status and of the double payments. Shared by the core's property tests and the store-vs-Model test
//! of the `fulfillment` crate, so both draw from the same distribution.

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::custom::{self, CustomOutcome, CustomPaymentReport};
use crate::event::{EventKind, OrderEvent, PaymentIntentFacts, SessionFacts};
use crate::status::{OrderStatus, PaymentStatus};

fn event(id: &str, kind: EventKind) -> OrderEvent {
    OrderEvent {
        id: id.to_owned(),
        event_type: kind.event_type().to_owned(),
        created: 1_700_000_000,
        account: None,
        kind,
    }
}

/// A Stripe-shaped JSON body that [`crate::parse_event`] reads back as `event`
/// (for a custom-payment report: its envelope, as the receiver publishes it).
pub fn body(event: &OrderEvent) -> Vec<u8> {
    let object = match &event.kind {
        EventKind::CustomPayment(report) => {
            return custom::envelope(&report.to_json(), &report.id, event.created);
        }
        EventKind::PaymentIntentSucceeded(pi) => payment_intent(pi),
        kind => session(kind.session().expect("every other kind is a session")),
    };
    let mut envelope = json!({
        "id": event.id,
        "object": "event",
        "type": event.event_type,
        "created": event.created,
        "livemode": object["livemode"],
        "data": { "object": object },
    });
    if let Some(account) = &event.account {
        envelope["account"] = json!(account);
    }
    serde_json::to_vec(&envelope).expect("JSON values serialise")
}

fn session(s: &SessionFacts) -> Value {
    json!({
        "id": s.session_id,
        "object": "checkout.session",
        "client_reference_id": s.order_id,
        "payment_intent": s.payment_intent_id,
        "payment_status": s.payment_status.as_str(),
        "amount_total": s.amount_total,
        "currency": s.currency,
        "customer_email": s.customer_email,
        "livemode": s.livemode,
    })
}

fn payment_intent(pi: &PaymentIntentFacts) -> Value {
    let metadata = match &pi.order_id {
        Some(order_id) => json!({ "order_id": order_id }),
        None => json!({}),
    };
    json!({
        "id": pi.payment_intent_id,
        "object": "payment_intent",
        "metadata": metadata,
        "amount_received": pi.amount,
        "currency": pi.currency,
        "receipt_email": pi.receipt_email,
        "livemode": pi.livemode,
    })
}

/// One order: one or more Checkout Sessions (a retried checkout), each with some events
/// and maybe a PaymentIntent.
#[derive(Clone, Debug)]
pub struct OrderSpec {
    /// No `client_reference_id`/metadata: the order is named after its first session.
    pub named_by_session: bool,
    pub sessions: Vec<SessionSpec>,
    pub livemode: bool,
    /// The order is sold by a Connect account: its Stripe events carry
    /// `account` (`acct_{k}`); its custom-payment reports do not.
    pub connect: bool,
    /// Custom-payment reports for this order (each with its own id).
    pub custom: Vec<CustomSpec>,
}

/// One custom-payment report.
#[derive(Clone, Debug)]
pub struct CustomSpec {
    pub outcome: CustomOutcome,
    pub shows_email: bool,
}

#[derive(Clone, Debug)]
pub struct SessionSpec {
    /// The session references its PaymentIntent (in the events that show it).
    pub has_intent: bool,
    pub events: Vec<SessionEventSpec>,
    pub intent: Option<IntentSpec>,
}

#[derive(Clone, Debug)]
pub struct SessionEventSpec {
    pub kind: SessionEventKind,
    /// Whether this payload carries `payment_intent` (it may be null before payment).
    pub shows_intent: bool,
    pub shows_email: bool,
}

#[derive(Clone, Copy, Debug)]
pub enum SessionEventKind {
    Completed(PaymentStatus),
    Expired,
    AsyncSucceeded,
    AsyncFailed,
}

#[derive(Clone, Debug)]
pub struct IntentSpec {
    pub has_metadata: bool,
    pub shows_email: bool,
}

impl OrderSpec {
    pub fn order_id(&self, k: usize) -> String {
        if self.named_by_session {
            session_id(k, 0)
        } else {
            format!("ord_{k}")
        }
    }

    /// The Connect account of the order's Stripe events, if any.
    pub fn account(&self, k: usize) -> Option<String> {
        self.connect.then(|| format!("acct_{k}"))
    }

    pub fn events(&self, k: usize) -> Vec<OrderEvent> {
        let mut events = Vec::new();
        let stripe_event = |id: String, kind| OrderEvent {
            account: self.account(k),
            ..event(&id, kind)
        };
        for (j, session) in self.sessions.iter().enumerate() {
            for (i, spec) in session.events.iter().enumerate() {
                let kind = self.session_kind(k, j, spec);
                events.push(stripe_event(format!("evt_{k}_{j}_{i}"), kind));
            }
            if let Some(intent) = &session.intent {
                let kind = self.intent_kind(k, j, intent);
                events.push(stripe_event(format!("evt_{k}_{j}_pi"), kind));
            }
        }
        for (i, spec) in self.custom.iter().enumerate() {
            let report = self.custom_report(k, i, spec);
            events.push(event(
                &report.event_id(),
                EventKind::CustomPayment(Box::new(report)),
            ));
        }
        events
    }

    /// Amount, currency and email as the first PaymentIntent's, so that an
    /// order paid both ways (an anomaly) still converges to one row in the
    /// tests; what happens when they disagree is the documented "first fills".
    pub fn custom_report(&self, k: usize, i: usize, spec: &CustomSpec) -> CustomPaymentReport {
        CustomPaymentReport {
            id: format!("cpay_{k}_{i}"),
            order_id: self.order_id(k),
            outcome: spec.outcome,
            amount: amount(k, 0) + 1,
            currency: "eur".to_owned(),
            custom_payment_method_type: "cpmt_test".to_owned(),
            payment_reference: format!("psp_{k}_{i}"),
            initiated_at: 1_700_000_000,
            completed_at: 1_700_000_060,
            customer_email: spec.shows_email.then(|| format!("r{k}@example.com")),
            stripe_customer: None,
        }
    }

    pub fn session_kind(&self, k: usize, j: usize, spec: &SessionEventSpec) -> EventKind {
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

    pub fn intent_kind(&self, k: usize, j: usize, spec: &IntentSpec) -> EventKind {
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
    pub fn unmatchable_intents(&self) -> usize {
        self.sessions
            .iter()
            .filter(|session| session.intent.is_some() && !session.intent_matchable())
            .count()
    }

    /// Independent oracle: the highest target among the events that reach the order.
    pub fn expected_status(&self, k: usize) -> Option<OrderStatus> {
        let mut targets = Vec::new();
        for (j, session) in self.sessions.iter().enumerate() {
            for spec in &session.events {
                targets.push(self.session_kind(k, j, spec).target_status());
            }
            if session.intent_matchable() {
                targets.push(OrderStatus::Paid);
            }
        }
        targets.extend(self.custom.iter().map(|c| c.outcome.target_status()));
        targets.into_iter().max()
    }

    /// Independent oracle of double payments: Stripe (any paying event that
    /// reaches the order) counts once, each guaranteed report once; every
    /// payment after the first is an anomaly.
    pub fn expected_anomalies(&self, k: usize) -> usize {
        let stripe_paid = self.sessions.iter().enumerate().any(|(j, session)| {
            session.intent_matchable()
                || session
                    .events
                    .iter()
                    .any(|spec| self.session_kind(k, j, spec).target_status() == OrderStatus::Paid)
        });
        let custom_paid = self
            .custom
            .iter()
            .filter(|c| c.outcome == CustomOutcome::Guaranteed)
            .count();
        (usize::from(stripe_paid) + custom_paid).saturating_sub(1)
    }
}

impl SessionSpec {
    pub fn intent_matchable(&self) -> bool {
        self.intent.as_ref().is_some_and(|intent| {
            intent.has_metadata || (self.has_intent && self.events.iter().any(|e| e.shows_intent))
        })
    }
}

/// Cuts `events` into consecutive batches of the given sizes (cycled): how a
/// delivery is cut into the batches a worker applies.
pub fn batches(events: &[OrderEvent], sizes: &[usize]) -> Vec<Vec<OrderEvent>> {
    let mut out = Vec::new();
    let mut rest = events;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (batch, tail) = rest.split_at((*size).min(rest.len()));
        out.push(batch.to_vec());
        rest = tail;
    }
    out
}

pub fn session_id(k: usize, j: usize) -> String {
    format!("cs_test_{k}_{j}")
}

pub fn intent_id(k: usize, j: usize) -> String {
    format!("pi_{k}_{j}")
}

pub fn amount(k: usize, j: usize) -> i64 {
    (1000 * (k + 1) + 10 * j) as i64
}

pub fn session_event_kind() -> impl Strategy<Value = SessionEventKind> {
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

pub fn session_spec() -> impl Strategy<Value = SessionSpec> {
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

pub fn custom_spec() -> impl Strategy<Value = CustomSpec> {
    let outcome = prop_oneof![
        2 => Just(CustomOutcome::Guaranteed),
        1 => Just(CustomOutcome::Failed),
    ];
    (outcome, any::<bool>()).prop_map(|(outcome, shows_email)| CustomSpec {
        outcome,
        shows_email,
    })
}

/// Most orders are Stripe-only; one in three also gets one or two reports.
pub fn custom_specs() -> impl Strategy<Value = Vec<CustomSpec>> {
    prop_oneof![
        2 => Just(Vec::new()),
        1 => vec(custom_spec(), 1..=2),
    ]
}

pub fn order_spec(max_sessions: usize) -> impl Strategy<Value = OrderSpec> {
    (
        any::<bool>(),
        vec(session_spec(), 1..=max_sessions),
        any::<bool>(),
        custom_specs(),
        any::<bool>(),
    )
        .prop_map(
            |(named_by_session, sessions, livemode, custom, connect)| OrderSpec {
                named_by_session,
                sessions,
                livemode,
                connect,
                custom,
            },
        )
}

/// The orders, their events in canonical order, and a delivery of those events: each
/// delivered 1..=3 times, shuffled.
pub fn scenario(
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
