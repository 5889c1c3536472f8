//! Applying: the events of a batch go to the store in one transaction; if
//! that fails for any reason but an outage, one by one, so one bad event
//! costs only itself. While the database is down the events are held (never
//! dead-lettered because of an outage); serialization failures and
//! deadlocks are retried at once, a few times.

use std::time::Duration;

use lapin::message::Delivery;
use tracing::{debug, warn};

use fulfillment_core::OrderEvent;

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
        debug!(event_id = %event.id, event_type = %event.event_type, outcome = outcome.label(), "event processed");
    }
}
