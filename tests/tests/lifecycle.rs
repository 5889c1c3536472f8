//! The rest of the payment lifecycle (issue 14, contract 8.6) end to end:
//! signed events in over HTTP to the real binary, orders, lifecycle facts,
//! `orders show`, metrics and downstream messages out. Real Stripe payloads
//! from the shared fixtures go in byte for byte.

use std::time::{Duration, Instant};

use fulfillment_core::sample::LifecycleSpec;
use fulfillment_tests::amqp::Tap;
use fulfillment_tests::db::{connect, count, wait_count, wait_status};
use fulfillment_tests::events::{lifecycle, payment_intent_succeeded, session};
use fulfillment_tests::http::get;
use fulfillment_tests::{Service, TestEnv, cli, pipeline, post_accepted as post, shared_fixtures};
use serde_json::Value;
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(20);
const QUIET: Duration = Duration::from_millis(1500);
const PROCESSING: &str = "payment_intent.processing";
const FAILED: &str = "payment_intent.payment_failed";
const CANCELED: &str = "payment_intent.canceled";
const REFUNDED: &str = "charge.refunded";
const DISPUTE_CREATED: &str = "charge.dispute.created";
const DISPUTE_CLOSED: &str = "charge.dispute.closed";

fn for_order<'a>(msgs: &'a [Value], order: &str) -> Vec<&'a Value> {
    msgs.iter().filter(|m| m["order_id"] == order).collect()
}

fn types(msgs: &[&Value]) -> Vec<String> {
    msgs.iter()
        .map(|m| m["type"].as_str().unwrap().to_owned())
        .collect()
}

/// POSTs the event and waits until the worker recorded its outcome.
async fn post_processed(svc: &Service, db: &PgPool, event_id: &str, body: &[u8]) -> String {
    post(svc, body).await;
    outcome(db, event_id).await
}

