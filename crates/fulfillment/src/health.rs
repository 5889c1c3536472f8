//! Liveness of the database as the workers see it, and the periodic probes
//! that feed readiness and the operator's gauges (outbox backlog, parked
//! events, messages waiting for line items).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use sqlx::PgPool;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::broker::BrokerLink;
use crate::metrics as m;
use crate::shutdown::Shutdown;
use crate::topology::{DEAD_LETTER_QUEUE, WORK_QUEUE};

/// Shared "is the database answering" flag. Handlers that hit a connection
/// error mark it down and wait here instead of failing the event.
#[derive(Clone)]
pub struct DbHealth {
    up: Arc<AtomicBool>,
    changed: Arc<Notify>,
}

impl Default for DbHealth {
    fn default() -> Self {
        Self::new()
    }
}

impl DbHealth {
    pub fn new() -> DbHealth {
        DbHealth {
            up: Arc::new(AtomicBool::new(false)),
            changed: Arc::new(Notify::new()),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn set(&self, up: bool) {
        let was = self.up.swap(up, Ordering::Relaxed);
        metrics::gauge!(m::DATABASE_UP).set(if up { 1.0 } else { 0.0 });
        if was != up {
            if up {
                info!("database reachable");
            } else {
                warn!("database unreachable; processing paused until it answers");
            }
            self.changed.notify_waiters();
        }
    }

    pub async fn wait_up(&self) {
        while !self.is_up() {
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}

const PROBE_WHEN_UP: Duration = Duration::from_secs(5);
const PROBE_WHEN_DOWN: Duration = Duration::from_millis(500);

/// Probes the database until shutdown; also refreshes the outbox gauges.
pub async fn watch_database(pool: PgPool, health: DbHealth, shutdown: Shutdown) {
    loop {
        let probe = tokio::time::timeout(Duration::from_secs(3), outbox_backlog(&pool)).await;
        match probe {
            Ok(Ok((pending, oldest))) => {
                health.set(true);
                metrics::gauge!(m::OUTBOX_PENDING).set(pending as f64);
                metrics::gauge!(m::OUTBOX_OLDEST_PENDING_SECONDS).set(oldest);
                if let Ok(Ok((live, expired))) =
                    tokio::time::timeout(Duration::from_secs(3), parked_counts(&pool)).await
                {
                    metrics::gauge!(m::PARKED_EVENTS).set(live as f64);
                    metrics::gauge!(m::PARKED_EVENTS_EXPIRED).set(expired as f64);
                }
                if let Ok(Ok((open, next_due))) =
                    tokio::time::timeout(Duration::from_secs(3), open_disputes(&pool)).await
                {
                    metrics::gauge!(m::DISPUTES_OPEN).set(open as f64);
                    metrics::gauge!(m::DISPUTES_NEXT_DUE).set(next_due);
                }
                let line_items = crate::line_items::report_backlog(&pool);
                let _ = tokio::time::timeout(Duration::from_secs(3), line_items).await;
            }
            _ => health.set(false),
        }
        let pause = if health.is_up() {
            PROBE_WHEN_UP
        } else {
            PROBE_WHEN_DOWN
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// Every unpublished message, and the age of the oldest one ready to go:
/// a message waiting for its line items is the enrichment job's delay (its
/// own gauges and alert), not the relay's.
async fn outbox_backlog(pool: &PgPool) -> Result<(i64, f64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - \
         min(created_at) FILTER (WHERE NOT awaiting_line_items))::float8, 0) \
         FROM outbox WHERE published_at IS NULL",
    )
    .fetch_one(pool)
    .await
}

/// Parked events still waiting for their session, and those given up after
/// PARKED_TTL (kept, flagged, until a session or an operator resolves them).
async fn parked_counts(pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE expired_at IS NULL), \
                count(*) FILTER (WHERE expired_at IS NOT NULL) FROM parked_events",
    )
    .fetch_one(pool)
    .await
}

/// Open disputes, and the earliest evidence deadline among them still ahead
/// (Unix seconds, 0 for none): what `FulfillmentDisputeEvidenceDueSoon` watches.
async fn open_disputes(pool: &PgPool) -> Result<(i64, f64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM min(evidence_due_by)                 FILTER (WHERE evidence_due_by > now()))::float8, 0)          FROM order_disputes WHERE status = 'open'",
    )
    .fetch_one(pool)
    .await
}

/// Reads the work queue's depth from the broker, and the dead letters an
/// operator has to look at: rows in `dead_letters` plus messages still in
/// the DLQ (moved into the table within moments while a worker runs).
pub async fn watch_queues(link: BrokerLink, pool: PgPool, shutdown: Shutdown) {
    loop {
        let channel = tokio::select! {
            c = link.wait_up() => c,
            _ = shutdown.wait() => return,
        };
        if let Some(n) = queue_depth(&channel, WORK_QUEUE).await {
            metrics::gauge!(m::WORK_QUEUE_DEPTH).set(f64::from(n));
        }
        // Only a complete answer is shown: half of it would make the DLQ
        // look emptier than it is (and stop its alerts).
        let stored =
            tokio::time::timeout(Duration::from_secs(3), crate::dead_letters::count(&pool));
        if let (Some(queued), Ok(Ok(stored))) =
            (queue_depth(&channel, DEAD_LETTER_QUEUE).await, stored.await)
        {
            metrics::gauge!(m::DLQ_DEPTH).set(f64::from(queued) + stored as f64);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// Messages ready in `queue`, by passive declare (touches no message).
async fn queue_depth(channel: &lapin::Channel, queue: &str) -> Option<u32> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .ok()
        .map(|q| q.message_count())
}
