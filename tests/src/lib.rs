//! Harness for end-to-end tests: the real `fulfillment` binary, run as a
//! child process against the machine's PostgreSQL and RabbitMQ. Every test
//! gets its own database and vhost, so tests run in parallel and leave
//! nothing behind.
//!
//! The harness itself lives in `fulfillment-testkit`, shared with the
//! benchmarks so the two cannot drift; this crate re-exports it under the
//! names the tests have always used (`fulfillment_tests::TestEnv`, `db::*`,
//! `amqp::Tap`, …) and adds what only the tests need.

pub use fulfillment_testkit::{
    CUSTOM_TEST_SECRET, Service, TEST_SECRET, TestEnv, amqp, checkout_completed, cli, cluster, db,
    env, events, http, migrate, proxy, service, stripe, unix_now,
};

pub mod stripe_like;
pub mod verdict;

/// Path of the shared fixtures (`../shared` beside the repository), when present.
pub fn shared_fixtures() -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/stripe");
    dir.is_dir().then_some(dir)
}

use std::time::Duration;

use amqp::Tap;
use http::post_signed;

/// How long the pipeline helpers wait for the service to become ready.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// A migrated env with `serve` running (with `extra` settings) and a tap on
/// the `fulfillment` exchange. `RETRY_DELAYS` in `extra` also goes to
/// `migrate`, which declares the retry tiers.
pub async fn pipeline(extra: &[(&str, String)]) -> (TestEnv, Service, Tap) {
    let env = TestEnv::new();
    let retry: Vec<(&str, &str)> = extra
        .iter()
        .filter(|(k, _)| *k == "RETRY_DELAYS")
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    migrate(&env, &retry);
    let tap = Tap::bind(&env.amqp_url(), "fulfillment", "#").await;
    let svc = Service::start(&env, "serve", extra).await;
    svc.wait_ready(200, READY_WITHIN).await;
    (env, svc, tap)
}

/// POSTs `body` signed with the test secret and asserts the receiver took it (200).
pub async fn post_accepted(svc: &Service, body: &[u8]) {
    let reply = post_signed(svc.http_port, body, TEST_SECRET).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}
