//! Random scenarios of Stripe events for property tests (feature `scenarios`):
//! orders with one or more Checkout Sessions, their events and PaymentIntents
//! (succeeded, processing, failed attempts, canceled), the refunds and
//! disputes of their charges, and custom-payment reports for the same orders
//! (some guaranteed, some failed, sometimes two), delivered in any order with
//! duplicates, plus an independent oracle of the end status, the lifecycle
//! facts and the double payments. Shared by the core's property tests and the
//! store-vs-Model test of the `fulfillment` crate, so both draw from the same
//! distribution.

use std::collections::BTreeMap;

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::custom::{self, CustomOutcome, CustomPaymentReport};
use crate::event::{EventKind, OrderEvent, PaymentIntentFacts, SessionFacts};
use crate::lifecycle::{
    DisputeFacts, DisputeStatus, FailedAttempt, PaymentError, RefundFacts, RefundStatus,
};
use crate::status::{OrderStatus, PaymentStatus};

const CREATED: i64 = 1_700_000_000;

fn event(id: &str, kind: EventKind) -> OrderEvent {
    event_at(id, CREATED, kind)
}

fn event_at(id: &str, created: i64, kind: EventKind) -> OrderEvent {
    OrderEvent {
        id: id.to_owned(),
        event_type: kind.event_type().to_owned(),
        created,
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
        EventKind::PaymentIntentPaymentFailed(attempt) => {
            let mut object = payment_intent(&attempt.intent);
            object["last_payment_error"] = payment_error(&attempt.error);
            object
        }
        EventKind::ChargeRefunded(refund) => charge(refund),
        EventKind::ChargeDisputeCreated(dispute) => self::dispute(dispute, "needs_response"),
        EventKind::ChargeDisputeClosed(dispute) => self::dispute(dispute, dispute.status.as_str()),
        kind => match (kind.payment_intent(), kind.session()) {
            (Some(pi), _) => payment_intent(pi),
            (None, Some(s)) => session(s),
            (None, None) => unreachable!("every other kind is a PaymentIntent or a session"),
        },
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
        "amount": pi.amount,
        "amount_received": pi.amount,
        "currency": pi.currency,
        "receipt_email": pi.receipt_email,
        "livemode": pi.livemode,
    })
}

fn payment_error(error: &PaymentError) -> Value {
    if *error == PaymentError::default() {
        return Value::Null;
    }
    json!({
        "code": error.failure_code,
        "decline_code": error.decline_code,
        "message": error.failure_message,
        "type": "card_error",
    })
}

fn charge(refund: &RefundFacts) -> Value {
    json!({
        "id": refund.charge_id,
        "object": "charge",
        "amount_refunded": refund.amount_refunded,
        "refunded": refund.refund_status == RefundStatus::Full,
        "payment_intent": refund.payment_intent_id,
        "currency": refund.currency,
        "livemode": refund.livemode,
    })
}

