//! Applying events in PostgreSQL: dedup record, order row, history,
//! PaymentIntent link, parked events, outbox, and the payment records
//! (`store/payments.rs`: custom reports, distinct payments, anomalies) commit
//! or roll back together.
//! No rule lives here: what a batch loads and locks is `fulfillment_core::BatchPlan`,
//! what it does is `fulfillment_core::Ledger` (which `fulfillment_core::Model`
//! drives in memory); this module executes: claim → lock → load → ledger → write.
//!
//! A batch of events shares one transaction and costs a fixed number of
//! statements, not a number per event: everything the batch touches is read
//! up front, the ledger applies the events in memory in arrival order, and
//! each table is written with one set-based statement. Exactly-once stays per
//! event: the dedup record of every event is part of the same commit. If
//! anything fails, nothing of the batch is committed and the worker applies
//! its events one by one, so a bad event costs only itself.
//!
//! Concurrency: see `fulfillment_core::BatchPlan` for which locks a batch
//! takes and why. Here, the dedup records are claimed in event id order, and
//! each set of advisory locks is taken in one statement, in the order of the
//! keys' 64-bit hashes (one order all batches share).
//!
//! Parked events are loaded even when `upkeep` flagged them expired (`PARKED_TTL`):
//! a late session still releases them, and `processed_events` records the result.

use std::collections::{BTreeMap, BTreeSet, HashSet};

mod lifecycle;
mod line_items;
mod payments;
mod writes;

pub use line_items::{CHANNEL as LINE_ITEMS_CHANNEL, LineItems};

use fulfillment_core::{
    BatchPlan, Effects, Ledger, LockKey, Order, OrderEvent, OrderMessage, OrderStatus, ParkedEvent,
    Parsed, parse_event,
};
pub use fulfillment_core::{Outcome, Report};
use sqlx::{PgConnection, PgPool, Row};
use time::OffsetDateTime;
use writes::Writes;

pub type EventResult = Result<(Outcome, Report), sqlx::Error>;

/// Applies `events` (with their raw bodies) in one transaction, in the given
/// order; one result per event. On `Err` nothing was committed. `line_items`
/// says whether `order.paid` of a Checkout order waits for its line items.
pub async fn process_batch(
    pool: &PgPool,
    events: &[(&OrderEvent, &[u8])],
    line_items: LineItems,
) -> Result<Vec<(Outcome, Report)>, sqlx::Error> {
    let firsts = first_copies(events);
    let mut tx = pool.begin().await?;
    let claimed = claim_events(&mut tx, &firsts).await?;
    let is_new = |id: &str| claimed.contains(id);
    let plan = BatchPlan::new(events.iter().map(|(e, _)| *e), is_new);
    lock_all(&mut tx, &plan.first_locks()).await?;
    let links = load_links(&mut tx, &plan.payment_intents()).await?;
    lock_all(&mut tx, &plan.link_locks(&links)).await?;
    let order_ids = plan.order_ids(&links);
    let orders = load_orders(&mut tx, &order_ids).await?;
    let order_payments = payments::load(&mut tx, &order_ids).await?;
    let parked = take_parked(&mut tx, &plan.linking_payment_intents()).await?;

    let mut ledger = Ledger::new(orders, links, parked).with_payments(order_payments);
    let mut effects = ledger.apply(events, is_new, OffsetDateTime::now_utc());
    let results = std::mem::take(&mut effects.results);
    write(&mut tx, &effects, ledger.parked(), &firsts, line_items).await?;
    tx.commit().await?;
    Ok(results)
}

/// One event in its own transaction.
pub async fn process(
    pool: &PgPool,
    event: &OrderEvent,
    body: &[u8],
    line_items: LineItems,
) -> EventResult {
    let mut results = process_batch(pool, &[(event, body)], line_items).await?;
    Ok(results.pop().expect("one result per event"))
}

