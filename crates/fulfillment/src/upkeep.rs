//! Keeping state bounded, in the worker role: parked events that outlive
//! `PARKED_TTL` are given up (`unmatched_expired`), and rows past their
//! retention are deleted.
//!
//! One replica at a time: each run takes a session-level PostgreSQL advisory
//! lock (`db::exclusively`) and skips the run if another replica holds it
//! (a crashed holder's lock goes with its connection). Deletes run
//! in batches of [`BATCH`] rows, each its own short statement and commit,
//! found through an index on the time column, so no lock is held for long
//! and the tables stay writable throughout.
//!
//! What is kept, and why:
//! - `processed_events` (the dedup record and the stored body): at least
//!   `RETENTION_DAYS` after processing, longer than Stripe retries (3 days)
//!   and keeps events (30 days), so a redelivery inside the window is still
//!   a duplicate. Rows of events still parked are kept with them.
//! - `outbox`: published rows for `OUTBOX_RETENTION_DAYS`; unpublished rows
//!   never (they are work still to do).
//! - `parked_events`: until a session releases them or an operator resolves
//!   them; expired ones stay, flagged, as the evidence for the operator.
//! - `orders`, `order_transitions`, `payment_intent_links`: kept. They are
//!   the orders themselves and their history (at most one transition per
//!   status per order), bounded by the number of orders, not by traffic;
//!   deleting orders is a business decision, not retention.
//! - `order_line_items`: kept with the orders; `line_item_jobs` hold only
//!   open work (deleted when the line items are fetched).

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tracing::{info, warn};

use crate::metrics as m;
use crate::shutdown::Shutdown;

/// Rows per delete statement: small enough that each statement is quick.
pub const BATCH: i64 = 1000;

/// The advisory lock key, derived from a name like the store's locks.
const LOCK: &str = "fulfillment:upkeep";

pub struct Upkeep {
    pub pool: PgPool,
    pub parked_ttl: Duration,
    pub retention: Duration,
    pub outbox_retention: Duration,
    /// How often a replica tries to run the job.
    pub interval: Duration,
}

/// Rows removed or changed by one run.
#[derive(Debug, Default)]
struct Run {
    expired: BTreeMap<String, u64>,
    processed_events: u64,
    outbox: u64,
}

impl Upkeep {
    pub async fn run(self, shutdown: Shutdown) {
        info!(
            parked_ttl = ?self.parked_ttl,
            retention = ?self.retention,
            outbox_retention = ?self.outbox_retention,
            interval = ?self.interval,
            "upkeep scheduled"
        );
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.wait() => return,
            }
            match self.run_once(&shutdown).await {
                Ok(Some(run)) => {
                    metrics::counter!(m::RETENTION_RUNS_TOTAL, "outcome" => "done").increment(1);
                    report(&run);
                }
                Ok(None) => {
                    metrics::counter!(m::RETENTION_RUNS_TOTAL, "outcome" => "skipped").increment(1);
                }
                Err(e) => {
                    metrics::counter!(m::RETENTION_RUNS_TOTAL, "outcome" => "failed").increment(1);
                    warn!(error = %e, "upkeep run failed; will try again");
                }
            }
        }
    }

    /// None when another replica holds the lock.
    async fn run_once(&self, shutdown: &Shutdown) -> Result<Option<Run>, sqlx::Error> {
        crate::db::exclusively(&self.pool, LOCK, async |conn| {
            self.jobs(conn, shutdown).await
        })
        .await
    }

    async fn jobs(&self, conn: &mut PgConnection, shutdown: &Shutdown) -> Result<Run, sqlx::Error> {
        let mut run = Run::default();
        loop {
            let rows = expire_parked(conn, self.parked_ttl).await?;
            let n = rows.len() as i64;
            for event_type in rows {
                *run.expired.entry(event_type).or_default() += 1;
            }
            if n < BATCH || shutdown.is_triggered() {
                break;
            }
        }
        run.processed_events =
            delete_in_batches(conn, PROCESSED_EVENTS, self.retention, shutdown).await?;
        run.outbox = delete_in_batches(conn, OUTBOX, self.outbox_retention, shutdown).await?;
        Ok(run)
    }
}

fn report(run: &Run) {
    for (event_type, n) in &run.expired {
        metrics::counter!(m::EVENTS_PROCESSED_TOTAL, "type" => event_type.clone(), "outcome" => "unmatched_expired")
            .increment(*n);
        // Money may have been taken without an order: say so loudly, once.
        warn!(
            event_type,
            count = n,
            "parked events expired: no session claimed them within PARKED_TTL (see the runbook, FulfillmentParkedEventsExpired)"
        );
    }
    for (table, n) in [
        ("processed_events", run.processed_events),
        ("outbox", run.outbox),
    ] {
        metrics::counter!(m::RETENTION_DELETED_TOTAL, "table" => table).increment(n);
        if n > 0 {
            info!(table, rows = n, "retention deleted old rows");
        }
    }
}

/// Flags up to [`BATCH`] parked events older than `ttl` as expired and sets
/// their dedup record's outcome; returns their event types. The rows stay,
/// so a session arriving later still releases them.
async fn expire_parked(conn: &mut PgConnection, ttl: Duration) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH expired AS ( \
           UPDATE parked_events SET expired_at = now() WHERE event_id IN ( \
             SELECT event_id FROM parked_events \
             WHERE expired_at IS NULL AND parked_at < now() - make_interval(secs => $1) \
             ORDER BY parked_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
           RETURNING event_id, event_type), \
         marked AS ( \
           UPDATE processed_events AS p SET outcome = 'unmatched_expired' \
           FROM expired WHERE p.event_id = expired.event_id) \
         SELECT event_type FROM expired",
    )
    .bind(ttl.as_secs_f64())
    .bind(BATCH)
    .fetch_all(&mut *conn)
    .await
}

/// A table's retention rule: which rows are old enough to go.
struct Rule {
    table: &'static str,
    /// A `DELETE` of at most `$2` rows older than `$1` seconds.
    delete: &'static str,
}

const PROCESSED_EVENTS: Rule = Rule {
    table: "processed_events",
    delete: "DELETE FROM processed_events WHERE ctid = ANY(ARRAY( \
               SELECT ctid FROM processed_events AS p \
               WHERE processed_at < now() - make_interval(secs => $1) \
               AND NOT EXISTS (SELECT 1 FROM parked_events AS k WHERE k.event_id = p.event_id) \
               LIMIT $2))",
};

const OUTBOX: Rule = Rule {
    table: "outbox",
    // `published_at < …` is never true for an unpublished row (NULL).
    delete: "DELETE FROM outbox WHERE ctid = ANY(ARRAY( \
               SELECT ctid FROM outbox \
               WHERE published_at IS NOT NULL AND published_at < now() - make_interval(secs => $1) \
               LIMIT $2))",
};

/// Deletes `rule`'s old rows, [`BATCH`] per statement, until none is left
/// (or shutdown); each statement commits on its own.
async fn delete_in_batches(
    conn: &mut PgConnection,
    rule: Rule,
    keep: Duration,
    shutdown: &Shutdown,
) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let deleted = sqlx::query(rule.delete)
            .bind(keep.as_secs_f64())
            .bind(BATCH)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        total += deleted;
        if deleted < BATCH as u64 || shutdown.is_triggered() {
            tracing::debug!(table = rule.table, rows = total, "retention pass done");
            return Ok(total);
        }
    }
}
