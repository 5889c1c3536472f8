use std::collections::{BTreeMap, BTreeSet};

use time::OffsetDateTime;

use crate::event::OrderEvent;
use crate::message::OrderMessage;
use crate::order::{Decision, Order, apply};

/// What [`Model::handle`] did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelOutcome {
    /// The event changed the order's status (and produced a message).
    Applied,
    /// The event id was seen before; nothing changed.
    Duplicate,
    /// The event's target does not outrank the order's status; details may have merged.
    Stale,
    /// "Unmatched": a PaymentIntent event naming no known order, kept until a session
    /// referencing that PaymentIntent arrives.
    Parked,
}

/// In-memory model of the worker, the oracle for property and integration tests:
/// dedup by event id; order resolution (a session names its order; a PaymentIntent
/// event its `metadata.order_id`, else the order of the Checkout Session that references
/// it); parking of PaymentIntent events that match no order yet, until a session
/// referencing that PaymentIntent arrives (they are then applied in the same step, in
/// arrival order); and the outbox.
///
/// The session → PaymentIntent links are kept apart from the orders' own
/// `payment_intent_id`, because an order with several Checkout Sessions references
/// several PaymentIntents; resolving through every link keeps the end status a function
/// of the set of events even then. With one session per order, looking the order up by
/// its `payment_intent_id` is equivalent.
#[derive(Clone, Debug, Default)]
pub struct Model {
    seen: BTreeSet<String>,
    orders: BTreeMap<String, Order>,
    /// PaymentIntent id → order id, from every session event that references one.
    links: BTreeMap<String, String>,
    parked: Vec<OrderEvent>,
    outbox: Vec<OrderMessage>,
}

impl Model {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn handle(&mut self, event: &OrderEvent, now: OffsetDateTime) -> ModelOutcome {
        if !self.seen.insert(event.id.clone()) {
            return ModelOutcome::Duplicate;
        }
        let Some(order_id) = self.resolve(event) else {
            self.parked.push(event.clone());
            return ModelOutcome::Parked;
        };
        let decision = self.apply_to(&order_id, event, now);
        if event.kind.session().is_some() {
            self.link(event, &order_id, now);
        }
        match decision {
            Decision::Transition(_) => ModelOutcome::Applied,
            Decision::Stale { .. } => ModelOutcome::Stale,
        }
    }

    pub fn orders(&self) -> &BTreeMap<String, Order> {
        &self.orders
    }

    pub fn outbox(&self) -> &[OrderMessage] {
        &self.outbox
    }

    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    pub fn parked_events(&self) -> &[OrderEvent] {
        &self.parked
    }

    /// The order whose Checkout Session references this PaymentIntent. The first link
    /// wins: Stripe never moves a PaymentIntent to another session.
    pub fn order_for_payment_intent(&self, payment_intent_id: &str) -> Option<&Order> {
        self.links
            .get(payment_intent_id)
            .and_then(|order_id| self.orders.get(order_id))
    }

    fn resolve(&self, event: &OrderEvent) -> Option<String> {
        if let Some(order_id) = event.order_id() {
            return Some(order_id.to_owned());
        }
        let payment_intent_id = event.kind.payment_intent_id()?;
        self.order_for_payment_intent(payment_intent_id)
            .map(|order| order.order_id.clone())
    }

    fn apply_to(&mut self, order_id: &str, event: &OrderEvent, now: OffsetDateTime) -> Decision {
        let current = self.orders.remove(order_id);
        let applied = apply(current, order_id, event, now);
        self.outbox.extend(applied.message);
        self.orders.insert(order_id.to_owned(), applied.order);
        applied.decision
    }

    /// Records the session's PaymentIntent link and applies the events parked for it.
    fn link(&mut self, session_event: &OrderEvent, order_id: &str, now: OffsetDateTime) {
        let Some(payment_intent_id) = session_event.kind.payment_intent_id() else {
            return;
        };
        self.links
            .entry(payment_intent_id.to_owned())
            .or_insert_with(|| order_id.to_owned());
        let (matched, still_parked): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|event| event.kind.payment_intent_id() == Some(payment_intent_id));
        self.parked = still_parked;
        let owner = self.links[payment_intent_id].clone();
        for event in &matched {
            self.apply_to(&owner, event, now);
        }
    }
}
