//! `events show`: one Stripe event's outcome, its order, and the body
//! Stripe sent (kept for RETENTION_DAYS).

use std::io::Write;

use serde::Serialize;
use sqlx::Connection;

use super::{ParkedLine, opt, parked_line, read_only};

#[derive(Debug, Serialize)]
pub struct EventStory {
    pub event_id: String,
    pub event_type: String,
    pub outcome: String,
    pub order_id: Option<String>,
    pub received_at: Option<String>,
    pub processed_at: String,
    pub parked: Option<ParkedLine>,
    /// The body as JSON when it is JSON (for `--json`).
    pub body: Option<serde_json::Value>,
    /// The raw body when it is not JSON, or not stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_raw: Option<String>,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    event_type: String,
    outcome: String,
    order_id: Option<String>,
    received_at: Option<String>,
    processed_at: String,
    body: Option<Vec<u8>>,
}

/// None when no such event was ever recorded (or its record has passed
/// RETENTION_DAYS).
pub async fn event_story(database_url: &str, event_id: &str) -> anyhow::Result<Option<EventStory>> {
    let mut conn = read_only(database_url).await?;
    let mut tx = conn.begin().await?;
    let row: Option<EventRow> = sqlx::query_as(concat!(
        "SELECT event_type, outcome, order_id, ",
        ts!("received_at"),
        " AS received_at, ",
        ts!("processed_at"),
        " AS processed_at, body FROM processed_events WHERE event_id = $1"
    ))
    .bind(event_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(EventRow {
        event_type,
        outcome,
        order_id,
        received_at,
        processed_at,
        body,
    }) = row
    else {
        return Ok(None);
    };
    let parked: Option<ParkedLine> = sqlx::query_as(concat!(
        "SELECT event_id, event_type, payment_intent_id, ",
        ts!("parked_at"),
        " AS parked_at, ",
        ts!("expired_at"),
        " AS expired_at FROM parked_events WHERE event_id = $1"
    ))
    .bind(event_id)
    .fetch_optional(&mut *tx)
    .await?;
    // A parked event's body is also kept with it (and was before bodies
    // were stored with the dedup record).
    let body = match body {
        Some(b) => Some(b),
        None if parked.is_some() => {
            sqlx::query_scalar("SELECT body FROM parked_events WHERE event_id = $1")
                .bind(event_id)
                .fetch_optional(&mut *tx)
                .await?
        }
        None => None,
    };
    tx.rollback().await.ok();
    let (json, raw) = match body {
        Some(bytes) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(v) => (Some(v), None),
            Err(_) => (None, Some(String::from_utf8_lossy(&bytes).into_owned())),
        },
        None => (None, None),
    };
    Ok(Some(EventStory {
        event_id: event_id.to_owned(),
        event_type,
        outcome,
        order_id,
        received_at,
        processed_at,
        parked,
        body: json,
        body_raw: raw,
    }))
}

pub fn print_event(e: &EventStory, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "event {}", e.event_id)?;
    writeln!(out, "  type:       {}", e.event_type)?;
    writeln!(out, "  outcome:    {}", e.outcome)?;
    writeln!(out, "  order:      {}", opt(&e.order_id))?;
    writeln!(out, "  received:   {}", opt(&e.received_at))?;
    writeln!(out, "  processed:  {}", e.processed_at)?;
    if let Some(p) = &e.parked {
        writeln!(out, "  parked:     {}", parked_line(p))?;
    }
    writeln!(out, "\nbody:")?;
    match (&e.body, &e.body_raw) {
        (Some(json), _) => {
            let pretty = serde_json::to_string_pretty(json).unwrap_or_default();
            writeln!(out, "{pretty}")?
        }
        (None, Some(raw)) => writeln!(out, "(not JSON; raw)\n{raw}")?,
        (None, None) => writeln!(out, "(not stored: processed before event bodies were kept)")?,
    }
    Ok(())
}
