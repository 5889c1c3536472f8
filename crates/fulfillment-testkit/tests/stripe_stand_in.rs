//! The Stripe stand-in's own promises, over raw HTTP: auth, pagination
//! across pages, the Events API filters, idempotency (replay, mismatch, in
//! use), scripted faults and outages, and objects shaped like Stripe's own
//! fixtures (`../shared/fixtures/stripe/`).

use std::collections::BTreeSet;
use std::time::Duration;

use fulfillment_testkit::http::{Reply, request};
use fulfillment_testkit::stripe::{Fault, Outage, StandIn, line_item};
use serde_json::{Value, json};

fn event(id: &str, event_type: &str, created: i64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id, "object": "event", "api_version": "2026-07-29.dahlia", "created": created,
        "data": {"object": {"id": format!("obj_{id}"), "object": "checkout.session"}},
        "livemode": false, "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null}, "type": event_type
    }))
    .unwrap()
}

async fn get(stripe: &StandIn, path_and_query: &str) -> Reply {
    let auth = format!("Bearer {}", stripe.key());
    request(
        stripe.port,
        "GET",
        path_and_query,
        &[("authorization", &auth)],
        Vec::new(),
    )
    .await
    .expect("the stand-in answers")
}

async fn post(stripe: &StandIn, path: &str, key: Option<&str>, form: &str) -> Reply {
    let auth = format!("Bearer {}", stripe.key());
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    if let Some(key) = key {
        headers.push(("idempotency-key", key));
    }
    request(
        stripe.port,
        "POST",
        path,
        &headers,
        form.as_bytes().to_vec(),
    )
    .await
    .expect("the stand-in answers")
}

fn json(reply: &Reply) -> Value {
    serde_json::from_slice(&reply.body).unwrap_or_else(|_| panic!("JSON: {}", reply.text()))
}

