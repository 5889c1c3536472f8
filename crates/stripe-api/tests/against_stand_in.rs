//! The client against the test kit's Stripe stand-in (a real HTTP server):
//! retries as Stripe's libraries do, the idempotency key kept across them,
//! a refused key failing fast, timeouts, the rate budget, and lists
//! followed across every page.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fulfillment_testkit::stripe::{Fault, Outage, StandIn, line_item, most_in_any_window};
use stripe_api::{
    ApiBase, ApiKey, Backoff, Client, Config, Error, EventFilter, Params, Value, endpoint,
};

type Seen = Arc<Mutex<Vec<(&'static str, Option<u16>)>>>;

fn client_for(stripe: &StandIn, key: &str, tune: impl FnOnce(&mut Config)) -> (Client, Seen) {
    let mut config = Config::new(
        ApiKey::new(key).unwrap(),
        ApiBase::parse(&stripe.base_url()).unwrap(),
        "2026-07-29.dahlia",
        1000.0,
    );
    config.backoff = Backoff {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(20),
    };
    tune(&mut config);
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let observer: stripe_api::Observer =
        Arc::new(move |e, status| record.lock().unwrap().push((e.label(), status)));
    (Client::new(config, Some(observer)).unwrap(), seen)
}

fn client(stripe: &StandIn) -> (Client, Seen) {
    client_for(stripe, stripe.key(), |_| {})
}

fn event(id: &str, created: i64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": id, "object": "event", "created": created, "type": "checkout.session.completed",
        "data": {"object": {"id": "cs_1", "object": "checkout.session"}}, "livemode": false
    }))
    .unwrap()
}

fn report_params(value: i64) -> Params {
    Params::new()
        .with(
            "amount_requested",
            Value::map([("value", Value::from(value)), ("currency", "eur".into())]),
        )
        .with("initiated_at", 1_795_460_000i64)
        .with("payment_method_details", Value::map([("type", "custom")]))
        .with("outcome", "guaranteed")
        .with(
            "guaranteed",
            Value::map([("guaranteed_at", 1_795_460_100i64)]),
        )
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_retried_and_counted() {
    let stripe = StandIn::start();
    stripe.add_event(&event("evt_1", 10), false);
    stripe.fail_next("GET /v1/events/:id", 1, Fault::status(500));
    stripe.fail_next("GET /v1/events/:id", 1, Fault::status(429));
    let (client, seen) = client(&stripe);
    let got = client.retrieve_event("evt_1", None).await.unwrap();
    assert_eq!(got.id, "evt_1");
    assert_eq!(stripe.requests_to("GET /v1/events/:id").len(), 3);
    let statuses: Vec<Option<u16>> = seen.lock().unwrap().iter().map(|(_, s)| *s).collect();
    assert_eq!(statuses, [Some(500), Some(429), Some(200)]);
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|(e, _)| *e == "GET /v1/events/:id")
    );
}

#[tokio::test]
async fn stripe_should_retry_false_stops_at_once_and_true_forces_a_retry() {
    let stripe = StandIn::start();
    stripe.add_event(&event("evt_1", 10), false);
    let (client, _) = client(&stripe);
    stripe.fail_next(
        "GET /v1/events/:id",
        1,
        Fault::status_should_retry(503, false),
    );
    let err = client.retrieve_event("evt_1", None).await.unwrap_err();
    assert_eq!(
        err.api().map(|e| (e.status, e.should_retry)),
        Some((503, Some(false)))
    );
    assert!(!err.is_transient());
    assert_eq!(stripe.requests_to("GET /v1/events/:id").len(), 1);

    stripe.fail_next(
        "GET /v1/events/:id",
        1,
        Fault::status_should_retry(400, true),
    );
    client.retrieve_event("evt_1", None).await.unwrap();
    assert_eq!(stripe.requests_to("GET /v1/events/:id").len(), 3);
}

#[tokio::test]
async fn retries_stop_after_the_budget_with_the_last_answer() {
    let stripe = StandIn::start();
    stripe.fail_next("GET /v1/events/:id", 10, Fault::status(502));
    let (client, _) = client_for(&stripe, stripe.key(), |c| c.max_retries = 2);
    let err = client.retrieve_event("evt_1", None).await.unwrap_err();
    assert_eq!(err.api().map(|e| e.status), Some(502));
    assert!(err.is_transient());
    assert_eq!(stripe.requests_to("GET /v1/events/:id").len(), 3);
}

