//! Soak (issue 9, item 9): with retention compressed to seconds and a steady
//! stream of 100,000+ events, the tables retention bounds level off.
//!
//! `make soak` runs it (a few minutes; not part of `make test`). Events are
//! published straight to `stripe.events` over AMQP, as the receiver would,
//! to spend the machine on the worker and the database, not on HTTP.
//! Every event is a new paid order, so `orders` and `order_transitions`
//! grow by design (they are the orders); `processed_events` and `outbox`
//! must not.

use std::time::{Duration, Instant};

use fulfillment_core::sample::{SampleSpec, event};
use fulfillment_tests::amqp::queue_depth;
use fulfillment_tests::db::connect;
use fulfillment_tests::{Service, TestEnv, migrate, unix_now};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use sqlx::PgPool;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: f64,
    published: u64,
    processed_rows: i64,
    outbox_rows: i64,
    orders_rows: i64,
    processed_bytes: i64,
    outbox_bytes: i64,
}

async fn sample(db: &PgPool, started: Instant, published: u64) -> Sample {
    let (processed_rows, outbox_rows, orders_rows, processed_bytes, outbox_bytes): (
        i64,
        i64,
        i64,
        i64,
        i64,
    ) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM processed_events), (SELECT count(*) FROM outbox), \
         (SELECT count(*) FROM orders), pg_total_relation_size('processed_events'), \
         pg_total_relation_size('outbox')",
    )
    .fetch_one(db)
    .await
    .unwrap();
    Sample {
        at: started.elapsed().as_secs_f64(),
        published,
        processed_rows,
        outbox_rows,
        orders_rows,
        processed_bytes,
        outbox_bytes,
    }
}

