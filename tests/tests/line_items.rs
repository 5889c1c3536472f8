//! Line items on `order.paid` end to end (issue 11 part 4, contract 8.3):
//! the real binary against the Stripe stand-in, real PostgreSQL and
//! RabbitMQ. Every page arrives; `Stripe-Account` for a Connect order; an
//! order without a session is not delayed; a Stripe outage during a burst
//! delays `order.paid` and loses or repeats none; the rate budget holds
//! under a burst; replicas share the work without fetching twice; a fetch
//! that outlives its lease cannot release the message twice; a session
//! Stripe does not know is kept for a person; without a key nothing changes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fulfillment_tests::amqp::Tap;
use fulfillment_tests::db::{connect, count, wait_count, wait_status};
use fulfillment_tests::events::{checkout_completed, payment_intent_succeeded};
use fulfillment_tests::http::get;
use fulfillment_tests::stripe::{Fault, Outage, StandIn, line_item, most_in_any_window};
use fulfillment_tests::{Service, TestEnv, cli, migrate, pipeline, post_accepted};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const QUIET: Duration = Duration::from_millis(1500);
const LINE_ITEMS: &str = "GET /v1/checkout/sessions/:id/line_items";

/// The sample events' session id for an order.
fn session(order: &str) -> String {
    format!("cs_test_{order}")
}

/// `n` line items for `order`'s session, `n` and the order's number in them.
fn items(order: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| line_item(&session(order), i, (i % 3 + 1) as u64, 500, "eur"))
        .collect()
}

/// A paid `checkout.session.completed` for `order`, from `account` if set.
fn paid(event_id: &str, order: &str, account: Option<&str>) -> Vec<u8> {
    let body = checkout_completed(event_id, order, "paid");
    let Some(account) = account else {
        return body;
    };
    let mut event: Value = serde_json::from_slice(&body).unwrap();
    event["account"] = json!(account);
    serde_json::to_vec(&event).unwrap()
}

fn as_json(message: &fulfillment_tests::amqp::BasicGetMessage) -> Value {
    let body: Value = serde_json::from_slice(&message.delivery.data).expect("JSON");
    let id = message.delivery.properties.message_id().as_ref();
    assert_eq!(body["message_id"].as_str(), id.map(|s| s.as_str()));
    body
}

/// Messages until `want` of them are `order.paid` (or `within` passes),
/// then every further one until the exchange is quiet.
async fn collect_paid(tap: &Tap, want: usize, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    let mut all = Vec::new();
    while all
        .iter()
        .filter(|m: &&Value| m["type"] == "order.paid")
        .count()
        < want
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match tap.next(left.max(Duration::from_millis(1))).await {
            Some(m) => all.push(as_json(&m)),
            None => break,
        }
    }
    all.extend(tap.drain(QUIET).await.iter().map(as_json));
    all
}

fn paid_only(messages: &[Value]) -> Vec<&Value> {
    messages
        .iter()
        .filter(|m| m["type"] == "order.paid")
        .collect()
}

async fn metric(svc: &Service, series: &str) -> f64 {
    let text = get(svc.metrics_port, "/metrics").await.unwrap().text();
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0.0)
}