#[tokio::test]
async fn a_post_keeps_its_idempotency_key_across_retries_and_is_replayed() {
    let stripe = StandIn::start();
    let (client, _) = client(&stripe);
    stripe.fail_next(
        "POST /v1/payment_records/report_payment",
        1,
        Fault::status(500),
    );
    let record = client
        .report_payment(report_params(4200), "cpay_1/report", None)
        .await
        .unwrap();
    let again = client
        .report_payment(report_params(4200), "cpay_1/report", None)
        .await
        .unwrap();
    assert_eq!(again.id, record.id);
    let posts = stripe.requests_to("POST /v1/payment_records/report_payment");
    assert_eq!(posts.len(), 3);
    assert!(
        posts
            .iter()
            .all(|p| p.idempotency_key.as_deref() == Some("cpay_1/report"))
    );
    assert!(posts[2].replayed);
    assert_eq!(stripe.payment_records().len(), 1);
    assert_eq!(
        client
            .retrieve_payment_record(&record.id, None)
            .await
            .unwrap(),
        record
    );

    let other = client
        .report_payment(report_params(1), "cpay_1/report", None)
        .await
        .unwrap_err();
    assert_eq!(
        other.api().and_then(|e| e.kind.as_deref()),
        Some("idempotency_error")
    );
}

#[tokio::test]
async fn a_concurrent_holder_of_the_key_is_waited_out() {
    let stripe = StandIn::start();
    let (client, _) = client_for(&stripe, stripe.key(), |c| {
        c.backoff = Backoff {
            initial: Duration::from_millis(150),
            max: Duration::from_millis(300),
        };
    });
    stripe.fail_next(
        "POST /v1/payment_records/report_payment",
        1,
        Fault::Slow(Duration::from_millis(300)),
    );
    let first = client.report_payment(report_params(10), "cpay_9/report", None);
    let second = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        client
            .report_payment(report_params(10), "cpay_9/report", None)
            .await
    };
    let (first, second) = tokio::join!(first, second);
    // The second got a 409, retried, and was answered with the saved record.
    assert_eq!(first.unwrap().id, second.unwrap().id);
    let statuses: Vec<u16> = stripe.requests().iter().map(|r| r.status).collect();
    assert!(statuses.contains(&409), "{statuses:?}");
    assert_eq!(stripe.payment_records().len(), 1);
}

#[tokio::test]
async fn a_refused_key_fails_once_then_fast_without_a_request() {
    let stripe = StandIn::start();
    let key = "sk_test_wrong_key_never_printed_9876";
    let (client, seen) = client_for(&stripe, key, |_| {});
    let err = client.retrieve_event("evt_1", None).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unauthorized {
                setting: "STRIPE_API_KEY"
            }
        ),
        "{err:?}"
    );
    let text = format!("{err} {err:?}");
    assert!(
        !text.contains("wrong_key") && !text.contains("9876"),
        "{text}"
    );
    assert!(text.contains("STRIPE_API_KEY"));
    for _ in 0..3 {
        assert!(matches!(
            client.list_line_items("cs_1", None).await,
            Err(Error::Unauthorized { .. })
        ));
    }
    assert_eq!(stripe.requests().len(), 1, "later calls never reach Stripe");
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [("GET /v1/events/:id", Some(401))]
    );
    assert!(!format!("{:?}", client.config()).contains("wrong_key"));
}

#[tokio::test]
async fn connection_failures_and_timeouts_are_retried() {
    let stripe = StandIn::start();
    stripe.add_event(&event("evt_1", 10), false);
    let (client, seen) = client_for(&stripe, stripe.key(), |c| {
        c.call_timeout = Duration::from_millis(200);
        c.max_retries = 1;
    });
    stripe.fail_next(
        "GET /v1/events/:id",
        1,
        Fault::Slow(Duration::from_millis(500)),
    );
    client.retrieve_event("evt_1", None).await.unwrap();
    assert_eq!(
        seen.lock().unwrap()[0],
        ("GET /v1/events/:id", None),
        "a timeout is status error"
    );

    stripe.set_outage(Outage::Refused);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = client.retrieve_event("evt_1", None).await.unwrap_err();
    assert!(matches!(err, Error::Connection(_)), "{err:?}");
    assert!(err.is_transient());
    stripe.set_outage(Outage::None);
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.retrieve_event("evt_1", None).await.unwrap();
}

