//! The store and the Model drive the same `fulfillment_core::Ledger`; this
//! test holds what each adds around it (what the store loads, locks and
//! writes) to the same results. Random event sets from
//! `fulfillment_core::scenario` (permutations, duplicates, PaymentIntents
//! before their sessions, several sessions per order) go in random batches
//! through the real `store::process_batch` on a real PostgreSQL database
//! (127.0.0.1:5432, one database per test, emptied between cases) and through
//! `Model`; end states (lifecycle facts too: failed attempts, refunds, disputes),
//! transitions, parked events (with their raw bodies), outbox messages,
//! `processed_events`, and the payment records (custom reports, distinct payments per
//! order, anomalies) must agree. The scenarios mix every handled type, refunds and
//! disputes of charges included. `PROPTEST_CASES` sets the number of cases (default 48).

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use fulfillment::{db, store};
use fulfillment_core::scenario::{OrderSpec, batches, body, scenario};
use fulfillment_core::{
    CustomOutcome, CustomPaymentReport, Detail, Dispute, LastFailure, Lifecycle, Model, Order,
    OrderEvent, OrderMessage, OrderStatus, PaymentError, Refund, Transition,
};
use proptest::collection::vec;
use proptest::prelude::*;
use sqlx::{Connection, PgConnection, PgPool, Row};
use time::OffsetDateTime;
use tokio::runtime::Runtime;

const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432";

/// A migrated database of its own, dropped with the value.
struct TestDb {
    name: String,
    pool: PgPool,
    runtime: Runtime,
}

impl TestDb {
    fn new(tag: &str) -> TestDb {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .subsec_nanos();
        let name = format!("svm_{tag}_{}_{nanos}", std::process::id());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let url = format!("{PG_BASE}/{name}");
        let pool = runtime.block_on(async {
            db::create_database_if_missing(&url).await.expect("create");
            let pool = db::pool(&url, 4).expect("pool");
            db::migrate(&pool).await.expect("migrate");
            pool
        });
        TestDb {
            name,
            pool,
            runtime,
        }
    }