/// Waits until the gauge reads `want` (the probes refresh every 5 s).
async fn wait_metric(svc: &Service, series: &str, want: f64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = metric(svc, series).await;
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {now}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn with(stripe: &StandIn, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut settings = stripe.settings();
    settings.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    settings
}

/// Asserts `message` carries exactly `order`'s `n` items, in Stripe's order.
fn assert_items(message: &Value, order: &str, n: usize) {
    let lines = message["line_items"]
        .as_array()
        .unwrap_or_else(|| panic!("order.paid of {order} without line_items: {message}"));
    assert_eq!(lines.len(), n, "{order}");
    for (i, line) in lines.iter().enumerate() {
        let quantity = (i % 3 + 1) as u64;
        assert_eq!(
            line,
            &json!({
                "price_id": format!("price_{i}"),
                "product_id": format!("prod_{i}"),
                "description": format!("Item {i}"),
                "quantity": quantity,
                "amount_total": 500 * quantity,
                "currency": "eur",
            }),
            "{order} line {i}"
        );
    }
}

#[tokio::test]
async fn every_page_of_a_connect_orders_line_items_arrives_on_order_paid() {
    let stripe = StandIn::start();
    // 250 lines: three pages of at most 100.
    stripe.set_line_items(
        &session("ord_li_many"),
        Some("acct_li"),
        items("ord_li_many", 250),
    );
    let (env, svc, tap) = pipeline(&stripe.settings()).await;
    let db = connect(&env.database_url()).await;

    post_accepted(&svc, &paid("evt_li_many", "ord_li_many", Some("acct_li"))).await;
    // An order paid without a Checkout Session (a PaymentIntent naming its
    // order) gets no line items and does not wait for Stripe.
    let direct = payment_intent_succeeded("evt_li_pi", "pi_li_direct", Some("ord_li_direct"));
    post_accepted(&svc, &direct).await;

    let messages = collect_paid(&tap, 2, WAIT).await;
    let paid = paid_only(&messages);
    assert_eq!(paid.len(), 2, "{messages:#?}");
    let by_order: BTreeMap<&str, &Value> = paid
        .iter()
        .map(|m| (m["order_id"].as_str().unwrap(), *m))
        .collect();
    assert_items(by_order["ord_li_many"], "ord_li_many", 250);
    assert_eq!(by_order["ord_li_many"]["message_id"], "ord_li_many/paid");
    assert!(
        by_order["ord_li_direct"].get("line_items").is_none(),
        "{messages:#?}"
    );

    let calls = stripe.requests_to(LINE_ITEMS);
    assert_eq!(calls.len(), 3, "one call per page, for the session only");
    for call in &calls {
        assert_eq!(call.stripe_account.as_deref(), Some("acct_li"));
        assert_eq!(call.param("limit"), Some("100"));
        assert!(call.path.contains(&session("ord_li_many")), "{}", call.path);
    }
    assert_eq!(calls[0].param("starting_after"), None);
    assert_eq!(
        calls[1].param("starting_after"),
        Some(format!("li_{}_99", session("ord_li_many")).as_str())
    );

    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM order_line_items WHERE order_id = 'ord_li_many'"
        )
        .await,
        250
    );
    assert_eq!(count(&db, "SELECT count(*) FROM line_item_jobs").await, 0);
    assert_eq!(
        metric(&svc, "fulfillment_line_items_total{outcome=\"fetched\"}").await,
        1.0
    );

    let (ok, out) = cli(&env, &["orders", "show", "ord_li_many"], &[]);
    assert!(ok, "{out}");
    assert!(out.contains("line items (250):"), "{out}");
    assert!(
        out.contains("3 x Item 2  1500 eur  price price_2  product prod_2"),
        "{out}"
    );
    let (ok, out) = cli(&env, &["orders", "show", "ord_li_many", "--json"], &[]);
    assert!(ok, "{out}");
    let story: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(story["line_items"].as_array().unwrap().len(), 250);
    assert_eq!(story["line_items_job"], Value::Null);
}

#[tokio::test]
async fn a_stripe_outage_during_a_burst_delays_order_paid_and_loses_none() {
    const ORDERS: usize = 20;
    let stripe = StandIn::start();
    let orders: Vec<String> = (0..ORDERS).map(|i| format!("ord_out_{i}")).collect();
    for (i, order) in orders.iter().enumerate() {
        stripe.set_line_items(&session(order), None, items(order, i % 4 + 1));
    }
    let (env, svc, tap) = pipeline(&stripe.settings()).await;
    let db = connect(&env.database_url()).await;

    stripe.set_outage(Outage::Unavailable);
    for (i, order) in orders.iter().enumerate() {
        post_accepted(&svc, &paid(&format!("evt_out_{i}"), order, None)).await;
    }
    let direct = payment_intent_succeeded("evt_out_pi", "pi_out_direct", Some("ord_out_direct"));
    post_accepted(&svc, &direct).await;
    wait_count(
        &db,
        "SELECT count(*) FROM orders WHERE status = 'paid'",
        ORDERS as i64 + 1,
        WAIT,
    )
    .await;
    // Every order's fetch failed at least once, and some were retried.
    wait_count(
        &db,
        "SELECT count(*) FROM line_item_jobs WHERE attempts >= 1 AND last_error IS NOT NULL",
        ORDERS as i64,
        WAIT,
    )
    .await;
    wait_metric(&svc, "fulfillment_line_items_pending", ORDERS as f64).await;
    assert!(metric(&svc, "fulfillment_line_items_oldest_pending_seconds").await > 0.0);
    assert!(metric(&svc, "fulfillment_outbox_pending").await >= ORDERS as f64);

    // During the outage only the order without a session went out.
    let during: Vec<Value> = tap.drain(QUIET).await.iter().map(as_json).collect();
    let paid_during: Vec<&Value> = paid_only(&during);
    assert_eq!(paid_during.len(), 1, "{during:#?}");
    assert_eq!(paid_during[0]["order_id"], "ord_out_direct");
    assert!(
        stripe
            .requests_to(LINE_ITEMS)
            .iter()
            .all(|r| r.status == 503),
        "nothing succeeded during the outage"
    );

    stripe.set_outage(Outage::None);
    let after = collect_paid(&tap, ORDERS, Duration::from_secs(90)).await;
    let paid_after = paid_only(&after);
    let ids: BTreeSet<&str> = paid_after
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(paid_after.len(), ORDERS, "exactly one each: {after:#?}");
    assert_eq!(ids.len(), ORDERS);
    for message in paid_after {
        let order = message["order_id"].as_str().unwrap();
        let i: usize = order.trim_start_matches("ord_out_").parse().unwrap();
        assert_items(message, order, i % 4 + 1);
    }
    assert_eq!(count(&db, "SELECT count(*) FROM line_item_jobs").await, 0);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
        .await,
        0
    );
    assert!(
        metric(&svc, "fulfillment_line_items_total{outcome=\"retried\"}").await >= ORDERS as f64
    );
    wait_metric(&svc, "fulfillment_line_items_pending", 0.0).await;
    assert!(svc.logs().contains("order.paid waits and is retried"));
}