fn ids(reply: &Reply) -> Vec<String> {
    json(reply)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_wrong_or_missing_key_is_a_401_with_stripes_error() {
    let stripe = StandIn::start();
    let none = request(stripe.port, "GET", "/v1/events", &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(none.status, 401);
    assert_eq!(json(&none)["error"]["type"], "invalid_request_error");
    let wrong = request(
        stripe.port,
        "GET",
        "/v1/events",
        &[("authorization", "Bearer sk_test_not_the_right_key_1234")],
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(wrong.status, 401);
    let message = json(&wrong)["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.ends_with("1234") && !message.contains("not_the_right"),
        "{message}"
    );
    assert!(stripe.requests().iter().all(|r| !r.authorized));
}

#[tokio::test]
async fn events_page_newest_first_in_both_directions() {
    let stripe = StandIn::start();
    for i in 0..25 {
        stripe.add_event(
            &event(
                &format!("evt_{i:02}"),
                "checkout.session.completed",
                1000 + i,
            ),
            false,
        );
    }
    let first = get(&stripe, "/v1/events?limit=10").await;
    assert_eq!(json(&first)["has_more"], true);
    assert_eq!(json(&first)["url"], "/v1/events");
    assert_eq!(ids(&first)[0], "evt_24");
    let mut all = ids(&first);
    let mut after = all.last().unwrap().clone();
    loop {
        let page = get(
            &stripe,
            &format!("/v1/events?limit=10&starting_after={after}"),
        )
        .await;
        all.extend(ids(&page));
        if json(&page)["has_more"] == false {
            break;
        }
        after = all.last().unwrap().clone();
    }
    let expected: Vec<String> = (0..25).rev().map(|i| format!("evt_{i:02}")).collect();
    assert_eq!(all, expected);
    // ending_before: the ones just newer than the cursor, still newest first.
    let before = get(&stripe, "/v1/events?limit=3&ending_before=evt_05").await;
    assert_eq!(ids(&before), ["evt_08", "evt_07", "evt_06"]);
    assert_eq!(json(&before)["has_more"], true);
    let unknown = get(&stripe, "/v1/events?starting_after=evt_nope").await;
    assert_eq!(unknown.status, 400);
}

#[tokio::test]
async fn the_events_api_filters() {
    let stripe = StandIn::start();
    stripe.add_event(&event("evt_a", "checkout.session.completed", 100), false);
    stripe.add_event(&event("evt_b", "payment_intent.succeeded", 200), true);
    stripe.add_event(&event("evt_c", "customer.created", 300), false);
    stripe.add_event(&event("evt_d", "checkout.session.expired", 400), false);
    let q = |query: &'static str| {
        let stripe = &stripe;
        async move { ids(&get(stripe, &format!("/v1/events?{query}")).await) }
    };
    assert_eq!(
        q("delivery_success=false").await,
        ["evt_d", "evt_c", "evt_a"]
    );
    assert_eq!(q("delivery_success=true").await, ["evt_b"]);
    assert_eq!(q("type=checkout.session.*").await, ["evt_d", "evt_a"]);
    assert_eq!(
        q("types[]=payment_intent.succeeded&types[]=customer.created").await,
        ["evt_c", "evt_b"]
    );
    assert_eq!(
        q("created[gte]=200&created[lt]=400").await,
        ["evt_c", "evt_b"]
    );
    assert_eq!(
        q("created[gt]=200&created[lte]=400").await,
        ["evt_d", "evt_c"]
    );
    let both = get(&stripe, "/v1/events?type=a&types[]=b").await;
    assert_eq!(both.status, 400);
    let many: String = (0..21).map(|i| format!("types[]=t{i}&")).collect();
    assert_eq!(
        get(&stripe, &format!("/v1/events?{many}")).await.status,
        400
    );
    assert_eq!(get(&stripe, "/v1/events?limit=101").await.status, 400);
    assert_eq!(get(&stripe, "/v1/events?typo=1").await.status, 400);
    assert_eq!(
        json(&get(&stripe, "/v1/events/evt_b").await)["type"],
        "payment_intent.succeeded"
    );
    assert_eq!(get(&stripe, "/v1/events/evt_zz").await.status, 404);
}

#[tokio::test]
async fn connect_accounts_see_only_their_own_events() {
    let stripe = StandIn::start();
    let mut theirs: Value =
        serde_json::from_slice(&event("evt_c1", "checkout.session.completed", 5)).unwrap();
    theirs["account"] = json!("acct_1");
    stripe.add_event(&serde_json::to_vec(&theirs).unwrap(), false);
    stripe.add_event(&event("evt_p1", "checkout.session.completed", 6), false);
    let auth = format!("Bearer {}", stripe.key());
    let as_account = request(
        stripe.port,
        "GET",
        "/v1/events",
        &[("authorization", &auth), ("stripe-account", "acct_1")],
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(ids(&as_account), ["evt_c1"]);
    assert_eq!(ids(&get(&stripe, "/v1/events").await), ["evt_p1"]);
}

#[tokio::test]
async fn line_items_come_in_pages() {
    let stripe = StandIn::start();
    let items: Vec<Value> = (0..7)
        .map(|n| line_item("cs_1", n, 1, 500, "eur"))
        .collect();
    stripe.set_line_items("cs_1", None, items);
    let page = get(&stripe, "/v1/checkout/sessions/cs_1/line_items?limit=5").await;
    assert_eq!(json(&page)["has_more"], true);
    assert_eq!(json(&page)["url"], "/v1/checkout/sessions/cs_1/line_items");
    assert_eq!(ids(&page).len(), 5);
    let rest = get(
        &stripe,
        "/v1/checkout/sessions/cs_1/line_items?limit=5&starting_after=li_cs_1_4",
    )
    .await;
    assert_eq!(ids(&rest), ["li_cs_1_5", "li_cs_1_6"]);
    assert_eq!(json(&rest)["has_more"], false);
    assert_eq!(
        get(&stripe, "/v1/checkout/sessions/cs_other/line_items")
            .await
            .status,
        404
    );
}

const REPORT: &str = "amount_requested[value]=4200&amount_requested[currency]=eur\
    &initiated_at=1795460000&payment_method_details[type]=custom\
    &payment_method_details[custom][type]=cpmt_abc&processor_details[type]=custom\
    &processor_details[custom][payment_reference]=psp_987&outcome=guaranteed\
    &guaranteed[guaranteed_at]=1795460100";
const REPORT_PATH: &str = "/v1/payment_records/report_payment";

#[tokio::test]
async fn idempotency_keys_replay_refuse_other_params_and_guard_concurrency() {
    let stripe = StandIn::start();
    let first = post(&stripe, REPORT_PATH, Some("cpay_1/report"), REPORT).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let again = post(&stripe, REPORT_PATH, Some("cpay_1/report"), REPORT).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(json(&again)["id"], json(&first)["id"]);
    assert_eq!(
        stripe.payment_records().len(),
        1,
        "a replay creates nothing"
    );
    let other = post(
        &stripe,
        REPORT_PATH,
        Some("cpay_1/report"),
        &REPORT.replace("4200", "4300"),
    )
    .await;
    assert_eq!(other.status, 400);
    assert_eq!(json(&other)["error"]["type"], "idempotency_error");
    let retrieved = get(
        &stripe,
        &format!(
            "/v1/payment_records/{}",
            json(&first)["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(json(&retrieved), json(&first));

    // A request holding its key makes a concurrent one a 409, and nothing is saved for it.
    stripe.fail_next(
        REPORT_PATH_LABEL,
        1,
        Fault::Slow(Duration::from_millis(400)),
    );
    let slow = post(&stripe, REPORT_PATH, Some("cpay_2/report"), REPORT);
    let racing = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        post(&stripe, REPORT_PATH, Some("cpay_2/report"), REPORT).await
    };
    let (slow, racing) = tokio::join!(slow, racing);
    assert_eq!((slow.status, racing.status), (200, 409));
    assert_eq!(json(&racing)["error"]["code"], "idempotency_key_in_use");
    assert_eq!(stripe.payment_records().len(), 2);
}

const REPORT_PATH_LABEL: &str = "POST /v1/payment_records/report_payment";

#[tokio::test]
async fn a_refused_or_failed_request_saves_nothing_under_its_key() {
    let stripe = StandIn::start();
    let missing = post(
        &stripe,
        REPORT_PATH,
        Some("k1"),
        "amount_requested[value]=1",
    )
    .await;
    assert_eq!(missing.status, 400);
    assert_eq!(json(&missing)["error"]["code"], "parameter_missing");
    stripe.fail_next(REPORT_PATH_LABEL, 1, Fault::status(500));
    assert_eq!(
        post(&stripe, REPORT_PATH, Some("k1"), REPORT).await.status,
        500
    );
    let ok = post(&stripe, REPORT_PATH, Some("k1"), REPORT).await;
    assert_eq!(ok.status, 200, "the key was free again: {}", ok.text());
    assert!(ok.headers.get("idempotent-replayed").is_none());
}

#[tokio::test]
async fn scripted_faults_and_outages() {
    let stripe = StandIn::start();
    stripe.fail_next("GET /v1/events", 1, Fault::status(429));
    stripe.fail_next("GET /v1/events", 1, Fault::status_should_retry(503, false));
    let limited = get(&stripe, "/v1/events").await;
    assert_eq!(
        (limited.status, json(&limited)["error"]["code"].as_str()),
        (429, Some("rate_limit"))
    );
    let no_retry = get(&stripe, "/v1/events").await;
    assert_eq!(no_retry.status, 503);
    assert_eq!(no_retry.headers["stripe-should-retry"], "false");
    assert_eq!(get(&stripe, "/v1/events").await.status, 200);

    stripe.set_outage(Outage::Unavailable);
    assert_eq!(get(&stripe, "/v1/events").await.status, 503);
    stripe.set_outage(Outage::Refused);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let auth = format!("Bearer {}", stripe.key());
    assert!(
        request(
            stripe.port,
            "GET",
            "/v1/events",
            &[("authorization", &auth)],
            Vec::new()
        )
        .await
        .is_err()
    );
    stripe.set_outage(Outage::None);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(&stripe, "/v1/events").await.status, 200);
}

#[tokio::test]
async fn the_log_records_what_tests_assert_on() {
    let stripe = StandIn::start();
    let auth = format!("Bearer {}", stripe.key());
    request(
        stripe.port,
        "GET",
        "/v1/events?types[]=a&types[]=b&delivery_success=false",
        &[
            ("authorization", &auth),
            ("stripe-version", "2026-07-29.dahlia"),
            ("stripe-account", "acct_9"),
        ],
        Vec::new(),
    )
    .await
    .unwrap();
    let logged = &stripe.requests_to("GET /v1/events")[0];
    assert_eq!(logged.params_named("types[]"), ["a", "b"]);
    assert_eq!(logged.param("delivery_success"), Some("false"));
    assert_eq!(logged.stripe_version.as_deref(), Some("2026-07-29.dahlia"));
    assert_eq!(logged.stripe_account.as_deref(), Some("acct_9"));
    assert!(logged.authorized && logged.finished >= logged.started);
}

/// Top-level member names of a JSON object.
fn members(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

fn fixture(path: &str) -> Option<Value> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/stripe");
    let text = std::fs::read_to_string(dir.join(path)).ok()?;
    Some(serde_json::from_str(&text).unwrap())
}

#[tokio::test]
async fn objects_are_shaped_like_stripes_fixtures() {
    let Some(record_fixture) = fixture("objects/stripe-openapi__fixtures3_payment_record.json")
    else {
        eprintln!("../shared/fixtures missing: shape check skipped");
        return;
    };
    let stripe = StandIn::start();
    let record = json(&post(&stripe, REPORT_PATH, None, REPORT).await);
    assert_eq!(members(&record), members(&record_fixture));
    for amount in ["amount", "amount_requested", "amount_guaranteed"] {
        assert_eq!(members(&record[amount]), members(&record_fixture[amount]));
    }
    // A stored event is served exactly as given: Stripe's own event fixture goes through whole.
    let event = fixture("events/stripe-ruby-mock__checkout.session.completed.json").unwrap();
    stripe.add_event(&serde_json::to_vec(&event).unwrap(), false);
    let listed = json(&get(&stripe, "/v1/events").await);
    assert_eq!(listed["data"][0], event);
    assert_eq!(
        members(&listed),
        BTreeSet::from(["object", "data", "has_more", "url"].map(String::from))
    );
}