#[tokio::test]
async fn the_rate_budget_holds_across_concurrent_callers() {
    let stripe = StandIn::start();
    stripe.add_event(&event("evt_1", 10), false);
    let (client, _) = client_for(&stripe, stripe.key(), |c| c.rate = 20.0);
    let started = Instant::now();
    let calls = (0..30).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.retrieve_event("evt_1", None).await })
    });
    for call in calls.collect::<Vec<_>>() {
        call.await.unwrap().unwrap();
    }
    let requests = stripe.requests();
    assert_eq!(requests.len(), 30);
    // The client spaces sends 50 ms apart (the bucket's own property test
    // proves the spacing). Arrivals carry the machine's scheduling jitter,
    // so a one-second window at the server can catch a send or two of the
    // next second on a loaded machine: assert the typical gap instead.
    let mut arrivals: Vec<Instant> = requests.iter().map(|r| r.started).collect();
    arrivals.sort();
    let mut gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    assert!(
        gaps[gaps.len() / 2] >= Duration::from_millis(40),
        "{gaps:?}"
    );
    assert!(most_in_any_window(&requests, Duration::from_secs(1)) < 30);
    assert!(
        started.elapsed() >= Duration::from_millis(1450),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn lists_are_followed_across_every_page() {
    let stripe = StandIn::start();
    let items: Vec<serde_json::Value> = (0..250)
        .map(|n| line_item("cs_big", n, 2, 150, "eur"))
        .collect();
    stripe.set_line_items("cs_big", Some("acct_7"), items);
    let (client, _) = client(&stripe);
    let got = client
        .list_line_items("cs_big", Some("acct_7"))
        .await
        .unwrap();
    assert_eq!(got.len(), 250);
    assert_eq!(got[0].id, "li_cs_big_0");
    assert_eq!(got[249].id, "li_cs_big_249");
    assert_eq!(got[3].amount_total, 300);
    assert_eq!(
        got[3].price.as_ref().unwrap().product.as_deref(),
        Some("prod_3")
    );
    let pages = stripe.requests_to(endpoint::LIST_LINE_ITEMS.label());
    assert_eq!(pages.len(), 3);
    assert!(
        pages
            .iter()
            .all(|p| p.stripe_account.as_deref() == Some("acct_7"))
    );
    assert!(
        pages
            .iter()
            .all(|p| p.stripe_version.as_deref() == Some("2026-07-29.dahlia"))
    );
    assert_eq!(pages[1].param("starting_after"), Some("li_cs_big_99"));

    for i in 0..230 {
        stripe.add_event(&event(&format!("evt_{i:03}"), 1000 + i), i % 2 == 0);
    }
    let filter = EventFilter {
        types: vec!["checkout.session.completed".into()],
        created_gte: Some(1000),
        delivery_success: Some(false),
        ..EventFilter::default()
    };
    let events = client.events(&filter, None).collect().await.unwrap();
    assert_eq!(events.len(), 115);
    assert_eq!(events[0].id, "evt_229");
    assert!(events.windows(2).all(|w| w[0].created > w[1].created));
    assert!(events[0].raw.get().contains("\"evt_229\""));
}

#[tokio::test]
async fn payment_records_are_listed_by_creation_time_and_found_by_metadata() {
    let stripe = StandIn::start();
    let (client, _) = client(&stripe);
    let since = fulfillment_testkit::unix_now() - 1;
    for n in 0..120 {
        let params = report_params(100 + n).with(
            "metadata",
            Value::map([("fulfillment_report_id", format!("cpay_{n}"))]),
        );
        client
            .report_payment(params, &format!("key_{n}"), None)
            .await
            .unwrap();
    }
    let all = client.payment_records(since, None).collect().await.unwrap();
    assert_eq!(all.len(), 120);
    assert_eq!(
        all[0].metadata["fulfillment_report_id"], "cpay_119",
        "newest first"
    );
    let found = all
        .iter()
        .find(|r| r.metadata.get("fulfillment_report_id").map(String::as_str) == Some("cpay_7"))
        .expect("found by its metadata");
    assert_eq!(
        client
            .retrieve_payment_record(&found.id, None)
            .await
            .unwrap()
            .id,
        found.id
    );
    let later = client
        .payment_records(fulfillment_testkit::unix_now() + 10, None)
        .collect()
        .await
        .unwrap();
    assert!(later.is_empty(), "created_after filters");
    let pages = stripe.requests_to(endpoint::LIST_PAYMENT_RECORDS.label());
    assert_eq!(
        pages[0].param("created_after"),
        Some(since.to_string().as_str())
    );
    assert!(pages.len() >= 2, "two pages of 100");
}

#[tokio::test]
async fn a_forgotten_key_runs_again_as_a_new_request() {
    let stripe = StandIn::start();
    let (client, _) = client(&stripe);
    let first = client
        .report_payment(report_params(5), "cpay_old/report", None)
        .await
        .unwrap();
    stripe.forget_idempotency_keys();
    let second = client
        .report_payment(report_params(5), "cpay_old/report", None)
        .await
        .unwrap();
    assert_ne!(
        first.id, second.id,
        "Stripe's 24 hours passed: a second record"
    );
    assert_eq!(stripe.payment_records().len(), 2);
}