#[tokio::test]
async fn the_rate_budget_holds_under_a_burst_of_paid_orders() {
    const ORDERS: usize = 40;
    const RATE: usize = 5;
    let stripe = StandIn::start();
    let orders: Vec<String> = (0..ORDERS).map(|i| format!("ord_rate_{i}")).collect();
    for order in &orders {
        stripe.set_line_items(&session(order), None, items(order, 2));
    }
    let (_env, svc, tap) = pipeline(&with(&stripe, &[("STRIPE_API_RATE", "5")])).await;
    for (i, order) in orders.iter().enumerate() {
        post_accepted(&svc, &paid(&format!("evt_rate_{i}"), order, None)).await;
    }
    let messages = collect_paid(&tap, ORDERS, Duration::from_secs(60)).await;
    let paid = paid_only(&messages);
    assert_eq!(paid.len(), ORDERS, "{messages:#?}");
    for message in paid {
        assert_items(message, message["order_id"].as_str().unwrap(), 2);
    }

    let calls = stripe.requests_to(LINE_ITEMS);
    assert_eq!(calls.len(), ORDERS, "one call per order");
    // The bucket spaces calls 1/RATE apart, so a second holds at most RATE
    // of them. The stand-in sees them after the network and its own
    // scheduling, a few milliseconds of jitter either way: a window 50 ms
    // short of a second absorbs that without letting a sixth call in.
    let mut starts: Vec<Instant> = calls.iter().map(|c| c.started).collect();
    starts.sort();
    let closest = starts.windows(2).map(|w| w[1] - w[0]).min().unwrap();
    eprintln!(
        "{ORDERS} calls in {:?}; closest two {closest:?}; most in any 1 s: {}",
        starts[ORDERS - 1] - starts[0],
        most_in_any_window(&calls, Duration::from_secs(1))
    );
    let most = most_in_any_window(&calls, Duration::from_millis(950));
    assert!(
        most <= RATE,
        "{most} calls within 950 ms at STRIPE_API_RATE={RATE}"
    );
    let first = calls.iter().map(|c| c.started).min().unwrap();
    let last = calls.iter().map(|c| c.started).max().unwrap();
    let floor = Duration::from_millis(((ORDERS - 1) * 1000 / RATE) as u64 - 300);
    assert!(
        last - first >= floor,
        "{:?} for {ORDERS} calls",
        last - first
    );
}

