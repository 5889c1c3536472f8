//! `make chaos`: nothing lost, nothing doubled, while things break.
//!
//! Two receivers and two workers (separate processes, one database, one
//! vhost) take a stream of a few thousand signed events sent the way Stripe
//! sends them, mixed with custom-payment reports (`POST /payments/custom`)
//! sent the way a merchant's backend would, for the same kind of orders: any non-2xx answer or broken connection is retried later with
//! backoff and a fresh signature; events are duplicated and arrive out of
//! order. Meanwhile, one after another: the broker is stopped and started, a
//! worker is SIGKILLed and replaced, PostgreSQL is restarted, a receiver is
//! SIGKILLed with requests in flight and replaced. After the pipeline drains,
//! the end state (statuses, and the lifecycle facts of contract 8.6: failed
//! attempts, refunds, disputes) is compared with `fulfillment_core::Model` fed
//! the same events, and every report must be one Payment Record at the Stripe
//! stand-in the workers record them to (through the same faults). Stops the
//! shared RabbitMQ and PostgreSQL: run alone.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use fulfillment_core::sample::LifecycleSpec;
use fulfillment_core::{Model, OrderMessage, Parsed, custom, parse_custom_payment, parse_event};
use fulfillment_tests::amqp::queue_counts;
use fulfillment_tests::db::{connect, count};
use fulfillment_tests::events::{custom_payment, lifecycle, payment_intent_succeeded, session};
use fulfillment_tests::stripe::{StandIn, line_item};
use fulfillment_tests::{CUSTOM_TEST_SECRET, Service, TEST_SECRET, TestEnv, migrate};
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};

const COMPLETED: &str = "checkout.session.completed";
const EXPIRED: &str = "checkout.session.expired";
const ASYNC_OK: &str = "checkout.session.async_payment_succeeded";
const ASYNC_FAILED: &str = "checkout.session.async_payment_failed";
const TAP: &str = "chaos.tap";

/// Small deterministic PRNG (xorshift64*): the run is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One POST: a Stripe event to the webhook, or a custom-payment report.
#[derive(Clone)]
struct Post {
    custom: bool,
    body: Vec<u8>,
}

impl Post {
    fn stripe(body: Vec<u8>) -> Post {
        Post {
            custom: false,
            body,
        }
    }

    fn custom(id: &str, order: &str, guaranteed: bool) -> Post {
        Post {
            custom: true,
            body: custom_payment(id, order, guaranteed),
        }
    }

    /// What the worker will see: the event itself, or the report's envelope.
    fn event(&self) -> fulfillment_core::OrderEvent {
        let body = if self.custom {
            let report = parse_custom_payment(&self.body).expect("a valid report");
            custom::envelope(&self.body, &report.id, 0)
        } else {
            self.body.clone()
        };
        let Ok(Parsed::Handled(event)) = parse_event(&body) else {
            panic!("sample events parse")
        };
        event
    }
}

/// The unique events of one order, by scenario.
fn scenario(rng: &mut Rng, n: usize) -> Vec<Post> {
    let order = format!("ord_chaos_{n}");
    let pi = format!("pi_chaos_{n}");
    let id = |k: &str| format!("evt_chaos_{n}_{k}");
    let report = |k: &str| format!("cpay_chaos_{n}_{k}");
    let stripe = scenario_stripe(rng, &order, &pi, &id);
    match rng.below(4) {
        // Paid off Stripe only; or failed, then paid by another report.
        0 => vec![Post::custom(&report("ok"), &order, true)],
        1 => vec![
            Post::custom(&report("fail"), &order, false),
            Post::custom(&report("ok"), &order, true),
        ],
        // Stripe's events and a guaranteed report: paid twice if Stripe paid.
        2 => {
            let mut posts: Vec<Post> = stripe.into_iter().map(Post::stripe).collect();
            posts.push(Post::custom(&report("ok"), &order, true));
            posts
        }
        _ => stripe.into_iter().map(Post::stripe).collect(),
    }
}

