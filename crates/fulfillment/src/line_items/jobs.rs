//! The jobs' SQL. Every statement is short and none spans a call to Stripe:
//! a claim is one statement, and closing a job is one small transaction.

use std::time::Duration;

use fulfillment_core::LineItem;
use fulfillment_core::line_items::{EnrichError, with_line_items};
use sqlx::{PgConnection, PgPool, Row};

/// A job this process claimed: its lease runs until the claim's
/// `next_attempt_at`, and `attempts` is the claim's token.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub order_id: String,
    pub message_id: String,
    pub session_id: String,
    /// The order's Connect account, for `Stripe-Account` (its session lives there).
    pub account: Option<String>,
    pub attempts: i32,
}

/// How closing a fetched job went.
#[derive(Debug)]
pub enum Closed {
    /// Items stored, message rewritten and released to the relay.
    Released,
    /// Another claimant closed or re-claimed it meanwhile (this claim's lease
    /// ran out): nothing was changed.
    ClaimLost,
    /// The held-back message cannot take line items: nothing was changed.
    Unreadable(EnrichError),
}

/// Claims up to `limit` due jobs, earliest due first, for `lease`: counts
/// the attempt and moves `next_attempt_at` past the lease, so other
/// replicas skip them (`SKIP LOCKED` while this statement runs, the lease
/// after it commits) and take them over if this process dies.
pub async fn claim(
    pool: &PgPool,
    limit: i64,
    lease: Duration,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let rows = sqlx::query(
        "UPDATE line_item_jobs j SET attempts = j.attempts + 1, \
         next_attempt_at = now() + make_interval(secs => $2) \
         FROM (SELECT order_id FROM line_item_jobs WHERE state = 'pending' AND next_attempt_at <= now() \
               ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) due \
         WHERE j.order_id = due.order_id \
         RETURNING j.order_id, j.message_id, j.checkout_session_id, j.attempts, \
         (SELECT account FROM orders o WHERE o.order_id = j.order_id) AS account",
    )
    .bind(limit)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|row| Claimed {
            order_id: row.get("order_id"),
            message_id: row.get("message_id"),
            session_id: row.get("checkout_session_id"),
            account: row.get("account"),
            attempts: row.get("attempts"),
        })
        .collect())
}

/// In one transaction: deletes the job (if this claim still holds it),
/// stores the items, rewrites the held-back message with them, releases it
/// and wakes the relay.
pub async fn close_fetched(
    pool: &PgPool,
    job: &Claimed,
    items: &[(String, LineItem)],
) -> Result<Closed, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let closed = sqlx::query(
        "DELETE FROM line_item_jobs WHERE order_id = $1 AND state = 'pending' AND attempts = $2",
    )
    .bind(&job.order_id)
    .bind(job.attempts)
    .execute(&mut *tx)
    .await?;
    if closed.rows_affected() == 0 {
        tx.rollback().await?;
        return Ok(Closed::ClaimLost);
    }
    store_items(&mut tx, &job.order_id, items).await?;
    let body: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT body FROM outbox WHERE message_id = $1 AND awaiting_line_items FOR UPDATE",
    )
    .bind(&job.message_id)
    .fetch_optional(&mut *tx)
    .await?;
    // The job was pending, so its message is still held back: only this
    // transaction releases it.
    if let Some(body) = body {
        let lines = items.iter().map(|(_, line)| line.clone()).collect();
        let body = match with_line_items(&body, lines) {
            Ok(body) => body,
            Err(e) => {
                tx.rollback().await?;
                return Ok(Closed::Unreadable(e));
            }
        };
        sqlx::query(
            "UPDATE outbox SET body = $2, awaiting_line_items = false WHERE message_id = $1",
        )
        .bind(&job.message_id)
        .bind(&body)
        .execute(&mut *tx)
        .await?;
        sqlx::query("SELECT pg_notify('outbox', '')")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Closed::Released)
}