    fn reset(&self) {
        self.runtime.block_on(async {
            sqlx::query(
                "TRUNCATE orders, order_transitions, processed_events, payment_intent_links, \
                 parked_events, outbox, order_disputes, custom_payments, order_payments, \
                 order_anomalies, line_item_jobs, payment_record_jobs",
            )
            .execute(&self.pool)
            .await
            .expect("truncate");
        });
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let pool = self.pool.clone();
        self.runtime.block_on(async move {
            pool.close().await;
            if let Ok(mut admin) = PgConnection::connect(&format!("{PG_BASE}/postgres")).await {
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                let _ = sqlx::query(&sql).execute(&mut admin).await;
            }
        });
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(48)
}

/// One batch through the store, retried on a deadlock as the worker does.
async fn process(pool: &PgPool, batch: &[OrderEvent]) -> Vec<store::Outcome> {
    let bodies: Vec<Vec<u8>> = batch.iter().map(body).collect();
    let items: Vec<(&OrderEvent, &[u8])> = batch
        .iter()
        .zip(&bodies)
        .map(|(e, b)| (e, &b[..]))
        .collect();
    loop {
        // Line items on: every paid Checkout order's message is held back
        // with its job, in the same transactions, under the same races.
        match store::process_batch(pool, &items, store::LineItems::Fetch).await {
            Ok(results) => return results.into_iter().map(|(o, _)| o).collect(),
            Err(e) if db::is_conflict(&e) => continue,
            Err(e) => panic!("process_batch: {e}"),
        }
    }
}

/// What the database holds after a run, in the Model's terms.
#[derive(Debug)]
struct Stored {
    orders: BTreeMap<String, Order>,
    transitions: Vec<(String, Transition, String)>,
    /// Parked event id → raw body.
    parked: BTreeMap<String, Vec<u8>>,
    /// By message id, `occurred_at` blanked (it is the time of processing).
    outbox: BTreeMap<String, OrderMessage>,
    /// `processed_events`: event id → (outcome label, order id).
    processed: BTreeMap<String, (String, Option<String>)>,
    /// `order_payments`: (order id, source, first event id).
    payments: BTreeSet<(String, String, String)>,
    /// `order_anomalies`: (order id, kind, event id, payment, earlier payments).
    anomalies: BTreeSet<(String, String, String, String, Vec<String>)>,
    /// `custom_payments`, each read back into a report.
    reports: BTreeMap<String, CustomPaymentReport>,
}

async fn stored(pool: &PgPool) -> Stored {
    let rows = sqlx::query(
        "SELECT order_id, status, checkout_session_id, payment_intent_id, amount_total, \
         currency, customer_email, livemode, account, failed_attempts, last_failure_event_id, \
         last_failure_created, last_failure_payment_intent_id, last_failure_code, \
         last_decline_code, last_failure_message, amount_refunded, refund_status FROM orders",
    )
    .fetch_all(pool)
    .await
    .expect("orders");
    let mut orders: BTreeMap<String, Order> = rows
        .iter()
        .map(|row| {
            let status: String = row.get("status");
            let order = Order {
                order_id: row.get("order_id"),
                status: status.parse().expect("a status"),
                checkout_session_id: row.get("checkout_session_id"),
                payment_intent_id: row.get("payment_intent_id"),
                amount_total: row.get("amount_total"),
                currency: row.get("currency"),
                customer_email: row.get("customer_email"),
                livemode: row.get("livemode"),
                lifecycle: lifecycle_of(row),
                account: row.get("account"),
            };
            (order.order_id.clone(), order)
        })
        .collect();
    let rows = sqlx::query(
        "SELECT order_id, dispute_id, status, charge_id, reason, amount, currency, \
         extract(epoch FROM evidence_due_by)::int8 AS due FROM order_disputes",
    )
    .fetch_all(pool)
    .await
    .expect("disputes");
    for row in rows {
        let status: String = row.get("status");
        let dispute = Dispute {
            status: status.parse().expect("a dispute status"),
            charge_id: row.get("charge_id"),
            reason: row.get("reason"),
            amount: row.get("amount"),
            currency: row.get("currency"),
            evidence_due_by: row.get("due"),
        };
        let order: String = row.get("order_id");
        let disputes = &mut orders
            .get_mut(&order)
            .expect("its order")
            .lifecycle
            .disputes;
        disputes.insert(row.get("dispute_id"), dispute);
    }
    let rows: Vec<(String, Option<String>, String, String)> = sqlx::query_as(
        "SELECT order_id, from_status, to_status, event_id FROM order_transitions ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .expect("transitions");
    let status = |s: &str| s.parse::<OrderStatus>().expect("a status");
    let transitions = rows
        .into_iter()
        .map(|(order, from, to, event)| {
            let transition = Transition {
                from: from.as_deref().map(status),
                to: status(&to),
            };
            (order, transition, event)
        })
        .collect();
    let parked = sqlx::query_as("SELECT event_id, body FROM parked_events")
        .fetch_all(pool)
        .await
        .expect("parked")
        .into_iter()
        .collect();
    let rows: Vec<(String, String, Vec<u8>, bool)> =
        sqlx::query_as("SELECT message_id, routing_key, body, awaiting_line_items FROM outbox")
            .fetch_all(pool)
            .await
            .expect("outbox");
    let jobs: BTreeSet<(String, String, String)> = sqlx::query_as(
        "SELECT message_id, order_id, checkout_session_id FROM line_item_jobs WHERE state = 'pending'",
    )
    .fetch_all(pool)
    .await
    .expect("line_item_jobs")
    .into_iter()
    .collect();
    let mut outbox = BTreeMap::new();
    let mut held_back = BTreeSet::new();
    for (id, key, body, awaiting) in rows {
        let mut message: OrderMessage = serde_json::from_slice(&body).expect("a message");
        assert_eq!(message.message_id, id);
        assert_eq!(message.routing_key(), key);
        // Held back exactly when it waits for line items, and then with its job.
        let session = message.line_items_session();
        assert_eq!(awaiting, session.is_some(), "{id}");
        if let Some(session) = session {
            held_back.insert((id.clone(), message.order_id.clone(), session.to_owned()));
        }
        message.occurred_at.clear();
        outbox.insert(id, message);
    }
    assert_eq!(jobs, held_back, "one pending job per held-back message");
    let rows: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT event_id, outcome, order_id FROM processed_events")
            .fetch_all(pool)
            .await
            .expect("processed_events");
    let processed = rows
        .into_iter()
        .map(|(id, outcome, order)| (id, (outcome, order)))
        .collect();
    let payments = sqlx::query_as("SELECT order_id, source, event_id FROM order_payments")
        .fetch_all(pool)
        .await
        .expect("order_payments")
        .into_iter()
        .collect();
    let anomalies = sqlx::query_as(
        "SELECT order_id, kind, event_id, payment, earlier_payments FROM order_anomalies",
    )
    .fetch_all(pool)
    .await
    .expect("order_anomalies")
    .into_iter()
    .collect();
    let rows = sqlx::query(
        "SELECT report_id, order_id, outcome, amount, currency, custom_payment_method_type, \
         payment_reference, extract(epoch FROM initiated_at)::int8 AS initiated_at, \
         extract(epoch FROM completed_at)::int8 AS completed_at, customer_email, stripe_customer \
         FROM custom_payments",
    )
    .fetch_all(pool)
    .await
    .expect("custom_payments");
    let reports = rows
        .iter()
        .map(|row| {
            let outcome: String = row.get("outcome");
            let report = CustomPaymentReport {
                id: row.get("report_id"),
                order_id: row.get("order_id"),
                outcome: match outcome.as_str() {
                    "guaranteed" => CustomOutcome::Guaranteed,
                    _ => CustomOutcome::Failed,
                },
                amount: row.get("amount"),
                currency: row.get("currency"),
                custom_payment_method_type: row.get("custom_payment_method_type"),
                payment_reference: row.get("payment_reference"),
                initiated_at: row.get("initiated_at"),
                completed_at: row.get("completed_at"),
                customer_email: row.get("customer_email"),
                stripe_customer: row.get("stripe_customer"),
            };
            (report.id.clone(), report)
        })
        .collect();
    Stored {
        orders,
        transitions,
        parked,
        outbox,
        processed,
        payments,
        anomalies,
        reports,
    }
}

/// The lifecycle columns of an `orders` row (disputes are another table).
fn lifecycle_of(row: &sqlx::postgres::PgRow) -> Lifecycle {
    let last_failure = row
        .get::<Option<String>, _>("last_failure_event_id")
        .map(|event_id| LastFailure {
            event_id,
            created: row.get("last_failure_created"),
            payment_intent_id: row.get("last_failure_payment_intent_id"),
            error: PaymentError {
                failure_code: row.get("last_failure_code"),
                decline_code: row.get("last_decline_code"),
                failure_message: row.get("last_failure_message"),
            },
        });
    let refund = row
        .get::<Option<i64>, _>("amount_refunded")
        .map(|amount_refunded| Refund {
            amount_refunded,
            status: row
                .get::<String, _>("refund_status")
                .parse()
                .expect("a refund status"),
        });
    Lifecycle {
        failed_attempts: row.get::<i32, _>("failed_attempts") as u32,
        last_failure,
        refund,
        disputes: BTreeMap::new(),
    }
}

fn payments_of(model: &Model) -> BTreeSet<(String, String, String)> {
    model
        .payments()
        .iter()
        .map(|p| (p.order_id.clone(), p.source.key(), p.event_id.clone()))
        .collect()
}

fn anomalies_of(model: &Model) -> BTreeSet<(String, String, String, String, Vec<String>)> {
    model
        .anomalies()
        .iter()
        .map(|a| {
            let earlier = a.earlier.iter().map(|p| p.key()).collect();
            let kind = a.kind.label().to_owned();
            (
                a.order_id.clone(),
                kind,
                a.event_id.clone(),
                a.payment.key(),
                earlier,
            )
        })
        .collect()
}

fn reports_of(model: &Model) -> BTreeMap<String, CustomPaymentReport> {
    model
        .custom_reports()
        .iter()
        .map(|r| (r.id.clone(), r.clone()))
        .collect()
}

/// Anomalies per order: what does not depend on which payment came first.
fn anomaly_counts<'a>(
    anomalies: impl IntoIterator<Item = &'a (String, String, String, String, Vec<String>)>,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (order, ..) in anomalies {
        *counts.entry(order.clone()).or_insert(0) += 1;
    }
    counts
}

