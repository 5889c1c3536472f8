//! The periodic run in `serve` and `worker`: every `RECONCILE_INTERVAL`,
//! one replica lists the last `RECONCILE_LOOKBACK` of undelivered events.
//! After a refused key (the client said so once, loudly) each run fails at
//! once without a request, and keeps counting as failed, so the alert on
//! failing runs stays up until the key is fixed.

use std::time::Duration;

use fulfillment_core::reconcile::{Bound, Window};
use tracing::{info, warn};

use super::{Reconciler, Report, Scope};
use crate::clock::unix_now;
use crate::metrics as m;
use crate::shutdown::Shutdown;

pub struct Periodic {
    pub reconciler: Reconciler,
    pub interval: Duration,
    pub lookback: Duration,
}

impl Periodic {
    pub async fn run(self, shutdown: Shutdown) {
        info!(
            interval = ?self.interval,
            lookback = ?self.lookback,
            "reconciling with Stripe's Events API scheduled (one replica at a time)"
        );
        // Every series exists from the start, so the first recovered event
        // is an increase Prometheus sees, not a series that appears at 1.
        for outcome in ["recovered", "known"] {
            metrics::counter!(m::RECONCILE_EVENTS_TOTAL, "outcome" => outcome).increment(0);
        }
        for outcome in ["done", "skipped", "failed"] {
            metrics::counter!(m::RECONCILE_RUNS_TOTAL, "outcome" => outcome).increment(0);
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.wait() => return,
            }
            // A run cut short by shutdown loses nothing: what it published
            // is published, the rest is found by the next run.
            tokio::select! {
                _ = self.run_once() => {}
                _ = shutdown.wait() => return,
            }
        }
    }

    async fn run_once(&self) {
        let scope = Scope {
            window: Window::new(unix_now(), Bound::Ago(self.lookback), None)
                .expect("a lookback-only window is never empty"),
            all_events: false,
        };
        match self.reconciler.run_exclusively(scope).await {
            Ok(Some(report)) => {
                metrics::counter!(m::RECONCILE_RUNS_TOTAL, "outcome" => "done").increment(1);
                log_report(&report);
            }
            Ok(None) => {
                metrics::counter!(m::RECONCILE_RUNS_TOTAL, "outcome" => "skipped").increment(1);
                tracing::debug!("reconcile skipped: another replica is running one");
            }
            Err(e) => {
                metrics::counter!(m::RECONCILE_RUNS_TOTAL, "outcome" => "failed").increment(1);
                warn!(
                    error = format!("{e:#}"),
                    "reconcile run failed; the next run tries again"
                );
            }
        }
    }
}

fn log_report(report: &Report) {
    info!(
        recovered = report.recovered.len(),
        known = report.known.len(),
        stopped_early = report.stopped_early,
        "reconcile run done"
    );
}
