//! The end of a long end-to-end run (`make chaos`, `make cluster`), judged
//! one way: once the pipeline has drained, the database must hold what
//! `fulfillment_core::Model` makes of the same unique events and reports
//! (nothing lost, no effect doubled, each double payment recorded once), and
//! a downstream queue bound from the start must have
//! received one distinct `order.paid` per paid order and every outbox message.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fulfillment_core::Model;
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use sqlx::PgPool;

use crate::db::count;
use crate::stripe_like::Post;

/// A durable quorum queue bound to every `fulfillment` message, standing in
/// for a downstream service; read only at the end (by [`judge`]) so reading
/// it cannot create duplicates.
pub async fn declare_tap(url: &str, tap: &str) {
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString("quorum".into()),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare(tap.into(), durable, args).await.unwrap();
    ch.queue_bind(
        tap.into(),
        "fulfillment".into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let _ = conn.close(200, "tap declared".into()).await;
}

/// Every message in the tap: (AMQP message id, body).
async fn drain_tap(url: &str, tap: &str) -> Vec<(String, serde_json::Value)> {
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(tap.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let id = m
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default();
        out.push((id, serde_json::from_slice(&m.delivery.data).unwrap()));
    }
    let _ = conn.close(200, "drained".into()).await;
    out
}

/// Waits until every unique event is processed, nothing waits in the
/// outbox and `pending()` (messages ready or unacked in the pipeline's
/// queues) is 0; panics with the figures after `within`.
pub async fn wait_drained(db: &PgPool, unique: usize, pending: impl Fn() -> u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let queued = pending();
        let outbox = count(db, "SELECT count(*) FROM outbox WHERE published_at IS NULL").await;
        let processed = count(
            db,
            "SELECT count(*) FROM processed_events WHERE outcome <> 'processing'",
        )
        .await;
        if queued == 0 && outbox == 0 && processed as usize == unique {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not drained: {queued} queued/unacked, {outbox} outbox, {processed}/{unique} processed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What the downstream side saw, for the run's summary line.
#[derive(Debug)]
pub struct Verdict {
    pub orders: usize,
    pub paid_orders: usize,
    pub downstream_messages: usize,
    /// The same message id received more than once (at-least-once delivery,
    /// e.g. a relay's publish whose confirm was lost with a broker node).
    pub raw_duplicate_messages: u32,
    pub raw_duplicate_order_paid: usize,
    pub custom_reports: usize,
    pub double_payments: usize,
}

impl Verdict {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "orders": self.orders,
            "paid_orders": self.paid_orders,
            "downstream_messages": self.downstream_messages,
            "raw_duplicate_messages": self.raw_duplicate_messages,
            "raw_duplicate_order_paid": self.raw_duplicate_order_paid,
            "custom_reports": self.custom_reports,
            "double_payments": self.double_payments,
        })
    }
}

/// `Model` fed the same unique posts: the oracle.
fn model_of(unique: &[Post]) -> Model {
    let mut model = Model::new();
    let now = time::OffsetDateTime::now_utc();
    for post in unique {
        model.handle(&post.event(), now);
    }
    model
}

/// Asserts the end state after [`wait_drained`]: orders as the model says,
/// nothing parked or dead-lettered, one message per transition, one
/// distinct `order.paid` per paid order, every outbox message received
/// through `tap` (on the broker at `amqp_url`).
pub async fn judge(db: &PgPool, amqp_url: &str, tap: &str, unique: &[Post]) -> Verdict {
    let model = model_of(unique);
    let expected: BTreeMap<String, String> = model
        .orders()
        .iter()
        .map(|(k, o)| (k.clone(), o.status.as_str().to_owned()))
        .collect();
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT order_id, status FROM orders")
        .fetch_all(db)
        .await
        .unwrap();
    let actual: BTreeMap<String, String> = rows.into_iter().collect();
    assert_eq!(actual.len(), expected.len(), "order count");
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(k, v)| actual.get(*k) != Some(v))
        .collect();
    assert!(
        wrong.is_empty(),
        "orders not in the state their events imply: {wrong:?}"
    );
    assert_eq!(
        count(db, "SELECT count(*) FROM parked_events").await,
        0,
        "nothing left parked"
    );
    let transitions = count(db, "SELECT count(*) FROM order_transitions").await;
    assert_eq!(
        transitions,
        count(db, "SELECT count(*) FROM outbox").await,
        "one message per transition"
    );

    // What a downstream consumer received, counted raw.
    let received = drain_tap(amqp_url, tap).await;
    let mut paid_by_order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut by_message_id: BTreeMap<String, u32> = BTreeMap::new();
    for (message_id, body) in &received {
        *by_message_id.entry(message_id.clone()).or_default() += 1;
        if body["type"] == "order.paid" {
            paid_by_order
                .entry(body["order_id"].as_str().unwrap().to_owned())
                .or_default()
                .push(message_id.clone());
        }
    }
    let paid_expected: BTreeSet<&String> = expected
        .iter()
        .filter(|(_, s)| *s == "paid")
        .map(|(k, _)| k)
        .collect();
    let paid_received: BTreeSet<&String> = paid_by_order.keys().collect();
    assert_eq!(
        paid_received, paid_expected,
        "an order.paid for exactly the paid orders"
    );
    for (order, ids) in &paid_by_order {
        let distinct: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(
            distinct.len(),
            1,
            "{order}: one order.paid message id, got {ids:?}"
        );
    }
    let outbox_ids = count(db, "SELECT count(*) FROM outbox").await as usize;
    assert_eq!(
        by_message_id.len(),
        outbox_ids,
        "every outbox message reached the consumer"
    );

    assert_eq!(
        crate::amqp::queue_depth(amqp_url, "stripe.fulfillment.dlq").await,
        0,
        "nothing dead-lettered"
    );
    // Dead letters are moved from the queue into PostgreSQL: none there either.
    assert_eq!(count(db, "SELECT count(*) FROM dead_letters").await, 0);

    // Each report taken in once; each double payment recorded once.
    let custom_reports = count(db, "SELECT count(*) FROM custom_payments").await as usize;
    assert_eq!(
        custom_reports,
        model.custom_reports().len(),
        "custom reports"
    );
    let double_payments = count(db, "SELECT count(*) FROM order_anomalies").await as usize;
    assert_eq!(double_payments, model.anomalies().len(), "double payments");
    Verdict {
        orders: expected.len(),
        paid_orders: paid_expected.len(),
        downstream_messages: received.len(),
        raw_duplicate_messages: by_message_id.values().map(|n| n - 1).sum(),
        raw_duplicate_order_paid: paid_by_order.values().map(|v| v.len() - 1).sum(),
        custom_reports,
        double_payments,
    }
}