#[tokio::test]
async fn replicas_share_the_jobs_and_fetch_each_once() {
    const ORDERS: usize = 30;
    let stripe = StandIn::start();
    let orders: Vec<String> = (0..ORDERS).map(|i| format!("ord_rep_{i}")).collect();
    for order in &orders {
        stripe.set_line_items(&session(order), None, items(order, 1));
    }
    let settings = with(&stripe, &[("STRIPE_API_RATE", "100")]);
    let (env, svc, tap) = pipeline(&settings).await;
    let other = Service::start(&env, "worker", &settings).await;
    for (i, order) in orders.iter().enumerate() {
        post_accepted(&svc, &paid(&format!("evt_rep_{i}"), order, None)).await;
    }
    let messages = collect_paid(&tap, ORDERS, Duration::from_secs(60)).await;
    assert_eq!(paid_only(&messages).len(), ORDERS, "{messages:#?}");
    let calls = stripe.requests_to(LINE_ITEMS);
    let sessions: BTreeSet<&str> = calls.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(calls.len(), ORDERS, "no session fetched twice");
    assert_eq!(sessions.len(), ORDERS);
    let fetched = "fulfillment_line_items_total{outcome=\"fetched\"}";
    let (a, b) = (metric(&svc, fetched).await, metric(&other, fetched).await);
    // Which replica fetched which is a race; that the two together fetched
    // each order once is not.
    assert_eq!(a + b, ORDERS as f64);
}

#[tokio::test]
async fn a_fetch_that_outlived_its_lease_cannot_release_the_message_twice() {
    let stripe = StandIn::start();
    stripe.set_line_items(&session("ord_lease"), None, items("ord_lease", 3));
    // The first replica's call hangs for a while.
    stripe.fail_next(LINE_ITEMS, 1, Fault::Slow(Duration::from_secs(6)));
    let (env, svc, tap) = pipeline(&stripe.settings()).await;
    let db = connect(&env.database_url()).await;
    post_accepted(&svc, &paid("evt_lease", "ord_lease", None)).await;
    wait_count(
        &db,
        "SELECT count(*) FROM line_item_jobs WHERE attempts = 1",
        1,
        WAIT,
    )
    .await;
    // Its lease runs out (as if it had hung for minutes), and another
    // replica takes the job over and finishes it.
    sqlx::query("UPDATE line_item_jobs SET next_attempt_at = now()")
        .execute(&db)
        .await
        .unwrap();
    let other = Service::start(&env, "worker", &stripe.settings()).await;
    let messages = collect_paid(&tap, 1, WAIT).await;
    // Then the first call returns, and its claim is refused.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let late: Vec<Value> = tap.drain(QUIET).await.iter().map(as_json).collect();
    let paid = paid_only(&messages);
    assert_eq!(paid.len(), 1, "{messages:#?}");
    assert!(paid_only(&late).is_empty(), "{late:#?}");
    assert_items(paid[0], "ord_lease", 3);
    assert_eq!(stripe.requests_to(LINE_ITEMS).len(), 2);
    assert_eq!(count(&db, "SELECT count(*) FROM order_line_items").await, 3);
    assert_eq!(
        metric(&svc, "fulfillment_line_items_total{outcome=\"fetched\"}").await
            + metric(&other, "fulfillment_line_items_total{outcome=\"fetched\"}").await,
        1.0
    );
}

#[tokio::test]
async fn a_stopping_worker_gives_its_claims_back() {
    let stripe = StandIn::start();
    stripe.set_line_items(&session("ord_stop"), None, items("ord_stop", 2));
    stripe.fail_next(LINE_ITEMS, 1, Fault::Slow(Duration::from_secs(30)));
    let env = TestEnv::new();
    migrate(&env, &[]);
    let tap = Tap::bind(&env.amqp_url(), "fulfillment", "#").await;
    let db = connect(&env.database_url()).await;
    let mut first = Service::start(&env, "serve", &stripe.settings()).await;
    first.wait_ready(200, WAIT).await;
    post_accepted(&first, &paid("evt_stop", "ord_stop", None)).await;
    wait_count(
        &db,
        "SELECT count(*) FROM line_item_jobs WHERE attempts = 1",
        1,
        WAIT,
    )
    .await;
    assert!(first.terminate().success());
    // Given back: due now, the interrupted try not counted. Without that it
    // would wait out its lease (minutes).
    wait_count(
        &db,
        "SELECT count(*) FROM line_item_jobs WHERE attempts = 0 AND next_attempt_at <= now()",
        1,
        WAIT,
    )
    .await;
    assert!(tap.drain(QUIET).await.is_empty());
    let _second = Service::start(&env, "worker", &stripe.settings()).await;
    let messages = collect_paid(&tap, 1, WAIT).await;
    let paid = paid_only(&messages);
    assert_eq!(paid.len(), 1, "{messages:#?}");
    assert_items(paid[0], "ord_stop", 2);
}

