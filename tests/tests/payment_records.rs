//! Custom payments recorded to Stripe as Payment Records (issue 12, part 3),
//! end to end against the real services and the Stripe stand-in: one record
//! per report whatever happens (the caller retrying, duplicates, a reporter
//! killed between Stripe's answer and its commit, a retry after Stripe
//! forgot the key), refusals kept for a person, failures retried.

use std::time::Duration;

use fulfillment_tests::amqp::Tap;
use fulfillment_tests::db::{connect, count, wait_count};
use fulfillment_tests::events::custom_payment;
use fulfillment_tests::http::{get, post_custom_payment};
use fulfillment_tests::stripe::{Fault, Logged, StandIn};
use fulfillment_tests::{CUSTOM_TEST_SECRET, Service, TestEnv, cli, migrate};
use serde_json::{Value, json};
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(30);
const QUIET: Duration = Duration::from_millis(1500);
const REPORT_PAYMENT: &str = "POST /v1/payment_records/report_payment";

fn settings(stripe: &StandIn) -> Vec<(&'static str, String)> {
    let mut all = stripe.settings();
    all.push(("CUSTOM_PAYMENT_SECRET", CUSTOM_TEST_SECRET.to_owned()));
    all
}

async fn serve(env: &TestEnv, stripe: &StandIn) -> Service {
    let svc = Service::start(env, "serve", &settings(stripe)).await;
    svc.wait_ready(200, WAIT).await;
    svc
}

async fn report(svc: &Service, body: &[u8]) {
    let reply = post_custom_payment(svc.http_port, body, Some(CUSTOM_TEST_SECRET)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// Waits until the report's job is in `state`; returns its record id.
async fn wait_job(db: &PgPool, report_id: &str, state: &str) -> Option<String> {
    let sql = format!(
        "SELECT count(*) FROM payment_record_jobs WHERE report_id = '{report_id}' AND state = '{state}'"
    );
    wait_count(db, &sql, 1, WAIT).await;
    sqlx::query_scalar("SELECT record_id FROM payment_record_jobs WHERE report_id = $1")
        .bind(report_id)
        .fetch_one(db)
        .await
        .unwrap()
}

fn of_type<'a>(msgs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    msgs.iter().filter(|m| m["type"] == kind).collect()
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0.0)
}

async fn metrics(svc: &Service) -> String {
    get(svc.metrics_port, "/metrics").await.unwrap().text()
}

fn reports(stripe: &StandIn) -> Vec<Logged> {
    stripe.requests_to(REPORT_PAYMENT)
}

