//! Issue 9, item 2, end to end: the AMQP `message_id` downstream consumers
//! deduplicate on equals the body's, fits the short-string limit and never
//! collides, however long the order ids.

use std::collections::BTreeSet;
use std::time::Duration;

use fulfillment_core::MAX_MESSAGE_ID_BYTES;
use fulfillment_tests::amqp::Tap;
use fulfillment_tests::http::post_signed;
use fulfillment_tests::{Service, TEST_SECRET, TestEnv, checkout_completed, migrate};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn long_order_ids_get_distinct_message_ids_equal_to_the_body() {
    let env = TestEnv::new();
    migrate(&env, &[]);
    let tap = Tap::bind(&env.amqp_url(), "fulfillment", "#").await;
    let svc = Service::start(&env, "serve", &[]).await;
    svc.wait_ready(200, WAIT).await;

    // Reachable from Stripe: metadata values may be 500 characters.
    let shared = "x".repeat(300);
    let (a, b, c) = (
        format!("{shared}-a"),
        format!("{shared}-b"),
        format!("{shared}-c"),
    );
    let events = [
        checkout_completed("evt_long_a", &a, "paid"),
        checkout_completed("evt_long_b", &b, "paid"),
        // c: awaiting payment first, then paid: two statuses of one long id.
        checkout_completed("evt_long_c1", &c, "unpaid"),
    ];
    for body in &events {
        let reply = post_signed(svc.http_port, body, TEST_SECRET).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let mut ids = BTreeSet::new();
    for _ in 0..3 {
        ids.insert(next_message_id(&tap).await);
    }
    let paid_c = fulfillment_tests::events::session(
        "evt_long_c2",
        "checkout.session.async_payment_succeeded",
        &c,
        "paid",
        None,
    );
    let reply = post_signed(svc.http_port, &paid_c, TEST_SECRET).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    ids.insert(next_message_id(&tap).await);
    assert_eq!(ids.len(), 4, "four transitions, four message ids: {ids:?}");
}

/// The next downstream message's AMQP `message_id`, checked against its body.
async fn next_message_id(tap: &Tap) -> String {
    let message = tap.next(WAIT).await.expect("a downstream message");
    let body: Value = serde_json::from_slice(&message.delivery.data).expect("JSON");
    let id = message
        .delivery
        .properties
        .message_id()
        .as_ref()
        .expect("message_id property")
        .to_string();
    assert_eq!(
        body["message_id"],
        id.as_str(),
        "property equals the body's"
    );
    assert!(id.len() <= MAX_MESSAGE_ID_BYTES);
    assert!(
        body["order_id"].as_str().unwrap().len() > 300,
        "the body keeps the whole order id"
    );
    id
}
