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

/// A realistic `checkout.session.completed` event (our own fixture, shaped
/// like Stripe's 2025 API), paid, for `order_id`.
pub fn checkout_completed(event_id: &str, order_id: &str, payment_status: &str) -> Vec<u8> {
    serde_json::json!({
        "id": event_id,
        "object": "event",
        "api_version": "2025-04-30.basil",
        "created": unix_now(),
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": "checkout.session.completed",
        "data": { "object": {
            "id": format!("cs_test_{event_id}"),
            "object": "checkout.session",
            "client_reference_id": order_id,
            "metadata": {},
            "mode": "payment",
            "payment_intent": format!("pi_{event_id}"),
            "payment_status": payment_status,
            "status": "complete",
            "amount_total": 2000,
            "currency": "eur",
            "customer_details": { "email": "buyer@example.com" },
            "livemode": false
        }}
    })
    .to_string()
    .into_bytes()
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
