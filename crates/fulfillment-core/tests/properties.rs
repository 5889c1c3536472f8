//! Order-independence of the whole worker, checked on the reference [`Model`]: any
//! permutation of a set of events (Stripe's and custom-payment reports for the same
//! orders), with any duplication, ends in the same place, statuses and lifecycle
//! facts (failed attempts, refunds, disputes) alike.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::NOW;
use fulfillment_core::scenario::{ExpectedLifecycle, OrderSpec, body, scenario};
use fulfillment_core::{
    Detail, Lifecycle, Model, Order, OrderEvent, OrderMessage, OrderStatus, Parsed, parse_event,
};
use proptest::prelude::*;

/// Feeds `events` to a fresh model, checking the step invariants after every event.
fn run(events: &[OrderEvent]) -> Result<Model, TestCaseError> {
    let mut model = Model::new();
    for event in events {
        let paid_before: Vec<String> = paid_orders(&model);
        let before = model.orders().clone();
        model.handle(event, NOW);
        for order_id in paid_before {
            prop_assert_eq!(model.orders()[&order_id].status, OrderStatus::Paid);
        }
        for (id, old) in &before {
            check_monotone(&old.lifecycle, &model.orders()[id].lifecycle)?;
        }
        check_outbox(&model)?;
    }
    Ok(model)
}

/// Lifecycle facts only grow: no refund shrinks, no dispute reopens, no
/// failed attempt is forgotten.
fn check_monotone(old: &Lifecycle, new: &Lifecycle) -> Result<(), TestCaseError> {
    prop_assert!(new.failed_attempts >= old.failed_attempts);
    let key = |l: &Lifecycle| l.refund.map(|r| (r.amount_refunded, r.status));
    prop_assert!(
        key(new) >= key(old),
        "refund {:?} -> {:?}",
        old.refund,
        new.refund
    );
    for (id, dispute) in &old.disputes {
        prop_assert!(
            new.disputes[id].status >= dispute.status,
            "dispute {} reopened",
            id
        );
    }
    Ok(())
}

fn paid_orders(model: &Model) -> Vec<String> {
    model
        .orders()
        .values()
        .filter(|order| order.status == OrderStatus::Paid)
        .map(|order| order.order_id.clone())
        .collect()
}

/// Every message id once; no status message after `order.paid` (lifecycle
/// messages do come after it: refunds, disputes); each order's refunded
/// amounts and each dispute's statuses strictly rise from message to message.
fn check_outbox(model: &Model) -> Result<(), TestCaseError> {
    let mut ids = BTreeSet::new();
    let mut paid = BTreeSet::new();
    let mut refunded = BTreeMap::new();
    let mut disputes = BTreeMap::new();
    for message in model.outbox() {
        prop_assert!(
            ids.insert(&message.message_id),
            "duplicate {}",
            message.message_id
        );
        prop_assert!(message.message_id.len() <= fulfillment_core::MAX_MESSAGE_ID_BYTES);
        match &message.detail {
            None => {
                prop_assert!(
                    !paid.contains(&message.order_id),
                    "{} after order.paid",
                    message.message_id
                );
                if message.status == OrderStatus::Paid {
                    paid.insert(&message.order_id);
                }
            }
            Some(Detail::Refund(refund)) => {
                let key = (refund.amount_refunded, refund.refund_status);
                let last = refunded.insert(&message.order_id, key);
                prop_assert!(last < Some(key), "{} after {:?}", message.message_id, last);
            }
            Some(Detail::Dispute(dispute)) => {
                let last = disputes.insert(&dispute.dispute_id, dispute.dispute_status);
                prop_assert!(
                    last < Some(dispute.dispute_status),
                    "{} after {:?}",
                    message.message_id,
                    last
                );
            }
            Some(Detail::AttemptFailed(_)) => {}
        }
    }
    Ok(())
}

