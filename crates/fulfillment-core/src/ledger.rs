//! The one home of the rules for applying a batch of events: dedup inside the
//! batch, how an event finds its order (its own order id, else the
//! PaymentIntent link a session or a PaymentIntent naming its order
//! recorded), parking an event no order claims yet (a PaymentIntent's, a
//! refund's, a dispute's), recording a link (the first link wins), releasing
//! the events parked for it, what each event's outcome is, which distinct
//! payments each order has had, and when a second one is an anomaly.
//!
//! [`Ledger`] is pure: it is given the state a batch touches and the events
//! in arrival order, and returns every effect as data ([`Effects`]). Its two
//! drivers only feed it and keep what it returns:
//!
//! - `fulfillment::store` loads the rows the batch touches from PostgreSQL
//!   (planned by [`crate::BatchPlan`]), calls [`Ledger::apply`] once, and
//!   writes [`Effects`] back with one set-based statement per table;
//! - [`crate::Model`] keeps the whole state in memory and calls
//!   [`Ledger::apply`] once per event, as the oracle of the tests.
//!
//! What a driver loads is its own business, not a rule: the store hands in
//! expired parked events (`PARKED_TTL`) too, so a late session still releases
//! them; the Model has no bodies and passes empty ones.

use std::collections::{BTreeMap, BTreeSet};

use time::OffsetDateTime;

use crate::custom::CustomPaymentReport;
use crate::event::OrderEvent;
use crate::lifecycle::Note;
use crate::message::OrderMessage;
use crate::order::{Order, Transition, apply};
use crate::payment::{Anomaly, AnomalyKind, NewPayment, PaymentSource};
use crate::plan::fresh;

/// What processing an event did; the label is the metric's `outcome` and the
/// `processed_events.outcome` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// The event changed the order's status, or recorded a new lifecycle fact
    /// (and produced a message).
    Applied,
    /// Nothing new: the event's target does not outrank the order's status and it
    /// recorded no new fact; details may have merged.
    Stale,
    /// The event id was processed before, or is a second copy in the batch.
    Duplicate,
    /// Parked: an event of a PaymentIntent no order claims yet, kept until an
    /// event linking that PaymentIntent to its order arrives.
    Unmatched,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Stale => "stale",
            Outcome::Duplicate => "duplicate",
            Outcome::Unmatched => "unmatched",
        }
    }
}

/// What one event did besides its outcome, for metrics and logs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub transitions: Vec<Transition>,
    /// Lifecycle facts newly recorded, with the order they were recorded on.
    pub notes: Vec<(String, Note)>,
    /// Parked events applied because this event linked their PaymentIntent.
    pub released: usize,
    /// Anomalies this event (or an event it released) revealed.
    pub anomalies: Vec<Anomaly>,
}

/// A parked event with the raw body Stripe sent, waiting for the event that
/// links its PaymentIntent to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedEvent {
    pub event: OrderEvent,
    pub body: Vec<u8>,
}

impl ParkedEvent {
    pub fn payment_intent_id(&self) -> &str {
        self.event
            .kind
            .payment_intent_id()
            .expect("only events with a PaymentIntent are parked")
    }
}

/// A status change of an order, with the event that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub order_id: String,
    pub transition: Transition,
    pub event_id: String,
}

/// Every effect of one [`Ledger::apply`], in the order it happened.
#[derive(Debug, Default)]
pub struct Effects {
    /// One per event given, in the same order.
    pub results: Vec<(Outcome, Report)>,
    /// The rows of every order the batch touched, as they are now.
    pub orders: Vec<Order>,
    pub transitions: Vec<Recorded>,
    pub messages: Vec<OrderMessage>,
    /// PaymentIntent id → order id, recorded by this batch.
    pub new_links: Vec<(String, String)>,
    /// Ids of parked events (from before or from this batch) applied now.
    pub released: Vec<String>,
    /// Last outcome and order of every event this batch decided, released
    /// ones included (they end `applied` or `stale`, not `unmatched`): what
    /// `processed_events` records. Duplicates are not in it.
    pub processed: BTreeMap<String, (Outcome, Option<String>)>,
    /// Distinct payments orders gained (`order_payments`).
    pub new_payments: Vec<NewPayment>,
    /// A second distinct payment reaching an order (`order_anomalies`).
    pub anomalies: Vec<Anomaly>,
    /// Every custom-payment report this batch took in (duplicates are not),
    /// in arrival order (`custom_payments`).
    pub custom_reports: Vec<CustomPaymentReport>,
}