fn scenario_stripe(
    rng: &mut Rng,
    order: &str,
    pi: &str,
    id: &dyn Fn(&str) -> String,
) -> Vec<Vec<u8>> {
    let pi_id = pi;
    let (order, pi) = (order, Some(pi));
    let spec = |amount_refunded| LifecycleSpec {
        amount_refunded,
        ..LifecycleSpec::default()
    };
    let life = |k: &str, event_type: &str, order: Option<&str>, amount_refunded| {
        lifecycle(&id(k), event_type, pi_id, order, &spec(amount_refunded))
    };
    match rng.below(11) {
        0 => vec![
            session(&id("cs"), COMPLETED, order, "paid", pi),
            payment_intent_succeeded(&id("pi"), pi.unwrap(), Some(order)),
        ],
        1 => vec![
            session(&id("cs"), COMPLETED, order, "unpaid", pi),
            session(&id("ok"), ASYNC_OK, order, "paid", pi),
        ],
        2 => vec![
            session(&id("cs"), COMPLETED, order, "unpaid", pi),
            session(&id("fail"), ASYNC_FAILED, order, "unpaid", pi),
        ],
        3 => vec![session(&id("exp"), EXPIRED, order, "unpaid", None)],
        // The PaymentIntent comes first and names no order: parked, then linked.
        4 => vec![
            payment_intent_succeeded(&id("pi"), pi.unwrap(), None),
            session(&id("cs"), COMPLETED, order, "unpaid", pi),
        ],
        5 => vec![
            session(&id("cs"), COMPLETED, order, "paid", pi),
            session(&id("exp"), EXPIRED, order, "paid", pi),
        ],
        // Contract 8.6. A server-confirmed PaymentIntent declined twice, then paid.
        6 => vec![
            life("f1", "payment_intent.payment_failed", Some(order), 0),
            life("f2", "payment_intent.payment_failed", Some(order), 0),
            payment_intent_succeeded(&id("pi"), pi_id, Some(order)),
        ],
        // A refund before anything names its order: parked, then linked.
        7 => vec![
            life("rf", "charge.refunded", None, 1000),
            session(&id("cs"), COMPLETED, order, "paid", pi),
        ],
        // Partial, then full refund.
        8 => vec![
            payment_intent_succeeded(&id("pi"), pi_id, Some(order)),
            life("rp", "charge.refunded", None, 1000),
            life(
                "rf",
                "charge.refunded",
                None,
                fulfillment_core::sample::AMOUNT,
            ),
        ],
        // A dispute, lost.
        9 => vec![
            payment_intent_succeeded(&id("pi"), pi_id, Some(order)),
            life("dc", "charge.dispute.created", None, 0),
            life("dx", "charge.dispute.closed", None, 0),
        ],
        // Processing, then canceled.
        _ => vec![
            life("pr", "payment_intent.processing", Some(order), 0),
            life("cx", "payment_intent.canceled", Some(order), 0),
        ],
    }
}

/// Deliveries in Stripe's manner: every event at least once, ~30% twice,
/// neighbours swapped so pairs arrive out of order.
fn deliveries(rng: &mut Rng, orders: usize) -> (Vec<Post>, Vec<Post>) {
    let mut unique = Vec::new();
    for n in 0..orders {
        let mut events = scenario(rng, n);
        if rng.below(2) == 0 {
            events.reverse();
        }
        unique.extend(events);
    }
    let mut stream: Vec<Post> = Vec::new();
    for e in &unique {
        stream.push(e.clone());
        if rng.below(10) < 3 {
            stream.push(e.clone());
        }
    }
    for i in (1..stream.len()).rev() {
        // A local shuffle: late duplicates and reorderings, not total chaos.
        let j = i.saturating_sub(rng.below(40) as usize);
        stream.swap(i, j);
    }
    (unique, stream)
}

fn sh(program: &str, args: &[&str]) {
    let ok = Command::new(program)
        .args(args)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{program} {args:?} failed");
}

fn pg_version() -> String {
    std::fs::read_dir("/etc/postgresql")
        .expect("/etc/postgresql")
        .next()
        .expect("a cluster")
        .unwrap()
        .file_name()
        .to_string_lossy()
        .into_owned()
}

/// Brings RabbitMQ back even if the test fails half-way.
struct BrokerGuard;