#[tokio::test]
async fn a_guaranteed_report_gives_one_paid_order_and_one_record_with_the_right_fields() {
    let env = TestEnv::new();
    migrate(&env, &[]);
    let stripe = StandIn::start();
    let tap = Tap::bind(&env.amqp_url(), "fulfillment", "#").await;
    let svc = serve(&env, &stripe).await;
    let db = connect(&env.database_url()).await;

    let mut body: Value =
        serde_json::from_slice(&custom_payment("cpay_r1", "ord_r1", true)).unwrap();
    body["stripe_customer"] = json!("cus_r1");
    let body = serde_json::to_vec(&body).unwrap();
    report(&svc, &body).await;
    // The caller retries, and the same report arrives again.
    report(&svc, &body).await;
    report(&svc, &body).await;
    let record_id = wait_job(&db, "cpay_r1", "recorded").await.expect("an id");

    let records = stripe.payment_records();
    assert_eq!(records.len(), 1, "{records:#?}");
    let record = &records[0];
    assert_eq!(record["id"], record_id.as_str());
    assert!(record_id.starts_with("pr_"));
    assert_eq!(
        record["amount_requested"],
        json!({"currency": "eur", "value": 4200})
    );
    assert_eq!(record["amount_guaranteed"]["value"], 4200);
    assert_eq!(record["payment_method_details"]["type"], "custom");
    assert_eq!(
        record["payment_method_details"]["custom"]["type"],
        "cpmt_sample"
    );
    assert_eq!(record["processor_details"]["type"], "custom");
    assert_eq!(
        record["processor_details"]["custom"]["payment_reference"],
        "psp_cpay_r1"
    );
    assert_eq!(record["customer_presence"], "on_session");
    assert_eq!(record["customer_details"]["customer"], "cus_r1");
    assert_eq!(record["customer_details"]["email"], "buyer@example.com");
    assert_eq!(record["metadata"]["fulfillment_report_id"], "cpay_r1");
    assert_eq!(record["metadata"]["order_id"], "ord_r1");
    let sent: Value = serde_json::from_slice(&body).unwrap();
    let calls = reports(&stripe);
    assert_eq!(
        calls.len(),
        1,
        "one call: the duplicates never reached Stripe"
    );
    let call = &calls[0];
    assert_eq!(
        call.idempotency_key.as_deref(),
        Some("fulfillment-payment-record/cpay_r1")
    );
    assert_eq!(
        call.param("initiated_at"),
        Some(sent["initiated_at"].to_string().as_str())
    );
    assert_eq!(call.param("outcome"), Some("guaranteed"));
    assert_eq!(
        call.param("guaranteed[guaranteed_at]"),
        Some(sent["completed_at"].to_string().as_str())
    );

    let msgs = tap.drain_messages(QUIET).await;
    assert_eq!(of_type(&msgs, "order.paid").len(), 1, "{msgs:#?}");
    let recorded = of_type(&msgs, "order.payment_recorded");
    assert_eq!(recorded.len(), 1, "{msgs:#?}");
    assert_eq!(recorded[0]["payment_record_id"], record_id.as_str());
    assert_eq!(recorded[0]["order_id"], "ord_r1");
    assert_eq!(recorded[0]["report_id"], "cpay_r1");
    assert_eq!(
        recorded[0]["message_id"],
        "custom_payment:cpay_r1/payment_recorded"
    );
    assert_eq!(recorded[0]["outcome"], "guaranteed");
    assert_eq!(recorded[0]["account"], Value::Null);

    let text = metrics(&svc).await;
    assert_eq!(
        metric(
            &text,
            "fulfillment_payment_records_total{outcome=\"recorded\"}"
        ),
        1.0
    );
    assert!(
        metric(
            &text,
            "fulfillment_stripe_api_requests_total{endpoint=\"POST /v1/payment_records/report_payment\",status=\"200\"}"
        ) >= 1.0
    );
    let (ok, out) = cli(&env, &["orders", "show", "ord_r1"], &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("Payment Record: {record_id} (recorded")),
        "{out}"
    );
    assert!(out.contains("order.payment_recorded"), "{out}");

    // A failed payment is recorded too, with its outcome.
    report(&svc, &custom_payment("cpay_r2", "ord_r2", false)).await;
    wait_job(&db, "cpay_r2", "recorded").await;
    let failed = reports(&stripe).pop().unwrap();
    assert_eq!(failed.param("outcome"), Some("failed"));
    assert!(failed.param("failed[failed_at]").is_some());
    assert!(failed.param("guaranteed[guaranteed_at]").is_none());
    assert_eq!(stripe.payment_records()[1]["amount_failed"]["value"], 4200);

    // Paid twice: the anomaly is raised, and each payment has its record.
    report(&svc, &custom_payment("cpay_r3", "ord_r1", true)).await;
    wait_job(&db, "cpay_r3", "recorded").await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM order_anomalies WHERE order_id = 'ord_r1'"
        )
        .await,
        1
    );
    assert_eq!(stripe.payment_records().len(), 3);
    let paid = of_type(&tap.drain_messages(QUIET).await, "order.paid").len();
    assert_eq!(paid, 0, "no second order.paid");
}

