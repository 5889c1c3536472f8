//! The worker pool: consumes `stripe.fulfillment`, applies the deliveries it
//! has in hand as one batch (`store::process_batch`), and acks each only
//! after the commit. This module consumes and batches; `apply` talks to the
//! store; `reroute` publishes failures where `failure::route` says.
//!
//! Failure handling, by kind:
//! - the database is unreachable: the handler keeps the message and waits
//!   for the database (nothing is dead-lettered because of an outage);
//! - a serialization failure or deadlock: retried at once, a few times;
//! - a permanent error (a payload we cannot parse, data PostgreSQL refuses
//!   to store: `failure::classify`): straight to the DLQ, `x-error-kind:
//!   permanent`, also when replayed (retrying cannot help);
//! - any other error: the message goes to the next delay tier, then the DLQ.
//!
//! A retry or dead-letter publish is confirmed before the original is acked,
//! so a crash in between redelivers the original; dedup absorbs it.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod apply;
mod reroute;

use futures_util::{FutureExt, StreamExt};
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use fulfillment_core::upkeep::{self, Lag};
use fulfillment_core::{Parsed, parse_event};

use crate::broker::{BrokerLink, Publisher};
use crate::failure::Failure;
use crate::health::DbHealth;
use crate::metrics as m;
use crate::retry::RetryPolicy;
use crate::shutdown::Shutdown;
use crate::store::{self, Outcome};
use crate::topology::WORK_QUEUE;

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
    /// Whether `order.paid` of a Checkout order waits for its line items.
    pub line_items: store::LineItems,
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
        m::zero_lifecycle_counters();
        self.link
            .consume_while_up("worker", &shutdown, |channel| {
                let (worker, shutdown) = (&self, &shutdown);
                async move { worker.consume(&channel, shutdown).await }
            })
            .await;
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
            // The batch forms only once a permit is free. While every permit
            // is busy, deliveries wait in the consumer and the next batch
            // takes all of them: batches grow with the load, and a lone
            // event on a quiet queue goes at once.
            let permit = tokio::select! {
                permit = permits.clone().acquire_owned() => permit.expect("never closed"),
                _ = shutdown.wait() => break,
            };
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
                Ok(Parsed::Ignored {
                    id,
                    event_type,
                    reason,
                }) => {
                    info!(event_id = %id, event_type, reason, "event belongs to no order; acknowledged");
                    handled[i] = Some(Handled::Ignored { event_type });
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
}

/// Observes the event's lag, unless its `created` is absurd: one such value
/// would dominate the histogram's sum for as long as the process lives.
fn record_lag(event_type: &str, created: i64) {
    match upkeep::lag(crate::clock::unix_now_f64(), created) {
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
