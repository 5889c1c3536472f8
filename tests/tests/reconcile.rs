//! Recovering events webhooks missed (issue 11, part 3), end to end: the
//! real binary against the Stripe stand-in, PostgreSQL and RabbitMQ.
//! `fulfillment reconcile` across pages with some events already known,
//! twice; oldest first; dry runs; Stripe's 500/429/`Stripe-Should-Retry`;
//! a refused key; the periodic run; one replica at a time.

use std::process::Output;
use std::time::{Duration, Instant};

use fulfillment_core::HANDLED_EVENT_TYPES;
use fulfillment_tests::amqp::Tap;
use fulfillment_tests::db::{connect, count, wait_count, wait_status};
use fulfillment_tests::http::get;
use fulfillment_tests::stripe::{Fault, Logged, StandIn};
use fulfillment_tests::{
    Service, TestEnv, checkout_completed, migrate, pipeline, post_accepted, service, unix_now,
};
use sqlx::{Connection, PgConnection};

const WAIT: Duration = Duration::from_secs(30);
const LIST_EVENTS: &str = "GET /v1/events";
const RECONCILE_LOCK: &str =
    "SELECT pg_advisory_lock(hashtextextended('fulfillment:reconcile', 0))";

/// A paid `checkout.session.completed` for `order` created at `created`.
fn event_at(id: &str, order: &str, created: i64) -> Vec<u8> {
    let mut event: serde_json::Value =
        serde_json::from_slice(&checkout_completed(id, order, "paid")).unwrap();
    event["created"] = created.into();
    serde_json::to_vec(&event).unwrap()
}