/// The recorded outcome of `event_id`, once it has one.
async fn outcome(db: &PgPool, event_id: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let outcome: Option<String> =
            sqlx::query_scalar("SELECT outcome FROM processed_events WHERE event_id = $1")
                .bind(event_id)
                .fetch_optional(db)
                .await
                .unwrap();
        match outcome {
            Some(o) if o != "processing" => return o,
            _ if Instant::now() > deadline => panic!("{event_id} not processed: {outcome:?}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn all_published(db: &PgPool) {
    wait_count(
        db,
        "SELECT count(*) FROM outbox WHERE published_at IS NULL",
        0,
        WAIT,
    )
    .await;
}

async fn refund_of(db: &PgPool, order: &str) -> (Option<i64>, Option<String>) {
    sqlx::query_as("SELECT amount_refunded, refund_status FROM orders WHERE order_id = $1")
        .bind(order)
        .fetch_one(db)
        .await
        .unwrap()
}

fn ls(
    decline_code: &'static str,
    amount_refunded: i64,
    dispute_status: &'static str,
) -> LifecycleSpec<'static> {
    LifecycleSpec {
        decline_code,
        amount_refunded,
        dispute_status,
        dispute_id: None,
    }
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not in /metrics"))
}

#[tokio::test]
async fn every_row_of_contract_8_6() {
    let (env, svc, tap) = pipeline(&[]).await;
    let db = connect(&env.database_url()).await;
    let d = LifecycleSpec::default();

    // payment_intent.processing: a new order awaits payment.
    let body = lifecycle("evt_proc", PROCESSING, "pi_proc", Some("ord_proc"), &d);
    assert_eq!(
        post_processed(&svc, &db, "evt_proc", &body).await,
        "applied"
    );
    // payment_intent.payment_failed: not terminal; awaiting payment if new.
    let declined = ls("insufficient_funds", 0, "lost");
    let body = lifecycle("evt_fail", FAILED, "pi_fail", Some("ord_fail"), &declined);
    assert_eq!(
        post_processed(&svc, &db, "evt_fail", &body).await,
        "applied"
    );
    // payment_intent.canceled: canceled, unless already paid.
    let body = lifecycle("evt_cancel", CANCELED, "pi_cancel", Some("ord_cancel"), &d);
    assert_eq!(
        post_processed(&svc, &db, "evt_cancel", &body).await,
        "applied"
    );
    let paid = payment_intent_succeeded("evt_pc_ok", "pi_pc", Some("ord_paid_cancel"));
    post_processed(&svc, &db, "evt_pc_ok", &paid).await;
    let body = lifecycle("evt_pc_x", CANCELED, "pi_pc", Some("ord_paid_cancel"), &d);
    assert_eq!(post_processed(&svc, &db, "evt_pc_x", &body).await, "stale");
    // charge.refunded: found through the charge's PaymentIntent.
    let paid = payment_intent_succeeded("evt_rf_ok", "pi_rf", Some("ord_refund"));
    post_processed(&svc, &db, "evt_rf_ok", &paid).await;
    let body = lifecycle("evt_rf", REFUNDED, "pi_rf", None, &ls("-", 1000, "lost"));
    assert_eq!(post_processed(&svc, &db, "evt_rf", &body).await, "applied");
    // charge.dispute.created, and .closed (won) on another order.
    for (order, pi) in [("ord_dispute", "pi_dp"), ("ord_won", "pi_won")] {
        let paid = payment_intent_succeeded(&format!("evt_{pi}_ok"), pi, Some(order));
        post_processed(&svc, &db, &format!("evt_{pi}_ok"), &paid).await;
        let body = lifecycle(&format!("evt_{pi}_dc"), DISPUTE_CREATED, pi, None, &d);
        assert_eq!(
            post_processed(&svc, &db, &format!("evt_{pi}_dc"), &body).await,
            "applied"
        );
    }
    let won = lifecycle(
        "evt_won_dx",
        DISPUTE_CLOSED,
        "pi_won",
        None,
        &ls("-", 0, "won"),
    );
    assert_eq!(
        post_processed(&svc, &db, "evt_won_dx", &won).await,
        "applied"
    );
    // A charge made without a PaymentIntent belongs to no order: acknowledged, ignored.
    let mut legacy: Value =
        serde_json::from_slice(&lifecycle("evt_legacy", REFUNDED, "pi_x", None, &d)).unwrap();
    legacy["data"]["object"]["payment_intent"] = Value::Null;
    post(&svc, &serde_json::to_vec(&legacy).unwrap()).await;

    for (order, status) in [
        ("ord_proc", "awaiting_payment"),
        ("ord_fail", "awaiting_payment"),
        ("ord_cancel", "canceled"),
        ("ord_paid_cancel", "paid"),
        ("ord_refund", "paid"),
        ("ord_dispute", "paid"),
        ("ord_won", "paid"),
    ] {
        wait_status(&db, order, status, WAIT).await;
    }
    all_published(&db).await;
    let msgs = tap.drain_messages(QUIET).await;
    assert_eq!(
        types(&for_order(&msgs, "ord_proc")),
        ["order.awaiting_payment"]
    );
    assert_eq!(
        types(&for_order(&msgs, "ord_fail")),
        ["order.awaiting_payment", "order.payment_attempt_failed"]
    );
    assert_eq!(types(&for_order(&msgs, "ord_cancel")), ["order.canceled"]);
    assert_eq!(types(&for_order(&msgs, "ord_paid_cancel")), ["order.paid"]);
    assert_eq!(
        types(&for_order(&msgs, "ord_refund")),
        ["order.paid", "order.refunded"]
    );
    assert_eq!(
        types(&for_order(&msgs, "ord_dispute")),
        ["order.paid", "order.disputed"]
    );
    assert_eq!(
        types(&for_order(&msgs, "ord_won")),
        ["order.paid", "order.disputed", "order.dispute_closed"]
    );

    let attempt = for_order(&msgs, "ord_fail")[1];
    assert_eq!(
        attempt["message_id"],
        "ord_fail/evt_fail/payment_attempt_failed"
    );
    assert_eq!(attempt["failure_code"], "card_declined");
    assert_eq!(attempt["decline_code"], "insufficient_funds");
    assert_eq!(attempt["failure_message"], "Your card was declined.");
    assert_eq!(attempt["status"], "awaiting_payment");
    assert_eq!(
        attempt["amount_total"], 4200,
        "the amount asked for, not the 0 received"
    );
    let canceled = for_order(&msgs, "ord_cancel")[0];
    assert_eq!(canceled["message_id"], "ord_cancel/canceled");
    let refund = for_order(&msgs, "ord_refund")[1];
    assert_eq!(refund["message_id"], "ord_refund/1000/refunded");
    assert_eq!(refund["amount_refunded"], 1000);
    assert_eq!(refund["refund_status"], "partial");
    assert_eq!(refund["status"], "paid", "a refund is no status");
    let disputed = for_order(&msgs, "ord_dispute")[1];
    assert_eq!(disputed["message_id"], "ord_dispute/du_dp/dispute_open");
    assert_eq!(disputed["dispute_status"], "open");
    assert_eq!(disputed["dispute_reason"], "fraudulent");
    assert!(disputed["evidence_due_by"].as_str().unwrap().ends_with('Z'));
    let closed = for_order(&msgs, "ord_won")[2];
    assert_eq!(closed["dispute_status"], "won");
    assert_eq!(closed["message_id"], "ord_won/du_won/dispute_won");

    assert_eq!(
        refund_of(&db, "ord_refund").await,
        (Some(1000), Some("partial".into()))
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM order_disputes WHERE status = 'open'"
        )
        .await,
        1
    );

    // orders show tells the dispute with its deadline, and the failed attempt.
    let (ok, text) = cli(&env, &["orders", "show", "ord_dispute"], &[]);
    assert!(ok, "{text}");
    assert!(text.contains("du_dp  OPEN, evidence due by 20"), "{text}");
    let (ok, text) = cli(&env, &["orders", "show", "ord_fail"], &[]);
    assert!(ok, "{text}");
    assert!(
        text.contains("failed attempts:   1 (last: card_declined / insufficient_funds"),
        "{text}"
    );
    let (ok, json) = cli(&env, &["orders", "show", "ord_won", "--json"], &[]);
    assert!(ok, "{json}");
    let story: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(story["disputes"][0]["status"], "won");

    // Each new outcome is counted; the gauges come from the database.
    let deadline = Instant::now() + WAIT;
    let text = loop {
        let text = get(svc.metrics_port, "/metrics").await.unwrap().text();
        if text.contains("fulfillment_disputes_open 1") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(metric(&text, "fulfillment_disputes_open"), 1.0);
    let next_due = metric(&text, "fulfillment_disputes_next_due_timestamp_seconds");
    assert!(
        next_due > fulfillment_tests::unix_now() as f64,
        "{next_due}"
    );
    for (series, value) in [
        ("fulfillment_payment_attempts_failed_total", 1.0),
        ("fulfillment_refunds_total{refund_status=\"partial\"}", 1.0),
        ("fulfillment_refunds_total{refund_status=\"full\"}", 0.0),
        ("fulfillment_disputes_total{dispute_status=\"open\"}", 2.0),
        ("fulfillment_disputes_total{dispute_status=\"won\"}", 1.0),
        ("fulfillment_disputes_total{dispute_status=\"lost\"}", 0.0),
        (
            "fulfillment_order_transitions_total{from=\"none\",to=\"canceled\"}",
            1.0,
        ),
        (
            "fulfillment_events_processed_total{type=\"charge.refunded\",outcome=\"ignored\"}",
            1.0,
        ),
        (
            "fulfillment_events_processed_total{type=\"payment_intent.canceled\",outcome=\"stale\"}",
            1.0,
        ),
    ] {
        assert_eq!(metric(&text, series), value, "{series}");
    }
    let logs = svc.logs();
    assert!(logs.contains("dispute opened"), "a dispute is logged");
    assert!(
        logs.contains("belongs to no order"),
        "an ignored charge is logged"
    );
}

#[tokio::test]
async fn a_payment_intent_that_fails_then_succeeds_ends_paid() {
    let (env, svc, tap) = pipeline(&[]).await;
    let db = connect(&env.database_url()).await;
    let order = Some("ord_retry");
    let first = lifecycle(
        "evt_a1",
        FAILED,
        "pi_retry",
        order,
        &ls("insufficient_funds", 0, "lost"),
    );
    let second = lifecycle(
        "evt_a2",
        FAILED,
        "pi_retry",
        order,
        &ls("do_not_honor", 0, "lost"),
    );
    let success = payment_intent_succeeded("evt_ok", "pi_retry", order);
    post_processed(&svc, &db, "evt_a1", &first).await;
    post_processed(&svc, &db, "evt_a2", &second).await;
    post(&svc, &first).await; // Stripe retries a delivery
    post_processed(&svc, &db, "evt_ok", &success).await;
    post(&svc, &second).await;
    post(&svc, &success).await;
    wait_status(&db, "ord_retry", "paid", WAIT).await;
    all_published(&db).await;
    let msgs = tap.drain_messages(QUIET).await;
    let mine = for_order(&msgs, "ord_retry");
    assert_eq!(
        types(&mine),
        [
            "order.awaiting_payment",
            "order.payment_attempt_failed",
            "order.payment_attempt_failed",
            "order.paid"
        ]
    );
    assert_eq!(mine[1]["decline_code"], "insufficient_funds");
    assert_eq!(mine[2]["decline_code"], "do_not_honor");
    assert_ne!(mine[1]["message_id"], mine[2]["message_id"]);
    assert_eq!(mine[3]["message_id"], "ord_retry/paid");
    let attempts = count(
        &db,
        "SELECT failed_attempts::int8 FROM orders WHERE order_id = 'ord_retry'",
    )
    .await;
    assert_eq!(attempts, 2);
    let (ok, text) = cli(&env, &["orders", "show", "ord_retry"], &[]);
    assert!(ok && text.contains("status:            paid"), "{text}");
    assert!(text.contains("failed attempts:   2"), "{text}");
}

#[tokio::test]
async fn a_refund_before_its_order_is_known_is_parked_then_applied() {
    let (env, svc, tap) = pipeline(&[]).await;
    let db = connect(&env.database_url()).await;
    let refund = lifecycle(
        "evt_early_rf",
        REFUNDED,
        "pi_late",
        None,
        &ls("-", 1500, "lost"),
    );
    assert_eq!(
        post_processed(&svc, &db, "evt_early_rf", &refund).await,
        "unmatched"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM parked_events WHERE payment_intent_id = 'pi_late'"
        )
        .await,
        1
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM orders").await,
        0,
        "a refund creates no order"
    );

    // The Checkout Session naming the order and the PaymentIntent arrives.
    let completed = session(
        "evt_late_cs",
        "checkout.session.completed",
        "ord_late",
        "paid",
        Some("pi_late"),
    );
    post_processed(&svc, &db, "evt_late_cs", &completed).await;
    assert_eq!(outcome(&db, "evt_early_rf").await, "applied");
    assert_eq!(count(&db, "SELECT count(*) FROM parked_events").await, 0);
    assert_eq!(
        refund_of(&db, "ord_late").await,
        (Some(1500), Some("partial".into()))
    );
    all_published(&db).await;
    let msgs = tap.drain_messages(QUIET).await;
    let mine = for_order(&msgs, "ord_late");
    assert_eq!(types(&mine), ["order.paid", "order.refunded"]);
    assert_eq!(mine[1]["event_id"], "evt_early_rf");
    let (ok, text) = cli(&env, &["orders", "show", "ord_late"], &[]);
    assert!(
        ok && text.contains("refunded:          1500 eur (partial)"),
        "{text}"
    );
}