fn dispute(d: &DisputeFacts, stripe_status: &str) -> Value {
    json!({
        "id": d.dispute_id,
        "object": "dispute",
        "charge": d.charge_id,
        "payment_intent": d.payment_intent_id,
        "status": stripe_status,
        "reason": d.reason,
        "amount": d.amount,
        "currency": d.currency,
        "evidence_details": { "due_by": d.evidence_due_by, "has_evidence": false },
        "livemode": d.livemode,
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

/// A PaymentIntent: its own events, and the refunds and dispute of its charge.
#[derive(Clone, Debug)]
pub struct IntentSpec {
    pub has_metadata: bool,
    pub shows_email: bool,
    pub events: Vec<IntentEventKind>,
    /// One `charge.refunded` each, by how much of the charge is refunded then.
    pub refunds: Vec<RefundStep>,
    pub dispute: Option<DisputeSpec>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntentEventKind {
    Succeeded,
    Processing,
    /// A declined attempt; the number picks the error (2: none given).
    Failed(u8),
    Canceled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundStep {
    Quarter,
    Half,
    Full,
}

/// Which events of the charge's one dispute are delivered.
#[derive(Clone, Copy, Debug)]
pub struct DisputeSpec {
    pub created: bool,
    /// `won` or `lost`.
    pub closed: Option<DisputeStatus>,
}

impl IntentEventKind {
    fn target(self) -> OrderStatus {
        match self {
            IntentEventKind::Succeeded => OrderStatus::Paid,
            IntentEventKind::Processing | IntentEventKind::Failed(_) => {
                OrderStatus::AwaitingPayment
            }
            IntentEventKind::Canceled => OrderStatus::Canceled,
        }
    }
}

impl RefundStep {
    /// `amount_refunded` and `refund_status` of a charge of `amount`.
    pub fn refund(self, amount: i64) -> (i64, RefundStatus) {
        match self {
            RefundStep::Quarter => (amount / 4, RefundStatus::Partial),
            RefundStep::Half => (amount / 2, RefundStatus::Partial),
            RefundStep::Full => (amount, RefundStatus::Full),
        }
    }
}

/// The lifecycle facts an order's events imply (see [`OrderSpec::expected_lifecycle`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExpectedLifecycle {
    pub failed_attempts: u32,
    pub refund: Option<(i64, RefundStatus)>,
    pub disputes: BTreeMap<String, DisputeStatus>,
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
                let intent_events = self.intent_events(k, j, intent).into_iter();
                events.extend(intent_events.map(|e| OrderEvent {
                    account: self.account(k),
                    ..e
                }));
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

    /// The PaymentIntent's events, then its charge's refunds and dispute.
    pub fn intent_events(&self, k: usize, j: usize, spec: &IntentSpec) -> Vec<OrderEvent> {
        let mut events = Vec::new();
        for (i, kind) in spec.events.iter().enumerate() {
            let id = format!("evt_{k}_{j}_pi{i}");
            // Failed attempts at different times, not in id order, so that the
            // "latest failure" rule is exercised.
            let created = CREATED + ((i as i64 * 7) % 3);
            events.push(event_at(&id, created, self.intent_kind(k, j, spec, *kind)));
        }
        let charge_amount = amount(k, j) + 1;
        for (i, step) in spec.refunds.iter().enumerate() {
            let (amount_refunded, refund_status) = step.refund(charge_amount);
            let refund = RefundFacts {
                charge_id: format!("ch_{k}_{j}"),
                payment_intent_id: intent_id(k, j),
                amount_refunded,
                refund_status,
                currency: Some("eur".to_owned()),
                livemode: self.livemode,
            };
            events.push(event(
                &format!("evt_{k}_{j}_re{i}"),
                EventKind::ChargeRefunded(refund),
            ));
        }
        if let Some(dispute) = spec.dispute {
            let facts = |status| DisputeFacts {
                dispute_id: dispute_id(k, j),
                payment_intent_id: intent_id(k, j),
                charge_id: Some(format!("ch_{k}_{j}")),
                status,
                reason: Some("fraudulent".to_owned()),
                amount: Some(charge_amount),
                currency: Some("eur".to_owned()),
                evidence_due_by: Some(CREATED + 7 * 86_400),
                livemode: self.livemode,
            };
            if dispute.created {
                let kind = EventKind::ChargeDisputeCreated(facts(DisputeStatus::Open));
                events.push(event(&format!("evt_{k}_{j}_dc"), kind));
            }
            if let Some(status) = dispute.closed {
                let kind = EventKind::ChargeDisputeClosed(facts(status));
                events.push(event(&format!("evt_{k}_{j}_dx"), kind));
            }
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

    pub fn intent_kind(
        &self,
        k: usize,
        j: usize,
        spec: &IntentSpec,
        kind: IntentEventKind,
    ) -> EventKind {
        // Deliberately different from the session's facts, so the merge rule matters.
        let facts = PaymentIntentFacts {
            payment_intent_id: intent_id(k, j),
            order_id: spec.has_metadata.then(|| self.order_id(k)),
            amount: Some(amount(k, j) + 1),
            currency: Some("eur".to_owned()),
            receipt_email: spec.shows_email.then(|| format!("r{k}@example.com")),
            livemode: self.livemode,
        };
        match kind {
            IntentEventKind::Succeeded => EventKind::PaymentIntentSucceeded(facts),
            IntentEventKind::Processing => EventKind::PaymentIntentProcessing(facts),
            IntentEventKind::Canceled => EventKind::PaymentIntentCanceled(facts),
            IntentEventKind::Failed(n) => {
                EventKind::PaymentIntentPaymentFailed(Box::new(FailedAttempt {
                    intent: facts,
                    error: sample_error(n),
                }))
            }
        }
    }

    /// Events the worker can never attribute to this order: they stay parked.
    pub fn unmatchable_events(&self) -> usize {
        self.sessions
            .iter()
            .filter_map(|session| {
                let intent = session.intent.as_ref()?;
                let charges = intent.refunds.len()
                    + intent.dispute.map_or(0, |d| {
                        usize::from(d.created) + usize::from(d.closed.is_some())
                    });
                let own = if intent.has_metadata {
                    0
                } else {
                    intent.events.len()
                };
                Some(if session.intent_linked() {
                    0
                } else {
                    own + charges
                })
            })
            .sum()
    }

    /// Independent oracle: the highest target among the events that reach the order.
    pub fn expected_status(&self, k: usize) -> Option<OrderStatus> {
        let mut targets = Vec::new();
        for (j, session) in self.sessions.iter().enumerate() {
            for spec in &session.events {
                targets.extend(self.session_kind(k, j, spec).target_status());
            }
            if let Some(intent) = session.applied_intent() {
                targets.extend(intent.events.iter().map(|e| e.target()));
            }
        }
        targets.extend(self.custom.iter().map(|c| c.outcome.target_status()));
        targets.into_iter().max()
    }

    /// Independent oracle of the facts beside the status: every failed attempt
    /// that reaches the order counted once, the largest refund, and each
    /// dispute at the highest status its events reached.
    pub fn expected_lifecycle(&self, k: usize) -> ExpectedLifecycle {
        let mut expected = ExpectedLifecycle::default();
        for (j, session) in self.sessions.iter().enumerate() {
            let Some(intent) = session.applied_intent() else {
                continue;
            };
            expected.failed_attempts += intent
                .events
                .iter()
                .filter(|e| matches!(e, IntentEventKind::Failed(_)))
                .count() as u32;
            if !session.intent_linked() {
                continue; // the charge's events never find the order
            }
            let refunds = intent.refunds.iter().map(|s| s.refund(amount(k, j) + 1));
            expected.refund = expected.refund.into_iter().chain(refunds).max();
            if let Some(dispute) = intent.dispute {
                let created = dispute.created.then_some(DisputeStatus::Open);
                if let Some(status) = created.into_iter().chain(dispute.closed).max() {
                    expected.disputes.insert(dispute_id(k, j), status);
                }
            }
        }
        expected
    }

    /// Independent oracle of double payments: Stripe (any paying event that
    /// reaches the order) counts once, each guaranteed report once; every
    /// payment after the first is an anomaly.
    pub fn expected_anomalies(&self, k: usize) -> usize {
        let stripe_paid = self.sessions.iter().enumerate().any(|(j, session)| {
            let intent_paid = session
                .applied_intent()
                .is_some_and(|intent| intent.events.contains(&IntentEventKind::Succeeded));
            intent_paid
                || session.events.iter().any(|spec| {
                    self.session_kind(k, j, spec).target_status() == Some(OrderStatus::Paid)
                })
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
    /// Whether the PaymentIntent ends linked to the order: a session event shows
    /// it, or one of its own events names the order in metadata.
    pub fn intent_linked(&self) -> bool {
        self.intent.as_ref().is_some_and(|intent| {
            (self.has_intent && self.events.iter().any(|e| e.shows_intent))
                || (intent.has_metadata && !intent.events.is_empty())
        })
    }

    /// The PaymentIntent, when its own events reach the order.
    fn applied_intent(&self) -> Option<&IntentSpec> {
        self.intent
            .as_ref()
            .filter(|intent| intent.has_metadata || self.intent_linked())
    }
}

/// The error of a declined attempt; 2 is a failure Stripe gave no details for.
pub fn sample_error(n: u8) -> PaymentError {
    let text = |s: &str| Some(s.to_owned());
    match n % 3 {
        0 => PaymentError {
            failure_code: text("card_declined"),
            decline_code: text("generic_decline"),
            failure_message: text("Your card was declined."),
        },
        1 => PaymentError {
            failure_code: text("card_declined"),
            decline_code: text("insufficient_funds"),
            failure_message: text("Your card has insufficient funds."),
        },
        _ => PaymentError::default(),
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

pub fn dispute_id(k: usize, j: usize) -> String {
    format!("du_{k}_{j}")
}

pub fn intent_event_kind() -> impl Strategy<Value = IntentEventKind> {
    prop_oneof![
        3 => Just(IntentEventKind::Succeeded),
        1 => Just(IntentEventKind::Processing),
        2 => (0..3u8).prop_map(IntentEventKind::Failed),
        1 => Just(IntentEventKind::Canceled),
    ]
}

pub fn refund_step() -> impl Strategy<Value = RefundStep> {
    prop_oneof![
        Just(RefundStep::Quarter),
        Just(RefundStep::Half),
        Just(RefundStep::Full),
    ]
}

pub fn dispute_spec() -> impl Strategy<Value = DisputeSpec> {
    let closed = proptest::option::of(prop_oneof![
        Just(DisputeStatus::Won),
        Just(DisputeStatus::Lost),
    ]);
    (any::<bool>(), closed).prop_map(|(created, closed)| DisputeSpec { created, closed })
}

pub fn intent_spec() -> impl Strategy<Value = IntentSpec> {
    let refunds = prop_oneof![2 => Just(Vec::new()), 1 => vec(refund_step(), 1..=3)];
    (
        any::<bool>(),
        any::<bool>(),
        vec(intent_event_kind(), 0..=3),
        refunds,
        proptest::option::weighted(0.3, dispute_spec()),
    )
        .prop_map(
            |(has_metadata, shows_email, events, refunds, dispute)| IntentSpec {
                has_metadata,
                shows_email,
                events,
                refunds,
                dispute,
            },
        )
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
    let intent = proptest::option::of(intent_spec());
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