#[tokio::test]
async fn a_session_stripe_does_not_know_is_kept_for_a_person() {
    let stripe = StandIn::start();
    let (env, svc, tap) = pipeline(&stripe.settings()).await;
    let db = connect(&env.database_url()).await;
    post_accepted(&svc, &paid("evt_404", "ord_404", None)).await;
    wait_status(&db, "ord_404", "paid", WAIT).await;
    wait_count(
        &db,
        "SELECT count(*) FROM line_item_jobs WHERE state = 'held'",
        1,
        WAIT,
    )
    .await;
    assert_eq!(
        stripe.requests_to(LINE_ITEMS).len(),
        1,
        "a final answer is not retried"
    );
    assert!(paid_only(&collect_paid(&tap, 1, QUIET).await).is_empty());
    wait_metric(&svc, "fulfillment_line_items_held", 1.0).await;
    assert_eq!(
        metric(&svc, "fulfillment_line_items_total{outcome=\"held\"}").await,
        1.0
    );
    assert!(svc.logs().contains("kept for a person"), "{}", svc.logs());

    let (ok, out) = cli(&env, &["orders", "show", "ord_404"], &[]);
    assert!(ok, "{out}");
    assert!(out.contains("WAITING for its line items"), "{out}");
    assert!(out.contains("line items: HELD for a person"), "{out}");
    assert!(out.contains("No such checkout.session"), "{out}");

    // A person fixes the cause (here: the session appears), then retries.
    stripe.set_line_items(&session("ord_404"), None, items("ord_404", 2));
    let (ok, out) = cli(
        &env,
        &["orders", "retry-line-items", "ord_404", "ord_nope"],
        &[],
    );
    assert!(!ok, "an order with nothing held is an error: {out}");
    assert!(out.contains("retrying line items of ord_404"), "{out}");
    let messages = collect_paid(&tap, 1, WAIT).await;
    let paid = paid_only(&messages);
    assert_eq!(paid.len(), 1, "{messages:#?}");
    assert_items(paid[0], "ord_404", 2);
    wait_metric(&svc, "fulfillment_line_items_held", 0.0).await;
}

#[tokio::test]
async fn without_a_key_order_paid_is_unchanged() {
    let (env, svc, tap) = pipeline(&[]).await;
    let db = connect(&env.database_url()).await;
    post_accepted(&svc, &paid("evt_nokey", "ord_nokey", None)).await;
    let messages = collect_paid(&tap, 1, WAIT).await;
    let paid = paid_only(&messages);
    assert_eq!(paid.len(), 1, "{messages:#?}");
    assert!(paid[0].get("line_items").is_none(), "{}", paid[0]);
    assert_eq!(paid[0]["checkout_session_id"], session("ord_nokey"));
    assert_eq!(count(&db, "SELECT count(*) FROM line_item_jobs").await, 0);
    assert_eq!(
        count(&db, "SELECT count(*) FROM outbox WHERE awaiting_line_items").await,
        0
    );
    assert!(
        svc.logs()
            .contains("line items on order.paid (published without them, as before)"),
        "{}",
        svc.logs()
    );
}

#[tokio::test]
async fn a_worker_without_a_key_says_that_messages_wait_and_leaves_them_held() {
    // Written while a key was set: a held-back order.paid and its job.
    let stripe = StandIn::start();
    let (env, svc, tap) = pipeline(&stripe.settings()).await;
    let db = connect(&env.database_url()).await;
    stripe.set_outage(Outage::Refused);
    post_accepted(&svc, &paid("evt_keyless", "ord_keyless", None)).await;
    wait_count(&db, "SELECT count(*) FROM line_item_jobs", 1, WAIT).await;
    svc.stop().await;

    let keyless = Service::start(&env, "worker", &[]).await;
    let deadline = Instant::now() + WAIT;
    while !keyless.logs().contains("STRIPE_API_KEY is not set here") {
        assert!(Instant::now() < deadline, "{}", keyless.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_metric(&keyless, "fulfillment_line_items_pending", 1.0).await;
    assert!(paid_only(&collect_paid(&tap, 1, QUIET).await).is_empty());
    assert_eq!(
        count(&db, "SELECT count(*) FROM outbox WHERE awaiting_line_items").await,
        1,
        "still held, never sent without its items"
    );
}