#[tokio::test]
async fn partial_and_full_refunds_out_of_order_and_duplicated() {
    let (env, svc, tap) = pipeline(&[]).await;
    let db = connect(&env.database_url()).await;
    for (order, pi) in [("ord_rev", "pi_rev"), ("ord_fwd", "pi_fwd")] {
        let paid = payment_intent_succeeded(&format!("evt_{pi}"), pi, Some(order));
        post_processed(&svc, &db, &format!("evt_{pi}"), &paid).await;
    }
    let refund =
        |id: &str, pi: &str, amount| lifecycle(id, REFUNDED, pi, None, &ls("-", amount, "lost"));
    // The full refund first, then the partial one that preceded it, both twice.
    let (full, partial) = (
        refund("evt_rev_full", "pi_rev", 4200),
        refund("evt_rev_part", "pi_rev", 1000),
    );
    assert_eq!(
        post_processed(&svc, &db, "evt_rev_full", &full).await,
        "applied"
    );
    assert_eq!(
        post_processed(&svc, &db, "evt_rev_part", &partial).await,
        "stale"
    );
    post(&svc, &full).await;
    post(&svc, &partial).await;
    // In order, each step is announced.
    let (full, partial) = (
        refund("evt_fwd_full", "pi_fwd", 4200),
        refund("evt_fwd_part", "pi_fwd", 1000),
    );
    assert_eq!(
        post_processed(&svc, &db, "evt_fwd_part", &partial).await,
        "applied"
    );
    post(&svc, &partial).await;
    assert_eq!(
        post_processed(&svc, &db, "evt_fwd_full", &full).await,
        "applied"
    );
    post(&svc, &full).await;

    all_published(&db).await;
    let msgs = tap.drain_messages(QUIET).await;
    for order in ["ord_rev", "ord_fwd"] {
        assert_eq!(
            refund_of(&db, order).await,
            (Some(4200), Some("full".into())),
            "{order}"
        );
    }
    let refunds = |order| -> Vec<(i64, String)> {
        for_order(&msgs, order)
            .into_iter()
            .filter(|m| m["type"] == "order.refunded")
            .map(|m| {
                (
                    m["amount_refunded"].as_i64().unwrap(),
                    m["refund_status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(
        refunds("ord_rev"),
        [(4200, "full".to_owned())],
        "nothing regresses"
    );
    assert_eq!(
        refunds("ord_fwd"),
        [(1000, "partial".to_owned()), (4200, "full".to_owned())]
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM outbox WHERE routing_key = 'order.refunded'"
        )
        .await,
        3
    );
    let metrics = get(svc.metrics_port, "/metrics").await.unwrap().text();
    assert_eq!(
        metric(
            &metrics,
            "fulfillment_events_processed_total{type=\"charge.refunded\",outcome=\"duplicate\"}"
        ),
        4.0
    );
}

#[tokio::test]
async fn a_dispute_lost_and_one_whose_created_comes_last() {
    let (env, svc, tap) = pipeline(&[]).await;
    let db = connect(&env.database_url()).await;
    let d = LifecycleSpec::default();
    for (order, pi) in [("ord_lost", "pi_lost"), ("ord_late_created", "pi_lc")] {
        let paid = payment_intent_succeeded(&format!("evt_{pi}"), pi, Some(order));
        post_processed(&svc, &db, &format!("evt_{pi}"), &paid).await;
    }
    let created = lifecycle("evt_lost_dc", DISPUTE_CREATED, "pi_lost", None, &d);
    let lost = lifecycle("evt_lost_dx", DISPUTE_CLOSED, "pi_lost", None, &d);
    assert_eq!(
        post_processed(&svc, &db, "evt_lost_dc", &created).await,
        "applied"
    );
    assert_eq!(
        post_processed(&svc, &db, "evt_lost_dx", &lost).await,
        "applied"
    );
    // Closed arrives before created: the late `created` reopens nothing.
    let created = lifecycle("evt_lc_dc", DISPUTE_CREATED, "pi_lc", None, &d);
    let lost = lifecycle("evt_lc_dx", DISPUTE_CLOSED, "pi_lc", None, &d);
    assert_eq!(
        post_processed(&svc, &db, "evt_lc_dx", &lost).await,
        "applied"
    );
    assert_eq!(
        post_processed(&svc, &db, "evt_lc_dc", &created).await,
        "stale"
    );
    post(&svc, &created).await;

    all_published(&db).await;
    let msgs = tap.drain_messages(QUIET).await;
    assert_eq!(
        types(&for_order(&msgs, "ord_lost")),
        ["order.paid", "order.disputed", "order.dispute_closed"]
    );
    assert_eq!(
        types(&for_order(&msgs, "ord_late_created")),
        ["order.paid", "order.dispute_closed"]
    );
    for order in ["ord_lost", "ord_late_created"] {
        let closed = for_order(&msgs, order)[types(&for_order(&msgs, order)).len() - 1];
        assert_eq!(closed["dispute_status"], "lost");
        assert_eq!(closed["status"], "paid", "{order}: paid is never left");
        let status: String =
            sqlx::query_scalar("SELECT status FROM order_disputes WHERE order_id = $1")
                .bind(order)
                .fetch_one(&db)
                .await
                .unwrap();
        assert_eq!(status, "lost");
    }
    let (ok, text) = cli(&env, &["orders", "show", "ord_lost"], &[]);
    assert!(ok && text.contains("du_lost  lost (closed"), "{text}");
    assert!(svc.logs().contains("dispute closed: lost"));
}

/// The real Stripe payloads, byte for byte: once a session links their
/// PaymentIntent, each applies to its order with what Stripe said.
#[tokio::test]
async fn real_payment_intent_payloads_apply_byte_for_byte() {
    let Some(dir) = shared_fixtures() else {
        println!("skipped: no shared fixtures");
        return;
    };
    let read = |name: &str| std::fs::read(dir.join("events").join(name)).unwrap();
    let (env, svc, tap) = pipeline(&[]).await;
    let db = connect(&env.database_url()).await;
    let cases = [
        (
            "stripe-ruby-mock__payment_intent.payment_failed.json",
            "pi_000000000000000000000000",
            "evt_000000000000000000000000",
        ),
        (
            "lago-api__basil_payment_intent_payment_failed.json",
            "pi_3SVvxMQ8iJWBZFaM1Lao8ehu",
            "evt_3SVvxMQ8iJWBZFaM1z5wZ6Za",
        ),
        (
            "supabase-stripe-sync-engine__payment_intent_payment_failed.json",
            "pi_1IqxJOJDPojXS6LN9uOebAea",
            "evt_1IlYUUJDPojXS6LN7NEWYSm2",
        ),
        (
            "stripe-ruby-mock__payment_intent.processing.json",
            "pi_00000000000000",
            "evt_00000000000000",
        ),
    ];
    for (n, (name, pi, event_id)) in cases.iter().enumerate() {
        let order = format!("ord_fx_{n}");
        let link = session(
            &format!("evt_fx_cs_{n}"),
            "checkout.session.completed",
            &order,
            "unpaid",
            Some(pi),
        );
        post_processed(&svc, &db, &format!("evt_fx_cs_{n}"), &link).await;
        let outcome = post_processed(&svc, &db, event_id, &read(name)).await;
        // processing only targets awaiting_payment, which the session already set.
        let expected = if name.contains("processing") {
            "stale"
        } else {
            "applied"
        };
        assert_eq!(outcome, expected, "{name}");
    }
    // ruby-mock's canceled shares its event id with its payment_failed: a duplicate.
    post(
        &svc,
        &read("stripe-ruby-mock__payment_intent.canceled.json"),
    )
    .await;
    wait_count(
        &db,
        "SELECT count(*) FROM processed_events WHERE outcome <> 'processing'",
        8,
        WAIT,
    )
    .await;
    all_published(&db).await;
    let msgs = tap.drain_messages(QUIET).await;
    let attempt = |n: usize| {
        let order = format!("ord_fx_{n}");
        let mine = for_order(&msgs, &order);
        assert_eq!(
            types(&mine),
            ["order.awaiting_payment", "order.payment_attempt_failed"],
            "{order}"
        );
        (
            mine[1]["failure_code"].clone(),
            mine[1]["decline_code"].clone(),
        )
    };
    assert_eq!(
        attempt(0),
        ("card_declined".into(), "generic_decline".into())
    );
    assert_eq!(
        attempt(1),
        (
            "authentication_required".into(),
            "authentication_not_handled".into()
        )
    );
    assert_eq!(attempt(2), (Value::Null, Value::Null));
    assert_eq!(
        types(&for_order(&msgs, "ord_fx_3")),
        ["order.awaiting_payment"]
    );
    wait_status(&db, "ord_fx_0", "awaiting_payment", WAIT).await;
    let metrics = get(svc.metrics_port, "/metrics").await.unwrap().text();
    assert_eq!(
        metric(
            &metrics,
            "fulfillment_events_processed_total{type=\"payment_intent.canceled\",outcome=\"duplicate\"}"
        ),
        1.0
    );

    // And canceled on its own, on a fresh pipeline: the order is canceled.
    drop((svc, tap));
    let env2 = TestEnv::new();
    let (svc, _tap) = restart(&env2).await;
    let db = connect(&env2.database_url()).await;
    let link = session(
        "evt_fx_cs",
        "checkout.session.completed",
        "ord_fx_c",
        "unpaid",
        Some("pi_000000000000000000000000"),
    );
    post_processed(&svc, &db, "evt_fx_cs", &link).await;
    let canceled = read("stripe-ruby-mock__payment_intent.canceled.json");
    assert_eq!(
        post_processed(&svc, &db, "evt_000000000000000000000000", &canceled).await,
        "applied"
    );
    wait_status(&db, "ord_fx_c", "canceled", WAIT).await;
    drop(env);
}

/// A migrated `env` with `serve` running and a tap, like `pipeline`, for a second env.
async fn restart(env: &TestEnv) -> (Service, Tap) {
    fulfillment_tests::migrate(env, &[]);
    let tap = Tap::bind(&env.amqp_url(), "fulfillment", "#").await;
    let svc = Service::start(env, "serve", &[]).await;
    svc.wait_ready(200, WAIT).await;
    (svc, tap)
}
