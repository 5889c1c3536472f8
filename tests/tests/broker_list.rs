//! `AMQP_URL` with several nodes, on the one shared broker: each "node" is a
//! TCP proxy to it that a test can cut (`make cluster` does the same on a
//! real three-node cluster). A process starts on the first node that
//! answers, and leaves a node that goes away for the next one.

use std::time::{Duration, Instant};

use fulfillment_tests::checkout_completed;
use fulfillment_tests::db::{connect, wait_status};
use fulfillment_tests::http::post_signed;
use fulfillment_tests::proxy::Proxy;
use fulfillment_tests::{Service, TEST_SECRET, TestEnv, migrate};

const WAIT: Duration = Duration::from_secs(20);

/// POSTs until the receiver answers 200 (it answers 503 while it has no
/// broker); panics after `within`.
async fn post_until_accepted(svc: &Service, body: &[u8], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let reply = post_signed(svc.http_port, body, TEST_SECRET).await;
        if reply.status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {} after {within:?}; log:\n{}",
            reply.status,
            svc.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_node_down_at_start_is_skipped() {
    let env = TestEnv::new();
    let down = Proxy::down("127.0.0.1:5672");
    let urls = format!("{},{}", env.amqp_url_via(down.port), env.amqp_url());
    migrate(&env, &[("AMQP_URL", &urls)]);
    let svc = Service::start(&env, "serve", &[("AMQP_URL", urls)]).await;
    svc.wait_ready(200, WAIT).await;
    let db = connect(&env.database_url()).await;
    post_until_accepted(&svc, &checkout_completed("evt_l1", "ord_l1", "paid"), WAIT).await;
    wait_status(&db, "ord_l1", "paid", WAIT).await;

    let log = svc.logs();
    let skipped = format!("amqp://127.0.0.1:{}/{}", down.port, env.name);
    assert!(
        log.contains("trying the next") && log.contains(&skipped),
        "the dead node is named when skipped; log:\n{log}"
    );
    assert!(
        !log.contains("guest:guest"),
        "a password in the log:\n{log}"
    );
}

#[tokio::test]
async fn a_lost_node_is_left_for_the_next() {
    let env = TestEnv::new();
    migrate(&env, &[]);
    let (first, second) = (Proxy::down("127.0.0.1:5672"), Proxy::down("127.0.0.1:5672"));
    first.up().await;
    second.up().await;
    let urls = format!(
        "{},{}",
        env.amqp_url_via(first.port),
        env.amqp_url_via(second.port)
    );
    let svc = Service::start(&env, "serve", &[("AMQP_URL", urls)]).await;
    svc.wait_ready(200, WAIT).await;
    let db = connect(&env.database_url()).await;
    post_until_accepted(&svc, &checkout_completed("evt_m1", "ord_m1", "paid"), WAIT).await;
    wait_status(&db, "ord_m1", "paid", WAIT).await;
    let first_label = format!("amqp://127.0.0.1:{}/{}", first.port, env.name);
    let second_label = format!("amqp://127.0.0.1:{}/{}", second.port, env.name);
    let connected_to = |log: &str, label: &str| {
        log.lines()
            .filter(|l| l.contains("broker connected") && l.contains(label))
            .count()
    };
    let links = connected_to(&svc.logs(), &first_label);
    assert!(links >= 4, "receiver, worker, relay, dead-letter mover");
    assert_eq!(
        connected_to(&svc.logs(), &second_label),
        0,
        "every link started on the first node"
    );

    // The first node dies for good: every role must move to the second.
    first.down_now();
    post_until_accepted(&svc, &checkout_completed("evt_m2", "ord_m2", "paid"), WAIT).await;
    wait_status(&db, "ord_m2", "paid", WAIT).await;
    // Every link moves (the relay's and the mover's too, which nothing here waits for).
    let deadline = Instant::now() + WAIT;
    while connected_to(&svc.logs(), &second_label) < links && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = svc.logs();
    assert_eq!(
        connected_to(&log, &second_label),
        links,
        "every link reconnected to the second node; log:\n{log}"
    );
    assert!(
        !log.contains("guest:guest"),
        "a password in the log:\n{log}"
    );
}