/// A table figure, read from a sample, and how much its last third may
/// exceed its middle third.
type Check = (&'static str, fn(&Sample) -> i64, f64);

/// The largest value of `f` over the samples of one third (0, 1, 2) of the run.
fn max_in(samples: &[Sample], third: usize, f: impl Fn(&Sample) -> i64) -> i64 {
    let n = samples.len();
    samples[n * third / 3..n * (third + 1) / 3]
        .iter()
        .map(f)
        .max()
        .unwrap_or(0)
}

#[tokio::test]
#[ignore = "a few minutes of load: run with `make soak`"]
async fn table_sizes_level_off_under_a_steady_stream_with_compressed_retention() {
    let total: u64 = env_or("SOAK_EVENTS", 100_000);
    let rate: u64 = env_or("SOAK_RATE", 500);
    let env = TestEnv::new();
    migrate(&env, &[]);
    let db = connect(&env.database_url()).await;
    // 0.0001 days = 8.6 s of dedup records and published messages.
    let _svc = Service::start(
        &env,
        "worker",
        &[
            ("RETENTION_DAYS", "0.0001".into()),
            ("OUTBOX_RETENTION_DAYS", "0.0001".into()),
            ("RETENTION_INTERVAL", "1s".into()),
            ("LOG_FORMAT", "json".into()),
            ("RUST_LOG", "warn".into()),
        ],
    )
    .await;

    // Dead rows are reclaimed by (auto)vacuum, not by DELETE. Servers tuned
    // for tests may run without autovacuum; then the soak does its job.
    let autovacuum: String = sqlx::query_scalar("SHOW autovacuum")
        .fetch_one(&db)
        .await
        .unwrap();
    let vacuum_by_hand = autovacuum == "off";
    if vacuum_by_hand {
        println!(
            "soak: autovacuum is off on this server; the soak runs VACUUM every 10 s in its place"
        );
    }
    let mut next_vacuum = Instant::now() + Duration::from_secs(10);

    let conn = Connection::connect(&env.amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let started = Instant::now();
    let tick = Duration::from_millis(100);
    let per_tick = (rate / 10).max(1);
    let mut published = 0u64;
    let mut samples = Vec::new();
    let mut next_sample = Instant::now();
    println!(
        "soak: {total} events at {rate}/s, RETENTION_DAYS=OUTBOX_RETENTION_DAYS=0.0001 (8.6 s)"
    );
    println!(
        "{:>6} {:>8} {:>7} {:>10} {:>8} {:>9} {:>11} {:>11}",
        "t(s)", "sent", "queue", "processed", "outbox", "orders", "pe bytes", "outbox bytes"
    );
    while published < total {
        let tick_end = Instant::now() + tick;
        let mut confirms = Vec::with_capacity(per_tick as usize);
        for _ in 0..per_tick.min(total - published) {
            let id = format!("evt_soak_{published}");
            let order = format!("ord_soak_{published}");
            let body = event(
                "checkout.session.completed",
                &SampleSpec {
                    event_id: &id,
                    order_id: &order,
                    payment_intent_id: None,
                    payment_status: "paid",
                    order_in_metadata: false,
                    created: unix_now(),
                },
            )
            .unwrap();
            let props = BasicProperties::default()
                .with_message_id(id.as_str().into())
                .with_type("checkout.session.completed".into())
                .with_delivery_mode(2);
            confirms.push(
                channel
                    .basic_publish(
                        "stripe.events".into(),
                        "checkout.session.completed".into(),
                        BasicPublishOptions::default(),
                        &body,
                        props,
                    )
                    .await
                    .unwrap(),
            );
            published += 1;
        }
        for c in confirms {
            c.await.unwrap();
        }
        if Instant::now() >= next_sample {
            next_sample += Duration::from_secs(2);
            // Nothing downstream is bound in this test: drop what the relay
            // parks in fulfillment.unrouted so the broker does not fill up.
            channel
                .queue_purge("fulfillment.unrouted".into(), QueuePurgeOptions::default())
                .await
                .unwrap();
            if vacuum_by_hand && Instant::now() >= next_vacuum {
                next_vacuum += Duration::from_secs(10);
                sqlx::raw_sql("VACUUM processed_events, outbox")
                    .execute(&db)
                    .await
                    .unwrap();
            }
            let s = sample(&db, started, published).await;
            let queue = queue_depth(&env.amqp_url(), "stripe.fulfillment").await;
            println!(
                "{:>6.0} {:>8} {:>7} {:>10} {:>8} {:>9} {:>11} {:>11}",
                s.at,
                s.published,
                queue,
                s.processed_rows,
                s.outbox_rows,
                s.orders_rows,
                s.processed_bytes,
                s.outbox_bytes
            );
            samples.push(s);
        }
        tokio::time::sleep_until(tick_end.into()).await;
    }
    // Let the workers drain the queue before the last samples: a backlog is
    // not a leak.
    let deadline = Instant::now() + Duration::from_secs(120);
    while queue_depth(&env.amqp_url(), "stripe.fulfillment").await > 0 && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let orders = sample(&db, started, published).await.orders_rows;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "soak: {published} events published, {orders} orders written in {elapsed:.0} s ({:.0} events/s)",
        orders as f64 / elapsed
    );
    assert!(
        orders as u64 >= total,
        "every event was applied: {orders} of {total}"
    );
    assert!(samples.len() >= 9, "enough samples to compare thirds");

    let checks: [Check; 4] = [
        ("processed_events rows", |s| s.processed_rows, 1.25),
        ("outbox rows", |s| s.outbox_rows, 1.25),
        ("processed_events bytes", |s| s.processed_bytes, 1.5),
        ("outbox bytes", |s| s.outbox_bytes, 1.5),
    ];
    let mut failures = Vec::new();
    for (name, f, margin) in checks {
        let middle = max_in(&samples, 1, f);
        let last = max_in(&samples, 2, f);
        println!(
            "soak: {name}: max of middle third {middle}, of last third {last} (allowed x{margin})"
        );
        if last as f64 > middle as f64 * margin {
            failures.push(format!("{name} kept growing: {middle} -> {last}"));
        }
    }
    let growth = max_in(&samples, 2, |s| s.orders_rows) - max_in(&samples, 1, |s| s.orders_rows);
    println!(
        "soak: orders (kept by design) grew by {growth} rows from the middle to the last third"
    );
    assert!(failures.is_empty(), "{failures:#?}");
    let _ = conn.close(200, "bye".into()).await;
}
