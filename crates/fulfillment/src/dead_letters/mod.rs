//! The dead-letter table: the workers move every message of
//! `stripe.fulfillment.dlq` into PostgreSQL, and the `dlq` commands read,
//! replay and delete rows there.
//!
//! Why not read the queue: AMQP has no "peek". Listing by get + requeue
//! raised each message's delivery count and reordered the queue, and quorum
//! queues (RabbitMQ 4.x) drop a message past its delivery limit, so listing
//! could lose dead letters. A row is read with a SELECT, which changes
//! nothing, and its order (`id`) is fixed when it is stored.
//!
//! Moving is at-least-once: a message is acked only after its row is
//! committed; a redelivery (crash in between) finds its fingerprint taken
//! and is acked without a second row. This module is the table; `mover`
//! consumes the queue into it.

use lapin::BasicProperties;
use lapin::types::{FieldTable, ShortString};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::failure::headers;

/// Set by quorum queues on a redelivery; not part of what was dead-lettered.
const DELIVERY_COUNT: &str = "x-delivery-count";

/// One dead letter as stored: what an operator reads, and what replay sends.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub fingerprint: String,
    pub event_id: String,
    pub event_type: String,
    pub error: String,
    pub kind: String,
    pub attempts: u32,
    pub first_failure_at: Option<OffsetDateTime>,
    pub last_failure_at: Option<OffsetDateTime>,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

/// A stored dead letter with its row id and when it was stored.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub letter: DeadLetter,
    pub dead_lettered_at: OffsetDateTime,
}

impl DeadLetter {
    /// Reads the worker's failure headers. Missing ones (a message put in
    /// the DLQ by hand) become "-", never an error: every message is kept.
    pub fn from_message(properties: &BasicProperties, body: &[u8]) -> DeadLetter {
        let mut properties = properties.clone();
        if let Some(table) = properties.headers().clone() {
            let mut kept = FieldTable::default();
            for (k, v) in table.inner() {
                if k.as_str() != DELIVERY_COUNT {
                    kept.insert(k.clone(), v.clone());
                }
            }
            properties = properties.with_headers(kept);
        }
        let p = &properties;
        let text = |v: Option<&ShortString>| v.map_or_else(|| "-".to_owned(), |s| s.to_string());
        let when =
            |name| headers::text(p, name).and_then(|s| OffsetDateTime::parse(&s, &Rfc3339).ok());
        DeadLetter {
            fingerprint: fingerprint(p, body),
            event_id: text(p.message_id().as_ref()),
            event_type: text(p.kind().as_ref()),
            error: headers::text(p, headers::ERROR).unwrap_or_else(|| "-".into()),
            kind: headers::text(p, headers::ERROR_KIND).unwrap_or_else(|| "-".into()),
            attempts: headers::int(p, headers::ATTEMPTS),
            first_failure_at: when(headers::FIRST_FAILURE_AT),
            last_failure_at: when(headers::LAST_FAILURE_AT),
            body: body.to_vec(),
            properties,
        }
    }
}

/// sha256 over the properties (as stored) and the body. Each dead-lettering
/// stamps a new `x-last-failure-at` (nanoseconds) and `x-attempts`, so two
/// dead-letterings of one event differ while redeliveries of one message
/// do not.
fn fingerprint(properties: &BasicProperties, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    let props = serde_json::to_vec(properties).unwrap_or_default();
    hash.update((props.len() as u64).to_be_bytes());
    hash.update(&props);
    hash.update(body);
    hex::encode(hash.finalize())
}