impl Drop for BrokerGuard {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "start_app"])
            .status();
    }
}

#[derive(Default)]
struct Counters {
    attempts: AtomicU64,
    retries: AtomicU64,
    accepted: AtomicU64,
    /// 503s: the receiver could not get a confirm (the broker was away).
    unavailable: AtomicU64,
    /// Refused or broken connections (a receiver was killed).
    connection_errors: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the shared broker and database; run alone with `make chaos`"]
async fn nothing_lost_nothing_doubled_under_faults() {
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_C4A0);
    let orders: usize = std::env::var("CHAOS_ORDERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(900);
    let mut rng = Rng(seed | 1);
    let (unique, stream) = deliveries(&mut rng, orders);
    eprintln!(
        "chaos: seed {seed}, {} unique events, {} deliveries",
        unique.len(),
        stream.len()
    );

    let env = TestEnv::new();
    migrate(&env, &[]);
    let tap_conn = declare_tap(&env.amqp_url()).await;
    drop(tap_conn);
    let _guard = BrokerGuard;

    let with_secret = [("CUSTOM_PAYMENT_SECRET", CUSTOM_TEST_SECRET.to_owned())];
    let stripe = StandIn::start();
    // With a key, a paid Checkout order's order.paid waits for its line
    // items: the stand-in knows every session, as Stripe would.
    for post in &unique {
        let event = post.event();
        if let Some(session) = event.kind.session() {
            let id = &session.session_id;
            let item = line_item(id, 0, 1, 500, "eur");
            stripe.set_line_items(id, event.account.as_deref(), vec![item]);
        }
    }
    let with_stripe = stripe.settings();
    let mut receiver_a = Service::start(&env, "receiver", &with_secret).await;
    let mut receiver_b = Service::start(&env, "receiver", &with_secret).await;
    let mut worker_1 = Service::start(&env, "worker", &with_stripe).await;
    let mut worker_2 = Service::start(&env, "worker", &with_stripe).await;
    for s in [&receiver_a, &receiver_b, &worker_1, &worker_2] {
        s.wait_ready(200, Duration::from_secs(30)).await;
    }
    let ports = Arc::new(RwLock::new(vec![
        receiver_a.http_port,
        receiver_b.http_port,
    ]));
    let counters = Arc::new(Counters::default());
    let started = Instant::now();

    // The stream: one task per delivery, paced at ~65 deliveries a second.
    let sender = {
        let ports = ports.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for (i, body) in stream.into_iter().enumerate() {
                tasks.push(tokio::spawn(deliver(
                    body,
                    i,
                    ports.clone(),
                    counters.clone(),
                )));
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            for t in tasks {
                t.await.unwrap();
            }
        })
    };

