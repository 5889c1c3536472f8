//! Applying one event in one PostgreSQL transaction: dedup record, order
//! row, history, PaymentIntent link, parked events and outbox commit or
//! roll back together. The decisions are `fulfillment_core`'s; this module
//! only loads and stores, in the same steps as `fulfillment_core::Model`.
//!
//! Several events may share one transaction (a batch), each behind a
//! savepoint, to pay for one commit (one fsync) per batch instead of one per
//! event; exactly-once is per event either way.
//!
//! Concurrency: deliveries of the same event serialise on the
//! `processed_events` primary key; events of the same order on a
//! transaction-scoped advisory lock of the order. The PaymentIntent's lock
//! closes the race between a PaymentIntent event that finds no order (and
//! parks) and the session that links it. `process_batch` says in which
//! order locks are taken.

use std::collections::HashSet;

use fulfillment_core::{Order, OrderEvent, OrderStatus, Parsed, Transition, apply, parse_event};
use sqlx::{PgConnection, PgPool, Row};
use time::OffsetDateTime;

/// What processing did; the label is the metric's `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Stale,
    Duplicate,
    /// Parked: a PaymentIntent event naming no order we know yet.
    Unmatched,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Stale => "stale",
            Outcome::Duplicate => "duplicate",
            Outcome::Unmatched => "unmatched",
        }
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub transitions: Vec<Transition>,
    /// Parked events applied because this event linked their PaymentIntent.
    pub released: usize,
}

/// What became of one event of a batch: its outcome, or the error that
/// rolled back its part alone (its dedup record too, so it can be retried).
pub type EventResult = Result<(Outcome, Report), sqlx::Error>;

/// Applies `events` (with their raw bodies) in one transaction, in the given
/// order. An error that condemns the whole transaction (the database is
/// unavailable, a deadlock) is the outer `Err`, and nothing was committed;
/// any other error is confined to its event by a savepoint.
///
/// Deadlock freedom: dedup records are claimed in event id order, then the
/// advisory locks every event needs up front are taken in lock-key order, so
/// concurrent batches acquire their resources in one global order. The only
/// locks taken later are those of orders found through a PaymentIntent link;
/// a rare deadlock there is detected by PostgreSQL and the caller retries.
pub async fn process_batch(
    pool: &PgPool,
    events: &[(&OrderEvent, &[u8])],
) -> Result<Vec<EventResult>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let claimed = claim_events(&mut tx, events).await?;
    lock_up_front(&mut tx, events, &claimed).await?;
    let mut results = Vec::with_capacity(events.len());
    let mut first_seen = HashSet::new();
    let mut notify = false;
    for (event, body) in events {
        // Processed before, or a second copy inside this batch.
        if !claimed.contains(&event.id) || !first_seen.insert(event.id.as_str()) {
            results.push(Ok((Outcome::Duplicate, Report::default())));
            continue;
        }
        sqlx::query("SAVEPOINT event").execute(&mut *tx).await?;
        match apply_claimed(&mut tx, event, body).await {
            Ok(done) => {
                sqlx::query("RELEASE SAVEPOINT event")
                    .execute(&mut *tx)
                    .await?;
                notify |= !done.1.transitions.is_empty();
                results.push(Ok(done));
            }
            Err(e) if crate::db::is_transient(&e) => return Err(e),
            Err(e) => {
                sqlx::query("ROLLBACK TO SAVEPOINT event")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM processed_events WHERE event_id = $1")
                    .bind(&event.id)
                    .execute(&mut *tx)
                    .await?;
                results.push(Err(e));
            }
        }
    }
    if notify {
        // Wakes the outbox relay once this transaction commits.
        sqlx::query("SELECT pg_notify('outbox', '')")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(results)
}

/// One event in its own transaction.
pub async fn process(pool: &PgPool, event: &OrderEvent, body: &[u8]) -> EventResult {
    let mut results = process_batch(pool, &[(event, body)]).await?;
    results.pop().expect("one result per event")
}

