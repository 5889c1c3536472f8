//! Bounded state, end to end (issue 9, items 7-9): parked events that no
//! session claims expire and are counted, absurd `created` times stay out of
//! the lag histogram, old rows are deleted by one replica at a time, and the
//! operator can read one order's or one event's story.

use std::time::{Duration, Instant};

use fulfillment_core::sample::{SampleSpec, event};
use fulfillment_tests::db::{connect, count, wait_count, wait_status};
use fulfillment_tests::events::{payment_intent_succeeded, session};
use fulfillment_tests::http::get;
use fulfillment_tests::{
    Service, TestEnv, cli, migrate, pipeline, post_accepted as post, unix_now,
};
use serde_json::Value;
use sqlx::{Connection, PgConnection};

const WAIT: Duration = Duration::from_secs(20);
const COMPLETED: &str = "checkout.session.completed";
const UPKEEP_LOCK: &str = "SELECT pg_advisory_lock(hashtextextended('fulfillment:upkeep', 0))";

/// The value of one series (exact name and labels), if present.
async fn metric(svc: &Service, series: &str) -> Option<f64> {
    let text = get(svc.metrics_port, "/metrics").await.unwrap().text();
    text.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().unwrap())
    })
}

/// Waits until `series` reads `want`; panics with the last value.
async fn wait_metric(svc: &Service, series: &str, want: f64) {
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    while Instant::now() < deadline {
        last = metric(svc, series).await;
        if last == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{series} is {last:?}, expected {want}");
}

/// Waits until `series` reads at least `want`.
async fn wait_at_least(svc: &Service, series: &str, want: f64) {
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    while Instant::now() < deadline {
        last = metric(svc, series).await;
        if last.is_some_and(|v| v >= want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{series} is {last:?}, expected at least {want}");
}

async fn outcome(db: &sqlx::PgPool, event_id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT outcome FROM processed_events WHERE event_id = $1")
        .bind(event_id)
        .fetch_optional(db)
        .await
        .unwrap()
}

async fn wait_outcome(db: &sqlx::PgPool, event_id: &str, want: &str) {
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    while Instant::now() < deadline {
        last = outcome(db, event_id).await;
        if last.as_deref() == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{event_id} outcome is {last:?}, expected {want}");
}

#[tokio::test]
async fn the_parked_events_gauge_counts_those_waiting_for_their_session() {
    let (env, svc, _tap) = pipeline(&[]).await;
    let db = connect(&env.database_url()).await;
    post(&svc, &payment_intent_succeeded("evt_wait", "pi_wait", None)).await;
    wait_outcome(&db, "evt_wait", "unmatched").await;
    wait_metric(&svc, "fulfillment_parked_events", 1.0).await;
    post(
        &svc,
        &session(
            "evt_wait_cs",
            COMPLETED,
            "ord_wait",
            "unpaid",
            Some("pi_wait"),
        ),
    )
    .await;
    wait_status(&db, "ord_wait", "paid", WAIT).await;
    wait_metric(&svc, "fulfillment_parked_events", 0.0).await;
    assert_eq!(
        metric(&svc, "fulfillment_parked_events_expired").await,
        Some(0.0)
    );
}

/// Money taken, no order: after PARKED_TTL the event is given up (counted,
/// flagged, still visible); a session that turns up later still makes the
/// order paid, because the payment is real.
#[tokio::test]
async fn an_unclaimed_parked_event_expires_and_a_late_session_still_releases_it() {
    let (env, svc, tap) = pipeline(&[
        ("PARKED_TTL", "1s".into()),
        ("RETENTION_INTERVAL", "200ms".into()),
    ])
    .await;
    let db = connect(&env.database_url()).await;
    post(&svc, &payment_intent_succeeded("evt_lost", "pi_lost", None)).await;
    wait_outcome(&db, "evt_lost", "unmatched_expired").await;
    let expired = "fulfillment_events_processed_total{type=\"payment_intent.succeeded\",outcome=\"unmatched_expired\"}";
    wait_metric(&svc, expired, 1.0).await;
    wait_metric(&svc, "fulfillment_parked_events_expired", 1.0).await;
    assert_eq!(metric(&svc, "fulfillment_parked_events").await, Some(0.0));
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM parked_events WHERE event_id = 'evt_lost' AND expired_at IS NOT NULL"
        )
        .await,
        1,
        "kept, flagged, for the operator"
    );
    let (ok, shown) = cli(&env, &["events", "show", "evt_lost"], &[]);
    assert!(
        ok && shown.contains("unmatched_expired") && shown.contains("EXPIRED"),
        "{shown}"
    );
    assert!(
        svc.logs().contains("parked events expired"),
        "a warning names it"
    );

    // The session arrives after the TTL: the money is real, the order is paid.
    post(
        &svc,
        &session(
            "evt_late_cs",
            COMPLETED,
            "ord_late",
            "unpaid",
            Some("pi_lost"),
        ),
    )
    .await;
    wait_status(&db, "ord_late", "paid", WAIT).await;
    assert_eq!(outcome(&db, "evt_lost").await.as_deref(), Some("applied"));
    assert_eq!(count(&db, "SELECT count(*) FROM parked_events").await, 0);
    wait_metric(&svc, "fulfillment_parked_events_expired", 0.0).await;
    let paid: Vec<Value> = tap
        .drain(Duration::from_millis(1500))
        .await
        .iter()
        .map(|m| serde_json::from_slice(&m.delivery.data).unwrap())
        .filter(|m: &Value| m["type"] == "order.paid")
        .collect();
    assert_eq!(paid.len(), 1);
    assert_eq!(paid[0]["event_id"], "evt_lost");
    // Given up once, counted once.
    assert_eq!(metric(&svc, expired).await, Some(1.0));
}

fn session_created_at(event_id: &str, order_id: &str, created: i64) -> Vec<u8> {
    let spec = SampleSpec {
        event_id,
        order_id,
        payment_intent_id: None,
        payment_status: "paid",
        order_in_metadata: false,
        created,
    };
    event(COMPLETED, &spec).unwrap()
}

#[tokio::test]
async fn absurd_created_times_are_counted_not_observed_as_lag() {
    let (env, svc, _tap) = pipeline(&[]).await;
    let db = connect(&env.database_url()).await;
    post(
        &svc,
        &session_created_at("evt_lag_ok", "ord_lag_ok", unix_now() - 5),
    )
    .await;
    post(
        &svc,
        &session_created_at("evt_lag_min", "ord_lag_min", i64::MIN),
    )
    .await;
    post(
        &svc,
        &session_created_at(
            "evt_lag_future",
            "ord_lag_future",
            unix_now() + 1_000_000_000,
        ),
    )
    .await;
    for order in ["ord_lag_ok", "ord_lag_min", "ord_lag_future"] {
        wait_status(&db, order, "paid", WAIT).await;
    }
    wait_metric(
        &svc,
        "fulfillment_event_lag_absurd_total{type=\"checkout.session.completed\"}",
        2.0,
    )
    .await;
    let observed = metric(&svc, "fulfillment_event_lag_seconds_count").await;
    assert_eq!(observed, Some(1.0), "only the sane event is observed");
    let sum = metric(&svc, "fulfillment_event_lag_seconds_sum")
        .await
        .unwrap();
    assert!((0.0..3600.0).contains(&sum), "lag sum stays sane: {sum}");
}

/// Old dedup records and old published outbox rows go; recent ones and
/// unpublished ones stay; dedup holds inside the window; and the job never
/// runs while another replica holds its lock.
#[tokio::test]
async fn retention_deletes_old_rows_only_and_one_replica_at_a_time() {
    let env = TestEnv::new();
    migrate(&env, &[]);
    let db = connect(&env.database_url()).await;
    // Another "replica" holds the job's lock from the start.
    let mut replica = PgConnection::connect(&env.database_url()).await.unwrap();
    sqlx::query(UPKEEP_LOCK)
        .execute(&mut replica)
        .await
        .unwrap();
    let svc = Service::start(
        &env,
        "serve",
        &[
            ("RETENTION_DAYS", "1".into()),
            ("OUTBOX_RETENTION_DAYS", "1".into()),
            ("RETENTION_INTERVAL", "100ms".into()),
        ],
    )
    .await;
    svc.wait_ready(200, WAIT).await;
    for i in 0..3 {
        post(
            &svc,
            &session(
                &format!("evt_old_{i}"),
                COMPLETED,
                &format!("ord_old_{i}"),
                "paid",
                None,
            ),
        )
        .await;
    }
    let recent = session("evt_recent", COMPLETED, "ord_recent", "paid", None);
    post(&svc, &recent).await;
    wait_status(&db, "ord_recent", "paid", WAIT).await;
    wait_count(
        &db,
        "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL",
        4,
        WAIT,
    )
    .await;

    // Two days pass for the old ones. A message the broker never confirms
    // stays unpublished (the trigger undoes the relay's mark): 30 days old.
    sqlx::raw_sql(
        "UPDATE processed_events SET processed_at = now() - interval '2 days' WHERE event_id LIKE 'evt_old_%';
         UPDATE outbox SET created_at = now() - interval '2 days', published_at = now() - interval '2 days'
           WHERE order_id LIKE 'ord_old_%';
         CREATE FUNCTION never_confirmed() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN NEW.published_at := NULL; RETURN NEW; END $$;
         CREATE TRIGGER never_confirmed BEFORE UPDATE ON outbox FOR EACH ROW
           WHEN (NEW.order_id = 'ord_stuck') EXECUTE FUNCTION never_confirmed();
         INSERT INTO outbox (message_id, routing_key, body, created_at, order_id)
           VALUES ('ord_stuck/paid', 'order.paid', '\\x7b7d', now() - interval '30 days', 'ord_stuck');",
    )
    .execute(&db)
    .await
    .unwrap();

    // While the other replica holds the lock, nothing is deleted.
    wait_at_least(
        &svc,
        "fulfillment_retention_runs_total{outcome=\"skipped\"}",
        5.0,
    )
    .await;
    assert_eq!(
        metric(&svc, "fulfillment_retention_runs_total{outcome=\"done\"}").await,
        None
    );
    assert_eq!(count(&db, "SELECT count(*) FROM processed_events").await, 4);

    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut replica)
        .await
        .unwrap();
    wait_count(
        &db,
        "SELECT count(*) FROM processed_events WHERE event_id LIKE 'evt_old_%'",
        0,
        WAIT,
    )
    .await;
    wait_count(
        &db,
        "SELECT count(*) FROM outbox WHERE order_id LIKE 'ord_old_%'",
        0,
        WAIT,
    )
    .await;
    wait_metric(
        &svc,
        "fulfillment_retention_deleted_rows_total{table=\"processed_events\"}",
        3.0,
    )
    .await;
    wait_metric(
        &svc,
        "fulfillment_retention_deleted_rows_total{table=\"outbox\"}",
        3.0,
    )
    .await;
    // Recent rows and the unpublished one stay; orders and their history too.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM processed_events WHERE event_id = 'evt_recent'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM outbox WHERE order_id = 'ord_recent'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM outbox WHERE order_id = 'ord_stuck' AND published_at IS NULL"
        )
        .await,
        1,
        "an unpublished message is never deleted"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM orders").await, 4);
    assert_eq!(
        count(&db, "SELECT count(*) FROM order_transitions").await,
        4
    );

    // Inside the window, a redelivery is still a duplicate.
    post(&svc, &recent).await;
    wait_metric(
        &svc,
        "fulfillment_events_processed_total{type=\"checkout.session.completed\",outcome=\"duplicate\"}",
        1.0,
    )
    .await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM outbox WHERE order_id = 'ord_recent'"
        )
        .await,
        1
    );
}

