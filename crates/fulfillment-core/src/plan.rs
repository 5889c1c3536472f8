//! What a batch touches and which locks it takes, as a pure function of its
//! events, so the store only executes it.
//!
//! Concurrency (the store's side of it): deliveries of the same event
//! serialise on the `processed_events` primary key; events of the same order
//! on a transaction-scoped advisory lock of the order, and those of the same
//! PaymentIntent on one of the PaymentIntent. The PaymentIntent's lock closes
//! the race between a PaymentIntent event that finds no order (and parks) and
//! the session that links it. The keys known from the events are taken first,
//! all at once in one global order, so concurrent batches cannot deadlock on
//! them; only orders found through an existing PaymentIntent link are locked
//! after the links are read (a rare deadlock there is detected by PostgreSQL
//! and retried by the worker).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::event::OrderEvent;

/// Which copies of `events` a batch applies: those whose id `is_new` (not
/// processed before) and that are the first of their id in the batch.
pub fn fresh<'a>(
    events: impl IntoIterator<Item = &'a OrderEvent>,
    is_new: impl Fn(&str) -> bool,
) -> Vec<bool> {
    let mut seen = BTreeSet::new();
    events
        .into_iter()
        .map(|e| is_new(&e.id) && seen.insert(e.id.as_str()))
        .collect()
}

/// The name of an advisory lock; ordered, so a set of them has one order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LockKey(String);

impl LockKey {
    pub fn order(order_id: &str) -> LockKey {
        LockKey(format!("order:{order_id}"))
    }

    pub fn payment_intent(payment_intent_id: &str) -> LockKey {
        LockKey(format!("payment_intent:{payment_intent_id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The events a batch applies (see [`fresh`]) and what they need loaded and
/// locked, step by step: [`BatchPlan::first_locks`], then the links of
/// [`BatchPlan::payment_intents`], then [`BatchPlan::link_locks`], then the
/// orders of [`BatchPlan::order_ids`] and the parked events of
/// [`BatchPlan::linking_payment_intents`].
#[derive(Debug, Clone)]
pub struct BatchPlan<'a> {
    events: Vec<&'a OrderEvent>,
}

impl<'a> BatchPlan<'a> {
    pub fn new(
        events: impl IntoIterator<Item = &'a OrderEvent> + Clone,
        is_new: impl Fn(&str) -> bool,
    ) -> BatchPlan<'a> {
        let fresh = fresh(events.clone(), is_new);
        let events = events
            .into_iter()
            .zip(fresh)
            .filter_map(|(event, fresh)| fresh.then_some(event))
            .collect();
        BatchPlan { events }
    }

    /// The events the batch applies, in arrival order.
    pub fn events(&self) -> &[&'a OrderEvent] {
        &self.events
    }

    /// Every order and PaymentIntent the events name, taken before anything is read.
    pub fn first_locks(&self) -> BTreeSet<LockKey> {
        let mut keys = BTreeSet::new();
        for event in &self.events {
            if let Some(pi) = event.kind.payment_intent_id() {
                keys.insert(LockKey::payment_intent(pi));
            }
            if let Some(order) = event.order_id() {
                keys.insert(LockKey::order(order));
            }
        }
        keys
    }

    /// The PaymentIntents whose links the batch reads.
    pub fn payment_intents(&self) -> Vec<&'a str> {
        self.events
            .iter()
            .filter_map(|e| e.kind.payment_intent_id())
            .collect()
    }

    /// Orders found through `links` that [`BatchPlan::first_locks`] did not lock.
    pub fn link_locks(&self, links: &BTreeMap<String, String>) -> BTreeSet<LockKey> {
        let first = self.first_locks();
        links
            .values()
            .map(|order| LockKey::order(order))
            .filter(|key| !first.contains(key))
            .collect()
    }

    /// The orders the batch reads: those the events name and those linked.
    pub fn order_ids<'b>(&self, links: &'b BTreeMap<String, String>) -> Vec<&'b str>
    where
        'a: 'b,
    {
        let mut ids: Vec<&str> = self.events.iter().filter_map(|e| e.order_id()).collect();
        ids.extend(links.values().map(String::as_str));
        ids
    }

    /// The PaymentIntents the batch's events link to an order
    /// ([`OrderEvent::link`]): their parked events may be released.
    pub fn linking_payment_intents(&self) -> Vec<&'a str> {
        self.events
            .iter()
            .filter_map(|e| e.link().map(|(pi, _)| pi))
            .collect()
    }
}