    let mut faults = Vec::new();
    tokio::time::sleep(Duration::from_secs(4)).await;
    faults.push("broker stop_app 5s");
    sh("rabbitmqctl", &["-q", "stop_app"]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    sh("rabbitmqctl", &["-q", "start_app"]);
    sh("rabbitmq-diagnostics", &["-q", "check_running"]);

    // Kill a worker while deliveries are in flight (unacked), not while idle.
    let mut unacked_at_kill = 0;
    let kill_by = Instant::now() + Duration::from_secs(10);
    while Instant::now() < kill_by {
        unacked_at_kill = unacked(&env.name, "stripe.fulfillment");
        if unacked_at_kill > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    faults.push("worker SIGKILL");
    worker_1.kill();
    let worker_3 = Service::start(&env, "worker", &with_stripe).await;

    tokio::time::sleep(Duration::from_secs(4)).await;
    faults.push("postgresql restart");
    sh(
        "pg_ctlcluster",
        &[
            "--skip-systemctl-redirect",
            &pg_version(),
            "main",
            "restart",
        ],
    );

    tokio::time::sleep(Duration::from_secs(4)).await;
    faults.push("receiver SIGKILL");
    receiver_b.kill();
    let receiver_c = Service::start(&env, "receiver", &with_secret).await;
    ports.write().unwrap()[1] = receiver_c.http_port;

    tokio::time::timeout(Duration::from_secs(300), sender)
        .await
        .expect("every event accepted within 5 minutes")
        .unwrap();
    let sent_all = started.elapsed();

    // Drain: nothing queued or unacked, nothing unpublished.
    let db = connect(&env.database_url()).await;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        // What produces outbox rows first, the outbox last: a commit in
        // between must not let a fresh unpublished row slip past the check.
        let processed = count(
            &db,
            "SELECT count(*) FROM processed_events WHERE outcome <> 'processing'",
        )
        .await;
        let unrecorded = count(
            &db,
            "SELECT count(*) FROM payment_record_jobs WHERE state <> 'recorded'",
        )
        .await;
        let pending = queued_messages(&env.name);
        let outbox = count(
            &db,
            "SELECT count(*) FROM outbox WHERE published_at IS NULL",
        )
        .await;
        if pending == 0 && outbox == 0 && unrecorded == 0 && processed as usize == unique.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not drained: {pending} queued/unacked, {outbox} outbox, {unrecorded} not recorded, {processed}/{} processed",
            unique.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let drained = started.elapsed();

    // The oracle: the same events through the reference model.
    let mut model = Model::new();
    let now = time::OffsetDateTime::now_utc();
    for post in &unique {
        model.handle(&post.event(), now);
    }
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT order_id, status FROM orders")
        .fetch_all(&db)
        .await
        .unwrap();
    let actual: BTreeMap<String, String> = rows.into_iter().collect();
    let expected: BTreeMap<String, String> = model
        .orders()
        .iter()
        .map(|(k, o)| (k.clone(), o.status.as_str().to_owned()))
        .collect();
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
        count(&db, "SELECT count(*) FROM parked_events").await,
        0,
        "nothing left parked"
    );
    let transitions = count(&db, "SELECT count(*) FROM order_transitions").await;
    assert_eq!(
        transitions,
        count(
            &db,
            &format!("SELECT count(*) FROM outbox WHERE routing_key IN ({STATUS_KEYS})")
        )
        .await,
        "one status message per transition"
    );
    check_lifecycle(&db, &model).await;

    // What a downstream consumer received, counted raw.
    let received = drain_tap(&env.amqp_url()).await;
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
    let outbox_ids = count(&db, "SELECT count(*) FROM outbox").await as usize;
    assert_eq!(
        by_message_id.len(),
        outbox_ids,
        "every outbox message reached the consumer"
    );
    let raw_duplicates: u32 = by_message_id.values().map(|n| n - 1).sum();

    // Each report taken in once; each double payment recorded once.
    let reports = count(&db, "SELECT count(*) FROM custom_payments").await as usize;
    assert_eq!(reports, model.custom_reports().len(), "custom reports");
    let anomalies = count(&db, "SELECT count(*) FROM order_anomalies").await as usize;
    assert_eq!(anomalies, model.anomalies().len(), "double payments");
    // Each report one Payment Record at Stripe, whatever broke meanwhile.
    let records = stripe.payment_records();
    let recorded_reports: BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r["metadata"]["fulfillment_report_id"].as_str())
        .collect();
    assert_eq!(records.len(), reports, "one Payment Record per report");
    assert_eq!(recorded_reports.len(), reports, "no report recorded twice");
    let stored_ids = count(
        &db,
        "SELECT count(DISTINCT record_id) FROM payment_record_jobs WHERE state = 'recorded'",
    )
    .await as usize;
    assert_eq!(stored_ids, reports, "every record id stored");
    let announced: BTreeSet<&str> = received
        .iter()
        .filter(|(_, body)| body["type"] == "order.payment_recorded")
        .filter_map(|(_, body)| body["payment_record_id"].as_str())
        .collect();
    assert_eq!(
        announced.len(),
        reports,
        "one order.payment_recorded per record"
    );
    let raw_paid_duplicates: usize = paid_by_order.values().map(|v| v.len() - 1).sum();

