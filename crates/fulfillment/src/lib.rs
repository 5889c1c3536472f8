//! The IO shell of the Stripe fulfillment worker: HTTP, AMQP, SQL and the
//! roles the `fulfillment` binary runs. The decisions live in
//! `fulfillment-core`; this crate loads, stores, publishes and serves. A
//! library so that tests can drive the store against a real database.

pub mod backoff;
pub mod broker;
pub mod budget;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod db;
pub mod dead_letters;
pub mod dlq;
pub mod failure;
pub mod health;
pub mod http;
pub mod ingest;
pub mod line_items;
pub mod metrics;
pub mod ops;
pub mod receiver;
pub mod reconcile;
pub mod records;
pub mod relay;
pub mod retry;
pub mod send_event;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod stripe;
pub mod telemetry;
pub mod topology;
pub mod upkeep;
pub mod wakeup;
pub mod worker;
