//! The test environment of the `fulfillment` service, written once.
//!
//! The end-to-end tests (`tests/`, crate `fulfillment-tests`) and the
//! benchmarks (`crates/fulfillment-bench`) both run the real `fulfillment`
//! binary against the machine's real PostgreSQL and RabbitMQ. They used to
//! set that up each in their own way; this crate is the one implementation
//! both use, so a fix to the set-up (cleaning up on every path, waiting for
//! the right probe, noticing a child that died at start) reaches both, and
//! a benchmark measures the service exactly as the tests exercise it.
//!
//! - [`env`]: a [`TestEnv`], one RabbitMQ vhost and one PostgreSQL database
//!   of its own, both removed when it is dropped (also on panic or error),
//!   so runs are parallel-safe and leave nothing behind.
//! - [`service`]: the binary as a child process — finding it, free ports,
//!   `migrate` and other commands, waiting for `/healthz` or `/readyz`,
//!   logs, pid and memory, SIGTERM (then SIGKILL) when dropped.
//! - [`http`]: a minimal HTTP/1.1 client and signed webhook posting.
//! - [`amqp`]: taps on exchanges and queue depths.
//! - [`db`]: reading and waiting on the service's database.
//! - [`events`]: realistic Stripe events from `fulfillment_core::sample`.
//! - [`proxy`]: a TCP proxy that can cut one service off the broker.
//! - [`cluster`]: a throwaway three-node RabbitMQ cluster beside the host's broker.
//! - [`stripe`]: a stand-in for Stripe's API (events, line items, payment
//!   records, idempotency, scripted failures and outages, a request log).

pub mod amqp;
pub mod cluster;
pub mod db;
pub mod env;
pub mod events;
pub mod http;
pub mod proxy;
pub mod service;
pub mod stripe;

pub use env::TestEnv;
pub use events::checkout_completed;
pub use service::{Service, cli, migrate};

/// The endpoint secret the tests and benchmarks sign with. Not a real secret.
pub const TEST_SECRET: &str = "whsec_test_only_not_a_real_secret";

/// The `CUSTOM_PAYMENT_SECRET` tests sign custom-payment reports with.
pub const CUSTOM_TEST_SECRET: &str = "cps_test_only_not_a_real_secret";

/// Seconds since the Unix epoch, as Stripe's `created` and `t=` count them.
pub fn unix_now() -> i64 {
    unix_now_f64() as i64
}

/// Seconds since the Unix epoch, with the fraction (for timing).
pub fn unix_now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}