    assert_eq!(
        fulfillment_tests::amqp::queue_depth(&env.amqp_url(), "stripe.fulfillment.dlq").await,
        0
    );
    // Dead letters are moved from the queue into PostgreSQL: none there either.
    assert_eq!(count(&db, "SELECT count(*) FROM dead_letters").await, 0);
    for (name, svc) in [("receiver a", &mut receiver_a), ("worker 2", &mut worker_2)] {
        assert!(svc.is_alive(), "{name} died; log:\n{}", svc.logs());
    }
    let mut worker_3 = worker_3;
    let mut receiver_c = receiver_c;
    assert!(worker_3.is_alive(), "worker 3 died: {}", worker_3.logs());
    assert!(
        receiver_c.is_alive(),
        "receiver c died: {}",
        receiver_c.logs()
    );

    let delivered = counters.accepted.load(Ordering::Relaxed);
    let held_for_db: usize = [&worker_2, &worker_3]
        .iter()
        .map(|w| w.logs().matches("holding the event").count())
        .sum();
    let summary = serde_json::json!({
        "seed": seed,
        "events": unique.len(),
        "deliveries": delivered,
        "attempts": counters.attempts.load(Ordering::Relaxed),
        "stripe_retries": counters.retries.load(Ordering::Relaxed),
        "answers_503": counters.unavailable.load(Ordering::Relaxed),
        "connection_errors": counters.connection_errors.load(Ordering::Relaxed),
        "unacked_at_worker_kill": unacked_at_kill,
        "workers_held_events_for_db": held_for_db,
        "duplicates_absorbed": delivered as usize - unique.len(),
        "orders": expected.len(),
        "paid_orders": paid_expected.len(),
        "custom_reports": reports,
        "double_payments": anomalies,
        "payment_records": records.len(),
        "report_payment_calls": stripe.requests_to("POST /v1/payment_records/report_payment").len(),
        "downstream_messages": received.len(),
        "raw_duplicate_messages": raw_duplicates,
        "raw_duplicate_order_paid": raw_paid_duplicates,
        "faults": faults,
        "stream_seconds": sent_all.as_secs_f64().round(),
        "time_to_drain_seconds": (drained - sent_all).as_secs_f64(),
    });
    println!("{summary}");
}

/// The routing keys of status messages, as SQL.
const STATUS_KEYS: &str = "'order.paid', 'order.awaiting_payment', 'order.payment_failed', \
    'order.expired', 'order.canceled'";

/// Failed attempts, refunds and disputes as the Model says, and the
/// lifecycle messages that do not depend on delivery order: one per failed
/// attempt, the one for each order's final refund, each dispute's final one.
async fn check_lifecycle(db: &sqlx::PgPool, model: &Model) {
    let rows: Vec<(String, i32, Option<i64>, Option<String>)> = sqlx::query_as(
        "SELECT order_id, failed_attempts, amount_refunded, refund_status FROM orders",
    )
    .fetch_all(db)
    .await
    .unwrap();
    let actual: BTreeMap<String, (i32, Option<i64>, Option<String>)> = rows
        .into_iter()
        .map(|(o, f, a, s)| (o, (f, a, s)))
        .collect();
    let expected: BTreeMap<String, (i32, Option<i64>, Option<String>)> = model
        .orders()
        .iter()
        .map(|(id, o)| {
            let l = &o.lifecycle;
            let refund = l.refund.map(|r| r.amount_refunded);
            let status = l.refund.map(|r| r.status.as_str().to_owned());
            (id.clone(), (l.failed_attempts as i32, refund, status))
        })
        .collect();
    assert_eq!(actual, expected, "failed attempts and refunds");
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT order_id, dispute_id, status FROM order_disputes")
            .fetch_all(db)
            .await
            .unwrap();
    let disputes: BTreeSet<(String, String, String)> = rows.into_iter().collect();
    let expected: BTreeSet<(String, String, String)> = model
        .orders()
        .iter()
        .flat_map(|(id, o)| {
            o.lifecycle
                .disputes
                .iter()
                .map(move |(d, v)| (id.clone(), d.clone(), v.status.as_str().to_owned()))
        })
        .collect();
    assert_eq!(disputes, expected, "disputes");

    let ids: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT message_id FROM outbox WHERE routing_key NOT IN ({STATUS_KEYS})"
    ))
    .fetch_all(db)
    .await
    .unwrap();
    let stored: BTreeSet<String> = ids.into_iter().collect();
    let attempts = |ids: &mut dyn Iterator<Item = String>| -> BTreeSet<String> {
        ids.filter(|id| id.ends_with("/payment_attempt_failed"))
            .collect()
    };
    let modelled: BTreeSet<String> = model
        .outbox()
        .iter()
        .filter(|m| !m.is_status())
        .map(|m| m.message_id.clone())
        .collect();
    assert_eq!(
        attempts(&mut stored.iter().cloned()),
        attempts(&mut modelled.into_iter()),
        "one order.payment_attempt_failed per failed attempt"
    );
    for (id, order) in model.orders() {
        let l = &order.lifecycle;
        let finals = l
            .refund
            .map(|r| OrderMessage::note_id(id, &r.amount_refunded.to_string(), "refunded"))
            .into_iter()
            .chain(
                l.disputes
                    .iter()
                    .map(|(d, v)| OrderMessage::note_id(id, d, &format!("dispute_{}", v.status))),
            );
        for message_id in finals {
            assert!(stored.contains(&message_id), "{message_id} was sent");
        }
    }
}

