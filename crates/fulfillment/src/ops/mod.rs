//! `fulfillment orders show` and `fulfillment events show`: the story of one
//! order or one event, read from PostgreSQL in one read-only transaction (a
//! consistent snapshot that can change nothing).

use anyhow::Context;
use serde::Serialize;
use sqlx::{Connection, PgConnection};

/// Timestamps as RFC 3339 UTC text, computed by the database.
macro_rules! ts {
    ($col:literal) => {
        concat!(
            "to_char(",
            $col,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
        )
    };
}

mod events;
mod line_items;
mod orders;
mod payments;

pub use events::{EventStory, event_story, print_event};
pub use line_items::{LineItemJob, LineItemLine, LineItemStory};
pub use orders::{
    DisputeLine, EventLine, MessageLine, OrderRow, OrderStory, TransitionLine, order_story,
    print_order,
};
pub use payments::{AnomalyLine, CustomPaymentLine, PaymentLine, PaymentStory};

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct ParkedLine {
    pub event_id: String,
    pub event_type: String,
    pub payment_intent_id: String,
    pub parked_at: String,
    /// Set once PARKED_TTL passed with no session claiming it.
    pub expired_at: Option<String>,
}

/// A connection whose transactions are read-only snapshots.
pub(super) async fn read_only(database_url: &str) -> anyhow::Result<PgConnection> {
    let options = crate::db::options(database_url)?;
    let mut conn = PgConnection::connect_with(&options)
        .await
        .context("connecting to the database (DATABASE_URL)")?;
    sqlx::query(
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
    )
    .execute(&mut conn)
    .await?;
    Ok(conn)
}

pub(super) fn opt(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

pub(super) fn parked_line(p: &ParkedLine) -> String {
    let expired = match &p.expired_at {
        Some(at) => format!("  EXPIRED {at} (PARKED_TTL passed, no session claimed it)"),
        None => String::new(),
    };
    format!(
        "{}  parked {}  {}  {}{expired}",
        p.event_id, p.parked_at, p.event_type, p.payment_intent_id
    )
}
