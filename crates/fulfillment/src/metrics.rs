//! Metric names (contract section 7) and the Prometheus recorder. Names live
//! here so the dashboard and alert rules have one place to be checked against.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const WEBHOOK_REQUESTS_TOTAL: &str = "fulfillment_webhook_requests_total";
pub const WEBHOOK_DURATION_SECONDS: &str = "fulfillment_webhook_duration_seconds";
pub const WEBHOOK_IN_FLIGHT: &str = "fulfillment_webhook_in_flight_requests";
pub const PUBLISH_CONFIRM_SECONDS: &str = "fulfillment_publish_confirm_seconds";
pub const BROKER_UP: &str = "fulfillment_broker_up";
pub const DATABASE_UP: &str = "fulfillment_database_up";

/// Latency buckets from 1 ms to 10 s: webhook answers and confirms live in
/// the low milliseconds, and Stripe gives up somewhere in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the global recorder. Call once per process.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    describe_counter!(
        WEBHOOK_REQUESTS_TOTAL,
        "Webhook POSTs by outcome: accepted, bad_signature, bad_request, too_large, unavailable"
    );
    describe_histogram!(
        WEBHOOK_DURATION_SECONDS,
        Unit::Seconds,
        "Time from request to answer on POST /webhooks/stripe"
    );
    describe_gauge!(WEBHOOK_IN_FLIGHT, "Webhook requests being handled now");
    describe_histogram!(
        PUBLISH_CONFIRM_SECONDS,
        Unit::Seconds,
        "Time from publish to the broker's confirm"
    );
    describe_gauge!(BROKER_UP, "1 while the broker channel is open");
    describe_gauge!(DATABASE_UP, "1 while the database answers");
}
