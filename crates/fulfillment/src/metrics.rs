//! Metric names (contract section 7) and the Prometheus recorder. Names live
//! here so the dashboard and alert rules have one place to be checked against.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const WEBHOOK_REQUESTS_TOTAL: &str = "fulfillment_webhook_requests_total";
pub const WEBHOOK_DURATION_SECONDS: &str = "fulfillment_webhook_duration_seconds";
pub const WEBHOOK_IN_FLIGHT: &str = "fulfillment_webhook_in_flight_requests";
pub const WEBHOOK_INFLIGHT_BODY_BYTES: &str = "fulfillment_webhook_inflight_body_bytes";
pub const WEBHOOK_INFLIGHT_BODY_LIMIT_BYTES: &str = "fulfillment_webhook_inflight_body_limit_bytes";
pub const WEBHOOK_BODY_BUDGET_SHED_TOTAL: &str = "fulfillment_webhook_body_budget_shed_total";
pub const PUBLISH_CONFIRM_SECONDS: &str = "fulfillment_publish_confirm_seconds";
pub const BROKER_UP: &str = "fulfillment_broker_up";
pub const EVENTS_PROCESSED_TOTAL: &str = "fulfillment_events_processed_total";
pub const EVENT_PROCESSING_SECONDS: &str = "fulfillment_event_processing_seconds";
pub const EVENT_LAG_SECONDS: &str = "fulfillment_event_lag_seconds";
pub const ORDER_TRANSITIONS_TOTAL: &str = "fulfillment_order_transitions_total";
pub const PARKED_RELEASED_TOTAL: &str = "fulfillment_parked_events_released_total";
pub const RETRIES_TOTAL: &str = "fulfillment_retries_total";
pub const OUTBOX_PENDING: &str = "fulfillment_outbox_pending";
pub const OUTBOX_OLDEST_PENDING_SECONDS: &str = "fulfillment_outbox_oldest_pending_seconds";
pub const OUTBOX_PUBLISHED_TOTAL: &str = "fulfillment_outbox_published_total";
pub const DLQ_DEPTH: &str = "fulfillment_dlq_depth";
pub const DEAD_LETTERS_TOTAL: &str = "fulfillment_dead_letters_total";
pub const DEAD_LETTERS_STORED_TOTAL: &str = "fulfillment_dead_letters_stored_total";
pub const WORK_QUEUE_DEPTH: &str = "fulfillment_work_queue_depth";
pub const WORKER_BATCH_SIZE: &str = "fulfillment_worker_batch_size";
pub const DATABASE_UP: &str = "fulfillment_database_up";
pub const EVENT_LAG_ABSURD_TOTAL: &str = "fulfillment_event_lag_absurd_total";
pub const PARKED_EVENTS: &str = "fulfillment_parked_events";
pub const PARKED_EVENTS_EXPIRED: &str = "fulfillment_parked_events_expired";
pub const RETENTION_DELETED_TOTAL: &str = "fulfillment_retention_deleted_rows_total";
pub const RETENTION_RUNS_TOTAL: &str = "fulfillment_retention_runs_total";
pub const STRIPE_API_REQUESTS_TOTAL: &str = "fulfillment_stripe_api_requests_total";
pub const RECONCILE_EVENTS_TOTAL: &str = "fulfillment_reconcile_events_total";
pub const RECONCILE_RUNS_TOTAL: &str = "fulfillment_reconcile_runs_total";
pub const CUSTOM_PAYMENTS_TOTAL: &str = "fulfillment_custom_payments_total";
pub const ORDER_ANOMALIES_TOTAL: &str = "fulfillment_order_anomalies_total";
pub const LINE_ITEMS_TOTAL: &str = "fulfillment_line_items_total";
pub const LINE_ITEMS_PENDING: &str = "fulfillment_line_items_pending";
pub const LINE_ITEMS_HELD: &str = "fulfillment_line_items_held";
pub const LINE_ITEMS_OLDEST_PENDING_SECONDS: &str = "fulfillment_line_items_oldest_pending_seconds";
pub const PAYMENT_RECORDS_TOTAL: &str = "fulfillment_payment_records_total";
pub const PAYMENT_RECORDS_REFUSED: &str = "fulfillment_payment_records_refused";
// The rest of the payment lifecycle (contract 8.6).
pub const PAYMENT_ATTEMPTS_FAILED_TOTAL: &str = "fulfillment_payment_attempts_failed_total";
pub const REFUNDS_TOTAL: &str = "fulfillment_refunds_total";
pub const DISPUTES_TOTAL: &str = "fulfillment_disputes_total";
pub const DISPUTES_OPEN: &str = "fulfillment_disputes_open";
pub const DISPUTES_NEXT_DUE: &str = "fulfillment_disputes_next_due_timestamp_seconds";

/// Latency buckets from 1 ms to 10 s: webhook answers and confirms live in
/// the low milliseconds, and Stripe gives up somewhere in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Deliveries per worker batch, up to the largest sensible WORKER_BATCH_SIZE.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0];