/// PostgreSQL text cannot hold NUL, and a dead letter may be here precisely
/// because it has one: the readable columns get U+FFFD instead.
fn storable(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

/// Stores one dead letter; false if it was already stored.
pub async fn insert(pool: &PgPool, letter: &DeadLetter) -> Result<bool, sqlx::Error> {
    let properties =
        serde_json::to_vec(&letter.properties).expect("AMQP properties serialize to JSON");
    let done = sqlx::query(
        "INSERT INTO dead_letters (fingerprint, event_id, event_type, error, error_kind, \
         attempts, first_failure_at, last_failure_at, properties, body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (fingerprint) DO NOTHING",
    )
    .bind(&letter.fingerprint)
    .bind(storable(&letter.event_id))
    .bind(storable(&letter.event_type))
    .bind(storable(&letter.error))
    .bind(storable(&letter.kind))
    .bind(i32::try_from(letter.attempts).unwrap_or(i32::MAX))
    .bind(letter.first_failure_at)
    .bind(letter.last_failure_at)
    .bind(properties)
    .bind(&letter.body)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

const COLUMNS: &str = "id, fingerprint, event_id, event_type, error, error_kind, attempts, \
                       first_failure_at, last_failure_at, properties, body, dead_lettered_at";

type RawRow = (
    i64,
    String,
    String,
    String,
    String,
    String,
    i32,
    Option<OffsetDateTime>,
    Option<OffsetDateTime>,
    Vec<u8>,
    Vec<u8>,
    OffsetDateTime,
);

fn from_raw(r: RawRow) -> Row {
    let (
        id,
        fingerprint,
        event_id,
        event_type,
        error,
        kind,
        attempts,
        first,
        last,
        props,
        body,
        at,
    ) = r;
    Row {
        id,
        letter: DeadLetter {
            fingerprint,
            event_id,
            event_type,
            error,
            kind,
            attempts: attempts.max(0) as u32,
            first_failure_at: first,
            last_failure_at: last,
            // Written by `insert` from the same type; a row edited by hand
            // into something else still replays, with no properties.
            properties: serde_json::from_slice(&props).unwrap_or_default(),
            body,
        },
        dead_lettered_at: at,
    }
}

/// The oldest `limit` dead letters, in the order they were stored.
pub async fn list(pool: &PgPool, limit: i64) -> Result<Vec<Row>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM dead_letters ORDER BY id LIMIT $1");
    let rows: Vec<RawRow> = sqlx::query_as(&sql).bind(limit).fetch_all(pool).await?;
    Ok(rows.into_iter().map(from_raw).collect())
}

/// Every dead letter of these events (all when `event_ids` is None).
pub async fn by_events(
    pool: &PgPool,
    event_ids: Option<&[String]>,
) -> Result<Vec<Row>, sqlx::Error> {
    let rows: Vec<RawRow> = match event_ids {
        Some(ids) => {
            let sql =
                format!("SELECT {COLUMNS} FROM dead_letters WHERE event_id = ANY($1) ORDER BY id");
            sqlx::query_as(&sql).bind(ids).fetch_all(pool).await?
        }
        None => {
            let sql = format!("SELECT {COLUMNS} FROM dead_letters ORDER BY id");
            sqlx::query_as(&sql).fetch_all(pool).await?
        }
    };
    Ok(rows.into_iter().map(from_raw).collect())
}

pub async fn delete(pool: &PgPool, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM dead_letters WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn purge(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM dead_letters")
        .execute(pool)
        .await?
        .rows_affected())
}

pub async fn count(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(pool)
        .await
}

mod mover;

pub use mover::Mover;

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::AMQPValue;

    fn props(delivery_count: Option<i64>) -> BasicProperties {
        let mut table = FieldTable::default();
        table.insert(
            headers::LAST_FAILURE_AT.into(),
            AMQPValue::LongString("2026-11-23T21:00:00.123456789Z".into()),
        );
        table.insert(headers::ATTEMPTS.into(), AMQPValue::LongLongInt(1));
        if let Some(n) = delivery_count {
            table.insert(DELIVERY_COUNT.into(), AMQPValue::LongLongInt(n));
        }
        BasicProperties::default()
            .with_message_id("evt_\0nul".into())
            .with_headers(table)
    }

    #[test]
    fn a_redelivery_has_the_same_fingerprint() {
        let first = DeadLetter::from_message(&props(None), b"{}");
        let again = DeadLetter::from_message(&props(Some(3)), b"{}");
        assert_eq!(first, again);
        let other_body = DeadLetter::from_message(&props(None), b"{ }");
        assert_ne!(first.fingerprint, other_body.fingerprint);
    }

    #[test]
    fn properties_survive_the_round_trip_through_json() {
        let p = props(None);
        let back: BasicProperties =
            serde_json::from_slice(&serde_json::to_vec(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        assert_eq!(storable("evt_\0nul"), "evt_\u{FFFD}nul");
    }
}
