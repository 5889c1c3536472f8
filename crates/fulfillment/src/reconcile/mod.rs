//! Recovering events webhooks missed: list them from Stripe's Events API
//! and publish each one we never took in through the normal path
//! (`ingest::publish_event`: `stripe.events`, confirms), so the worker's
//! dedup decides, exactly as for a webhook (contract 8.4).
//!
//! "Never taken in" means: no `processed_events` row (kept 35 days, longer
//! than Stripe keeps events) and no dead letter (an event that failed for
//! good waits for a person; recovering it would only fail it again). An
//! event still in a queue is not known yet and is published again: the
//! worker's dedup makes that harmless.
//!
//! Which events, in which order: `fulfillment_core::reconcile`. Runs are
//! one replica at a time (`db::exclusively`); `schedule` runs them every
//! `RECONCILE_INTERVAL` in `serve` and `worker`, `fulfillment reconcile`
//! on demand.

pub mod command;
mod schedule;

pub use schedule::Periodic;

use std::collections::HashSet;

use anyhow::Context;
use fulfillment_core::HANDLED_EVENT_TYPES;
use fulfillment_core::reconcile::{Recovery, Window};
use sqlx::PgConnection;
use stripe_api::{Event, EventFilter};
use tracing::{info, warn};

use crate::broker::Publisher;
use crate::metrics as m;
use crate::{db, ingest};

/// The advisory lock that keeps runs to one replica at a time.
pub const LOCK: &str = "fulfillment:reconcile";

/// What to list.
#[derive(Clone, Copy, Debug)]
pub struct Scope {
    pub window: Window,
    /// Every event of the handled types, not only undelivered ones.
    pub all_events: bool,
}

/// One listed event, as a report names it.
#[derive(Clone, Debug)]
pub struct Listed {
    pub id: String,
    pub event_type: String,
    pub created: i64,
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    /// Published (or, in a dry run, to publish), oldest first.
    pub recovered: Vec<Listed>,
    /// Already taken in, oldest first.
    pub known: Vec<String>,
    /// The run stopped listing at `MAX_TO_RECOVER_PER_RUN` events.
    pub stopped_early: bool,
}

pub struct Reconciler {
    pub client: stripe_api::Client,
    pub pool: sqlx::PgPool,
    /// `None` for a dry run: nothing is published, nothing counted.
    pub publisher: Option<Publisher>,
}

impl Reconciler {
    /// One run under the lock; `Ok(None)` when another replica is running one.
    pub async fn run_exclusively(&self, scope: Scope) -> anyhow::Result<Option<Report>> {
        db::exclusively(&self.pool, LOCK, async |conn| self.run(conn, scope).await).await
    }

    async fn run(&self, conn: &mut PgConnection, scope: Scope) -> anyhow::Result<Report> {
        let (to_publish, known, stopped_early) = self.list(conn, scope).await?;
        let mut report = Report {
            known,
            stopped_early,
            ..Report::default()
        };
        if let Some(publisher) = &self.publisher {
            metrics::counter!(m::RECONCILE_EVENTS_TOTAL, "outcome" => "known")
                .increment(report.known.len() as u64);
            for event in &to_publish {
                publish(publisher, event).await?;
                report.recovered.push(listed(event));
            }
            if !to_publish.is_empty() {
                warn!(
                    recovered = to_publish.len(),
                    "recovered events Stripe had not delivered: webhooks are being missed (see the runbook, FulfillmentReconcileRecoveredEvents)"
                );
            }
        } else {
            report.recovered = to_publish.iter().map(listed).collect();
        }
        Ok(report)
    }

    /// Every page, newest first; the events never taken in (oldest first),
    /// the known ids, and whether the run stopped at its limit.
    async fn list(
        &self,
        conn: &mut PgConnection,
        scope: Scope,
    ) -> anyhow::Result<(Vec<Event>, Vec<String>, bool)> {
        let filter = EventFilter {
            types: HANDLED_EVENT_TYPES.iter().map(|t| t.to_string()).collect(),
            created_gte: Some(scope.window.from),
            created_lte: scope.window.until,
            delivery_success: (!scope.all_events).then_some(false),
        };
        let mut pages = self.client.events(&filter, None);
        let mut recovery = Recovery::default();
        let mut stopped_early = false;
        while let Some(page) = pages
            .next()
            .await
            .context("listing events from Stripe's Events API")?
        {
            let ids: Vec<&str> = page.iter().map(|e| e.id.as_str()).collect();
            let known = known_ids(conn, &ids).await?;
            recovery.add_page(page, |e| e.id.as_str(), |id| known.contains(id));
            if recovery.is_full() {
                warn!("reconcile stopped listing at its limit; the next run reaches further back");
                stopped_early = true;
                break;
            }
        }
        let (to_publish, known) = recovery.finish();
        Ok((to_publish, known, stopped_early))
    }
}

async fn publish(publisher: &Publisher, event: &Event) -> anyhow::Result<()> {
    ingest::publish_event(
        publisher,
        &event.id,
        &event.event_type,
        event.raw.get().as_bytes(),
    )
    .await
    .with_context(|| format!("publishing recovered event {} to stripe.events", event.id))?;
    metrics::counter!(m::RECONCILE_EVENTS_TOTAL, "outcome" => "recovered").increment(1);
    info!(
        event_id = %event.id,
        event_type = %event.event_type,
        created = event.created,
        "recovered an event webhooks missed"
    );
    Ok(())
}

fn listed(event: &Event) -> Listed {
    Listed {
        id: event.id.clone(),
        event_type: event.event_type.clone(),
        created: event.created,
    }
}

/// Which of `ids` we took in before: a dedup record or a dead letter.
async fn known_ids(conn: &mut PgConnection, ids: &[&str]) -> anyhow::Result<HashSet<String>> {
    let known: Vec<String> = sqlx::query_scalar(
        "SELECT event_id FROM processed_events WHERE event_id = ANY($1) \
         UNION SELECT event_id FROM dead_letters WHERE event_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await
    .context("looking up which listed events were processed")?;
    Ok(known.into_iter().collect())
}
