//! Order-independence of the whole worker, checked on the reference [`Model`]: any
//! permutation of a set of events (Stripe's and custom-payment reports for the same
//! orders), with any duplication, ends in the same place.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::NOW;
use fulfillment_core::scenario::{OrderSpec, body, scenario};
use fulfillment_core::{Model, OrderEvent, OrderStatus, Parsed, parse_event};
use proptest::prelude::*;

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
