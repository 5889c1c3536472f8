//! The outbox relay: publishes committed outbox rows to the `fulfillment`
//! exchange with confirms, then marks them sent.
//!
//! Only rows ready to go are claimed: an `order.paid` waiting for its line
//! items (`awaiting_line_items`) is left to the enrichment job
//! (`line_items.rs`), which releases it.
//!
//! Rows are claimed with `FOR UPDATE SKIP LOCKED` inside a transaction that
//! stays open across the publish, so several relays share the work and a
//! relay that dies mid-batch releases its rows to the next one. A crash
//! between confirm and commit republishes the row: with the same
//! `message_id`, which downstream consumers deduplicate on.

use std::time::Duration;

use futures_util::future::join_all;
use lapin::BasicProperties;
use lapin::types::ShortString;
use sqlx::{PgPool, Row};
use tracing::{debug, warn};

use crate::broker::{Outgoing, Publisher};
use crate::metrics as m;
use crate::shutdown::Shutdown;
use crate::topology::FULFILLMENT_EXCHANGE;
use crate::wakeup::Wakeup;

pub struct Relay {
    pub pool: PgPool,
    pub publisher: Publisher,
    pub batch_size: i64,
}

/// How long an idle relay sleeps when no notification arrives: the bound on
/// latency if a NOTIFY is lost (e.g. while the listener reconnects).
const IDLE_POLL: Duration = Duration::from_secs(1);

impl Relay {
    pub async fn run(self, shutdown: Shutdown) {
        let mut wakeup = Wakeup::new("outbox");
        while !shutdown.is_triggered() {
            match self.publish_batch().await {
                Ok(n) if n as i64 == self.batch_size => continue,
                Ok(_) => wakeup.wait(&self.pool, IDLE_POLL, &shutdown).await,
                Err(e) => {
                    warn!(error = %e, "outbox relay batch failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                        _ = shutdown.wait() => {}
                    }
                }
            }
        }
    }

    /// Publishes up to one batch; returns how many rows it claimed.
    async fn publish_batch(&self) -> anyhow::Result<usize> {
        if !self.publisher.link().is_up() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT id, message_id, routing_key, body FROM outbox \
             WHERE published_at IS NULL AND NOT awaiting_line_items \
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(self.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        let publishes = rows.iter().map(|row| {
            let message_id: &str = row.get("message_id");
            let routing_key: &str = row.get("routing_key");
            let body: &[u8] = row.get("body");
            self.publisher.publish(Outgoing {
                exchange: FULFILLMENT_EXCHANGE,
                routing_key,
                body,
                properties: properties(message_id, routing_key),
                mandatory: false,
            })
        });
        let results = join_all(publishes).await;
        let mut sent = Vec::new();
        let mut failed = Vec::new();
        let mut last_error = String::new();
        for (row, result) in rows.iter().zip(results) {
            let id: i64 = row.get("id");
            match result {
                Ok(()) => sent.push(id),
                Err(e) => {
                    last_error = e.to_string();
                    failed.push(id);
                }
            }
        }
        // clock_timestamp(), not now(): now() is when this transaction
        // began, before the publish; the row should say when the broker
        // confirmed.
        sqlx::query(
            "UPDATE outbox SET published_at = clock_timestamp(), attempts = attempts + 1 \
             WHERE id = ANY($1)",
        )
        .bind(&sent)
        .execute(&mut *tx)
        .await?;
        if !failed.is_empty() {
            warn!(failed = failed.len(), error = %last_error, "outbox messages not confirmed; will retry");
            sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = ANY($1)",
            )
            .bind(&failed)
            .bind(&last_error)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        metrics::counter!(m::OUTBOX_PUBLISHED_TOTAL).increment(sent.len() as u64);
        debug!(sent = sent.len(), "outbox batch published");
        Ok(rows.len())
    }
}

fn properties(message_id: &str, routing_key: &str) -> BasicProperties {
    let now = crate::clock::unix_now() as u64;
    // The core keeps every message id within the short-string limit (long
    // order ids are hashed), so the property always equals the body's. Only a
    // row written by a version before that could be longer: cut it rather
    // than block the outbox, and say so.
    let id = ShortString::try_new(message_id).unwrap_or_else(|_| {
        warn!(
            message_id = truncate(message_id, 64),
            "outbox row with a message id over 255 bytes (written by an older version); cutting it"
        );
        ShortString::from(truncate(message_id, fulfillment_core::MAX_MESSAGE_ID_BYTES))
    });
    BasicProperties::default()
        .with_message_id(id)
        .with_type(ShortString::from(routing_key))
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(2)
        .with_timestamp(now)
}

pub fn truncate(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
