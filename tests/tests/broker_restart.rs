//! Stops the machine's real RabbitMQ, so it cannot share the broker with
//! other tests: ignored by default, run alone and last by `make test`
//! (`cargo test -p fulfillment-tests --test broker_restart -- --ignored --test-threads=1`).

use std::process::Command;
use std::time::Duration;

use fulfillment_tests::amqp::Tap;
use fulfillment_tests::http::{get, post_signed};
use fulfillment_tests::{Service, TEST_SECRET, TestEnv};

/// Starts the RabbitMQ app again even if the test fails half-way.
struct RestartOnDrop;

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        rabbitmqctl("start_app");
    }
}

fn rabbitmqctl(action: &str) {
    let ok = Command::new("rabbitmqctl")
        .args(["-q", action])
        .status()
        .expect("rabbitmqctl")
        .success();
    assert!(ok, "rabbitmqctl {action}");
}

#[tokio::test]
#[ignore = "stops the shared broker; run alone (make test does)"]
async fn real_broker_stop_and_start() {
    let env = TestEnv::new();
    let svc = Service::start(&env, "receiver", &[]).await;
    svc.wait_ready(200, Duration::from_secs(20)).await;
    let tap = Tap::bind(&env.amqp_url(), "stripe.events", "#").await;
    let before = br#"{"id":"evt_before","type":"customer.created"}"#;
    assert_eq!(
        post_signed(svc.http_port, before, TEST_SECRET).await.status,
        200
    );
    assert!(tap.next(Duration::from_secs(5)).await.is_some());
    drop(tap);

    let guard = RestartOnDrop;
    rabbitmqctl("stop_app");
    svc.wait_ready(503, Duration::from_secs(15)).await;
    let during = br#"{"id":"evt_during","type":"customer.created"}"#;
    let reply = post_signed(svc.http_port, during, TEST_SECRET).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(reply.headers.contains_key("retry-after"));
    assert_eq!(get(svc.http_port, "/healthz").await.unwrap().status, 200);

    drop(guard); // start_app
    svc.wait_ready(200, Duration::from_secs(60)).await;
    let tap = Tap::bind(&env.amqp_url(), "stripe.events", "#").await;
    assert_eq!(
        post_signed(svc.http_port, during, TEST_SECRET).await.status,
        200
    );
    tap.expect_body(during).await;
}
