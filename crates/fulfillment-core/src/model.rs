//! The in-memory driver of [`Ledger`]: the whole worker's state in maps, one
//! event at a time. The rules are the ledger's (crate::ledger); this module
//! only remembers which event ids it has seen and what the ledger emitted.

use std::collections::{BTreeMap, BTreeSet};

use time::OffsetDateTime;

use crate::custom::CustomPaymentReport;
use crate::event::OrderEvent;
use crate::ledger::{Ledger, Outcome, Recorded};
use crate::message::OrderMessage;
use crate::order::Order;
use crate::payment::{Anomaly, NewPayment, PaymentSource};

/// In-memory model of the worker, the oracle for property and integration tests:
/// dedup by event id, then [`Ledger`] on the whole state (order resolution, parking of
/// PaymentIntent events that match no order yet until a session referencing that
/// PaymentIntent arrives, and the outbox).
///
/// The session → PaymentIntent links are kept apart from the orders' own
/// `payment_intent_id`, because an order with several Checkout Sessions references
/// several PaymentIntents; resolving through every link keeps the end status a function
/// of the set of events even then. With one session per order, looking the order up by
/// its `payment_intent_id` is equivalent.
#[derive(Clone, Debug, Default)]
pub struct Model {
    seen: BTreeSet<String>,
    ledger: Ledger,
    transitions: Vec<Recorded>,
    outbox: Vec<OrderMessage>,
    /// What `processed_events` would say: last outcome and order per event id.
    processed: BTreeMap<String, (Outcome, Option<String>)>,
    payments: Vec<NewPayment>,
    anomalies: Vec<Anomaly>,
    custom_reports: Vec<CustomPaymentReport>,
}

impl Model {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one event; the model keeps no raw bodies.
    pub fn handle(&mut self, event: &OrderEvent, now: OffsetDateTime) -> Outcome {
        let is_new = self.seen.insert(event.id.clone());
        let mut effects = self.ledger.apply(&[(event, &[])], |_| is_new, now);
        self.transitions.append(&mut effects.transitions);
        self.outbox.append(&mut effects.messages);
        self.processed.append(&mut effects.processed);
        self.payments.append(&mut effects.new_payments);
        self.anomalies.append(&mut effects.anomalies);
        self.custom_reports.append(&mut effects.custom_reports);
        let (outcome, _) = effects.results.pop().expect("one result per event");
        outcome
    }

    pub fn orders(&self) -> &BTreeMap<String, Order> {
        self.ledger.orders()
    }

    pub fn outbox(&self) -> &[OrderMessage] {
        &self.outbox
    }

    /// Every status change so far, in the order it happened.
    pub fn transitions(&self) -> &[Recorded] {
        &self.transitions
    }

    /// Each event's last outcome and order, as the store records it in
    /// `processed_events` (a released event ends `applied` or `stale`).
    pub fn processed(&self) -> &BTreeMap<String, (Outcome, Option<String>)> {
        &self.processed
    }

    /// Every distinct payment recorded for an order, in the order it arrived.
    pub fn payments(&self) -> &[NewPayment] {
        &self.payments
    }

    /// Order id → its distinct payments.
    pub fn payment_sources(&self) -> &BTreeMap<String, BTreeSet<PaymentSource>> {
        self.ledger.payments()
    }

    /// Every anomaly raised so far, in the order it happened.
    pub fn anomalies(&self) -> &[Anomaly] {
        &self.anomalies
    }

    /// Every custom-payment report taken in (not its duplicates).
    pub fn custom_reports(&self) -> &[CustomPaymentReport] {
        &self.custom_reports
    }

    pub fn parked(&self) -> usize {
        self.ledger.parked().len()
    }

    /// The events still parked, oldest first.
    pub fn parked_events(&self) -> impl Iterator<Item = &OrderEvent> {
        self.ledger.parked().iter().map(|p| &p.event)
    }

    /// The order whose Checkout Session references this PaymentIntent. The first link
    /// wins: Stripe never moves a PaymentIntent to another session.
    pub fn order_for_payment_intent(&self, payment_intent_id: &str) -> Option<&Order> {
        self.ledger
            .links()
            .get(payment_intent_id)
            .and_then(|order_id| self.orders().get(order_id))
    }
}