/// The state a batch touches: orders, PaymentIntent links, parked events,
/// and the distinct payments of the orders.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    orders: BTreeMap<String, Order>,
    /// Order id → the distinct payments that reached it (absent: none).
    payments: BTreeMap<String, BTreeSet<PaymentSource>>,
    /// PaymentIntent id → order id, from every event that names its order and
    /// references a PaymentIntent ([`OrderEvent::link`]).
    links: BTreeMap<String, String>,
    /// Oldest first.
    parked: Vec<ParkedEvent>,
    /// Orders the current [`Ledger::apply`] touched.
    touched: BTreeSet<String>,
}

impl Ledger {
    pub fn new(
        orders: BTreeMap<String, Order>,
        links: BTreeMap<String, String>,
        parked: Vec<ParkedEvent>,
    ) -> Ledger {
        Ledger {
            orders,
            payments: BTreeMap::new(),
            links,
            parked,
            touched: BTreeSet::new(),
        }
    }

    /// The payments already recorded for the orders the batch may touch
    /// (a driver loads them with the orders; see [`Ledger::payments`]).
    pub fn with_payments(mut self, payments: BTreeMap<String, BTreeSet<PaymentSource>>) -> Ledger {
        self.payments = payments;
        self
    }

    /// Order id → the distinct payments that reached it.
    pub fn payments(&self) -> &BTreeMap<String, BTreeSet<PaymentSource>> {
        &self.payments
    }

    pub fn orders(&self) -> &BTreeMap<String, Order> {
        &self.orders
    }

    pub fn links(&self) -> &BTreeMap<String, String> {
        &self.links
    }

    /// Events still parked (loaded and not released, or parked by this batch).
    pub fn parked(&self) -> &[ParkedEvent] {
        &self.parked
    }

    /// Applies `events` (with their raw bodies) in arrival order. `is_new`
    /// says whether an event id was not processed before; of the new ones only
    /// the first copy in the batch is applied, the others are duplicates.
    pub fn apply(
        &mut self,
        events: &[(&OrderEvent, &[u8])],
        is_new: impl Fn(&str) -> bool,
        now: OffsetDateTime,
    ) -> Effects {
        let mut effects = Effects::default();
        let fresh = fresh(events.iter().map(|(e, _)| *e), is_new);
        for ((event, body), fresh) in events.iter().zip(fresh) {
            let result = if fresh {
                self.handle(event, body, now, &mut effects)
            } else {
                (Outcome::Duplicate, Report::default())
            };
            effects.results.push(result);
        }
        effects.orders = std::mem::take(&mut self.touched)
            .iter()
            .map(|id| self.orders[id].clone())
            .collect();
        effects
    }

    fn handle(
        &mut self,
        event: &OrderEvent,
        body: &[u8],
        now: OffsetDateTime,
        effects: &mut Effects,
    ) -> (Outcome, Report) {
        let mut report = Report::default();
        let applied = self.resolve(event).and_then(|order_id| {
            let outcome = self.apply_to(&order_id, event, now, effects, &mut report)?;
            Some((order_id, outcome))
        });
        let Some((order_id, outcome)) = applied else {
            self.parked.push(ParkedEvent {
                event: event.clone(),
                body: body.to_vec(),
            });
            effects
                .processed
                .insert(event.id.clone(), (Outcome::Unmatched, None));
            return (Outcome::Unmatched, report);
        };
        if let Some(report) = event.kind.custom_payment() {
            effects.custom_reports.push(report.clone());
        }
        effects
            .processed
            .insert(event.id.clone(), (outcome, Some(order_id.clone())));
        if let Some((pi, _)) = event.link() {
            self.link_and_release(pi, &order_id, now, effects, &mut report);
        }
        (outcome, report)
    }