/// A `serve` that calls Stripe for `cpay_k` and is SIGKILLed after Stripe
/// answered but before its own commit: the job row's update to `recorded`
/// waits on an advisory lock the test holds (a trigger), the test kills the
/// process there, then lets go. Returns the env, the database, the record
/// Stripe made, and the tap.
async fn killed_between_answer_and_commit(stripe: &StandIn) -> (TestEnv, PgPool, String, Tap) {
    let env = TestEnv::new();
    migrate(&env, &[]);
    let db = connect(&env.database_url()).await;
    sqlx::raw_sql(
        "CREATE FUNCTION hold_recorded() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NEW; END $$;
         CREATE TRIGGER hold_recorded BEFORE UPDATE ON payment_record_jobs FOR EACH ROW
         WHEN (NEW.state = 'recorded') EXECUTE FUNCTION hold_recorded();",
    )
    .execute(&db)
    .await
    .unwrap();
    let mut holder = db.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(4242)")
        .execute(&mut *holder)
        .await
        .unwrap();
    let tap = Tap::bind(&env.amqp_url(), "fulfillment", "#").await;
    let mut svc = serve(&env, stripe).await;
    report(&svc, &custom_payment("cpay_k", "ord_k", true)).await;

    // Stripe answered: the record exists there; our commit is held.
    let deadline = std::time::Instant::now() + WAIT;
    while stripe.payment_records().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no call to Stripe");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                   AND wait_event = 'advisory' AND query LIKE 'UPDATE payment_record_jobs%'";
    wait_count(&db, waiting, 1, WAIT).await;
    svc.kill();
    sqlx::query("SELECT pg_advisory_unlock(4242)")
        .execute(&mut *holder)
        .await
        .unwrap();
    drop(holder);
    // The killed reporter's transaction never commits.
    wait_count(&db, waiting, 0, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM payment_record_jobs WHERE state = 'pending'"
        )
        .await,
        1,
        "the job is still to do"
    );
    let record_id = stripe.payment_records()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (env, db, record_id, tap)
}

#[tokio::test]
async fn a_reporter_killed_between_stripes_answer_and_its_commit_still_makes_one_record() {
    let stripe = StandIn::start();
    let (env, db, made, tap) = killed_between_answer_and_commit(&stripe).await;

    let svc = serve(&env, &stripe).await;
    let stored = wait_job(&db, "cpay_k", "recorded").await;
    assert_eq!(
        stored.as_deref(),
        Some(made.as_str()),
        "the record Stripe made first"
    );
    assert_eq!(stripe.payment_records().len(), 1);
    let calls = reports(&stripe);
    assert_eq!(calls.len(), 2, "sent again after the crash");
    assert_eq!(calls[0].idempotency_key, calls[1].idempotency_key);
    assert!(
        calls[1].replayed,
        "and Stripe answered with the saved result"
    );
    let recorded = of_type(&tap.drain_messages(QUIET).await, "order.payment_recorded").len();
    assert_eq!(recorded, 1);
    drop(svc);
}

#[tokio::test]
async fn a_retry_after_stripe_forgot_the_key_finds_the_record_instead_of_making_another() {
    let stripe = StandIn::start();
    let (env, db, made, _tap) = killed_between_answer_and_commit(&stripe).await;
    // A day passes: Stripe forgets the key, the job is old.
    stripe.forget_idempotency_keys();
    sqlx::query("UPDATE payment_record_jobs SET created_at = now() - interval '25 hours'")
        .execute(&db)
        .await
        .unwrap();

    let _svc = serve(&env, &stripe).await;
    let stored = wait_job(&db, "cpay_k", "recorded").await;
    assert_eq!(stored.as_deref(), Some(made.as_str()));
    assert_eq!(stripe.payment_records().len(), 1, "no second record");
    assert_eq!(reports(&stripe).len(), 1, "not sent again");
    let lookups = stripe.requests_to("GET /v1/payment_records");
    assert!(!lookups.is_empty(), "looked it up first");
    let since: i64 = lookups[0].param("created_after").unwrap().parse().unwrap();
    assert!(since < fulfillment_tests::unix_now() - 25 * 3600, "{since}");
}