/// One delivery, retried like Stripe (or a careful merchant) until a 2xx:
/// new signature each time.
async fn deliver(post: Post, i: usize, ports: Arc<RwLock<Vec<u16>>>, counters: Arc<Counters>) {
    let (secret, path, header_name) = if post.custom {
        (
            CUSTOM_TEST_SECRET,
            "/payments/custom",
            "fulfillment-signature",
        )
    } else {
        (TEST_SECRET, "/webhooks/stripe", "stripe-signature")
    };
    let body = post.body;
    let mut backoff = Duration::from_millis(200);
    for attempt in 0u32.. {
        let port = {
            let ports = ports.read().unwrap();
            ports[(i + attempt as usize) % ports.len()]
        };
        counters.attempts.fetch_add(1, Ordering::Relaxed);
        let header =
            stripe_webhook_signature::sign_header(secret, fulfillment_tests::unix_now(), &body);
        let signed = (header_name, header.as_str());
        let status =
            tokio::time::timeout(Duration::from_secs(10), try_post(port, path, &body, signed))
                .await
                .unwrap_or(None);
        match status {
            Some(503) => counters.unavailable.fetch_add(1, Ordering::Relaxed),
            None => counters.connection_errors.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        if status.is_some_and(|s| (200..300).contains(&s)) {
            counters.accepted.fetch_add(1, Ordering::Relaxed);
            return;
        }
        counters.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(3));
    }
}

/// The HTTP status, or None when the connection failed.
async fn try_post(port: u16, path: &str, body: &[u8], signed: (&str, &str)) -> Option<u16> {
    let headers = [("content-type", "application/json"), signed];
    let reply = fulfillment_tests::http::request(port, "POST", path, &headers, body.to_vec())
        .await
        .ok()?;
    assert_ne!(
        reply.status,
        400,
        "a correctly signed event was refused: {}",
        reply.text()
    );
    Some(reply.status)
}

fn unacked(vhost: &str, queue: &str) -> u64 {
    queue_counts(vhost)
        .into_iter()
        .find(|q| q.name == queue)
        .map_or(0, |q| q.unacked)
}

/// Ready + unacked messages in the pipeline's queues (not the tap, the DLQ
/// or the unrouted queue, which hold what is meant to stay).
fn queued_messages(vhost: &str) -> u64 {
    queue_counts(vhost)
        .into_iter()
        .filter(|q| {
            q.name != TAP && !q.name.ends_with(".dlq") && !q.name.starts_with("fulfillment.")
        })
        .map(|q| q.ready + q.unacked)
        .sum()
}

/// A durable queue standing in for a downstream service, read only at the
/// end so our own reading cannot create duplicates.
async fn declare_tap(url: &str) -> lapin::Connection {
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
    ch.queue_declare(TAP.into(), durable, args).await.unwrap();
    ch.queue_bind(
        TAP.into(),
        "fulfillment".into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    conn
}

async fn drain_tap(url: &str) -> Vec<(String, serde_json::Value)> {
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(TAP.into(), BasicGetOptions { no_ack: true })
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
    out
}