/// `orders show` and `events show` tell the story from the database,
/// including the exact body Stripe sent.
#[tokio::test]
async fn orders_show_and_events_show_tell_one_orders_story() {
    let (env, svc, _tap) = pipeline(&[]).await;
    let db = connect(&env.database_url()).await;
    let pi_first = payment_intent_succeeded("evt_story_pi", "pi_story", None);
    post(&svc, &pi_first).await;
    wait_outcome(&db, "evt_story_pi", "unmatched").await;
    post(
        &svc,
        &session(
            "evt_story_cs",
            COMPLETED,
            "ord_story",
            "unpaid",
            Some("pi_story"),
        ),
    )
    .await;
    wait_status(&db, "ord_story", "paid", WAIT).await;
    wait_count(
        &db,
        "SELECT count(*) FROM outbox WHERE published_at IS NULL",
        0,
        WAIT,
    )
    .await;

    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT body FROM processed_events WHERE event_id = 'evt_story_pi'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(stored, pi_first, "the body is stored byte for byte");

    let (ok, text) = cli(&env, &["orders", "show", "ord_story"], &[]);
    assert!(ok, "{text}");
    println!("{text}");
    for needle in [
        "order ord_story",
        "status:            paid",
        "4200 eur",
        "evt_story_cs",
        "applied    evt_story_pi  payment_intent.succeeded  (applied 20",
        "none -> awaiting_payment  by evt_story_cs",
        "awaiting_payment -> paid  by evt_story_pi",
        "order.awaiting_payment  ord_story/awaiting_payment",
        "order.paid  ord_story/paid  published 20",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    let (ok, json) = cli(&env, &["orders", "show", "ord_story", "--json"], &[]);
    assert!(ok);
    let story: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(story["events"].as_array().unwrap().len(), 2);
    assert_eq!(story["messages"].as_array().unwrap().len(), 2);
    assert!(
        story["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["published_at"].is_string())
    );

    let (ok, text) = cli(&env, &["events", "show", "evt_story_pi"], &[]);
    assert!(ok, "{text}");
    for needle in [
        "type:       payment_intent.succeeded",
        "outcome:    applied",
        "order:      ord_story",
        "\"id\": \"evt_story_pi\"",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    let (ok, json) = cli(&env, &["events", "show", "evt_story_pi", "--json"], &[]);
    assert!(ok);
    let shown: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        shown["body"],
        serde_json::from_slice::<Value>(&pi_first).unwrap()
    );

    for args in [
        ["orders", "show", "ord_nope"],
        ["events", "show", "evt_nope"],
    ] {
        let mut cmd = fulfillment_tests::service::command(&env, &args);
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{args:?} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("no order \"ord_nope\"") || err.contains("no event \"evt_nope\""),
            "{err}"
        );
    }
    drop(svc);
}
