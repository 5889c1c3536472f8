//! Applying: the events of a batch go to the store in one transaction; if
//! that fails for any reason but an outage, one by one, so one bad event
//! costs only itself. While the database is down the events are held (never
//! dead-lettered because of an outage); serialization failures and
//! deadlocks are retried at once, a few times.

use std::time::Duration;

use lapin::message::Delivery;
use tracing::{debug, info, warn};

use fulfillment_core::{DisputeStatus, Note, OrderEvent};

use super::{Handled, Worker};
use crate::failure;
use crate::metrics as m;
use crate::shutdown::Shutdown;
use crate::store::{self, Outcome};

/// Immediate retries of a serialization failure or deadlock before the
/// message goes to a delay tier.
const CONFLICT_RETRIES: u32 = 5;

impl Worker {
    /// Applies the events in one transaction; if that fails for any reason
    /// but an outage, applies them one by one, so one bad event (or a rare
    /// deadlock) costs only itself. A permanent error falls back too: the
    /// batch error does not say which event's data was refused.
    pub(super) async fn apply(
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
                match store::process_batch(&self.pool, &items, self.line_items).await {
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
            match store::process(&self.pool, &event, body, self.line_items).await {
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
                error: failure::describe(&e),
                failure: failure::classify(&e),
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
        for anomaly in &report.anomalies {
            let kind = anomaly.kind.label();
            metrics::counter!(m::ORDER_ANOMALIES_TOTAL, "kind" => kind).increment(1);
            let earlier: Vec<String> = anomaly.earlier.iter().map(|p| p.key()).collect();
            warn!(
                event_id = %anomaly.event_id,
                order_id = %anomaly.order_id,
                kind,
                payment = %anomaly.payment,
                earlier = ?earlier,
                "order anomaly: a second distinct payment reached a paid order; the customer may need a refund (fulfillment orders show)"
            );
        }
        for (order_id, note) in &report.notes {
            record_note(event, order_id, note);
        }
        debug!(event_id = %event.id, event_type = %event.event_type, outcome = outcome.label(), "event processed");
    }
}

/// A metric and a log line for each lifecycle fact recorded. A new dispute is
/// a warning: a person has to answer it before Stripe's deadline.
fn record_note(event: &OrderEvent, order_id: &str, note: &Note) {
    match note {
        Note::AttemptFailed {
            payment_intent_id,
            error,
        } => {
            metrics::counter!(m::PAYMENT_ATTEMPTS_FAILED_TOTAL).increment(1);
            info!(
                event_id = %event.id,
                order_id,
                payment_intent_id,
                failure_code = error.failure_code.as_deref().unwrap_or("-"),
                decline_code = error.decline_code.as_deref().unwrap_or("-"),
                "payment attempt failed"
            );
        }
        Note::Refunded(refund) => {
            metrics::counter!(m::REFUNDS_TOTAL, "refund_status" => refund.status.as_str())
                .increment(1);
            info!(
                event_id = %event.id,
                order_id,
                amount_refunded = refund.amount_refunded,
                refund_status = refund.status.as_str(),
                "refund recorded"
            );
        }
        Note::Dispute {
            dispute_id,
            dispute,
        } => {
            metrics::counter!(m::DISPUTES_TOTAL, "dispute_status" => dispute.status.as_str())
                .increment(1);
            let due = dispute
                .evidence_due_by
                .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_else(|| "unknown".to_owned());
            let reason = dispute.reason.as_deref().unwrap_or("-");
            match dispute.status {
                DisputeStatus::Open => warn!(
                    event_id = %event.id,
                    order_id,
                    dispute_id,
                    reason,
                    evidence_due_by = %due,
                    "dispute opened: a person must answer it in the Stripe Dashboard before the evidence deadline"
                ),
                DisputeStatus::Won => info!(
                    event_id = %event.id,
                    order_id,
                    dispute_id,
                    "dispute closed: won"
                ),
                DisputeStatus::Lost => warn!(
                    event_id = %event.id,
                    order_id,
                    dispute_id,
                    reason,
                    "dispute closed: lost, the money stays with the cardholder"
                ),
            }
        }
    }
}