/// Everything after the dedup record: resolve the order, park or apply, link.
async fn apply_claimed(tx: &mut PgConnection, event: &OrderEvent, body: &[u8]) -> EventResult {
    let mut report = Report::default();
    let payment_intent = event.kind.payment_intent_id();
    let order_id = match event.order_id() {
        Some(id) => Some(id.to_owned()),
        None => match payment_intent {
            Some(pi) => linked_order(tx, pi).await?,
            None => None,
        },
    };
    let Some(order_id) = order_id else {
        park(tx, event, body).await?;
        record_outcome(tx, &event.id, Outcome::Unmatched, None).await?;
        return Ok((Outcome::Unmatched, report));
    };
    // Held already when the event named its order; found through a link, not yet.
    lock(tx, "order", &order_id).await?;
    let now = OffsetDateTime::now_utc();
    let outcome = apply_and_store(tx, &order_id, event, now, &mut report).await?;
    if let (Some(pi), Some(_)) = (payment_intent, event.kind.session()) {
        link_and_release(tx, pi, &order_id, now, &mut report).await?;
    }
    record_outcome(tx, &event.id, outcome, Some(&order_id)).await?;
    Ok((outcome, report))
}

/// Inserts the dedup records in id order; returns the ids claimed now. A
/// concurrent copy of an event blocks here until the first commits or rolls
/// back.
async fn claim_events(
    tx: &mut PgConnection,
    events: &[(&OrderEvent, &[u8])],
) -> Result<HashSet<String>, sqlx::Error> {
    let mut unique: Vec<(&str, &str)> = events
        .iter()
        .map(|(e, _)| (e.id.as_str(), e.event_type.as_str()))
        .collect();
    unique.sort_unstable();
    unique.dedup_by_key(|(id, _)| *id);
    let (ids, types): (Vec<&str>, Vec<&str>) = unique.into_iter().unzip();
    let claimed: Vec<String> = sqlx::query_scalar(
        "INSERT INTO processed_events (event_id, event_type, outcome) \
         SELECT id, kind, 'processing' FROM unnest($1::text[], $2::text[]) AS e(id, kind) ORDER BY id \
         ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
    )
    .bind(&ids)
    .bind(&types)
    .fetch_all(&mut *tx)
    .await?;
    Ok(claimed.into_iter().collect())
}

/// Takes the advisory locks of every claimed event's PaymentIntent and named
/// order, in the order of the lock keys themselves.
async fn lock_up_front(
    tx: &mut PgConnection,
    events: &[(&OrderEvent, &[u8])],
    claimed: &HashSet<String>,
) -> Result<(), sqlx::Error> {
    let mut keys = Vec::new();
    for (event, _) in events.iter().filter(|(e, _)| claimed.contains(&e.id)) {
        if let Some(pi) = event.kind.payment_intent_id() {
            keys.push(lock_key("payment_intent", pi));
        }
        if let Some(order) = event.order_id() {
            keys.push(lock_key("order", order));
        }
    }
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT pg_advisory_xact_lock(h) FROM \
         (SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest($1::text[]) AS k ORDER BY h) AS ordered",
    )
    .bind(&keys)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn lock_key(kind: &str, key: &str) -> String {
    format!("{kind}:{key}")
}