#[tokio::test]
async fn stripe_refusing_is_kept_for_a_person_and_retry_record_sends_it_after_a_fix() {
    let env = TestEnv::new();
    migrate(&env, &[]);
    let stripe = StandIn::start();
    let tap = Tap::bind(&env.amqp_url(), "fulfillment", "#").await;
    let svc = serve(&env, &stripe).await;
    let db = connect(&env.database_url()).await;
    stripe.fail_next(REPORT_PAYMENT, 1, Fault::status(400));
    report(&svc, &custom_payment("cpay_no", "ord_no", true)).await;
    wait_job(&db, "cpay_no", "refused").await;
    assert!(stripe.payment_records().is_empty());
    assert_eq!(reports(&stripe).len(), 1, "a refusal is not retried");

    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = metrics(&svc).await;
        let refused = metric(&text, "fulfillment_payment_records_refused ");
        if refused == 1.0 {
            assert_eq!(
                metric(
                    &text,
                    "fulfillment_payment_records_total{outcome=\"refused\"}"
                ),
                1.0
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "refused gauge: {refused}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(svc.logs().contains("Stripe refused the Payment Record"));
    let (ok, out) = cli(&env, &["orders", "show", "ord_no"], &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("REFUSED by Stripe after 1 attempt(s): Stripe answered 400"),
        "{out}"
    );
    let recorded = of_type(&tap.drain_messages(QUIET).await, "order.payment_recorded").len();
    assert_eq!(recorded, 0);

    // The cause is fixed (here: the stand-in accepts again); a person sends it again.
    let (ok, out) = cli(&env, &["orders", "retry-record", "ord_no"], &[]);
    assert!(ok, "{out}");
    assert!(out.contains("cpay_no: queued again"), "{out}");
    let record_id = wait_job(&db, "cpay_no", "recorded").await.unwrap();
    assert_eq!(stripe.payment_records().len(), 1);
    let calls = reports(&stripe);
    assert_eq!(
        calls[1].idempotency_key.as_deref(),
        Some("fulfillment-payment-record/cpay_no/retry-1"),
        "a new key: Stripe keeps a refusal under the old one"
    );
    let msgs = tap.drain_messages(QUIET).await;
    assert_eq!(
        of_type(&msgs, "order.payment_recorded")[0]["payment_record_id"],
        record_id.as_str()
    );
    // Nothing left to send again.
    let (ok, _) = cli(&env, &["orders", "retry-record", "ord_no"], &[]);
    assert!(!ok);
}

#[tokio::test]
async fn stripe_failing_is_retried_with_backoff_then_recorded() {
    let env = TestEnv::new();
    migrate(&env, &[]);
    let stripe = StandIn::start();
    let svc = serve(&env, &stripe).await;
    let db = connect(&env.database_url()).await;
    // More 500s than the client retries within one call (1 + 3).
    stripe.fail_next(REPORT_PAYMENT, 6, Fault::status(500));
    report(&svc, &custom_payment("cpay_500", "ord_500", true)).await;

    let sql = "SELECT count(*) FROM payment_record_jobs WHERE report_id = 'cpay_500' \
               AND state = 'pending' AND attempts = 1 AND last_error LIKE '%500%'";
    wait_count(&db, sql, 1, WAIT).await;
    let record_id = wait_job(&db, "cpay_500", "recorded").await.unwrap();
    assert_eq!(stripe.payment_records().len(), 1);
    assert_eq!(stripe.payment_records()[0]["id"], record_id.as_str());
    let calls = reports(&stripe);
    assert_eq!(calls.len(), 7, "4 in the first call, 3 in the second");
    assert!(
        calls
            .iter()
            .all(|c| c.idempotency_key.as_deref() == Some("fulfillment-payment-record/cpay_500"))
    );
    // The job waited before its second call (record::retry_delay: 10 s).
    let gap = calls[4].started - calls[3].started;
    assert!(gap >= Duration::from_secs(9), "{gap:?}");
    let text = metrics(&svc).await;
    assert_eq!(
        metric(
            &text,
            "fulfillment_payment_records_total{outcome=\"retried\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "fulfillment_payment_records_total{outcome=\"recorded\"}"
        ),
        1.0
    );
    assert!(
        svc.logs()
            .contains("Payment Record not made yet; will try again")
    );
}