    /// A session names its order; a PaymentIntent event its `metadata.order_id`,
    /// else (like a refund or a dispute, which never name it) the order its
    /// PaymentIntent was linked to.
    fn resolve(&self, event: &OrderEvent) -> Option<String> {
        if let Some(order_id) = event.order_id() {
            return Some(order_id.to_owned());
        }
        let pi = event.kind.payment_intent_id()?;
        self.links.get(pi).cloned()
    }

    /// `None` when the event cannot apply to an order not known here (a refund
    /// or a dispute cannot create one): the caller keeps it parked.
    fn apply_to(
        &mut self,
        order_id: &str,
        event: &OrderEvent,
        now: OffsetDateTime,
        effects: &mut Effects,
        report: &mut Report,
    ) -> Option<Outcome> {
        let current = self.orders.remove(order_id);
        // None only when there was no order: nothing to put back.
        let applied = apply(current, order_id, event, now)?;
        self.orders.insert(order_id.to_owned(), applied.order);
        self.touched.insert(order_id.to_owned());
        self.record_payment(order_id, event, effects, report);
        let mut outcome = Outcome::Stale;
        if let (Some(transition), Some(message)) = (
            applied.decision.and_then(|d| d.transition()),
            applied.message,
        ) {
            effects.transitions.push(Recorded {
                order_id: order_id.to_owned(),
                transition,
                event_id: event.id.clone(),
            });
            effects.messages.push(message);
            report.transitions.push(transition);
            outcome = Outcome::Applied;
        }
        if let Some((note, message)) = applied.note {
            effects.messages.push(message);
            report.notes.push((order_id.to_owned(), note));
            outcome = Outcome::Applied;
        }
        Some(outcome)
    }

    /// Adds the event's payment to its order's set. A payment the set did not
    /// hold, joining others, is a second distinct payment: an anomaly. (The
    /// order is paid by the first; the status rule already keeps it `paid`
    /// and sends no second `order.paid`.)
    fn record_payment(
        &mut self,
        order_id: &str,
        event: &OrderEvent,
        effects: &mut Effects,
        report: &mut Report,
    ) {
        let Some(source) = event.kind.payment_source() else {
            return;
        };
        let sources = self.payments.entry(order_id.to_owned()).or_default();
        if sources.contains(&source) {
            return;
        }
        let earlier: Vec<PaymentSource> = sources.iter().cloned().collect();
        sources.insert(source.clone());
        effects.new_payments.push(NewPayment {
            order_id: order_id.to_owned(),
            source: source.clone(),
            event_id: event.id.clone(),
        });
        if earlier.is_empty() {
            return;
        }
        let anomaly = Anomaly {
            order_id: order_id.to_owned(),
            kind: AnomalyKind::PaidTwice,
            event_id: event.id.clone(),
            payment: source,
            earlier,
        };
        effects.anomalies.push(anomaly.clone());
        report.anomalies.push(anomaly);
    }

    /// Records the PaymentIntent's link (the first link wins: Stripe never
    /// moves a PaymentIntent to another session) and applies the events parked
    /// for it to the linked order, by (Stripe's `created`, event id).
    ///
    /// That order is the ledger's, not the driver's: the store loads parked
    /// events by the time it parked them, and a batch parks several at one
    /// time; since a PaymentIntent can now park several (its refunds, say),
    /// and which `order.refunded` is sent depends on their order, both drivers
    /// must release them alike.
    fn link_and_release(
        &mut self,
        pi: &str,
        order_id: &str,
        now: OffsetDateTime,
        effects: &mut Effects,
        report: &mut Report,
    ) {
        if !self.links.contains_key(pi) {
            self.links.insert(pi.to_owned(), order_id.to_owned());
            effects.new_links.push((pi.to_owned(), order_id.to_owned()));
        }
        let owner = self.links[pi].clone();
        let (mut released, still): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.payment_intent_id() == pi);
        self.parked = still;
        released
            .sort_by(|a, b| (a.event.created, &a.event.id).cmp(&(b.event.created, &b.event.id)));
        for p in released {
            let Some(outcome) = self.apply_to(&owner, &p.event, now, effects, report) else {
                // The linked order is not among those loaded: it stays parked.
                self.parked.push(p);
                continue;
            };
            effects
                .processed
                .insert(p.event.id.clone(), (outcome, Some(owner.clone())));
            effects.released.push(p.event.id);
            report.released += 1;
        }
    }
}