/// Event lag spans seconds (normal) to days (Stripe retrying for three days).
const LAG_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0, 259200.0,
];

/// Installs the global recorder. Call once per process.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(EVENT_LAG_SECONDS.into()), LAG_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(WORKER_BATCH_SIZE.into()), BATCH_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .install_recorder()?;
    describe();
    // Rare counters exist from the start at 0, so that the alert's
    // increase() sees the first one (a series born at 1 shows no increase).
    for kind in fulfillment_core::AnomalyKind::ALL {
        metrics::counter!(ORDER_ANOMALIES_TOTAL, "kind" => kind.label()).absolute(0);
    }
    for outcome in crate::line_items::Outcome::ALL {
        metrics::counter!(LINE_ITEMS_TOTAL, "outcome" => outcome.label()).absolute(0);
    }
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
    describe_gauge!(
        WEBHOOK_INFLIGHT_BODY_BYTES,
        Unit::Bytes,
        "Bytes of request bodies being read before their signature is checked (reserved from MAX_INFLIGHT_BODY_BYTES)"
    );
    describe_gauge!(
        WEBHOOK_INFLIGHT_BODY_LIMIT_BYTES,
        Unit::Bytes,
        "MAX_INFLIGHT_BODY_BYTES: the budget fulfillment_webhook_inflight_body_bytes may not exceed"
    );
    describe_counter!(
        WEBHOOK_BODY_BUDGET_SHED_TOTAL,
        "Webhook POSTs answered 503 unread because MAX_INFLIGHT_BODY_BYTES was in use (also counted as outcome=unavailable)"
    );
    describe_histogram!(
        PUBLISH_CONFIRM_SECONDS,
        Unit::Seconds,
        "Time from publish to the broker's confirm"
    );
    describe_gauge!(BROKER_UP, "1 while the broker channel is open");
    describe_gauge!(DATABASE_UP, "1 while the database answers");
    describe_counter!(
        EVENTS_PROCESSED_TOTAL,
        "Deliveries handled by the workers, by event type and outcome: applied, stale, duplicate, ignored, unmatched, retried, dead_lettered; and parked events given up after PARKED_TTL: unmatched_expired"
    );
    describe_histogram!(
        EVENT_PROCESSING_SECONDS,
        Unit::Seconds,
        "Time to handle one delivery"
    );
    describe_histogram!(
        EVENT_LAG_SECONDS,
        Unit::Seconds,
        "Processing time minus the Stripe event's created time"
    );
    describe_counter!(
        ORDER_TRANSITIONS_TOTAL,
        "Order status changes (from=none for a new order)"
    );
    describe_counter!(
        PARKED_RELEASED_TOTAL,
        "PaymentIntent events applied when the session naming their order arrived"
    );
    describe_counter!(
        RETRIES_TOTAL,
        "Failed deliveries sent to a delay tier, by tier queue"
    );
    describe_gauge!(
        OUTBOX_PENDING,
        "Outbox messages not yet confirmed by the broker (order.paid messages waiting for their line items included)"
    );
    describe_gauge!(
        OUTBOX_OLDEST_PENDING_SECONDS,
        "Age of the oldest outbox message ready to publish but not yet confirmed (the relay's lag; those waiting for line items are fulfillment_line_items_oldest_pending_seconds)"
    );
    describe_counter!(
        OUTBOX_PUBLISHED_TOTAL,
        "Outbox messages published and confirmed"
    );
    describe_gauge!(
        DLQ_DEPTH,
        "Dead letters an operator has to look at: rows in the dead_letters table plus messages still in stripe.fulfillment.dlq"
    );
    describe_counter!(
        DEAD_LETTERS_TOTAL,
        "Deliveries sent to the DLQ, by kind: permanent (no retry can fix it; sent at once) or exhausted (failed on every delay tier)"
    );
    describe_counter!(
        DEAD_LETTERS_STORED_TOTAL,
        "Dead letters moved from stripe.fulfillment.dlq into the dead_letters table"
    );
    describe_gauge!(WORK_QUEUE_DEPTH, "Messages ready in stripe.fulfillment");
    describe_counter!(
        EVENT_LAG_ABSURD_TOTAL,
        "Events whose created time is more than 30 days off the clock, by type: kept out of the lag histogram"
    );
    describe_gauge!(
        PARKED_EVENTS,
        "PaymentIntent events parked for a session that has not arrived yet (not expired)"
    );
    describe_gauge!(
        PARKED_EVENTS_EXPIRED,
        "Parked events past PARKED_TTL that no session claimed: money may have been taken without an order"
    );
    describe_counter!(
        RETENTION_DELETED_TOTAL,
        "Rows deleted by the retention job, by table"
    );
    describe_counter!(
        RETENTION_RUNS_TOTAL,
        "Retention job runs, by outcome: done, skipped (another replica holds the lock), failed"
    );
    describe_counter!(
        STRIPE_API_REQUESTS_TOTAL,
        "Attempts at calling Stripe's API (retries included), by endpoint template and HTTP status, or status=error when there was no answer"
    );
    describe_counter!(
        RECONCILE_EVENTS_TOTAL,
        "Events a reconcile run listed from Stripe's Events API, by outcome: recovered (never taken in; published now: webhooks missed it) or known"
    );
    describe_counter!(
        RECONCILE_RUNS_TOTAL,
        "Periodic reconcile runs, by outcome: done, skipped (another replica holds the lock), failed"
    );
    describe_counter!(
        CUSTOM_PAYMENTS_TOTAL,
        "POST /payments/custom requests by outcome: accepted, bad_signature, bad_request, too_large, unavailable"
    );
    describe_counter!(
        PAYMENT_RECORDS_TOTAL,
        "Custom payments reported to Stripe as Payment Records, by outcome: recorded, retried (no answer, 409, 429, 5xx: tried again later), refused (kept for a person)"
    );
    describe_gauge!(
        PAYMENT_RECORDS_REFUSED,
        "Payment Record jobs Stripe refused, waiting for a person (fulfillment orders retry-record)"
    );
    describe_counter!(
        ORDER_ANOMALIES_TOTAL,
        "Order anomalies a person must look at, by kind: paid_twice (a second distinct payment reached a paid order; the customer may need a refund)"
    );
    describe_counter!(
        LINE_ITEMS_TOTAL,
        "Fetches of a Checkout order's line items for order.paid, by outcome: fetched (message released), retried (Stripe down, limiting or refusing the key; tried again later), held (Stripe's answer is final, e.g. no such session; kept for a person)"
    );
    describe_gauge!(
        LINE_ITEMS_PENDING,
        "order.paid messages held back until their line items are fetched from Stripe (retried automatically)"
    );
    describe_gauge!(
        LINE_ITEMS_HELD,
        "order.paid messages held back because Stripe's answer about their line items was final: a person must look (orders show, orders retry-line-items)"
    );
    describe_gauge!(
        LINE_ITEMS_OLDEST_PENDING_SECONDS,
        "Age of the oldest order.paid message waiting for its line items (0 when none)"
    );
    describe_histogram!(
        WORKER_BATCH_SIZE,
        "Deliveries a worker took together into one batch"
    );
    describe_counter!(
        PAYMENT_ATTEMPTS_FAILED_TOTAL,
        "Failed payment attempts recorded (payment_intent.payment_failed, once per event)"
    );
    describe_counter!(
        REFUNDS_TOTAL,
        "Refunds recorded, by refund_status (partial, full): each time an order's refunded amount grew"
    );
    describe_counter!(
        DISPUTES_TOTAL,
        "Dispute changes recorded, by dispute_status: open (a new dispute), won, lost"
    );
    describe_gauge!(
        DISPUTES_OPEN,
        "Disputes recorded as open (not yet won or lost)"
    );
    describe_gauge!(
        DISPUTES_NEXT_DUE,
        Unit::Seconds,
        "Unix time of the earliest evidence deadline (evidence_details.due_by) among open disputes still ahead; 0 when there is none"
    );
}

