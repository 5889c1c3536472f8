//! The worker pool: consumes `stripe.fulfillment`, applies the deliveries it
//! has in hand as one batch (`store::process_batch`), and acks each only
//! after the commit.
//!
//! Failure handling, by kind:
//! - the database is unreachable: the handler keeps the message and waits
//!   for the database (nothing is dead-lettered because of an outage);
//! - a serialization failure or deadlock: retried at once, a few times;
//! - a permanent error (a payload we cannot parse, data PostgreSQL refuses
//!   to store: `db::failure`): straight to the DLQ, `x-error-kind:
//!   permanent`, also when replayed (retrying cannot help);
//! - any other error: the message goes to the next delay tier, then the DLQ.
//!
//! A retry or dead-letter publish is confirmed before the original is acked,
//! so a crash in between redelivers the original; dedup absorbs it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel};
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tracing::{debug, error, info, warn};

use fulfillment_core::upkeep::{self, Lag};
use fulfillment_core::{OrderEvent, Parsed, parse_event};

use crate::broker::{BrokerLink, Outgoing, Publisher};
use crate::health::DbHealth;
use crate::metrics as m;
use crate::retry::{Failure, Next, RetryPolicy, queue_name};
use crate::shutdown::Shutdown;
use crate::store::{self, Outcome};
use crate::topology::{DEAD_LETTER_QUEUE, WORK_QUEUE};

/// Header names on retried and dead-lettered messages.
pub mod headers {
    pub const ATTEMPTS: &str = "x-attempts";
    pub const FIRST_FAILURE_AT: &str = "x-first-failure-at";
    pub const LAST_FAILURE_AT: &str = "x-last-failure-at";
    pub const ERROR: &str = "x-error";
    pub const ERROR_KIND: &str = "x-error-kind";
    pub const REPLAYED_AT: &str = "x-replayed-at";
}

/// Immediate retries of a serialization failure or deadlock before the
/// message goes to a delay tier.
const CONFLICT_RETRIES: u32 = 5;

pub struct Worker {
    pub pool: PgPool,
    pub link: BrokerLink,
    pub publisher: Publisher,
    pub policy: RetryPolicy,
    pub concurrency: usize,
    /// Deliveries applied together in one transaction, at most.
    pub batch_size: usize,
    pub prefetch: u16,
    pub db: DbHealth,
    pub shutdown_grace: Duration,
}

/// What became of one delivery.
enum Handled {
    Done {
        event_type: String,
        outcome: Outcome,
        created: i64,
    },
    Ignored {
        event_type: String,
    },
    Failed {
        event_type: String,
        error: String,
        failure: Failure,
    },
    /// Shutdown came while waiting for the database: leave it unacked.
    Abandoned,
}