/// The ledger's effects: one set-based write per table, all of them in one
/// statement (`writes.rs`); `parked` is what is still parked among the
/// events the batch loaded or parked.
async fn write(
    tx: &mut PgConnection,
    effects: &Effects,
    parked: &[ParkedEvent],
    firsts: &FirstCopies<'_>,
    line_items: LineItems,
) -> Result<(), sqlx::Error> {
    let mut w = Writes::default();
    write_orders(&mut w, &effects.orders);
    lifecycle::write_disputes(&mut w, &effects.orders);
    write_transitions(&mut w, effects);
    write_messages(&mut w, &effects.messages, line_items);
    write_links(&mut w, &effects.new_links);
    write_parked(&mut w, parked);
    payments::write(&mut w, effects);
    write_outcomes(&mut w, &effects.processed, firsts);
    w.execute(tx).await
}

fn write_transitions(w: &mut Writes, effects: &Effects) {
    let recorded = &effects.transitions;
    if recorded.is_empty() {
        return;
    }
    let order_ids: Vec<&str> = recorded.iter().map(|r| r.order_id.as_str()).collect();
    let from: Vec<Option<&str>> = recorded
        .iter()
        .map(|r| r.transition.from.map(OrderStatus::as_str))
        .collect();
    let to: Vec<&str> = recorded.iter().map(|r| r.transition.to.as_str()).collect();
    let event_ids: Vec<&str> = recorded.iter().map(|r| r.event_id.as_str()).collect();
    w.part(
        "INSERT INTO order_transitions (order_id, from_status, to_status, event_id) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])",
    )
    .bind(order_ids)
    .bind(from)
    .bind(to)
    .bind(event_ids);
}

