//! Applying events in PostgreSQL: dedup record, order row, history,
//! PaymentIntent link, parked events and outbox commit or roll back together.
//! The decisions are `fulfillment_core`'s; this module loads and stores, in
//! the same steps as `fulfillment_core::Model`.
//!
//! A batch of events shares one transaction and costs a fixed number of
//! statements, not a number per event: everything the batch touches is read
//! up front, the events are applied in memory in arrival order with the pure
//! state machine, and each table is written with one set-based statement.
//! Exactly-once stays per event: the dedup record of every event is part of
//! the same commit. If anything fails, nothing of the batch is committed and
//! the worker applies its events one by one, so a bad event costs only itself.
//!
//! Concurrency: deliveries of the same event serialise on the
//! `processed_events` primary key (claimed in event id order); events of the
//! same order on a transaction-scoped advisory lock of the order, and those
//! of the same PaymentIntent on one of the PaymentIntent. The PaymentIntent's
//! lock closes the race between a PaymentIntent event that finds no order
//! (and parks) and the session that links it. Locks known up front are taken
//! in lock-key order, so concurrent batches cannot deadlock on them; only
//! orders found through an existing PaymentIntent link are locked later, and
//! a rare deadlock there is detected by PostgreSQL and retried by the worker.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use fulfillment_core::{
    Order, OrderEvent, OrderMessage, OrderStatus, Parsed, Transition, apply, parse_event,
};
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

pub type EventResult = Result<(Outcome, Report), sqlx::Error>;

/// Applies `events` (with their raw bodies) in one transaction, in the given
/// order; one result per event. On `Err` nothing was committed.
pub async fn process_batch(
    pool: &PgPool,
    events: &[(&OrderEvent, &[u8])],
) -> Result<Vec<(Outcome, Report)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let claimed = claim_events(&mut tx, events).await?;
    // True for the copy of each event this batch applies: claimed now (not
    // processed before) and the first of its id in the batch.
    let mut first_seen = HashSet::new();
    let fresh: Vec<bool> = events
        .iter()
        .map(|(e, _)| claimed.contains(&e.id) && first_seen.insert(e.id.as_str()))
        .collect();
    let mine: Vec<(&OrderEvent, &[u8])> = events
        .iter()
        .zip(&fresh)
        .filter(|(_, fresh)| **fresh)
        .map(|(event, _)| *event)
        .collect();

    let mut locked = BTreeSet::new();
    for (event, _) in &mine {
        if let Some(pi) = event.kind.payment_intent_id() {
            locked.insert(lock_key("payment_intent", pi));
        }
        if let Some(order) = event.order_id() {
            locked.insert(lock_key("order", order));
        }
    }
    lock_all(&mut tx, &locked).await?;
    let pis: Vec<&str> = mine
        .iter()
        .filter_map(|(e, _)| e.kind.payment_intent_id())
        .collect();
    let links = load_links(&mut tx, &pis).await?;
    let late: BTreeSet<String> = links
        .values()
        .map(|order| lock_key("order", order))
        .filter(|key| !locked.contains(key))
        .collect();
    lock_all(&mut tx, &late).await?;

    let mut order_ids: Vec<&str> = mine.iter().filter_map(|(e, _)| e.order_id()).collect();
    order_ids.extend(links.values().map(String::as_str));
    let orders = load_orders(&mut tx, &order_ids).await?;
    let linking: Vec<&str> = mine
        .iter()
        .filter(|(e, _)| e.kind.session().is_some())
        .filter_map(|(e, _)| e.kind.payment_intent_id())
        .collect();
    let parked = take_parked(&mut tx, &linking).await?;

    let mut batch = Batch::new(orders, links, parked);
    let now = OffsetDateTime::now_utc();
    let results = events
        .iter()
        .zip(&fresh)
        .map(|((event, body), fresh)| {
            if *fresh {
                batch.handle(event, body, now)
            } else {
                // Processed before, or a second copy inside this batch.
                (Outcome::Duplicate, Report::default())
            }
        })
        .collect();
    batch.write(&mut tx).await?;
    tx.commit().await?;
    Ok(results)
}