async fn store_items(
    tx: &mut PgConnection,
    order_id: &str,
    items: &[(String, LineItem)],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM order_line_items WHERE order_id = $1")
        .bind(order_id)
        .execute(&mut *tx)
        .await?;
    if items.is_empty() {
        return Ok(());
    }
    let positions: Vec<i32> = (0..items.len() as i32).collect();
    let ids: Vec<&str> = items.iter().map(|(id, _)| id.as_str()).collect();
    let prices: Vec<Option<&str>> = items.iter().map(|(_, l)| l.price_id.as_deref()).collect();
    let products: Vec<Option<&str>> = items.iter().map(|(_, l)| l.product_id.as_deref()).collect();
    let descriptions: Vec<Option<&str>> = items
        .iter()
        .map(|(_, l)| l.description.as_deref())
        .collect();
    // Stripe's quantities are small; one past i64 would be a lie, so none.
    let quantities: Vec<Option<i64>> = items
        .iter()
        .map(|(_, l)| l.quantity.and_then(|q| i64::try_from(q).ok()))
        .collect();
    let amounts: Vec<i64> = items.iter().map(|(_, l)| l.amount_total).collect();
    let currencies: Vec<&str> = items.iter().map(|(_, l)| l.currency.as_str()).collect();
    sqlx::query(
        "INSERT INTO order_line_items (order_id, position, line_item_id, price_id, product_id, \
         description, quantity, amount_total, currency) \
         SELECT $1, * FROM unnest($2::int4[], $3::text[], $4::text[], $5::text[], $6::text[], \
         $7::int8[], $8::int8[], $9::text[])",
    )
    .bind(order_id)
    .bind(&positions)
    .bind(&ids)
    .bind(&prices)
    .bind(&products)
    .bind(&descriptions)
    .bind(&quantities)
    .bind(&amounts)
    .bind(&currencies)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Schedules the next try after `delay` (if this claim still holds the job).
pub async fn retry_later(
    pool: &PgPool,
    job: &Claimed,
    delay: Duration,
    error: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE line_item_jobs SET next_attempt_at = now() + make_interval(secs => $3), last_error = $4 \
         WHERE order_id = $1 AND state = 'pending' AND attempts = $2",
    )
    .bind(&job.order_id)
    .bind(job.attempts)
    .bind(delay.as_secs_f64())
    .bind(error)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Keeps the job for a person (if this claim still holds it).
pub async fn hold(pool: &PgPool, job: &Claimed, error: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE line_item_jobs SET state = 'held', last_error = $3 \
         WHERE order_id = $1 AND state = 'pending' AND attempts = $2",
    )
    .bind(&job.order_id)
    .bind(job.attempts)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives back claims this process will not finish (it is stopping): due at
/// once, the attempt not counted.
pub async fn release(pool: &PgPool, jobs: &[Claimed]) -> Result<(), sqlx::Error> {
    let orders: Vec<&str> = jobs.iter().map(|j| j.order_id.as_str()).collect();
    let tokens: Vec<i32> = jobs.iter().map(|j| j.attempts).collect();
    sqlx::query(
        "UPDATE line_item_jobs j SET next_attempt_at = now(), attempts = j.attempts - 1 \
         FROM unnest($1::text[], $2::int4[]) AS c(order_id, attempts) \
         WHERE j.order_id = c.order_id AND j.attempts = c.attempts AND j.state = 'pending'",
    )
    .bind(&orders)
    .bind(&tokens)
    .execute(pool)
    .await?;
    Ok(())
}

/// For a person, after fixing what held them: held jobs (of `orders`, or
/// all with `None`) become pending and due now. Returns the orders.
pub async fn retry_held(
    pool: &PgPool,
    orders: Option<&[String]>,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE line_item_jobs SET state = 'pending', next_attempt_at = now() \
         WHERE state = 'held' AND ($1::text[] IS NULL OR order_id = ANY($1)) RETURNING order_id",
    )
    .bind(orders)
    .fetch_all(pool)
    .await
}

/// For the gauges: pending jobs, held jobs, and the age of the oldest
/// pending one in seconds (0 when none).
pub async fn backlog(pool: &PgPool) -> Result<(i64, i64, f64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'held'), \
         COALESCE(EXTRACT(EPOCH FROM now() - min(created_at) FILTER (WHERE state = 'pending'))::float8, 0) \
         FROM line_item_jobs",
    )
    .fetch_one(pool)
    .await
}