fn write_messages(w: &mut Writes, messages: &[OrderMessage], line_items: LineItems) {
    if messages.is_empty() {
        return;
    }
    let ids: Vec<&str> = messages.iter().map(|m| m.message_id.as_str()).collect();
    let keys: Vec<&str> = messages.iter().map(|m| m.routing_key()).collect();
    let bodies: Vec<Vec<u8>> = messages.iter().map(OrderMessage::to_json).collect();
    let orders: Vec<&str> = messages.iter().map(|m| m.order_id.as_str()).collect();
    let waiting: Vec<bool> = messages.iter().map(|m| line_items.waits(m)).collect();
    w.part(
        "INSERT INTO outbox (message_id, routing_key, body, order_id, awaiting_line_items) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::bool[]) \
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(ids)
    .bind(keys)
    .bind(bodies)
    .bind(orders)
    .bind(waiting);
    line_items::write_jobs(w, messages, line_items);
    // Wakes the outbox relay once this transaction commits.
    w.notify("outbox");
}

fn write_links(w: &mut Writes, links: &[(String, String)]) {
    if links.is_empty() {
        return;
    }
    let (pis, orders): (Vec<&str>, Vec<&str>) =
        links.iter().map(|(p, o)| (p.as_str(), o.as_str())).unzip();
    w.part(
        "INSERT INTO payment_intent_links (payment_intent_id, order_id) \
         SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT (payment_intent_id) DO NOTHING",
    )
    .bind(pis)
    .bind(orders);
}

fn write_parked(w: &mut Writes, parked: &[ParkedEvent]) {
    if parked.is_empty() {
        return;
    }
    let ids: Vec<&str> = parked.iter().map(|p| p.event.id.as_str()).collect();
    let pis: Vec<&str> = parked.iter().map(ParkedEvent::payment_intent_id).collect();
    let types: Vec<&str> = parked.iter().map(|p| p.event.event_type.as_str()).collect();
    let bodies: Vec<&[u8]> = parked.iter().map(|p| p.body.as_slice()).collect();
    w.part(
        "INSERT INTO parked_events (event_id, payment_intent_id, event_type, body) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(ids)
    .bind(pis)
    .bind(types)
    .bind(bodies);
}

/// The outcome of every event the batch decided, and the raw body of those
/// it claimed (an event released from parking has had its body since it
/// was parked, and keeps it).
fn write_outcomes(
    w: &mut Writes,
    processed: &BTreeMap<String, (Outcome, Option<String>)>,
    firsts: &FirstCopies<'_>,
) {
    if processed.is_empty() {
        return;
    }
    let ids: Vec<&str> = processed.keys().map(String::as_str).collect();
    let labels: Vec<&str> = processed.values().map(|(o, _)| o.label()).collect();
    let orders: Vec<Option<&str>> = processed.values().map(|(_, o)| o.as_deref()).collect();
    let raw: Vec<Option<&[u8]>> = ids
        .iter()
        .map(|id| firsts.get(id).map(|first| first.body))
        .collect();
    w.part(
        "UPDATE processed_events AS p SET outcome = u.outcome, order_id = u.order_id, \
         processed_at = now(), body = coalesce(u.body, p.body) \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) AS u(event_id, outcome, order_id, body) \
         WHERE p.event_id = u.event_id",
    )
    .bind(ids)
    .bind(labels)
    .bind(orders)
    .bind(raw);
}

/// The first copy of an event id in the batch (the one the ledger applies):
/// its type, and its raw body as Stripe sent it, for an operator to see
/// (`events show`).
struct FirstCopy<'a> {
    event_type: &'a str,
    body: &'a [u8],
}

/// Every event id of the batch, in id order, with its first copy.
type FirstCopies<'a> = BTreeMap<&'a str, FirstCopy<'a>>;

fn first_copies<'a>(events: &[(&'a OrderEvent, &'a [u8])]) -> FirstCopies<'a> {
    let mut firsts = FirstCopies::new();
    for (event, body) in events {
        firsts.entry(event.id.as_str()).or_insert(FirstCopy {
            event_type: event.event_type.as_str(),
            body,
        });
    }
    firsts
}

/// Inserts the dedup records in id order; returns the ids claimed now. A
/// concurrent copy of an event blocks here until the first commits or rolls
/// back. The record is narrow here (no body): the batch's one write
/// statement completes it, so the ~2 KiB body is written once, not twice.
async fn claim_events(
    tx: &mut PgConnection,
    firsts: &FirstCopies<'_>,
) -> Result<HashSet<String>, sqlx::Error> {
    let ids: Vec<&str> = firsts.keys().copied().collect();
    let types: Vec<&str> = firsts.values().map(|first| first.event_type).collect();
    let claimed: Vec<String> = sqlx::query_scalar(
        "INSERT INTO processed_events (event_id, event_type, outcome, received_at) \
         SELECT id, kind, 'processing', now() FROM unnest($1::text[], $2::text[]) AS e(id, kind) \
         ORDER BY id ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
    )
    .bind(&ids)
    .bind(&types)
    .fetch_all(&mut *tx)
    .await?;
    Ok(claimed.into_iter().collect())
}

/// Transaction-scoped advisory locks, taken in the order of the lock ids.
async fn lock_all(tx: &mut PgConnection, keys: &BTreeSet<LockKey>) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = keys.iter().map(LockKey::as_str).collect();
    sqlx::query(
        "SELECT pg_advisory_xact_lock(h) FROM \
         (SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest($1::text[]) AS k ORDER BY h) AS ordered",
    )
    .bind(&keys)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn load_links(
    tx: &mut PgConnection,
    pis: &[&str],
) -> Result<BTreeMap<String, String>, sqlx::Error> {
    if pis.is_empty() {
        return Ok(BTreeMap::new());
    }
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT payment_intent_id, order_id FROM payment_intent_links WHERE payment_intent_id = ANY($1)")
            .bind(pis)
            .fetch_all(&mut *tx)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Takes the parked events of these PaymentIntents out of the table, oldest
/// first; those not released by the batch are written back.
async fn take_parked(tx: &mut PgConnection, pis: &[&str]) -> Result<Vec<ParkedEvent>, sqlx::Error> {
    if pis.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "WITH taken AS (DELETE FROM parked_events WHERE payment_intent_id = ANY($1) \
         RETURNING event_id, payment_intent_id, body, parked_at) \
         SELECT body FROM taken ORDER BY parked_at, event_id",
    )
    .bind(pis)
    .fetch_all(&mut *tx)
    .await?;
    let mut parked = Vec::with_capacity(rows.len());
    for row in rows {
        let body: Vec<u8> = row.get("body");
        // It parsed when it was parked, with the same code: it parses now.
        if let Ok(Parsed::Handled(event)) = parse_event(&body) {
            parked.push(ParkedEvent { event, body });
        }
    }
    Ok(parked)
}

async fn load_orders(
    tx: &mut PgConnection,
    ids: &[&str],
) -> Result<BTreeMap<String, Order>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let rows = sqlx::query(&format!(
        "SELECT o.order_id, o.status, o.checkout_session_id, o.payment_intent_id, o.amount_total, \
         o.currency, o.customer_email, o.livemode, o.account, {} FROM orders o \
         WHERE o.order_id = ANY($1)",
        lifecycle::COLUMNS
    ))
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut orders = BTreeMap::new();
    for row in rows {
        let status: String = row.get("status");
        let order = Order {
            order_id: row.get("order_id"),
            status: status
                .parse::<OrderStatus>()
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            checkout_session_id: row.get("checkout_session_id"),
            payment_intent_id: row.get("payment_intent_id"),
            amount_total: row.get("amount_total"),
            currency: row.get("currency"),
            customer_email: row.get("customer_email"),
            livemode: row.get("livemode"),
            lifecycle: lifecycle::from_row(&row)?,
            account: row.get("account"),
        };
        orders.insert(order.order_id.clone(), order);
    }
    Ok(orders)
}

