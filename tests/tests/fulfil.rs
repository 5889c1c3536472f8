//! Workers, outbox relay, retries and the DLQ, end to end: signed events go
//! in over HTTP, orders and downstream messages come out.

use std::collections::HashMap;
use std::time::Duration;

use fulfillment_tests::amqp::publish_to_queue;
use fulfillment_tests::db::{connect, count, wait_count, wait_status};
use fulfillment_tests::events::{payment_intent_succeeded, session};
use fulfillment_tests::http::{get, post_signed};
use fulfillment_tests::proxy::Proxy;
use fulfillment_tests::{
    Service, TEST_SECRET, TestEnv, cli, migrate, pipeline, post_accepted as post,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);
const QUIET: Duration = Duration::from_millis(1500);
const COMPLETED: &str = "checkout.session.completed";
const EXPIRED: &str = "checkout.session.expired";
const ASYNC_OK: &str = "checkout.session.async_payment_succeeded";
const ASYNC_FAILED: &str = "checkout.session.async_payment_failed";

fn types_for(msgs: &[Value], order: &str) -> Vec<String> {
    msgs.iter()
        .filter(|m| m["order_id"] == order)
        .map(|m| m["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn every_state_machine_row_end_to_end() {
    let (env, svc, tap) = pipeline(&[]).await;
    let db = connect(&env.database_url()).await;

    post(
        &svc,
        &session("evt_r1", COMPLETED, "ord_paid", "paid", Some("pi_r1")),
    )
    .await;
    post(
        &svc,
        &session("evt_r2", COMPLETED, "ord_free", "no_payment_required", None),
    )
    .await;
    post(
        &svc,
        &session("evt_r3", COMPLETED, "ord_async_ok", "unpaid", Some("pi_r3")),
    )
    .await;
    post(
        &svc,
        &session(
            "evt_r5",
            COMPLETED,
            "ord_async_fail",
            "unpaid",
            Some("pi_r5"),
        ),
    )
    .await;
    post(
        &svc,
        &session("evt_r7", EXPIRED, "ord_expired", "unpaid", None),
    )
    .await;
    post(
        &svc,
        &session(
            "evt_r8",
            COMPLETED,
            "ord_paid_then_expired",
            "paid",
            Some("pi_r8"),
        ),
    )
    .await;
    post(
        &svc,
        &payment_intent_succeeded("evt_r10", "pi_r10", Some("ord_pi_meta")),
    )
    .await;
    wait_status(&db, "ord_async_ok", "awaiting_payment", WAIT).await;
    wait_status(&db, "ord_async_fail", "awaiting_payment", WAIT).await;
    wait_status(&db, "ord_paid_then_expired", "paid", WAIT).await;
    post(
        &svc,
        &session("evt_r4", ASYNC_OK, "ord_async_ok", "paid", Some("pi_r3")),
    )
    .await;
    post(
        &svc,
        &session(
            "evt_r6",
            ASYNC_FAILED,
            "ord_async_fail",
            "unpaid",
            Some("pi_r5"),
        ),
    )
    .await;
    post(
        &svc,
        &session(
            "evt_r9",
            EXPIRED,
            "ord_paid_then_expired",
            "paid",
            Some("pi_r8"),
        ),
    )
    .await;

    for (order, status) in [
        ("ord_paid", "paid"),
        ("ord_free", "paid"),
        ("ord_async_ok", "paid"),
        ("ord_async_fail", "payment_failed"),
        ("ord_expired", "expired"),
        ("ord_paid_then_expired", "paid"),
        ("ord_pi_meta", "paid"),
    ] {
        wait_status(&db, order, status, WAIT).await;
    }
    wait_count(
        &db,
        "SELECT count(*) FROM outbox WHERE published_at IS NULL",
        0,
        WAIT,
    )
    .await;
    let msgs = tap.drain_messages(QUIET).await;
    assert_eq!(types_for(&msgs, "ord_paid"), ["order.paid"]);
    assert_eq!(types_for(&msgs, "ord_free"), ["order.paid"]);
    assert_eq!(
        types_for(&msgs, "ord_async_ok"),
        ["order.awaiting_payment", "order.paid"]
    );
    assert_eq!(
        types_for(&msgs, "ord_async_fail"),
        ["order.awaiting_payment", "order.payment_failed"]
    );
    assert_eq!(types_for(&msgs, "ord_expired"), ["order.expired"]);
    assert_eq!(
        types_for(&msgs, "ord_paid_then_expired"),
        ["order.paid"],
        "expired never overrides paid"
    );
    assert_eq!(types_for(&msgs, "ord_pi_meta"), ["order.paid"]);

    let paid = msgs
        .iter()
        .find(|m| m["order_id"] == "ord_async_ok" && m["type"] == "order.paid")
        .unwrap();
    assert_eq!(paid["status"], "paid");
    assert_eq!(paid["previous_status"], "awaiting_payment");
    assert_eq!(paid["event_id"], "evt_r4");
    assert_eq!(paid["message_id"], "ord_async_ok/paid");
    assert_eq!(paid["checkout_session_id"], "cs_test_ord_async_ok");
    assert_eq!(paid["payment_intent_id"], "pi_r3");
    assert_eq!(paid["amount_total"], 4200);
    assert_eq!(paid["currency"], "eur");
    assert_eq!(paid["customer_email"], "buyer@example.com");
    assert_eq!(paid["livemode"], false);
    assert!(paid["occurred_at"].as_str().unwrap().ends_with('Z'));

    let history = count(
        &db,
        "SELECT count(*) FROM order_transitions WHERE order_id = 'ord_async_ok'",
    )
    .await;
    assert_eq!(history, 2);
    let stale = count(
        &db,
        "SELECT count(*) FROM processed_events WHERE event_id = 'evt_r9' AND outcome = 'stale'",
    )
    .await;
    assert_eq!(stale, 1, "the late expiry is recorded as stale");
}

#[tokio::test]
async fn a_storm_of_duplicates_applies_once() {
    let (env, svc, tap) = pipeline(&[]).await;
    let db = connect(&env.database_url()).await;
    let body = session(
        "evt_storm",
        COMPLETED,
        "ord_storm",
        "paid",
        Some("pi_storm"),
    );
    let port = svc.http_port;
    let posts: Vec<_> = (0..50)
        .map(|_| {
            let body = body.clone();
            tokio::spawn(async move { post_signed(port, &body, TEST_SECRET).await.status })
        })
        .collect();
    for p in posts {
        assert_eq!(p.await.unwrap(), 200);
    }
    wait_status(&db, "ord_storm", "paid", WAIT).await;
    let metric = r#"fulfillment_events_processed_total{type="checkout.session.completed",outcome="duplicate"} 49"#;
    wait_for_metric(&svc, metric).await;
    assert_eq!(count(&db, "SELECT count(*) FROM processed_events").await, 1);
    assert_eq!(
        count(&db, "SELECT count(*) FROM order_transitions").await,
        1
    );
    let msgs = tap.drain_messages(QUIET).await;
    assert_eq!(
        types_for(&msgs, "ord_storm"),
        ["order.paid"],
        "one message for fifty deliveries"
    );
}

#[tokio::test]
async fn concurrent_mixed_events_for_one_order_end_paid_once() {
    let (env, svc, tap) = pipeline(&[]).await;
    let db = connect(&env.database_url()).await;
    let bodies = vec![
        session("evt_m1", COMPLETED, "ord_mix", "unpaid", Some("pi_mix")),
        session("evt_m2", ASYNC_OK, "ord_mix", "paid", Some("pi_mix")),
        session("evt_m3", EXPIRED, "ord_mix", "unpaid", Some("pi_mix")),
        payment_intent_succeeded("evt_m4", "pi_mix", None),
        payment_intent_succeeded("evt_m5", "pi_mix", Some("ord_mix")),
    ];
    let port = svc.http_port;
    let posts: Vec<_> = (0..4)
        .flat_map(|_| bodies.clone())
        .map(|body| tokio::spawn(async move { post_signed(port, &body, TEST_SECRET).await.status }))
        .collect();
    for p in posts {
        assert_eq!(p.await.unwrap(), 200);
    }
    wait_count(
        &db,
        "SELECT count(*) FROM processed_events WHERE outcome <> 'processing'",
        5,
        WAIT,
    )
    .await;
    wait_status(&db, "ord_mix", "paid", WAIT).await;
    assert_eq!(count(&db, "SELECT count(*) FROM parked_events").await, 0);
    let msgs = tap.drain_messages(QUIET).await;
    let paid = types_for(&msgs, "ord_mix")
        .iter()
        .filter(|t| *t == "order.paid")
        .count();
    assert_eq!(paid, 1);
}

#[tokio::test]
async fn payment_intent_before_its_session_is_parked_then_applied() {
    let (env, svc, tap) = pipeline(&[]).await;
    let db = connect(&env.database_url()).await;
    post(
        &svc,
        &payment_intent_succeeded("evt_pi_first", "pi_early", None),
    )
    .await;
    wait_count(
        &db,
        "SELECT count(*) FROM parked_events WHERE payment_intent_id = 'pi_early'",
        1,
        WAIT,
    )
    .await;
    let unmatched = "SELECT count(*) FROM processed_events WHERE event_id = 'evt_pi_first' AND outcome = 'unmatched'";
    assert_eq!(count(&db, unmatched).await, 1);

    post(
        &svc,
        &session(
            "evt_cs_later",
            COMPLETED,
            "ord_early",
            "unpaid",
            Some("pi_early"),
        ),
    )
    .await;
    wait_status(&db, "ord_early", "paid", WAIT).await;
    assert_eq!(count(&db, "SELECT count(*) FROM parked_events").await, 0);
    let msgs = tap.drain_messages(QUIET).await;
    assert_eq!(
        types_for(&msgs, "ord_early"),
        ["order.awaiting_payment", "order.paid"]
    );
    let paid = msgs.iter().find(|m| m["type"] == "order.paid").unwrap();
    assert_eq!(paid["event_id"], "evt_pi_first");
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_and_later_events_flow() {
    let (env, svc, tap) = pipeline(&[]).await;
    let db = connect(&env.database_url()).await;
    let poison = String::from_utf8(session("evt_poison", COMPLETED, "ord_poison", "paid", None))
        .unwrap()
        .replace(
            r#""payment_status":"paid""#,
            r#""payment_status":"definitely_not_a_status""#,
        );
    post(&svc, poison.as_bytes()).await;
    post(
        &svc,
        &session("evt_after", COMPLETED, "ord_after", "paid", None),
    )
    .await;
    wait_status(&db, "ord_after", "paid", WAIT).await;
    wait_dead_letters(&db, 1).await;
    assert_eq!(
        fulfillment_tests::db::order_status(&db, "ord_poison").await,
        None
    );

    let (ok, listing) = cli(&env, &["dlq", "list"], &[]);
    assert!(ok, "{listing}");
    assert!(
        listing.contains("evt_poison") && listing.contains("permanent"),
        "{listing}"
    );
    assert!(
        listing.contains("payment_status"),
        "the error names the field: {listing}"
    );
    let (ok, shown) = cli(&env, &["dlq", "show", "evt_poison"], &[]);
    assert!(
        ok && shown.contains("definitely_not_a_status") && shown.contains("attempts:      1"),
        "{shown}"
    );
    // Listing and showing leave the dead letter where it is.
    assert_eq!(count(&db, "SELECT count(*) FROM dead_letters").await, 1);
    assert!(svc.logs().contains("event dead-lettered"));
    wait_for_metric(
        &svc,
        r#"fulfillment_dead_letters_total{kind="permanent"} 1"#,
    )
    .await;
    wait_for_metric(&svc, "fulfillment_dlq_depth 1").await;

    // No terminal to ask (stdin is not one here) and no --yes: refused.
    let refused = fulfillment_tests::service::command(&env, &["dlq", "purge"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "purge without --yes must fail");
    assert!(stderr.contains("--yes"), "says how to confirm: {stderr}");
    assert_eq!(
        count(&db, "SELECT count(*) FROM dead_letters").await,
        1,
        "nothing deleted"
    );
    let (ok, purged) = cli(&env, &["dlq", "purge", "--yes"], &[]);
    assert!(
        ok && purged.starts_with("1 dead letter(s) purged"),
        "{purged}"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM dead_letters").await, 0);
    wait_for_metric(&svc, "fulfillment_dlq_depth 0").await;
    assert_eq!(
        tap.drain_messages(QUIET).await.len(),
        1,
        "only ord_after's order.paid"
    );
}

#[tokio::test]
async fn transient_failures_retry_through_the_tiers_then_dead_letter_and_replay() {
    let delays = "200ms,400ms";
    let (env, svc, _tap) = pipeline(&[("RETRY_DELAYS", delays.into())]).await;
    let db = connect(&env.database_url()).await;
    // Real faults in the real database: a trigger that fails some events.
    sqlx::raw_sql(
        "CREATE SEQUENCE flaky_once;
         CREATE FUNCTION inject_fault() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.event_id LIKE 'evt_always%' THEN RAISE EXCEPTION 'injected fault'; END IF;
           IF NEW.event_id LIKE 'evt_once%' AND nextval('flaky_once') = 1 THEN RAISE EXCEPTION 'injected once'; END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER inject_fault BEFORE INSERT ON processed_events FOR EACH ROW EXECUTE FUNCTION inject_fault();",
    )
    .execute(&db)
    .await
    .unwrap();

    post(
        &svc,
        &session("evt_once_1", COMPLETED, "ord_once", "paid", None),
    )
    .await;
    post(
        &svc,
        &session("evt_always_1", COMPLETED, "ord_always", "paid", None),
    )
    .await;
    wait_status(&db, "ord_once", "paid", WAIT).await;
    wait_for_metric(
        &svc,
        r#"fulfillment_retries_total{tier="stripe.fulfillment.retry.200ms"} 2"#,
    )
    .await;
    wait_for_metric(
        &svc,
        r#"fulfillment_retries_total{tier="stripe.fulfillment.retry.400ms"} 1"#,
    )
    .await;
    wait_dead_letters(&db, 1).await;
    let (_, shown) = cli(&env, &["dlq", "show", "evt_always_1"], &[]);
    assert!(
        shown.contains("attempts:      3"),
        "first try + two tiers: {shown}"
    );
    assert!(
        shown.contains("exhausted") && shown.contains("injected fault"),
        "{shown}"
    );
    assert!(shown.contains("first failure: 20"), "{shown}");

    sqlx::query("DROP TRIGGER inject_fault ON processed_events")
        .execute(&db)
        .await
        .unwrap();
    let (ok, replayed) = cli(&env, &["dlq", "replay", "--all"], &[]);
    assert!(
        ok && replayed.contains("1 message(s) replayed"),
        "{replayed}"
    );
    wait_status(&db, "ord_always", "paid", WAIT).await;
    assert_eq!(count(&db, "SELECT count(*) FROM dead_letters").await, 0);
    assert_eq!(
        fulfillment_tests::amqp::queue_depth(&env.amqp_url(), "stripe.fulfillment.dlq").await,
        0
    );
    // Replaying again what already succeeded is harmless: dedup.
    let (ok, none) = cli(&env, &["dlq", "replay", "evt_always_1"], &[]);
    assert!(ok && none.contains("0 message(s) replayed"), "{none}");
}

#[tokio::test]
async fn replaying_a_message_that_succeeded_is_harmless() {
    let (env, svc, tap) = pipeline(&[]).await;
    let db = connect(&env.database_url()).await;
    let body = session("evt_twice", COMPLETED, "ord_twice", "paid", None);
    post(&svc, &body).await;
    wait_status(&db, "ord_twice", "paid", WAIT).await;
    // An operator puts the same event into the DLQ by hand and replays it.
    publish_to_queue(
        &env.amqp_url(),
        "stripe.fulfillment.dlq",
        "evt_twice",
        &body,
    )
    .await;
    // The worker moves it into the table, where replay finds it.
    wait_dead_letters(&db, 1).await;
    let (ok, out) = cli(&env, &["dlq", "replay", "evt_twice"], &[]);
    assert!(ok && out.contains("1 message(s) replayed"), "{out}");
    wait_for_metric(&svc, r#"outcome="duplicate"} 1"#).await;
    assert_eq!(count(&db, "SELECT count(*) FROM dead_letters").await, 0);
    assert_eq!(
        types_for(&tap.drain_messages(QUIET).await, "ord_twice"),
        ["order.paid"]
    );
}

#[tokio::test]
async fn relay_republish_keeps_the_message_id() {
    let (env, svc, tap) = pipeline(&[]).await;
    let db = connect(&env.database_url()).await;
    post(
        &svc,
        &session("evt_relay", COMPLETED, "ord_relay", "paid", None),
    )
    .await;
    let first = tap.next(WAIT).await.expect("order.paid");
    // What a relay crash between confirm and commit leaves behind: a row
    // published but not marked. The next relay pass publishes it again.
    sqlx::query("UPDATE outbox SET published_at = NULL")
        .execute(&db)
        .await
        .unwrap();
    let again = tap.next(WAIT).await.expect("republished");
    assert_eq!(
        first.delivery.properties.message_id(),
        again.delivery.properties.message_id()
    );
    assert_eq!(first.delivery.data, again.delivery.data, "byte-identical");
    assert_eq!(
        first
            .delivery
            .properties
            .message_id()
            .as_ref()
            .unwrap()
            .as_str(),
        "ord_relay/paid"
    );
}

#[tokio::test]
async fn workers_resume_after_losing_the_broker() {
    let env = TestEnv::new();
    migrate(&env, &[]);
    let proxy = Proxy::down("127.0.0.1:5672");
    proxy.up().await;
    let receiver = Service::start(&env, "receiver", &[]).await;
    let worker = Service::start(
        &env,
        "worker",
        &[("AMQP_URL", env.amqp_url_via(proxy.port))],
    )
    .await;
    worker.wait_ready(200, WAIT).await;
    let db = connect(&env.database_url()).await;
    post(
        &receiver,
        &session("evt_b1", COMPLETED, "ord_b1", "paid", None),
    )
    .await;
    wait_status(&db, "ord_b1", "paid", WAIT).await;

    proxy.down_now();
    worker.wait_ready(503, WAIT).await;
    post(
        &receiver,
        &session("evt_b2", COMPLETED, "ord_b2", "paid", None),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fulfillment_tests::db::order_status(&db, "ord_b2").await,
        None,
        "not consumed while cut off"
    );

    proxy.up().await;
    worker.wait_ready(200, WAIT).await;
    wait_status(&db, "ord_b2", "paid", WAIT).await;
    wait_count(
        &db,
        "SELECT count(*) FROM outbox WHERE published_at IS NULL",
        0,
        WAIT,
    )
    .await;
}

#[tokio::test]
async fn workers_wait_out_a_database_outage_without_dead_lettering() {
    let env = TestEnv::new();
    migrate(&env, &[]);
    let proxy = Proxy::down("127.0.0.1:5432");
    proxy.up().await;
    let via_proxy = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port, env.name);
    let svc = Service::start(&env, "serve", &[("DATABASE_URL", via_proxy)]).await;
    svc.wait_ready(200, WAIT).await;
    let db = connect(&env.database_url()).await;
    post(&svc, &session("evt_d1", COMPLETED, "ord_d1", "paid", None)).await;
    wait_status(&db, "ord_d1", "paid", WAIT).await;

    proxy.down_now();
    post(&svc, &session("evt_d2", COMPLETED, "ord_d2", "paid", None)).await;
    svc.wait_ready(503, WAIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        fulfillment_tests::db::order_status(&db, "ord_d2").await,
        None
    );

    proxy.up().await;
    wait_status(&db, "ord_d2", "paid", Duration::from_secs(30)).await;
    svc.wait_ready(200, WAIT).await;
    assert_eq!(
        fulfillment_tests::amqp::queue_depth(&env.amqp_url(), "stripe.fulfillment.dlq").await,
        0
    );
    assert_eq!(count(&db, "SELECT count(*) FROM dead_letters").await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM processed_events").await, 2);
}

#[tokio::test]
async fn metrics_cover_the_contract_families() {
    let (env, svc, _tap) = pipeline(&[]).await;
    let db = connect(&env.database_url()).await;
    post(
        &svc,
        &session("evt_metrics", COMPLETED, "ord_metrics", "paid", None),
    )
    .await;
    wait_status(&db, "ord_metrics", "paid", WAIT).await;
    for family in [
        "fulfillment_webhook_requests_total{outcome=\"accepted\"}",
        "fulfillment_webhook_duration_seconds_bucket",
        "fulfillment_events_processed_total{type=\"checkout.session.completed\",outcome=\"applied\"}",
        "fulfillment_event_processing_seconds_bucket",
        "fulfillment_event_lag_seconds_bucket{le=\"300\"}",
        "fulfillment_order_transitions_total{from=\"none\",to=\"paid\"}",
        "fulfillment_outbox_pending",
        "fulfillment_dlq_depth",
        "fulfillment_work_queue_depth",
        "fulfillment_broker_up",
        "fulfillment_database_up 1",
    ] {
        wait_for_metric(&svc, family).await;
    }
}

async fn wait_for_metric(svc: &Service, needle: &str) {
    let mut last = String::new();
    for _ in 0..200 {
        last = get(svc.metrics_port, "/metrics").await.unwrap().text();
        if last.contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let related: HashMap<_, _> = last
        .lines()
        .filter(|l| l.starts_with("fulfillment_") && !l.contains("_bucket"))
        .map(|l| (l, ()))
        .collect();
    panic!(
        "metric {needle:?} never appeared; have: {:#?}",
        related.keys()
    );
}

#[tokio::test]
async fn a_batch_confines_a_failing_event_to_itself() {
    let env = TestEnv::new();
    migrate(&env, &[("RETRY_DELAYS", "100ms")]);
    let db = connect(&env.database_url()).await;
    // Fails inside an event's own work (not its dedup record): the batch
    // fails, and the worker retries its events one by one, so only that
    // event is retried and dead-lettered.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_order() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.order_id = 'ord_batch_bad' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER refuse_order BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION refuse_order();",
    )
    .execute(&db)
    .await
    .unwrap();
    // Queued before any worker runs, so the first deliveries arrive together.
    for i in 0..40 {
        let order = if i == 17 {
            "ord_batch_bad".to_owned()
        } else {
            format!("ord_batch_{i}")
        };
        let body = session(&format!("evt_batch_{i}"), COMPLETED, &order, "paid", None);
        publish_to_queue(
            &env.amqp_url(),
            "stripe.fulfillment",
            &format!("evt_batch_{i}"),
            &body,
        )
        .await;
    }
    let svc = Service::start(&env, "worker", &[("RETRY_DELAYS", "100ms".into())]).await;
    wait_count(
        &db,
        "SELECT count(*) FROM orders WHERE status = 'paid'",
        39,
        WAIT,
    )
    .await;
    let metrics = get(svc.metrics_port, "/metrics").await.unwrap().text();
    let single: f64 = metric_value(&metrics, "fulfillment_worker_batch_size_bucket{le=\"1\"}");
    let batches: f64 = metric_value(&metrics, "fulfillment_worker_batch_size_count");
    assert!(
        batches > single,
        "some batch held more than one delivery:\n{metrics}"
    );
    wait_dead_letters(&db, 1).await;
    let (_, shown) = cli(&env, &["dlq", "show", "evt_batch_17"], &[]);
    assert!(
        shown.contains("refused") && shown.contains("attempts:      2"),
        "{shown}"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM processed_events").await,
        39,
        "the failed one left no trace"
    );
}

fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("{series} not in metrics"))
}

/// Waits until the workers have moved `n` dead letters into the table.
async fn wait_dead_letters(db: &sqlx::PgPool, n: i64) {
    wait_count(db, "SELECT count(*) FROM dead_letters", n, WAIT).await;
}
