//! Off-Stripe payments end to end (issue 12): `POST /payments/custom` signed
//! with `Fulfillment-Signature`, through the broker and the workers, into the
//! order, `order.paid` and the payment records; refusals and double payments.

use std::time::Duration;

use fulfillment_tests::amqp::Tap;
use fulfillment_tests::db::{connect, count, wait_count, wait_status};
use fulfillment_tests::events::{checkout_completed, custom_payment};
use fulfillment_tests::http::{get, post_custom_payment, post_signed, request};
use fulfillment_tests::proxy::Proxy;
use fulfillment_tests::{
    CUSTOM_TEST_SECRET, Service, TEST_SECRET, TestEnv, cli, pipeline, post_accepted,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const QUIET: Duration = Duration::from_millis(1500);

fn with_secret() -> Vec<(&'static str, String)> {
    vec![("CUSTOM_PAYMENT_SECRET", CUSTOM_TEST_SECRET.to_owned())]
}

async fn metrics(svc: &Service) -> String {
    get(svc.metrics_port, "/metrics").await.unwrap().text()
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_guaranteed_report_pays_the_order_once() {
    let (env, svc, tap) = pipeline(&with_secret()).await;
    let db = connect(&env.database_url()).await;
    let body = custom_payment("cpay_e2e_1", "ord_custom_1", true);

    let reply = post_custom_payment(svc.http_port, &body, Some(CUSTOM_TEST_SECRET)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), r#"{"received":true}"#);
    wait_status(&db, "ord_custom_1", "paid", WAIT).await;

    // The caller retrying (same report, signed again) changes nothing.
    let again = post_custom_payment(svc.http_port, &body, Some(CUSTOM_TEST_SECRET)).await;
    assert_eq!(again.status, 200);

    let msgs = tap.drain_messages(QUIET).await;
    assert_eq!(msgs.len(), 1, "{msgs:#?}");
    let paid = &msgs[0];
    assert_eq!(paid["type"], "order.paid");
    assert_eq!(paid["message_id"], "ord_custom_1/paid");
    assert_eq!(paid["event_id"], "custom_payment:cpay_e2e_1");
    assert_eq!(
        paid["payment_method"],
        json!({"kind": "custom", "type": "cpmt_sample", "payment_reference": "psp_cpay_e2e_1"})
    );
    assert_eq!(paid["amount_total"], 4200);
    assert_eq!(paid["currency"], "eur");
    assert_eq!(paid["customer_email"], "buyer@example.com");

    let outcome: String = sqlx::query_scalar(
        "SELECT outcome FROM processed_events WHERE event_id = 'custom_payment:cpay_e2e_1'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(outcome, "applied");
    let stored: (String, String, i64, String, String, i64, i64) = sqlx::query_as(
        "SELECT order_id, outcome, amount, currency, payment_reference, \
         extract(epoch FROM initiated_at)::int8, extract(epoch FROM completed_at)::int8 \
         FROM custom_payments WHERE report_id = 'cpay_e2e_1'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    let sent: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(stored.0, "ord_custom_1");
    assert_eq!(stored.1, "guaranteed");
    assert_eq!(stored.2, 4200);
    assert_eq!(stored.3, "eur");
    assert_eq!(stored.4, "psp_cpay_e2e_1");
    assert_eq!(json!(stored.5), sent["initiated_at"]);
    assert_eq!(json!(stored.6), sent["completed_at"]);
    wait_count(
        &db,
        "SELECT count(*) FROM processed_events WHERE event_id LIKE 'custom_payment:%'",
        1,
        WAIT,
    )
    .await;
    let text = metrics(&svc).await;
    assert_eq!(
        metric(
            &text,
            "fulfillment_custom_payments_total{outcome=\"accepted\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            "fulfillment_events_processed_total{type=\"custom_payment.reported\",outcome=\"duplicate\"}"
        ),
        1.0
    );
    assert_eq!(count(&db, "SELECT count(*) FROM order_anomalies").await, 0);
    // Its Payment Record job waits, with its key, for STRIPE_API_KEY.
    let job: (String, String) = sqlx::query_as(
        "SELECT state, idempotency_key FROM payment_record_jobs WHERE report_id = 'cpay_e2e_1'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(
        job,
        (
            "pending".to_owned(),
            "fulfillment-payment-record/cpay_e2e_1".to_owned()
        )
    );
}

#[tokio::test]
async fn a_failed_report_fails_the_order_and_a_later_one_pays_it() {
    let (env, svc, tap) = pipeline(&with_secret()).await;
    let db = connect(&env.database_url()).await;
    let failed = custom_payment("cpay_f1", "ord_f", false);
    let reply = post_custom_payment(svc.http_port, &failed, Some(CUSTOM_TEST_SECRET)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    wait_status(&db, "ord_f", "payment_failed", WAIT).await;
    let paid = custom_payment("cpay_f2", "ord_f", true);
    let reply = post_custom_payment(svc.http_port, &paid, Some(CUSTOM_TEST_SECRET)).await;
    assert_eq!(reply.status, 200);
    wait_status(&db, "ord_f", "paid", WAIT).await;
    let types: Vec<Value> = tap
        .drain_messages(QUIET)
        .await
        .iter()
        .map(|m| m["type"].clone())
        .collect();
    assert_eq!(types, [json!("order.payment_failed"), json!("order.paid")]);
    assert_eq!(count(&db, "SELECT count(*) FROM custom_payments").await, 2);
    assert_eq!(count(&db, "SELECT count(*) FROM order_anomalies").await, 0);
}

#[tokio::test]
async fn paid_by_stripe_and_by_a_custom_method_is_an_anomaly() {
    let (env, svc, tap) = pipeline(&with_secret()).await;
    let db = connect(&env.database_url()).await;
    post_accepted(&svc, &checkout_completed("evt_dp_1", "ord_dp", "paid")).await;
    wait_status(&db, "ord_dp", "paid", WAIT).await;
    let custom = custom_payment("cpay_dp", "ord_dp", true);
    let reply = post_custom_payment(svc.http_port, &custom, Some(CUSTOM_TEST_SECRET)).await;
    assert_eq!(reply.status, 200);
    wait_count(&db, "SELECT count(*) FROM order_anomalies", 1, WAIT).await;

    let (kind, event_id, payment, earlier): (String, String, String, Vec<String>) = sqlx::query_as(
        "SELECT kind, event_id, payment, earlier_payments FROM order_anomalies \
             WHERE order_id = 'ord_dp'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(kind, "paid_twice");
    assert_eq!(event_id, "custom_payment:cpay_dp");
    assert_eq!(payment, "custom:cpay_dp");
    assert_eq!(earlier, ["stripe"]);
    assert_eq!(
        sqlx::query_scalar::<_, String>("SELECT status FROM orders WHERE order_id = 'ord_dp'")
            .fetch_one(&db)
            .await
            .unwrap(),
        "paid"
    );
    let msgs = tap.drain_messages(QUIET).await;
    let paid: Vec<&Value> = msgs.iter().filter(|m| m["type"] == "order.paid").collect();
    assert_eq!(paid.len(), 1, "no second order.paid: {msgs:#?}");
    assert_eq!(paid[0]["payment_method"], json!({"kind": "stripe"}));

    let text = metrics(&svc).await;
    assert_eq!(
        metric(
            &text,
            "fulfillment_order_anomalies_total{kind=\"paid_twice\"}"
        ),
        1.0
    );
    assert!(svc.logs().contains("order anomaly"), "{}", svc.logs());

    // A person sees it, with what paid the order.
    let (ok, out) = cli(&env, &["orders", "show", "ord_dp"], &[]);
    assert!(ok, "{out}");
    assert!(out.contains("payment method:    stripe"), "{out}");
    assert!(out.contains("ANOMALIES (1)"), "{out}");
    assert!(out.contains("custom:cpay_dp after stripe"), "{out}");
    assert!(out.contains("cpay_dp"), "{out}");
    let (ok, out) = cli(&env, &["orders", "show", "ord_dp", "--json"], &[]);
    assert!(ok);
    let story: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(story["anomalies"][0]["kind"], "paid_twice");
    assert_eq!(story["custom_payments"][0]["report_id"], "cpay_dp");
    assert_eq!(story["payment_method"], json!({"kind": "stripe"}));
}

#[tokio::test]
async fn two_custom_payments_with_different_ids_are_an_anomaly() {
    let (env, svc, tap) = pipeline(&with_secret()).await;
    let db = connect(&env.database_url()).await;
    for id in ["cpay_two_a", "cpay_two_b"] {
        let body = custom_payment(id, "ord_two", true);
        let reply = post_custom_payment(svc.http_port, &body, Some(CUSTOM_TEST_SECRET)).await;
        assert_eq!(reply.status, 200);
    }
    wait_count(&db, "SELECT count(*) FROM order_anomalies", 1, WAIT).await;
    let paid = tap
        .drain_messages(QUIET)
        .await
        .into_iter()
        .filter(|m| m["type"] == "order.paid")
        .count();
    assert_eq!(paid, 1);
}

#[tokio::test]
async fn refusals_are_answered_counted_and_logged_and_publish_nothing() {
    let (env, svc, _tap) = pipeline(&with_secret()).await;
    let events = Tap::bind(&env.amqp_url(), "stripe.events", "#").await;
    let port = svc.http_port;
    let good = custom_payment("cpay_bad", "ord_bad", true);

    // No header, a wrong secret, the webhook's secret: bad signature.
    for secret in [None, Some("cps_wrong"), Some(TEST_SECRET)] {
        let reply = post_custom_payment(port, &good, secret).await;
        assert_eq!(reply.status, 400, "{secret:?}: {}", reply.text());
        let answer: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(answer["error"], "bad_signature", "{answer}");
    }
    // Signed, but a member breaks the rules: 400 naming it.
    let mut bad: Value = serde_json::from_slice(&good).unwrap();
    bad["currency"] = json!("EUR");
    let body = serde_json::to_vec(&bad).unwrap();
    let reply = post_custom_payment(port, &body, Some(CUSTOM_TEST_SECRET)).await;
    assert_eq!(reply.status, 400);
    let answer: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(answer["error"], "bad_request");
    assert_eq!(answer["field"], "currency");
    assert!(
        answer["reason"].as_str().unwrap().contains("currency"),
        "{answer}"
    );
    let unknown = br#"{"id":"x","mystery":1}"#;
    let reply = post_custom_payment(port, unknown, Some(CUSTOM_TEST_SECRET)).await;
    assert_eq!(reply.status, 400);
    let answer: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(answer["field"], "mystery", "{answer}");
    // Too large: 413 without reading it.
    let huge = vec![b' '; 1_048_577];
    let reply = post_custom_payment(port, &huge, Some(CUSTOM_TEST_SECRET)).await;
    assert_eq!(reply.status, 413);
    // Other methods.
    let reply = get(port, "/payments/custom").await.unwrap();
    assert_eq!(reply.status, 405);
    assert_eq!(reply.headers["allow"], "POST");

    // A Stripe-signed event cannot claim the reports' namespace or type.
    for forged in [
        br#"{"id":"custom_payment:cpay_x","type":"checkout.session.completed"}"#.as_slice(),
        br#"{"id":"evt_x","type":"custom_payment.reported"}"#,
    ] {
        let reply = post_signed(port, forged, TEST_SECRET).await;
        assert_eq!(reply.status, 400, "{}", reply.text());
    }

    assert!(events.next(QUIET).await.is_none(), "nothing published");
    let text = metrics(&svc).await;
    let series = |o: &str| format!("fulfillment_custom_payments_total{{outcome=\"{o}\"}}");
    assert_eq!(metric(&text, &series("bad_signature")), 3.0);
    assert_eq!(metric(&text, &series("bad_request")), 2.0);
    assert_eq!(metric(&text, &series("too_large")), 1.0);
    assert_eq!(metric(&text, &series("accepted")), 0.0);
    let logs = svc.logs();
    assert!(logs.contains("custom payment report rejected"), "{logs}");
    assert!(!logs.contains(CUSTOM_TEST_SECRET), "secret in the logs");
}

#[tokio::test]
async fn without_a_secret_the_path_does_not_exist() {
    let (_env, svc, _tap) = pipeline(&[]).await;
    let body = custom_payment("cpay_off", "ord_off", true);
    let reply = post_custom_payment(svc.http_port, &body, Some(CUSTOM_TEST_SECRET)).await;
    assert_eq!(reply.status, 404);
    let reply = request(svc.http_port, "GET", "/payments/custom", &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(reply.status, 404);
    assert!(svc.logs().contains("custom-payment reports off"));
}

#[tokio::test]
async fn broker_down_gives_503_and_the_retry_is_taken_once() {
    let env = TestEnv::new();
    let proxy = Proxy::down("127.0.0.1:5672");
    let mut extra = with_secret();
    extra.push(("AMQP_URL", env.amqp_url_via(proxy.port)));
    let svc = Service::start(&env, "receiver", &extra).await;
    let body = custom_payment("cpay_503", "ord_503", true);

    let reply = post_custom_payment(svc.http_port, &body, Some(CUSTOM_TEST_SECRET)).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(reply.headers.contains_key("retry-after"));

    proxy.up().await;
    svc.wait_ready(200, WAIT).await;
    let tap = Tap::bind(&env.amqp_url(), "stripe.events", "#").await;
    let reply = post_custom_payment(svc.http_port, &body, Some(CUSTOM_TEST_SECRET)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let got = tap.next(Duration::from_secs(5)).await.expect("published");
    assert_eq!(got.delivery.routing_key.as_str(), "custom_payment.reported");
    let props = &got.delivery.properties;
    assert_eq!(
        props.message_id().as_ref().map(|s| s.as_str()),
        Some("custom_payment:cpay_503")
    );
    assert_eq!(*props.delivery_mode(), Some(2));
    // The envelope carries the report byte for byte.
    let envelope: Value = serde_json::from_slice(&got.delivery.data).unwrap();
    assert_eq!(envelope["id"], "custom_payment:cpay_503");
    let text = String::from_utf8(got.delivery.data.clone()).unwrap();
    assert!(text.contains(std::str::from_utf8(&body).unwrap()));
    assert!(tap.next(QUIET).await.is_none());
}

#[tokio::test]
async fn send_custom_payment_is_a_smoke_test() {
    let (env, svc, tap) = pipeline(&with_secret()).await;
    let db = connect(&env.database_url()).await;
    let url = format!("http://127.0.0.1:{}/payments/custom", svc.http_port);
    let (ok, out) = cli(
        &env,
        &[
            "send-custom-payment",
            "--order",
            "ord_cli",
            "--id",
            "cpay_cli",
            "--type",
            "cpmt_demo",
            "--reference",
            "psp_demo_1",
            "--url",
            &url,
        ],
        &[("CUSTOM_PAYMENT_SECRET", CUSTOM_TEST_SECRET)],
    );
    assert!(ok, "{out}");
    assert!(out.contains("-> 200"), "{out}");
    wait_status(&db, "ord_cli", "paid", WAIT).await;
    let msgs = tap.drain_messages(QUIET).await;
    assert_eq!(
        msgs[0]["payment_method"],
        json!({"kind": "custom", "type": "cpmt_demo", "payment_reference": "psp_demo_1"})
    );
    let (ok, out) = cli(&env, &["orders", "show", "ord_cli"], &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("payment method:    custom cpmt_demo (reference psp_demo_1)"),
        "{out}"
    );
    assert!(out.contains("custom payments (1)"), "{out}");

    // A bad option is refused before anything is sent.
    let (ok, _) = cli(
        &env,
        &[
            "send-custom-payment",
            "--order",
            "ord_cli",
            "--currency",
            "EUR",
            "--url",
            &url,
        ],
        &[("CUSTOM_PAYMENT_SECRET", CUSTOM_TEST_SECRET)],
    );
    assert!(!ok);
    // Without the secret it says which setting is missing.
    let mut cmd = fulfillment_tests::service::command(
        &env,
        &["send-custom-payment", "--order", "ord_x", "--url", &url],
    );
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CUSTOM_PAYMENT_SECRET"));
}