fn model_of(events: &[OrderEvent]) -> (Model, Vec<store::Outcome>) {
    let mut model = Model::new();
    let now = OffsetDateTime::now_utc();
    let outcomes = events.iter().map(|e| model.handle(e, now)).collect();
    (model, outcomes)
}

fn outbox_of(model: &Model) -> BTreeMap<String, OrderMessage> {
    model
        .outbox()
        .iter()
        .map(|m| {
            let mut m = m.clone();
            m.occurred_at.clear();
            (m.message_id.clone(), m)
        })
        .collect()
}

fn parked_of(model: &Model) -> BTreeMap<String, Vec<u8>> {
    model
        .parked_events()
        .map(|e| (e.id.clone(), body(e)))
        .collect()
}

/// Random batch sizes; each batch is one transaction.
fn sizes() -> impl Strategy<Value = Vec<usize>> {
    vec(1..=8usize, 1..=4)
}

/// One batch after another: the store must do exactly what the Model does,
/// event by event, row by row.
#[test]
fn sequential_batches_match_the_model() {
    let test_db = TestDb::new("seq");
    let config = ProptestConfig::with_cases(cases());
    proptest!(config, |((_, _, delivered) in scenario(2), sizes in sizes())| {
        test_db.reset();
        let (model, expected) = model_of(&delivered);
        let (outcomes, db) = test_db.runtime.block_on(async {
            let mut outcomes = Vec::new();
            for batch in batches(&delivered, &sizes) {
                outcomes.extend(process(&test_db.pool, &batch).await);
            }
            (outcomes, stored(&test_db.pool).await)
        });
        prop_assert_eq!(outcomes, expected);
        prop_assert_eq!(&db.orders, model.orders());
        let transitions: Vec<_> = model
            .transitions()
            .iter()
            .map(|r| (r.order_id.clone(), r.transition, r.event_id.clone()))
            .collect();
        prop_assert_eq!(db.transitions, transitions);
        prop_assert_eq!(db.parked, parked_of(&model));
        prop_assert_eq!(db.outbox, outbox_of(&model));
        let processed: BTreeMap<String, (String, Option<String>)> = model
            .processed()
            .iter()
            .map(|(id, (outcome, order))| (id.clone(), (outcome.label().to_owned(), order.clone())))
            .collect();
        prop_assert_eq!(db.processed, processed);
        prop_assert_eq!(db.payments, payments_of(&model));
        prop_assert_eq!(db.anomalies, anomalies_of(&model));
        prop_assert_eq!(db.reports, reports_of(&model));
    });
}