/// Registers the lifecycle counters at 0 for every label value, so the first
/// dispute after a start is an increase Prometheus can see (a series that
/// appears at 1 has none).
pub fn zero_lifecycle_counters() {
    use fulfillment_core::{DisputeStatus, RefundStatus};
    metrics::counter!(PAYMENT_ATTEMPTS_FAILED_TOTAL).increment(0);
    for status in RefundStatus::ALL {
        metrics::counter!(REFUNDS_TOTAL, "refund_status" => status.as_str()).increment(0);
    }
    for status in DisputeStatus::ALL {
        metrics::counter!(DISPUTES_TOTAL, "dispute_status" => status.as_str()).increment(0);
    }
}

/// `/metrics`, `/healthz` and `/readyz` on `METRICS_ADDR`: a listener with
/// connection slots of its own, so webhook traffic holding every
/// `MAX_CONNECTIONS` slot cannot make the probes fail.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    ready: crate::receiver::Readiness,
    shutdown: crate::shutdown::Shutdown,
) {
    let limits = crate::http::Limits {
        max_connections: 64,
        header_read_timeout: std::time::Duration::from_secs(5),
        shutdown_grace: std::time::Duration::from_secs(1),
    };
    let handle = std::sync::Arc::new(handle);
    crate::http::serve(
        listener,
        "metrics",
        move |req| {
            let handle = handle.clone();
            let ready = ready.clone();
            async move {
                if let Some(response) = crate::receiver::health(&req, &ready) {
                    response
                } else if req.uri().path() == "/metrics" {
                    let mut response = crate::http::text(200, "");
                    *response.body_mut() = http_body_util::Full::new(handle.render().into());
                    response.headers_mut().insert(
                        "content-type",
                        hyper::header::HeaderValue::from_static(
                            "text/plain; version=0.0.4; charset=utf-8",
                        ),
                    );
                    response
                } else {
                    crate::http::text(404, "not found\n")
                }
            }
        },
        limits,
        shutdown,
    )
    .await;
}