async fn record_outcome(
    tx: &mut PgConnection,
    event_id: &str,
    outcome: Outcome,
    order_id: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE processed_events SET outcome = $2, order_id = $3, processed_at = now() WHERE event_id = $1")
        .bind(event_id)
        .bind(outcome.label())
        .bind(order_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// A transaction-scoped advisory lock on `kind:key`. Taking one this
/// transaction already holds is harmless (the locks stack).
async fn lock(tx: &mut PgConnection, kind: &str, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(lock_key(kind, key))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn linked_order(
    tx: &mut PgConnection,
    payment_intent_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT order_id FROM payment_intent_links WHERE payment_intent_id = $1")
        .bind(payment_intent_id)
        .fetch_optional(&mut *tx)
        .await
}

async fn park(tx: &mut PgConnection, event: &OrderEvent, body: &[u8]) -> Result<(), sqlx::Error> {
    let pi = event
        .kind
        .payment_intent_id()
        .expect("only PaymentIntent events can lack an order");
    sqlx::query(
        "INSERT INTO parked_events (event_id, payment_intent_id, event_type, body) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&event.id)
    .bind(pi)
    .bind(&event.event_type)
    .bind(body)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Loads the order, lets the state machine decide, stores the result, and
/// on a transition appends history and the outbox message.
async fn apply_and_store(
    tx: &mut PgConnection,
    order_id: &str,
    event: &OrderEvent,
    now: OffsetDateTime,
    report: &mut Report,
) -> Result<Outcome, sqlx::Error> {
    let current = load_order(tx, order_id).await?;
    let applied = apply(current, order_id, event, now);
    store_order(tx, &applied.order).await?;
    let (Some(transition), Some(message)) = (applied.decision.transition(), applied.message) else {
        return Ok(Outcome::Stale);
    };
    sqlx::query("INSERT INTO order_transitions (order_id, from_status, to_status, event_id) VALUES ($1, $2, $3, $4)")
        .bind(order_id)
        .bind(transition.from.map(OrderStatus::as_str))
        .bind(transition.to.as_str())
        .bind(&event.id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO outbox (message_id, routing_key, body) VALUES ($1, $2, $3) \
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(&message.message_id)
    .bind(message.routing_key())
    .bind(message.to_json())
    .execute(&mut *tx)
    .await?;
    report.transitions.push(transition);
    Ok(Outcome::Applied)
}

/// Records which order the session's PaymentIntent belongs to (first link
/// wins) and applies the PaymentIntent events that were waiting for it.
async fn link_and_release(
    tx: &mut PgConnection,
    payment_intent_id: &str,
    order_id: &str,
    now: OffsetDateTime,
    report: &mut Report,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO payment_intent_links (payment_intent_id, order_id) VALUES ($1, $2) \
         ON CONFLICT (payment_intent_id) DO NOTHING",
    )
    .bind(payment_intent_id)
    .bind(order_id)
    .execute(&mut *tx)
    .await?;
    let owner = linked_order(tx, payment_intent_id)
        .await?
        .unwrap_or_else(|| order_id.to_owned());
    let parked = sqlx::query(
        "WITH released AS (DELETE FROM parked_events WHERE payment_intent_id = $1 \
         RETURNING event_id, body, parked_at) SELECT event_id, body FROM released ORDER BY parked_at, event_id",
    )
    .bind(payment_intent_id)
    .fetch_all(&mut *tx)
    .await?;
    if parked.is_empty() {
        return Ok(());
    }
    if owner != order_id {
        lock(tx, "order", &owner).await?;
    }
    for row in parked {
        let body: Vec<u8> = row.get("body");
        // It parsed when it was parked, with the same code: it parses now.
        let Ok(Parsed::Handled(event)) = parse_event(&body) else {
            continue;
        };
        let outcome = apply_and_store(tx, &owner, &event, now, report).await?;
        record_outcome(tx, &event.id, outcome, Some(&owner)).await?;
        report.released += 1;
    }
    Ok(())
}

async fn load_order(tx: &mut PgConnection, order_id: &str) -> Result<Option<Order>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT status, checkout_session_id, payment_intent_id, amount_total, currency, customer_email, livemode \
         FROM orders WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let status: String = row.get("status");
    let status = status
        .parse::<OrderStatus>()
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(Some(Order {
        order_id: order_id.to_owned(),
        status,
        checkout_session_id: row.get("checkout_session_id"),
        payment_intent_id: row.get("payment_intent_id"),
        amount_total: row.get("amount_total"),
        currency: row.get("currency"),
        customer_email: row.get("customer_email"),
        livemode: row.get("livemode"),
    }))
}

async fn store_order(tx: &mut PgConnection, order: &Order) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO orders (order_id, status, checkout_session_id, payment_intent_id, amount_total, currency, \
         customer_email, livemode) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, \
         checkout_session_id = EXCLUDED.checkout_session_id, payment_intent_id = EXCLUDED.payment_intent_id, \
         amount_total = EXCLUDED.amount_total, currency = EXCLUDED.currency, \
         customer_email = EXCLUDED.customer_email, livemode = EXCLUDED.livemode, updated_at = now()",
    )
    .bind(&order.order_id)
    .bind(order.status.as_str())
    .bind(&order.checkout_session_id)
    .bind(&order.payment_intent_id)
    .bind(order.amount_total)
    .bind(&order.currency)
    .bind(&order.customer_email)
    .bind(order.livemode)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