/// Every order the batch touched, whole: its status and details, and its
/// lifecycle columns (`lifecycle::bind_columns`, `$10` to `$18`), in one
/// upsert. One part per table: the lifecycle may not be a second write of
/// the same rows in the same statement (`writes.rs`).
fn write_orders(w: &mut Writes, orders: &[Order]) {
    if orders.is_empty() {
        return;
    }
    let ids: Vec<&str> = orders.iter().map(|o| o.order_id.as_str()).collect();
    let statuses: Vec<&str> = orders.iter().map(|o| o.status.as_str()).collect();
    let sessions: Vec<Option<&str>> = orders
        .iter()
        .map(|o| o.checkout_session_id.as_deref())
        .collect();
    let intents: Vec<Option<&str>> = orders
        .iter()
        .map(|o| o.payment_intent_id.as_deref())
        .collect();
    let amounts: Vec<Option<i64>> = orders.iter().map(|o| o.amount_total).collect();
    let currencies: Vec<Option<&str>> = orders.iter().map(|o| o.currency.as_deref()).collect();
    let emails: Vec<Option<&str>> = orders.iter().map(|o| o.customer_email.as_deref()).collect();
    let livemodes: Vec<bool> = orders.iter().map(|o| o.livemode).collect();
    let accounts: Vec<Option<&str>> = orders.iter().map(|o| o.account.as_deref()).collect();
    w.part(
        "INSERT INTO orders (order_id, status, checkout_session_id, payment_intent_id, amount_total, currency, \
         customer_email, livemode, account, failed_attempts, last_failure_event_id, last_failure_created, \
         last_failure_payment_intent_id, last_failure_code, last_decline_code, last_failure_message, \
         amount_refunded, refund_status) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[], $7::text[], \
         $8::bool[], $9::text[], $10::int4[], $11::text[], $12::int8[], $13::text[], $14::text[], $15::text[], \
         $16::text[], $17::int8[], $18::text[]) \
         ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, \
         checkout_session_id = EXCLUDED.checkout_session_id, payment_intent_id = EXCLUDED.payment_intent_id, \
         amount_total = EXCLUDED.amount_total, currency = EXCLUDED.currency, \
         customer_email = EXCLUDED.customer_email, livemode = EXCLUDED.livemode, \
         account = EXCLUDED.account, failed_attempts = EXCLUDED.failed_attempts, \
         last_failure_event_id = EXCLUDED.last_failure_event_id, \
         last_failure_created = EXCLUDED.last_failure_created, \
         last_failure_payment_intent_id = EXCLUDED.last_failure_payment_intent_id, \
         last_failure_code = EXCLUDED.last_failure_code, last_decline_code = EXCLUDED.last_decline_code, \
         last_failure_message = EXCLUDED.last_failure_message, \
         amount_refunded = EXCLUDED.amount_refunded, refund_status = EXCLUDED.refund_status, \
         updated_at = now()",
    )
    .bind(ids)
    .bind(statuses)
    .bind(sessions)
    .bind(intents)
    .bind(amounts)
    .bind(currencies)
    .bind(emails)
    .bind(livemodes)
    .bind(accounts);
    lifecycle::bind_columns(w, orders);
}