impl Worker {
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        loop {
            let channel = tokio::select! {
                c = self.link.wait_up() => c,
                _ = shutdown.wait() => return,
            };
            match self.consume(&channel, &shutdown).await {
                Ok(()) if shutdown.is_triggered() => return,
                Ok(()) => info!("consumer ended; waiting for the broker"),
                Err(e) => warn!(error = %e, "consumer failed; waiting for the broker"),
            }
            self.link.report_failure();
            tokio::select! {
                _ = self.link.closed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.wait() => return,
            }
        }
    }

    async fn consume(
        self: &Arc<Self>,
        channel: &Channel,
        shutdown: &Shutdown,
    ) -> lapin::Result<()> {
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let mut consumer = channel
            .basic_consume(
                WORK_QUEUE.into(),
                ShortString::from(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        info!(
            queue = WORK_QUEUE,
            prefetch = self.prefetch,
            concurrency = self.concurrency,
            max_attempts = self.policy.max_attempts(),
            "consuming"
        );
        let permits = Arc::new(Semaphore::new(self.concurrency));
        loop {
            let next = tokio::select! {
                next = consumer.next() => next,
                _ = shutdown.wait() => break,
            };
            let first = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            };
            // Whatever else the broker has already pushed joins the batch:
            // no waiting, so a lone event is not delayed.
            let mut batch = vec![first];
            let mut failed = None;
            while batch.len() < self.batch_size {
                match consumer.next().now_or_never() {
                    Some(Some(Ok(delivery))) => batch.push(delivery),
                    Some(Some(Err(e))) => {
                        failed = Some(e);
                        break;
                    }
                    _ => break,
                }
            }
            let permit = permits.clone().acquire_owned().await.expect("never closed");
            let worker = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                worker.handle_batch(batch, &shutdown).await;
                drop(permit);
            });
            if let Some(e) = failed {
                return Err(e);
            }
        }
        // Stop deliveries, then give in-flight events time to commit and ack;
        // whatever is still unacked is redelivered when the channel closes.
        let _ = channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await;
        let all = self.concurrency as u32;
        if tokio::time::timeout(self.shutdown_grace, permits.acquire_many(all))
            .await
            .is_err()
        {
            warn!("shutdown grace elapsed with events in flight; they will be redelivered");
        }
        Ok(())
    }

    /// Handles a batch of deliveries: parses each, applies the handled ones
    /// together, then acks or routes each delivery on its own.
    async fn handle_batch(&self, deliveries: Vec<Delivery>, shutdown: &Shutdown) {
        let started = Instant::now();
        metrics::histogram!(m::WORKER_BATCH_SIZE).record(deliveries.len() as f64);
        let mut handled: Vec<Option<Handled>> = deliveries.iter().map(|_| None).collect();
        let mut events = Vec::new();
        for (i, delivery) in deliveries.iter().enumerate() {
            match parse_event(&delivery.data) {
                Ok(Parsed::Handled(event)) => events.push((i, event)),
                Ok(Parsed::Unhandled { event_type, .. }) => {
                    handled[i] = Some(Handled::Ignored { event_type })
                }
                Err(e) => {
                    handled[i] = Some(Handled::Failed {
                        event_type: property_type(delivery),
                        error: format!("unparseable event: {e}"),
                        failure: Failure::Permanent,
                    });
                }
            }
        }
        for (i, outcome) in self.apply(&deliveries, events, shutdown).await {
            handled[i] = Some(outcome);
        }
        for (delivery, outcome) in deliveries.iter().zip(handled) {
            self.finish(delivery, outcome.expect("every delivery decided"))
                .await;
            metrics::histogram!(m::EVENT_PROCESSING_SECONDS)
                .record(started.elapsed().as_secs_f64());
        }
    }

    async fn finish(&self, delivery: &Delivery, handled: Handled) {
        match handled {
            Handled::Done {
                event_type,
                outcome,
                created,
            } => {
                ack(delivery).await;
                record_lag(&event_type, created);
                count(&event_type, outcome.label());
            }
            Handled::Ignored { event_type } => {
                ack(delivery).await;
                debug!(event_type, "event type not handled; acknowledged");
                count(&event_type, "ignored");
            }
            Handled::Failed {
                event_type,
                error,
                failure,
            } => {
                self.route_failure(delivery, &event_type, &error, failure)
                    .await;
            }
            Handled::Abandoned => {}
        }
    }

    /// Applies the events in one transaction; if that fails for any reason
    /// but an outage, applies them one by one, so one bad event (or a rare
    /// deadlock) costs only itself. A permanent error falls back too: the
    /// batch error does not say which event's data was refused.
    async fn apply(
        &self,
        deliveries: &[Delivery],
        events: Vec<(usize, OrderEvent)>,
        shutdown: &Shutdown,
    ) -> Vec<(usize, Handled)> {
        if events.len() > 1 {
            loop {
                let items: Vec<(&OrderEvent, &[u8])> = events
                    .iter()
                    .map(|(i, e)| (e, deliveries[*i].data.as_slice()))
                    .collect();
                match store::process_batch(&self.pool, &items).await {
                    Ok(results) => {
                        return events
                            .into_iter()
                            .zip(results)
                            .map(|((i, event), result)| (i, self.outcome(event, Ok(result))))
                            .collect();
                    }
                    Err(e) if crate::db::is_unavailable(&e) => {
                        if !self.hold_for_database(&e, shutdown).await {
                            return events
                                .into_iter()
                                .map(|(i, _)| (i, Handled::Abandoned))
                                .collect();
                        }
                    }
                    Err(e) => {
                        debug!(error = %e, events = events.len(), "batch failed; applying its events one by one");
                        break;
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(events.len());
        for (i, event) in events {
            out.push((
                i,
                self.process_one(event, &deliveries[i].data, shutdown).await,
            ));
        }
        out
    }

    async fn process_one(&self, event: OrderEvent, body: &[u8], shutdown: &Shutdown) -> Handled {
        let mut conflicts = 0;
        loop {
            match store::process(&self.pool, &event, body).await {
                Err(e) if crate::db::is_unavailable(&e) => {
                    if !self.hold_for_database(&e, shutdown).await {
                        return Handled::Abandoned;
                    }
                }
                Err(e) if crate::db::is_conflict(&e) && conflicts < CONFLICT_RETRIES => {
                    conflicts += 1;
                    debug!(event_id = %event.id, error = %e, conflicts, "transaction conflict; retrying");
                    tokio::time::sleep(Duration::from_millis(10 * u64::from(conflicts))).await;
                }
                result => return self.outcome(event, result),
            }
        }
    }

    /// Waits for the database to answer again; false if shutdown came first.
    async fn hold_for_database(&self, error: &sqlx::Error, shutdown: &Shutdown) -> bool {
        warn!(error = %error, "database unavailable; holding the event");
        self.db.set(false);
        tokio::select! {
            _ = self.db.wait_up() => true,
            _ = shutdown.wait() => false,
        }
    }

    fn outcome(&self, event: OrderEvent, result: store::EventResult) -> Handled {
        match result {
            Ok((outcome, report)) => {
                self.record(&event, outcome, &report);
                Handled::Done {
                    event_type: event.event_type,
                    outcome,
                    created: event.created,
                }
            }
            Err(e) => Handled::Failed {
                event_type: event.event_type,
                error: crate::db::describe(&e),
                failure: crate::db::failure(&e),
            },
        }
    }

    fn record(&self, event: &OrderEvent, outcome: Outcome, report: &store::Report) {
        for t in &report.transitions {
            let from = t.from.map_or("none", |s| s.as_str());
            metrics::counter!(m::ORDER_TRANSITIONS_TOTAL, "from" => from, "to" => t.to.as_str())
                .increment(1);
        }
        if report.released > 0 {
            metrics::counter!(m::PARKED_RELEASED_TOTAL).increment(report.released as u64);
        }
        debug!(event_id = %event.id, event_type = %event.event_type, outcome = outcome.label(), "event processed");
    }

    /// Sends a failed delivery to its next tier or to the DLQ, confirmed,
    /// then acks the original. If that publish fails the original is
    /// requeued: it is never acked unless its successor is safely stored.
    async fn route_failure(
        &self,
        delivery: &Delivery,
        event_type: &str,
        error: &str,
        failure: Failure,
    ) {
        let attempts = header_int(&delivery.properties, headers::ATTEMPTS) + 1;
        let next = self.policy.route(attempts, failure);
        let event_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let (target, outcome, kind) = match next {
            Next::Retry { delay, .. } => (queue_name(delay), "retried", "transient"),
            Next::DeadLetter(kind) => (DEAD_LETTER_QUEUE.to_owned(), "dead_lettered", kind.label()),
        };
        let properties = failure_properties(&delivery.properties, attempts, error, kind);
        let published = self
            .publisher
            .publish(Outgoing {
                exchange: "",
                routing_key: &target,
                body: &delivery.data,
                properties,
                mandatory: true,
            })
            .await;
        match published {
            Ok(()) => {
                ack(delivery).await;
                count(event_type, outcome);
                if let Next::Retry { delay, .. } = next {
                    metrics::counter!(m::RETRIES_TOTAL, "tier" => queue_name(delay)).increment(1);
                    warn!(event_id, event_type, attempts, retry_in = ?delay, error, "event failed; will retry");
                } else {
                    metrics::counter!(m::DEAD_LETTERS_TOTAL, "kind" => kind).increment(1);
                    error!(
                        event_id,
                        event_type, attempts, kind, error, "event dead-lettered"
                    );
                }
            }
            Err(e) => {
                warn!(event_id, event_type, error = %e, "could not route the failed event; requeueing it");
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await;
            }
        }
    }
}

/// Observes the event's lag, unless its `created` is absurd: one such value
/// would dominate the histogram's sum for as long as the process lives.
fn record_lag(event_type: &str, created: i64) {
    match upkeep::lag(unix_now_f64(), created) {
        Lag::Observed(seconds) => metrics::histogram!(m::EVENT_LAG_SECONDS).record(seconds),
        Lag::Absurd => {
            metrics::counter!(m::EVENT_LAG_ABSURD_TOTAL, "type" => event_type.to_owned())
                .increment(1);
            warn!(
                event_type,
                created, "event created more than 30 days off our clock; lag not recorded"
            );
        }
    }
}

fn count(event_type: &str, outcome: &'static str) {
    metrics::counter!(m::EVENTS_PROCESSED_TOTAL, "type" => event_type.to_owned(), "outcome" => outcome).increment(1);
}

async fn ack(delivery: &Delivery) {
    // A failed ack means the channel is gone; the broker redelivers and
    // dedup makes the second delivery a no-op.
    if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
        warn!(error = %e, "ack failed; the event will be redelivered and deduplicated");
    }
}

/// The receiver sets the AMQP `type` to the event type; used to label
/// metrics for events whose body cannot be parsed.
fn property_type(delivery: &Delivery) -> String {
    delivery
        .properties
        .kind()
        .as_ref()
        .map(|s| s.to_string())
        .unwrap_or_else(|| "unknown".to_owned())
}

pub fn header_int(properties: &BasicProperties, name: &str) -> u32 {
    let value = properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name).cloned());
    match value {
        Some(AMQPValue::LongLongInt(n)) => n.clamp(0, i64::from(u32::MAX)) as u32,
        Some(AMQPValue::LongInt(n)) => n.max(0) as u32,
        Some(AMQPValue::LongUInt(n)) => n,
        Some(AMQPValue::ShortInt(n)) => n.max(0) as u32,
        _ => 0,
    }
}

pub fn header_str(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// The original properties plus what an operator needs: how often, when
/// first and last, and why.
fn failure_properties(
    original: &BasicProperties,
    attempts: u32,
    error: &str,
    kind: &str,
) -> BasicProperties {
    let now = crate::time_fmt::now_rfc3339();
    let first = header_str(original, headers::FIRST_FAILURE_AT).unwrap_or_else(|| now.clone());
    let mut table = original.headers().clone().unwrap_or_default();
    let text = |s: &str| AMQPValue::LongString(s.into());
    table.insert(
        ShortString::from(headers::ATTEMPTS),
        AMQPValue::LongLongInt(i64::from(attempts)),
    );
    table.insert(ShortString::from(headers::FIRST_FAILURE_AT), text(&first));
    table.insert(ShortString::from(headers::LAST_FAILURE_AT), text(&now));
    table.insert(
        ShortString::from(headers::ERROR),
        text(crate::relay::truncate(error, 1000)),
    );
    table.insert(ShortString::from(headers::ERROR_KIND), text(kind));
    original.clone().with_headers(table).with_delivery_mode(2)
}

fn unix_now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