/// One event in its own transaction.
pub async fn process(pool: &PgPool, event: &OrderEvent, body: &[u8]) -> EventResult {
    let mut results = process_batch(pool, &[(event, body)]).await?;
    Ok(results.pop().expect("one result per event"))
}

/// A parked PaymentIntent event, waiting for the session that links it.
struct ParkedEvent {
    event: OrderEvent,
    body: Vec<u8>,
    payment_intent_id: String,
}

/// The batch's working set: what it read, what it decided, what it will write.
struct Batch {
    orders: HashMap<String, Order>,
    changed: BTreeSet<String>,
    links: HashMap<String, String>,
    new_links: Vec<(String, String)>,
    parked: Vec<ParkedEvent>,
    transitions: Vec<(String, Transition, String)>,
    messages: Vec<OrderMessage>,
    /// Last outcome per event id (a parked event released in the same batch
    /// ends `applied` or `stale`, not `unmatched`).
    outcomes: BTreeMap<String, (Outcome, Option<String>)>,
}

impl Batch {
    fn new(
        orders: HashMap<String, Order>,
        links: HashMap<String, String>,
        parked: Vec<ParkedEvent>,
    ) -> Batch {
        Batch {
            orders,
            changed: BTreeSet::new(),
            links,
            new_links: Vec::new(),
            parked,
            transitions: Vec::new(),
            messages: Vec::new(),
            outcomes: BTreeMap::new(),
        }
    }

    /// The steps of `fulfillment_core::Model::handle`, on the working set.
    fn handle(
        &mut self,
        event: &OrderEvent,
        body: &[u8],
        now: OffsetDateTime,
    ) -> (Outcome, Report) {
        let mut report = Report::default();
        let payment_intent = event.kind.payment_intent_id();
        let order_id = event
            .order_id()
            .map(str::to_owned)
            .or_else(|| payment_intent.and_then(|pi| self.links.get(pi).cloned()));
        let Some(order_id) = order_id else {
            let pi = payment_intent.expect("only PaymentIntent events can lack an order");
            self.parked.push(ParkedEvent {
                event: event.clone(),
                body: body.to_vec(),
                payment_intent_id: pi.to_owned(),
            });
            self.outcomes
                .insert(event.id.clone(), (Outcome::Unmatched, None));
            return (Outcome::Unmatched, report);
        };
        let outcome = self.apply(&order_id, event, now, &mut report);
        self.outcomes
            .insert(event.id.clone(), (outcome, Some(order_id.clone())));
        if let (Some(pi), Some(_)) = (payment_intent, event.kind.session()) {
            self.link_and_release(pi, &order_id, now, &mut report);
        }
        (outcome, report)
    }

    fn apply(
        &mut self,
        order_id: &str,
        event: &OrderEvent,
        now: OffsetDateTime,
        report: &mut Report,
    ) -> Outcome {
        let current = self.orders.remove(order_id);
        let applied = apply(current, order_id, event, now);
        self.orders.insert(order_id.to_owned(), applied.order);
        self.changed.insert(order_id.to_owned());
        let (Some(transition), Some(message)) = (applied.decision.transition(), applied.message)
        else {
            return Outcome::Stale;
        };
        self.transitions
            .push((order_id.to_owned(), transition, event.id.clone()));
        self.messages.push(message);
        report.transitions.push(transition);
        Outcome::Applied
    }

