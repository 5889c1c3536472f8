//! End to end against `fulfillment serve`: POST → broker → worker → order
//! committed `paid` → outbox relay → `order.paid` confirmed by the broker.
//!
//! - Throughput: send `count` events closed loop, then wait until every
//!   order is `paid` and every outbox row is published. The time is from the
//!   first POST to the last `outbox.published_at`.
//! - Latency: open loop at a fixed rate. Each order's commit and publish
//!   times are read from the database afterwards and compared with the time
//!   its POST was *due*. `orders.created_at` is `now()` of the worker's
//!   transaction (its start: commit is that transaction's length later);
//!   `outbox.published_at` is the relay's, set after the broker confirmed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::PgPool;

use crate::events::Events;
use crate::http_load::{self, Mode};
use crate::report::Latency;

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub events: u64,
    /// First POST to the last order.paid confirmed.
    pub seconds: f64,
    pub events_per_sec: f64,
    /// The HTTP side alone: how fast events were accepted (they queue up
    /// in RabbitMQ when the workers are slower).
    pub http: http_load::Outcome,
}

#[derive(Debug, Clone, Serialize)]
pub struct OpenLoop {
    pub rate: f64,
    pub seconds: f64,
    pub http: http_load::Outcome,
    /// POST due → order row written (`orders.created_at`).
    pub to_commit: Latency,
    /// POST due → `order.paid` confirmed (`outbox.published_at`).
    pub to_order_paid: Latency,
}

/// How long the pipeline may take to finish after the last POST.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

pub async fn throughput(
    addr: SocketAddr,
    pool: &PgPool,
    events: Arc<Events>,
    count: u64,
    connections: usize,
    first_seq: u64,
) -> anyhow::Result<Throughput> {
    let before = done_counts(pool).await?;
    let spec = http_load::Spec {
        addr,
        connections,
        mode: Mode::Closed,
        count: Some(count),
        duration: None,
        warmup: Duration::ZERO,
        first_seq,
    };
    let http = http_load::run(spec, events).await;
    anyhow::ensure!(
        http.errors == 0,
        "{} of {count} POSTs failed; first: {:?}",
        http.errors,
        http.first_error
    );
    wait_until_done(pool, before + http.accepted_all).await?;
    let last_published: f64 =
        sqlx::query_scalar("SELECT extract(epoch FROM max(published_at))::float8 FROM outbox")
            .fetch_one(pool)
            .await?;
    let seconds = last_published - http.started_unix;
    Ok(Throughput {
        events: http.ok,
        seconds,
        events_per_sec: http.ok as f64 / seconds,
        http,
    })
}

pub async fn open_loop(
    addr: SocketAddr,
    pool: &PgPool,
    events: Arc<Events>,
    rate: f64,
    duration: Duration,
    connections: usize,
    first_seq: u64,
) -> anyhow::Result<OpenLoop> {
    let warmup = Duration::from_secs(1);
    let before = done_counts(pool).await?;
    let spec = http_load::Spec {
        addr,
        connections,
        mode: Mode::Open { rate },
        count: None,
        duration: Some(duration),
        warmup,
        first_seq,
    };
    let http = http_load::run(spec, events.clone()).await;
    wait_until_done(pool, before + http.accepted_all).await?;

    let rows: Vec<(String, f64, f64)> = sqlx::query_as(
        "SELECT o.order_id, extract(epoch FROM o.created_at)::float8, \
         extract(epoch FROM b.published_at)::float8 \
         FROM orders o JOIN outbox b ON b.message_id = o.order_id || '/paid' \
         WHERE o.created_at >= to_timestamp($1)",
    )
    .bind(http.started_unix - 1.0)
    .fetch_all(pool)
    .await?;
    let (mut to_commit, mut to_paid) = (Vec::new(), Vec::new());
    for (order_id, created, published) in rows {
        let Some(seq) = events.seq_of(&order_id) else {
            continue;
        };
        let Some(i) = seq.checked_sub(first_seq) else {
            continue;
        };
        // Request i was due at start + i / rate (see http_load).
        let due_offset = i as f64 / rate;
        if due_offset < warmup.as_secs_f64() {
            continue;
        }
        let due = http.started_unix + due_offset;
        to_commit.push(micros(created - due));
        to_paid.push(micros(published - due));
    }
    Ok(OpenLoop {
        rate,
        seconds: duration.as_secs_f64(),
        http,
        to_commit: Latency::from_micros(to_commit),
        to_order_paid: Latency::from_micros(to_paid),
    })
}

fn micros(seconds: f64) -> u64 {
    (seconds.max(0.0) * 1e6) as u64
}

/// Orders that are `paid` with their `order.paid` confirmed.
async fn done_counts(pool: &PgPool) -> anyhow::Result<u64> {
    let paid: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'paid'")
        .fetch_one(pool)
        .await?;
    let published: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL AND routing_key = 'order.paid'",
    )
    .fetch_one(pool)
    .await?;
    Ok(paid.min(published) as u64)
}

async fn wait_until_done(pool: &PgPool, expected: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let done = done_counts(pool).await?;
        if done >= expected {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {done} of {expected} orders paid and published after {DRAIN_TIMEOUT:?}"
        );
        // The counts scan the tables: poll gently, not to load PostgreSQL.
        // (The time measured comes from the rows, not from this loop.)
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