/// Runs `fulfillment reconcile ARGS` against `stripe` with `key`.
fn reconcile(env: &TestEnv, stripe: &StandIn, key: &str, args: &[&str]) -> Output {
    let mut cmd = service::command(env, &[&["reconcile"], args].concat());
    cmd.env("STRIPE_API_KEY", key)
        .env("STRIPE_API_BASE", stripe.base_url());
    cmd.output().expect("run fulfillment reconcile")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn metrics(svc: &Service) -> String {
    get(svc.metrics_port, "/metrics").await.unwrap().text()
}

/// The value of one series (exact name and labels), 0 if absent.
async fn metric(svc: &Service, series: &str) -> f64 {
    metrics(svc)
        .await
        .lines()
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn handled_types() -> Vec<&'static str> {
    HANDLED_EVENT_TYPES.to_vec()
}

#[tokio::test]
async fn reconcile_recovers_missed_events_across_pages_oldest_first_and_only_once() {
    let stripe = StandIn::start();
    let (env, svc, _downstream) = pipeline(&[]).await;
    let db = connect(&env.database_url()).await;
    let start = unix_now() - 3600;
    // 230 events Stripe has not delivered everywhere: three pages of 100.
    // Every fifth one did reach us by webhook.
    for i in 0..230 {
        let body = event_at(
            &format!("evt_rec_{i:03}"),
            &format!("ord_rec_{i:03}"),
            start + i,
        );
        stripe.add_event(&body, false);
        if i % 5 == 0 {
            post_accepted(&svc, &body).await;
        }
    }
    wait_count(&db, "SELECT count(*) FROM processed_events", 46, WAIT).await;
    let bus = Tap::bind(&env.amqp_url(), "stripe.events", "#").await;

    let out = reconcile(&env, &stripe, stripe.key(), &["--since", "2h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("recovered 184, already known 46"),
        "{}",
        stdout(&out)
    );
    wait_count(&db, "SELECT count(*) FROM processed_events", 230, WAIT).await;
    wait_status(&db, "ord_rec_229", "paid", WAIT).await;
    wait_count(
        &db,
        "SELECT count(*) FROM orders WHERE status = 'paid'",
        230,
        WAIT,
    )
    .await;

    // Published through the normal path, oldest first, each once.
    let published = bus.drain(Duration::from_millis(500)).await;
    let ids: Vec<String> = published
        .iter()
        .map(|m| m.properties.message_id().as_ref().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..230)
        .filter(|i| i % 5 != 0)
        .map(|i| format!("evt_rec_{i:03}"))
        .collect();
    assert_eq!(ids, expected);
    let first = &published[0];
    assert_eq!(
        first.properties.kind().as_ref().unwrap().as_str(),
        "checkout.session.completed"
    );
    assert_eq!(first.properties.delivery_mode(), &Some(2));

    // What was asked of Stripe: every page, the handled types, undelivered only.
    let lists = stripe.requests_to(LIST_EVENTS);
    assert_eq!(lists.len(), 3);
    for list in &lists {
        assert_eq!(list.params_named("types[]"), handled_types());
        assert_eq!(list.param("delivery_success"), Some("false"));
        assert_eq!(list.param("limit"), Some("100"));
        let gte: i64 = list.param("created[gte]").unwrap().parse().unwrap();
        assert!((unix_now() - 7200 - gte).abs() < 60, "created[gte]={gte}");
        assert_eq!(list.stripe_version.as_deref(), Some("2026-07-29.dahlia"));
        assert!(list.authorized);
    }
    assert_eq!(lists[1].param("starting_after"), Some("evt_rec_130"));

    // A second run finds everything known and publishes nothing.
    let outbox = count(&db, "SELECT count(*) FROM outbox").await;
    let again = reconcile(&env, &stripe, stripe.key(), &["--since", "2h"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("recovered 0, already known 230"),
        "{}",
        stdout(&again)
    );
    assert!(bus.next(Duration::from_millis(700)).await.is_none());
    assert_eq!(
        count(&db, "SELECT count(*) FROM processed_events").await,
        230
    );
    assert_eq!(count(&db, "SELECT count(*) FROM outbox").await, outbox);

    // Without STRIPE_API_KEY, serve said once that Stripe calls are off.
    assert_eq!(svc.logs().matches("STRIPE_API_KEY is not set").count(), 1);
}

#[tokio::test]
async fn a_dry_run_names_the_events_and_publishes_nothing() {
    let stripe = StandIn::start();
    let env = TestEnv::new();
    migrate(&env, &[]);
    let db = connect(&env.database_url()).await;
    let now = unix_now();
    stripe.add_event(&event_at("evt_dry_1", "ord_dry_1", now - 30), false);
    stripe.add_event(&event_at("evt_dry_2", "ord_dry_2", now - 20), false);
    sqlx::query("INSERT INTO processed_events (event_id, event_type, outcome) VALUES ('evt_dry_2', 'checkout.session.completed', 'applied')")
        .execute(&db)
        .await
        .unwrap();
    let bus = Tap::bind(&env.amqp_url(), "stripe.events", "#").await;
    let out = reconcile(&env, &stripe, stripe.key(), &["--dry-run", "--all-events"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("would recover  evt_dry_1  checkout.session.completed"),
        "{text}"
    );
    assert!(text.contains("known  evt_dry_2"), "{text}");
    assert!(
        text.contains("would recover 1, already known 1 (dry run: nothing published)"),
        "{text}"
    );
    assert!(bus.next(Duration::from_millis(500)).await.is_none());
    // --all-events drops the delivery filter.
    assert_eq!(
        stripe.requests_to(LIST_EVENTS)[0].param("delivery_success"),
        None
    );
}

#[tokio::test]
async fn stripe_errors_are_retried_as_stripe_says_and_a_no_retry_answer_fails_the_run() {
    let stripe = StandIn::start();
    let env = TestEnv::new();
    migrate(&env, &[]);
    let db = connect(&env.database_url()).await;
    stripe.add_event(&event_at("evt_err_1", "ord_err_1", unix_now() - 10), false);
    stripe.fail_next(LIST_EVENTS, 1, Fault::status(500));
    stripe.fail_next(LIST_EVENTS, 1, Fault::status(429));
    let out = reconcile(&env, &stripe, stripe.key(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("recovered 1, already known 0"),
        "{}",
        stdout(&out)
    );
    let statuses: Vec<u16> = stripe
        .requests_to(LIST_EVENTS)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [500, 429, 200]);
    assert_eq!(
        count(&db, "SELECT count(*) FROM processed_events").await,
        0,
        "no worker runs here"
    );

    stripe.fail_next(LIST_EVENTS, 1, Fault::status_should_retry(503, false));
    let refused = reconcile(&env, &stripe, stripe.key(), &[]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("503"), "{}", stderr(&refused));
    assert_eq!(
        stripe.requests_to(LIST_EVENTS).len(),
        4,
        "Stripe-Should-Retry: false is final"
    );
}

#[tokio::test]
async fn a_wrong_key_fails_loudly_once_and_is_never_printed() {
    let stripe = StandIn::start();
    let env = TestEnv::new();
    migrate(&env, &[]);
    let wrong = "sk_test_this_key_is_wrong_and_secret_0042";

    let out = reconcile(&env, &stripe, wrong, &[]);
    assert!(!out.status.success());
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(said.contains("STRIPE_API_KEY"), "{said}");
    assert!(!said.contains("is_wrong_and_secret"), "{said}");

    let svc = Service::start(
        &env,
        "worker",
        &[
            ("STRIPE_API_KEY", wrong.to_owned()),
            ("STRIPE_API_BASE", stripe.base_url()),
            ("RECONCILE_INTERVAL", "200ms".to_owned()),
        ],
    )
    .await;
    let series = r#"fulfillment_stripe_api_requests_total{endpoint="GET /v1/events",status="401"}"#;
    wait_until("the 401", async || metric(&svc, series).await == 1.0).await;
    // Several runs later: each failed at once, without a request; one error line.
    let failed = r#"fulfillment_reconcile_runs_total{outcome="failed"}"#;
    wait_until("failed runs", async || metric(&svc, failed).await >= 4.0).await;
    let requests = stripe.requests();
    assert_eq!(
        requests.len(),
        2,
        "one from the command, one from the worker"
    );
    assert!(requests.iter().all(|r| r.status == 401));
    let logs = svc.logs();
    let loud: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("Stripe refused the API key"))
        .collect();
    assert_eq!(loud.len(), 1, "{logs}");
    assert!(loud[0].contains("STRIPE_API_KEY"), "{logs}");
    assert!(
        logs.contains("reconcile run failed"),
        "later runs fail with a clear error: {logs}"
    );
    assert!(
        !logs.contains("is_wrong_and_secret") && !logs.contains("0042"),
        "{logs}"
    );
    assert!(!metrics(&svc).await.contains("is_wrong_and_secret"));
}

#[tokio::test]
async fn the_periodic_run_waits_for_the_lock_and_then_recovers() {
    let stripe = StandIn::start();
    let env = TestEnv::new();
    migrate(&env, &[]);
    let db = connect(&env.database_url()).await;
    stripe.add_event(&event_at("evt_per_1", "ord_per_1", unix_now() - 60), false);
    // Another replica (this test) is reconciling.
    let mut holder = PgConnection::connect(&env.database_url()).await.unwrap();
    sqlx::query(RECONCILE_LOCK)
        .execute(&mut holder)
        .await
        .unwrap();
    let mut settings = stripe.settings();
    settings.push(("RECONCILE_INTERVAL", "150ms".to_owned()));
    let svc = Service::start(&env, "worker", &settings).await;
    let skipped = r#"fulfillment_reconcile_runs_total{outcome="skipped"}"#;
    wait_until("skipped runs", async || metric(&svc, skipped).await >= 3.0).await;
    assert!(
        stripe.requests().is_empty(),
        "no run while the lock is held"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM processed_events").await, 0);

    holder.close().await.unwrap();
    wait_status(&db, "ord_per_1", "paid", WAIT).await;
    let recovered = r#"fulfillment_reconcile_events_total{outcome="recovered"}"#;
    assert_eq!(metric(&svc, recovered).await, 1.0);
    // Later runs find it known and publish nothing more.
    let known = r#"fulfillment_reconcile_events_total{outcome="known"}"#;
    wait_until("a later run", async || metric(&svc, known).await >= 1.0).await;
    assert_eq!(metric(&svc, recovered).await, 1.0);
    let text = metrics(&svc).await;
    assert!(text.contains(
        r#"fulfillment_stripe_api_requests_total{endpoint="GET /v1/events",status="200"}"#
    ));
}

/// Runs, as the stand-in saw them: a first page (no cursor) and the pages
/// that follow it. True when no run started before the previous one ended.
fn runs_never_overlap(requests: &[Logged]) -> bool {
    let mut sorted: Vec<&Logged> = requests.iter().collect();
    sorted.sort_by_key(|r| r.started);
    sorted.windows(2).all(|w| {
        let next_is_same_run = w[1].param("starting_after").is_some();
        // Pages of one run follow each other; a new run starts after the
        // previous run's last page was answered.
        w[1].started >= w[0].finished
            && (next_is_same_run || w[0].param("starting_after").is_some())
    })
}

#[tokio::test]
async fn two_replicas_never_reconcile_at_once() {
    let stripe = StandIn::start();
    let env = TestEnv::new();
    migrate(&env, &[]);
    let now = unix_now();
    for i in 0..150 {
        stripe.add_event(
            &event_at(
                &format!("evt_two_{i:03}"),
                &format!("ord_two_{i:03}"),
                now - 600 + i,
            ),
            false,
        );
    }
    // Slow pages make each run last a while, so overlapping runs would show.
    stripe.fail_next(LIST_EVENTS, 1000, Fault::Slow(Duration::from_millis(150)));
    let mut settings = stripe.settings();
    settings.push(("RECONCILE_INTERVAL", "100ms".to_owned()));
    let a = Service::start(&env, "worker", &settings).await;
    let b = Service::start(&env, "worker", &settings).await;
    let done = r#"fulfillment_reconcile_runs_total{outcome="done"}"#;
    let skipped = r#"fulfillment_reconcile_runs_total{outcome="skipped"}"#;
    wait_until("several runs and skips", async || {
        metric(&a, done).await + metric(&b, done).await >= 6.0
            && metric(&a, skipped).await + metric(&b, skipped).await >= 3.0
    })
    .await;
    let requests = stripe.requests_to(LIST_EVENTS);
    assert!(requests.len() >= 12, "{} requests", requests.len());
    assert!(runs_never_overlap(&requests), "{requests:#?}");
    let firsts = requests
        .iter()
        .filter(|r| r.param("starting_after").is_none())
        .count();
    assert_eq!(
        firsts * 2,
        requests.len() - requests.len() % 2,
        "two pages a run"
    );
}
