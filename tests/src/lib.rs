//! Harness for end-to-end tests: the real `fulfillment` binary, run as a
//! child process against the machine's PostgreSQL and RabbitMQ. Every test
//! gets its own database and vhost, so tests run in parallel and leave
//! nothing behind.

pub mod amqp;
pub mod db;
pub mod env;
pub mod events;
pub mod http;
pub mod proxy;
pub mod service;

pub use env::TestEnv;
pub use service::Service;

/// The development secret the tests sign with. Not a real secret.
pub const TEST_SECRET: &str = "whsec_test_only_not_a_real_secret";

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A `checkout.session.completed` for `order_id` with `payment_status`.
pub fn checkout_completed(event_id: &str, order_id: &str, payment_status: &str) -> Vec<u8> {
    let pi = format!("pi_{event_id}");
    events::session(
        event_id,
        "checkout.session.completed",
        order_id,
        payment_status,
        Some(&pi),
    )
}

/// Path of the shared fixtures (`../shared` beside the repository), when present.
pub fn shared_fixtures() -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/stripe");
    dir.is_dir().then_some(dir)
}

/// Runs `fulfillment migrate` for `env` (with `extra` settings) and asserts it succeeded.
pub fn migrate(env: &TestEnv, extra: &[(&str, &str)]) {
    let mut cmd = service::command(env, &["migrate"]);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run migrate");
    assert!(
        out.status.success(),
        "migrate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a `fulfillment` CLI command for `env`; returns (success, stdout).
pub fn cli(env: &TestEnv, args: &[&str], extra: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = service::command(env, args);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run fulfillment");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}