/// Batches on several connections at once: whatever order they commit in,
/// what does not depend on arrival order must equal the Model's.
#[test]
fn concurrent_batches_converge_with_the_model() {
    let test_db = TestDb::new("conc");
    let config = ProptestConfig::with_cases(cases());
    proptest!(config, |((specs, _, delivered) in scenario(2), sizes in sizes(), lanes in 2..=4usize)| {
        test_db.reset();
        let (model, _) = model_of(&delivered);
        let all = batches(&delivered, &sizes);
        let db = test_db.runtime.block_on(async {
            let mut tasks = Vec::new();
            for lane in 0..lanes {
                let pool = test_db.pool.clone();
                let mine: Vec<Vec<OrderEvent>> =
                    all.iter().skip(lane).step_by(lanes).cloned().collect();
                tasks.push(tokio::spawn(async move {
                    for batch in mine {
                        process(&pool, &batch).await;
                    }
                }));
            }
            for task in tasks {
                task.await.expect("a lane");
            }
            stored(&test_db.pool).await
        });
        check_converged(&specs, &db, &model)?;
    });
}

fn check_converged(specs: &[OrderSpec], db: &Stored, model: &Model) -> Result<(), TestCaseError> {
    let statuses = |orders: &BTreeMap<String, Order>| -> BTreeMap<String, OrderStatus> {
        orders
            .iter()
            .map(|(id, o)| (id.clone(), o.status))
            .collect()
    };
    prop_assert_eq!(statuses(&db.orders), statuses(model.orders()));
    for (k, spec) in specs.iter().enumerate() {
        let order_id = spec.order_id(k);
        let status = db.orders.get(&order_id).map(|o| o.status);
        prop_assert_eq!(status, spec.expected_status(k), "order {}", order_id);
    }
    let parked: BTreeSet<&String> = db.parked.keys().collect();
    let model_parked = parked_of(model);
    prop_assert_eq!(parked, model_parked.keys().collect::<BTreeSet<_>>());

    // Lifecycle facts do not depend on arrival order either.
    let lifecycles = |orders: &BTreeMap<String, Order>| -> BTreeMap<String, Lifecycle> {
        orders
            .iter()
            .map(|(id, o)| (id.clone(), o.lifecycle.clone()))
            .collect()
    };
    prop_assert_eq!(lifecycles(&db.orders), lifecycles(model.orders()));

    // The message of each end status, every order.paid, and every lifecycle
    // message announcing an end fact do not depend on arrival order; each
    // status message has its transition and vice versa.
    let end = |outbox: &BTreeMap<String, OrderMessage>, orders: &BTreeMap<String, Order>| {
        outbox
            .values()
            .filter(|m| {
                let order = &orders[&m.order_id];
                match &m.detail {
                    None => order.status == m.status || m.status == OrderStatus::Paid,
                    Some(Detail::AttemptFailed(_)) => true,
                    Some(Detail::Refund(r)) => {
                        order.lifecycle.refund.map(|f| f.amount_refunded) == Some(r.amount_refunded)
                    }
                    Some(Detail::Dispute(d)) => {
                        order.lifecycle.disputes[&d.dispute_id].status == d.dispute_status
                    }
                }
            })
            .map(|m| m.message_id.clone())
            .collect::<BTreeSet<_>>()
    };
    prop_assert_eq!(
        end(&db.outbox, &db.orders),
        end(&outbox_of(model), model.orders())
    );
    let from_transitions: BTreeSet<String> = db
        .transitions
        .iter()
        .map(|(order, t, _)| OrderMessage::message_id(order, t.to))
        .collect();
    let status_messages: BTreeSet<String> = db
        .outbox
        .values()
        .filter(|m| m.is_status())
        .map(|m| m.message_id.clone())
        .collect();
    prop_assert_eq!(from_transitions, status_messages);
    let unfinished: Vec<&String> = db
        .processed
        .iter()
        .filter(|(_, (outcome, _))| outcome == "processing")
        .map(|(id, _)| id)
        .collect();
    prop_assert!(unfinished.is_empty(), "still processing: {:?}", unfinished);
    let ids: BTreeSet<&String> = db.processed.keys().collect();
    prop_assert_eq!(ids, model.processed().keys().collect::<BTreeSet<_>>());

    // Which payment came first may differ; the set of payments per order,
    // the number of anomalies per order and the reports taken in may not.
    let sources = |payments: &BTreeSet<(String, String, String)>| {
        payments
            .iter()
            .map(|(order, source, _)| (order.clone(), source.clone()))
            .collect::<BTreeSet<_>>()
    };
    prop_assert_eq!(sources(&db.payments), sources(&payments_of(model)));
    prop_assert_eq!(
        anomaly_counts(&db.anomalies),
        anomaly_counts(&anomalies_of(model))
    );
    for (k, spec) in specs.iter().enumerate() {
        let order_id = spec.order_id(k);
        let raised = anomaly_counts(&db.anomalies)
            .get(&order_id)
            .copied()
            .unwrap_or(0);
        prop_assert_eq!(
            raised,
            spec.expected_anomalies(k),
            "anomalies of {}",
            order_id
        );
    }
    prop_assert_eq!(&db.reports, &reports_of(model));
    Ok(())
}
