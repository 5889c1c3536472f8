//! Acting on the failure router's decision: a failed delivery is published
//! to its delay tier or the DLQ with its failure headers, confirmed, and
//! only then acked. If that publish fails the original is requeued: it is
//! never acked unless its successor is safely stored.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::BasicNackOptions;
use tracing::{error, warn};

use super::{Worker, ack, count};
use crate::broker::Outgoing;
use crate::failure::{self, Failure, Next, headers};
use crate::metrics as m;
use crate::retry::queue_name;
use crate::topology::DEAD_LETTER_QUEUE;

impl Worker {
    /// Sends a failed delivery to its next tier or to the DLQ, confirmed,
    /// then acks the original. If that publish fails the original is
    /// requeued: it is never acked unless its successor is safely stored.
    pub(super) async fn route_failure(
        &self,
        delivery: &Delivery,
        event_type: &str,
        error: &str,
        failure: Failure,
    ) {
        let attempts = headers::int(&delivery.properties, headers::ATTEMPTS) + 1;
        let next = failure::route(&self.policy, attempts, failure);
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
        let now = crate::clock::now_rfc3339();
        let properties = headers::on_failure(&delivery.properties, attempts, error, kind, &now);
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