    /// Records the session's PaymentIntent link (the first link wins) and
    /// applies the events parked for it to the linked order.
    fn link_and_release(
        &mut self,
        pi: &str,
        order_id: &str,
        now: OffsetDateTime,
        report: &mut Report,
    ) {
        if !self.links.contains_key(pi) {
            self.links.insert(pi.to_owned(), order_id.to_owned());
            self.new_links.push((pi.to_owned(), order_id.to_owned()));
        }
        let owner = self.links[pi].clone();
        let (released, still): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.payment_intent_id == pi);
        self.parked = still;
        for p in released {
            let outcome = self.apply(&owner, &p.event, now, report);
            self.outcomes
                .insert(p.event.id.clone(), (outcome, Some(owner.clone())));
            report.released += 1;
        }
    }

    /// One statement per table.
    async fn write(self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        let orders: Vec<&Order> = self.changed.iter().map(|id| &self.orders[id]).collect();
        store_orders(tx, &orders).await?;
        if !self.transitions.is_empty() {
            let order_ids: Vec<&str> = self
                .transitions
                .iter()
                .map(|(o, _, _)| o.as_str())
                .collect();
            let from: Vec<Option<&str>> = self
                .transitions
                .iter()
                .map(|(_, t, _)| t.from.map(OrderStatus::as_str))
                .collect();
            let to: Vec<&str> = self
                .transitions
                .iter()
                .map(|(_, t, _)| t.to.as_str())
                .collect();
            let event_ids: Vec<&str> = self
                .transitions
                .iter()
                .map(|(_, _, e)| e.as_str())
                .collect();
            sqlx::query(
                "INSERT INTO order_transitions (order_id, from_status, to_status, event_id) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])",
            )
            .bind(&order_ids)
            .bind(&from)
            .bind(&to)
            .bind(&event_ids)
            .execute(&mut *tx)
            .await?;
        }
        if !self.messages.is_empty() {
            let ids: Vec<&str> = self
                .messages
                .iter()
                .map(|m| m.message_id.as_str())
                .collect();
            let keys: Vec<&str> = self.messages.iter().map(|m| m.routing_key()).collect();
            let bodies: Vec<Vec<u8>> = self.messages.iter().map(OrderMessage::to_json).collect();
            let orders: Vec<&str> = self.messages.iter().map(|m| m.order_id.as_str()).collect();
            sqlx::query(
                "INSERT INTO outbox (message_id, routing_key, body, order_id) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[]) ON CONFLICT (message_id) DO NOTHING",
            )
            .bind(&ids)
            .bind(&keys)
            .bind(&bodies)
            .bind(&orders)
            .execute(&mut *tx)
            .await?;
            // Wakes the outbox relay once this transaction commits.
            sqlx::query("SELECT pg_notify('outbox', '')")
                .execute(&mut *tx)
                .await?;
        }
        if !self.new_links.is_empty() {
            let (pis, orders): (Vec<&str>, Vec<&str>) = self
                .new_links
                .iter()
                .map(|(p, o)| (p.as_str(), o.as_str()))
                .unzip();
            sqlx::query(
                "INSERT INTO payment_intent_links (payment_intent_id, order_id) \
                 SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT (payment_intent_id) DO NOTHING",
            )
            .bind(&pis)
            .bind(&orders)
            .execute(&mut *tx)
            .await?;
        }
        if !self.parked.is_empty() {
            let ids: Vec<&str> = self.parked.iter().map(|p| p.event.id.as_str()).collect();
            let pis: Vec<&str> = self
                .parked
                .iter()
                .map(|p| p.payment_intent_id.as_str())
                .collect();
            let types: Vec<&str> = self
                .parked
                .iter()
                .map(|p| p.event.event_type.as_str())
                .collect();
            let bodies: Vec<&[u8]> = self.parked.iter().map(|p| p.body.as_slice()).collect();
            sqlx::query(
                "INSERT INTO parked_events (event_id, payment_intent_id, event_type, body) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(&ids)
            .bind(&pis)
            .bind(&types)
            .bind(&bodies)
            .execute(&mut *tx)
            .await?;
        }
        if !self.outcomes.is_empty() {
            let ids: Vec<&str> = self.outcomes.keys().map(String::as_str).collect();
            let labels: Vec<&str> = self.outcomes.values().map(|(o, _)| o.label()).collect();
            let orders: Vec<Option<&str>> =
                self.outcomes.values().map(|(_, o)| o.as_deref()).collect();
            sqlx::query(
                "UPDATE processed_events AS p SET outcome = u.outcome, order_id = u.order_id, processed_at = now() \
                 FROM unnest($1::text[], $2::text[], $3::text[]) AS u(event_id, outcome, order_id) \
                 WHERE p.event_id = u.event_id",
            )
            .bind(&ids)
            .bind(&labels)
            .bind(&orders)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}

/// Inserts the dedup records in id order; returns the ids claimed now. A
/// concurrent copy of an event blocks here until the first commits or rolls
/// back.
async fn claim_events(
    tx: &mut PgConnection,
    events: &[(&OrderEvent, &[u8])],
) -> Result<HashSet<String>, sqlx::Error> {
    // The first copy of each id is the one the batch applies; its raw body
    // is stored with the claim, so an operator sees exactly what Stripe sent.
    let mut unique: Vec<(&str, &str, &[u8])> = events
        .iter()
        .map(|(e, body)| (e.id.as_str(), e.event_type.as_str(), *body))
        .collect();
    unique.sort_by_key(|(id, _, _)| *id);
    unique.dedup_by_key(|(id, _, _)| *id);
    let ids: Vec<&str> = unique.iter().map(|(id, _, _)| *id).collect();
    let types: Vec<&str> = unique.iter().map(|(_, kind, _)| *kind).collect();
    let bodies: Vec<&[u8]> = unique.iter().map(|(_, _, body)| *body).collect();
    let claimed: Vec<String> = sqlx::query_scalar(
        "INSERT INTO processed_events (event_id, event_type, outcome, body, received_at) \
         SELECT id, kind, 'processing', body, now() FROM unnest($1::text[], $2::text[], $3::bytea[]) AS e(id, kind, body) \
         ORDER BY id ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
    )
    .bind(&ids)
    .bind(&types)
    .bind(&bodies)
    .fetch_all(&mut *tx)
    .await?;
    Ok(claimed.into_iter().collect())
}

fn lock_key(kind: &str, key: &str) -> String {
    format!("{kind}:{key}")
}

/// Transaction-scoped advisory locks, taken in the order of the lock ids.
async fn lock_all(tx: &mut PgConnection, keys: &BTreeSet<String>) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
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
) -> Result<HashMap<String, String>, sqlx::Error> {
    if pis.is_empty() {
        return Ok(HashMap::new());
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
         SELECT payment_intent_id, body FROM taken ORDER BY parked_at, event_id",
    )
    .bind(pis)
    .fetch_all(&mut *tx)
    .await?;
    let mut parked = Vec::with_capacity(rows.len());
    for row in rows {
        let body: Vec<u8> = row.get("body");
        // It parsed when it was parked, with the same code: it parses now.
        if let Ok(Parsed::Handled(event)) = parse_event(&body) {
            parked.push(ParkedEvent {
                event,
                body,
                payment_intent_id: row.get("payment_intent_id"),
            });
        }
    }
    Ok(parked)
}

async fn load_orders(
    tx: &mut PgConnection,
    ids: &[&str],
) -> Result<HashMap<String, Order>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query(
        "SELECT order_id, status, checkout_session_id, payment_intent_id, amount_total, currency, \
         customer_email, livemode FROM orders WHERE order_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut orders = HashMap::with_capacity(rows.len());
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
        };
        orders.insert(order.order_id.clone(), order);
    }
    Ok(orders)
}

async fn store_orders(tx: &mut PgConnection, orders: &[&Order]) -> Result<(), sqlx::Error> {
    if orders.is_empty() {
        return Ok(());
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
    sqlx::query(
        "INSERT INTO orders (order_id, status, checkout_session_id, payment_intent_id, amount_total, currency, \
         customer_email, livemode) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[], $7::text[], $8::bool[]) \
         ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, \
         checkout_session_id = EXCLUDED.checkout_session_id, payment_intent_id = EXCLUDED.payment_intent_id, \
         amount_total = EXCLUDED.amount_total, currency = EXCLUDED.currency, \
         customer_email = EXCLUDED.customer_email, livemode = EXCLUDED.livemode, updated_at = now()",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&sessions)
    .bind(&intents)
    .bind(&amounts)
    .bind(&currencies)
    .bind(&emails)
    .bind(&livemodes)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
