//! Applying one event in one PostgreSQL transaction: dedup record, order
//! row, history, PaymentIntent link, parked events and outbox commit or
//! roll back together. The decisions are `fulfillment_core`'s; this module
//! only loads and stores, in the same steps as `fulfillment_core::Model`.
//!
//! Concurrency: deliveries of the same event serialise on the
//! `processed_events` primary key; events of the same order on a
//! transaction-scoped advisory lock of the order, taken after the lock of the
//! PaymentIntent (always in that order, so two transactions cannot wait on
//! each other). The PaymentIntent lock closes the race between a PaymentIntent
//! event that finds no order (and parks) and the session that links it.

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

pub async fn process(
    pool: &PgPool,
    event: &OrderEvent,
    body: &[u8],
) -> Result<(Outcome, Report), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut report = Report::default();
    if !claim_event(&mut tx, event).await? {
        tx.rollback().await?;
        return Ok((Outcome::Duplicate, report));
    }
    let payment_intent = event.kind.payment_intent_id();
    if let Some(pi) = payment_intent {
        lock(&mut tx, "payment_intent", pi).await?;
    }
    let order_id = match event.order_id() {
        Some(id) => Some(id.to_owned()),
        None => match payment_intent {
            Some(pi) => linked_order(&mut tx, pi).await?,
            None => None,
        },
    };
    let Some(order_id) = order_id else {
        park(&mut tx, event, body).await?;
        record_outcome(&mut tx, &event.id, Outcome::Unmatched, None).await?;
        tx.commit().await?;
        return Ok((Outcome::Unmatched, report));
    };
    lock(&mut tx, "order", &order_id).await?;
    let now = OffsetDateTime::now_utc();
    let outcome = apply_and_store(&mut tx, &order_id, event, now, &mut report).await?;
    if let (Some(pi), Some(_)) = (payment_intent, event.kind.session()) {
        link_and_release(&mut tx, pi, &order_id, now, &mut report).await?;
    }
    record_outcome(&mut tx, &event.id, outcome, Some(&order_id)).await?;
    if !report.transitions.is_empty() {
        // Wakes the outbox relay once this transaction commits.
        sqlx::query("SELECT pg_notify('outbox', '')")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok((outcome, report))
}

/// Inserts the dedup record; false if the event was already taken in. A
/// concurrent duplicate blocks here until the first commits or rolls back.
async fn claim_event(tx: &mut PgConnection, event: &OrderEvent) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO processed_events (event_id, event_type, outcome) VALUES ($1, $2, 'processing') \
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&event.id)
    .bind(&event.event_type)
    .execute(&mut *tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
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

/// A transaction-scoped advisory lock on `kind:key`.
async fn lock(tx: &mut PgConnection, kind: &str, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("{kind}:{key}"))
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
