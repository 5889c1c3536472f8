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
    Service, TEST_SECRET, TestEnv, amqp, checkout_completed, cli, db, env, events, http, migrate,
    proxy, service, unix_now,
};

/// Path of the shared fixtures (`../shared` beside the repository), when present.
pub fn shared_fixtures() -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/stripe");
    dir.is_dir().then_some(dir)
}