/// message_id of every status message announcing an order's end status.
fn terminal_message_ids(model: &Model) -> BTreeSet<String> {
    model
        .outbox()
        .iter()
        .filter(|m| m.is_status() && model.orders()[&m.order_id].status == m.status)
        .map(|m| m.message_id.clone())
        .collect()
}

/// message_id of every lifecycle message that announces an end fact: each
/// failed attempt, the final refund, each dispute's final status.
fn end_fact_message_ids(model: &Model) -> BTreeSet<String> {
    let order = |m: &OrderMessage| -> &Order { &model.orders()[&m.order_id] };
    model
        .outbox()
        .iter()
        .filter(|m| match &m.detail {
            None => false,
            Some(Detail::AttemptFailed(_)) => true,
            Some(Detail::Refund(r)) => {
                order(m)
                    .lifecycle
                    .refund
                    .map(|f| (f.amount_refunded, f.status))
                    == Some((r.amount_refunded, r.refund_status))
            }
            Some(Detail::Dispute(d)) => {
                order(m).lifecycle.disputes[&d.dispute_id].status == d.dispute_status
            }
        })
        .map(|m| m.message_id.clone())
        .collect()
}

fn lifecycle_of(order: &Order) -> ExpectedLifecycle {
    ExpectedLifecycle {
        failed_attempts: order.lifecycle.failed_attempts,
        refund: order
            .lifecycle
            .refund
            .map(|r| (r.amount_refunded, r.status)),
        disputes: order
            .lifecycle
            .disputes
            .iter()
            .map(|(id, d)| (id.clone(), d.status))
            .collect(),
    }
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
    prop_assert_eq!(end_fact_message_ids(model), end_fact_message_ids(reference));

    for (k, spec) in specs.iter().enumerate() {
        let order_id = spec.order_id(k);
        let order = model.orders().get(&order_id);
        let status = order.map(|order| order.status);
        prop_assert_eq!(status, spec.expected_status(k), "order {}", order_id);
        let lifecycle = order.map(lifecycle_of).unwrap_or_default();
        prop_assert_eq!(
            &lifecycle,
            &spec.expected_lifecycle(k),
            "order {}",
            order_id
        );
        let attempts = model
            .outbox()
            .iter()
            .filter(|m| {
                m.order_id == order_id && matches!(m.detail, Some(Detail::AttemptFailed(_)))
            })
            .count();
        prop_assert_eq!(
            attempts,
            lifecycle.failed_attempts as usize,
            "order {}",
            order_id
        );
    }
    let anomalies = |m: &Model| -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for anomaly in m.anomalies() {
            *counts.entry(anomaly.order_id.clone()).or_insert(0) += 1;
        }
        counts
    };
    prop_assert_eq!(anomalies(model), anomalies(reference));
    prop_assert_eq!(model.payment_sources(), reference.payment_sources());
    for (k, spec) in specs.iter().enumerate() {
        let order_id = spec.order_id(k);
        let raised = anomalies(model).get(&order_id).copied().unwrap_or(0);
        prop_assert_eq!(
            raised,
            spec.expected_anomalies(k),
            "anomalies of {}",
            order_id
        );
    }
    let reports: BTreeSet<&str> = model
        .custom_reports()
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    let expected_reports: usize = specs.iter().map(|spec| spec.custom.len()).sum();
    prop_assert_eq!(
        model.custom_reports().len(),
        expected_reports,
        "each report once"
    );
    prop_assert_eq!(reports.len(), expected_reports);

    let expected_parked: usize = specs.iter().map(OrderSpec::unmatchable_events).sum();
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

    /// The scenarios' bodies are what the worker parses back: the store-vs-Model
    /// test relies on it, since the store re-reads parked events from their bodies.
    #[test]
    fn scenario_bodies_parse_back((_, canonical, _) in scenario(2)) {
        for event in &canonical {
            prop_assert_eq!(parse_event(&body(event)), Ok(Parsed::Handled(event.clone())));
        }
    }

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
