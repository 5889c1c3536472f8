//! The line-items part of `orders show`: what was bought, as `order.paid`
//! carries it, and while the message waits for it, the open job.

use std::io::Write;

use serde::Serialize;
use sqlx::PgConnection;

use super::opt;

#[derive(Debug, Default, Serialize)]
pub struct LineItemStory {
    /// In Stripe's order; empty until fetched (or for an order without a
    /// Checkout Session, or without STRIPE_API_KEY).
    pub line_items: Vec<LineItemLine>,
    /// While `order.paid` waits for them.
    pub line_items_job: Option<LineItemJob>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct LineItemLine {
    pub line_item_id: String,
    pub price_id: Option<String>,
    pub product_id: Option<String>,
    pub description: Option<String>,
    pub quantity: Option<i64>,
    pub amount_total: i64,
    pub currency: String,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct LineItemJob {
    pub checkout_session_id: String,
    /// `pending` (retried automatically) or `held` (for a person).
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: String,
    pub last_error: Option<String>,
    pub created_at: String,
}

/// Reads the line items of `order_id` in the caller's snapshot.
pub(super) async fn line_item_story(
    tx: &mut PgConnection,
    order_id: &str,
) -> anyhow::Result<LineItemStory> {
    let line_items = sqlx::query_as(
        "SELECT line_item_id, price_id, product_id, description, quantity, amount_total, currency \
         FROM order_line_items WHERE order_id = $1 ORDER BY position",
    )
    .bind(order_id)
    .fetch_all(&mut *tx)
    .await?;
    let line_items_job = sqlx::query_as(concat!(
        "SELECT checkout_session_id, state, attempts, ",
        ts!("next_attempt_at"),
        " AS next_attempt_at, last_error, ",
        ts!("created_at"),
        " AS created_at FROM line_item_jobs WHERE order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(LineItemStory {
        line_items,
        line_items_job,
    })
}

pub(super) fn print_line_items(s: &LineItemStory, out: &mut impl Write) -> std::io::Result<()> {
    if let Some(job) = &s.line_items_job {
        writeln!(out, "\nline items: {}", job_line(job))?;
    }
    if s.line_items.is_empty() {
        return Ok(());
    }
    writeln!(out, "\nline items ({}):", s.line_items.len())?;
    for (n, item) in s.line_items.iter().enumerate() {
        let quantity = item.quantity.map_or("-".into(), |q| q.to_string());
        writeln!(
            out,
            "  {:>3}. {quantity} x {}  {} {}  price {}  product {}  ({})",
            n + 1,
            opt(&item.description),
            item.amount_total,
            item.currency,
            opt(&item.price_id),
            opt(&item.product_id),
            item.line_item_id
        )?;
    }
    Ok(())
}

fn job_line(job: &LineItemJob) -> String {
    let error = opt(&job.last_error);
    match job.state.as_str() {
        "held" => format!(
            "HELD for a person: Stripe's answer about session {} was final after {} attempt(s) \
             (since {}): {error}. order.paid is not published until they are fetched: fix the \
             cause, then `fulfillment orders retry-line-items ORDER_ID`",
            job.checkout_session_id, job.attempts, job.created_at
        ),
        _ => format!(
            "WAITING: order.paid is held back until the line items of session {} are fetched \
             (since {}, {} attempt(s), next {}, last error: {error})",
            job.checkout_session_id, job.created_at, job.attempts, job.next_attempt_at
        ),
    }
}
