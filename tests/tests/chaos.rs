//! `make chaos`: nothing lost, nothing doubled, while things break.
//!
//! Two receivers and two workers (separate processes, one database, one
//! vhost) take a stream of a few thousand signed events sent the way Stripe
//! sends them, mixed with custom-payment reports (`POST /payments/custom`)
//! sent the way a merchant's backend would, for the same kind of orders (the
//! stream: `fulfillment_tests::stripe_like`): any non-2xx answer or broken
//! connection is retried later with
//! backoff and a fresh signature; events are duplicated and arrive out of
//! order. Meanwhile, one after another: the broker is stopped and started, a
//! worker is SIGKILLed and replaced, PostgreSQL is restarted, a receiver is
//! SIGKILLed with requests in flight and replaced. After the pipeline drains,
//! the end state is compared with `fulfillment_core::Model` fed the same
//! events. Stops the shared RabbitMQ and PostgreSQL: run alone.

use std::process::Command;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use fulfillment_tests::amqp::queue_counts;
use fulfillment_tests::db::connect;
use fulfillment_tests::stripe_like::{self, Counters, Rng};
use fulfillment_tests::verdict::{self, declare_tap, wait_drained};
use fulfillment_tests::{CUSTOM_TEST_SECRET, Service, TestEnv, migrate};

const TAP: &str = "chaos.tap";

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
    let mut rng = Rng::new(seed);
    let (unique, stream) = stripe_like::deliveries(&mut rng, "chaos", orders);
    eprintln!(
        "chaos: seed {seed}, {} unique events, {} deliveries",
        unique.len(),
        stream.len()
    );

    let env = TestEnv::new();
    migrate(&env, &[]);
    declare_tap(&env.amqp_url(), TAP).await;
    let _guard = BrokerGuard;

    let with_secret = [("CUSTOM_PAYMENT_SECRET", CUSTOM_TEST_SECRET.to_owned())];
    let mut receiver_a = Service::start(&env, "receiver", &with_secret).await;
    let mut receiver_b = Service::start(&env, "receiver", &with_secret).await;
    let mut worker_1 = Service::start(&env, "worker", &[]).await;
    let mut worker_2 = Service::start(&env, "worker", &[]).await;
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
    let sender = stripe_like::send(
        stream,
        Duration::from_millis(15),
        ports.clone(),
        counters.clone(),
    );

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
    let worker_3 = Service::start(&env, "worker", &[]).await;

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
    let pending = || queued_messages(&env.name);
    wait_drained(&db, unique.len(), pending, Duration::from_secs(180)).await;
    let drained = started.elapsed();
    let verdict = verdict::judge(&db, &env.amqp_url(), TAP, &unique).await;

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

    let delivered = Counters::get(&counters.accepted);
    let held_for_db: usize = [&worker_2, &worker_3]
        .iter()
        .map(|w| w.logs().matches("holding the event").count())
        .sum();
    let mut summary = serde_json::json!({
        "seed": seed,
        "events": unique.len(),
        "deliveries": delivered,
        "attempts": Counters::get(&counters.attempts),
        "stripe_retries": Counters::get(&counters.retries),
        "answers_503": Counters::get(&counters.unavailable),
        "connection_errors": Counters::get(&counters.connection_errors),
        "unacked_at_worker_kill": unacked_at_kill,
        "workers_held_events_for_db": held_for_db,
        "duplicates_absorbed": delivered as usize - unique.len(),
        "faults": faults,
        "stream_seconds": sent_all.as_secs_f64().round(),
        "time_to_drain_seconds": (drained - sent_all).as_secs_f64(),
    });
    summary["downstream"] = verdict.to_json();
    println!("{summary}");
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
