//! `orders show`: an order's row (with its failed attempts and refund),
//! its disputes, every event recorded for it with its outcome, its
//! transitions, its outbox messages, its parked events, its payments
//! (`payments.rs`: method, custom reports, anomalies) and its line items
//! (`line_items.rs`).

use std::io::Write;

use serde::Serialize;
use sqlx::Connection;

use super::line_items::{LineItemStory, line_item_story, print_line_items};
use super::payments::{PaymentStory, payment_story, print_payment_method, print_payments};
use super::{ParkedLine, opt, parked_line, read_only};

#[derive(Debug, Serialize)]
pub struct OrderStory {
    #[serde(flatten)]
    pub order: OrderRow,
    pub disputes: Vec<DisputeLine>,
    pub events: Vec<EventLine>,
    pub transitions: Vec<TransitionLine>,
    pub messages: Vec<MessageLine>,
    pub parked: Vec<ParkedLine>,
    #[serde(flatten)]
    pub payments: PaymentStory,
    #[serde(flatten)]
    pub line_items: LineItemStory,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct OrderRow {
    pub order_id: String,
    pub status: String,
    pub checkout_session_id: Option<String>,
    pub payment_intent_id: Option<String>,
    pub amount_total: Option<i64>,
    pub currency: Option<String>,
    pub customer_email: Option<String>,
    pub livemode: bool,
    /// The Connect account of the order's Stripe events, if any.
    pub account: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub failed_attempts: i32,
    /// The latest failed attempt's event and what Stripe said.
    pub last_failure_event_id: Option<String>,
    pub last_failure_code: Option<String>,
    pub last_decline_code: Option<String>,
    pub last_failure_message: Option<String>,
    pub amount_refunded: Option<i64>,
    /// `partial` or `full`.
    pub refund_status: Option<String>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct DisputeLine {
    pub dispute_id: String,
    /// `open`, `won` or `lost`.
    pub status: String,
    pub reason: Option<String>,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub charge_id: Option<String>,
    /// Stripe's deadline for evidence.
    pub evidence_due_by: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct EventLine {
    pub event_id: String,
    pub event_type: String,
    pub outcome: String,
    /// None for events taken in before migration 0003.
    pub received_at: Option<String>,
    pub processed_at: String,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct TransitionLine {
    pub from_status: Option<String>,
    pub to_status: String,
    pub event_id: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct MessageLine {
    pub message_id: String,
    pub routing_key: String,
    pub created_at: String,
    /// None while the relay has not had the broker's confirm.
    pub published_at: Option<String>,
    /// An `order.paid` held back until its line items are fetched.
    pub awaiting_line_items: bool,
    pub attempts: i32,
    pub last_error: Option<String>,
}

/// None when there is no such order.
pub async fn order_story(database_url: &str, order_id: &str) -> anyhow::Result<Option<OrderStory>> {
    let mut conn = read_only(database_url).await?;
    let mut tx = conn.begin().await?;
    let row: Option<OrderRow> = sqlx::query_as(concat!(
        "SELECT order_id, status, checkout_session_id, payment_intent_id, amount_total, currency, \
         customer_email, livemode, account, ",
        ts!("created_at"),
        " AS created_at, ",
        ts!("updated_at"),
        " AS updated_at, failed_attempts, last_failure_event_id, last_failure_code, \
         last_decline_code, last_failure_message, amount_refunded, refund_status \
         FROM orders WHERE order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(order) = row else {
        return Ok(None);
    };
    let disputes = sqlx::query_as(concat!(
        "SELECT dispute_id, status, reason, amount, currency, charge_id, ",
        ts!("evidence_due_by"),
        " AS evidence_due_by, ",
        ts!("created_at"),
        " AS created_at, ",
        ts!("updated_at"),
        " AS updated_at FROM order_disputes WHERE order_id = $1 ORDER BY created_at, dispute_id"
    ))
    .bind(order_id)
    .fetch_all(&mut *tx)
    .await?;
    let events = sqlx::query_as(concat!(
        "SELECT event_id, event_type, outcome, ",
        ts!("received_at"),
        " AS received_at, ",
        ts!("processed_at"),
        " AS processed_at FROM processed_events WHERE order_id = $1 \
         ORDER BY coalesce(received_at, processed_at), event_id"
    ))
    .bind(order_id)
    .fetch_all(&mut *tx)
    .await?;
    let transitions = sqlx::query_as(concat!(
        "SELECT from_status, to_status, event_id, ",
        ts!("created_at"),
        " AS created_at FROM order_transitions WHERE order_id = $1 ORDER BY id"
    ))
    .bind(order_id)
    .fetch_all(&mut *tx)
    .await?;
    // Rows written before outbox.order_id existed are found by their id.
    let messages = sqlx::query_as(concat!(
        "SELECT message_id, routing_key, ",
        ts!("created_at"),
        " AS created_at, ",
        ts!("published_at"),
        " AS published_at, attempts, last_error, awaiting_line_items FROM outbox \
         WHERE order_id = $1 OR (order_id IS NULL AND left(message_id, length($1) + 1) = $1 || '/') \
         ORDER BY id"
    ))
    .bind(order_id)
    .fetch_all(&mut *tx)
    .await?;
    let parked = sqlx::query_as(concat!(
        "SELECT event_id, event_type, payment_intent_id, ",
        ts!("parked_at"),
        " AS parked_at, ",
        ts!("expired_at"),
        " AS expired_at FROM parked_events WHERE payment_intent_id = $2 \
         OR payment_intent_id IN (SELECT payment_intent_id FROM payment_intent_links WHERE order_id = $1) \
         ORDER BY parked_at, event_id"
    ))
    .bind(order_id)
    .bind(&order.payment_intent_id)
    .fetch_all(&mut *tx)
    .await?;
    let payments = payment_story(&mut tx, order_id).await?;
    let line_items = line_item_story(&mut tx, order_id).await?;
    tx.rollback().await.ok();
    Ok(Some(OrderStory {
        order,
        disputes,
        events,
        transitions,
        messages,
        parked,
        payments,
        line_items,
    }))
}

pub fn print_order(o: &OrderStory, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "order {}", o.order.order_id)?;
    writeln!(out, "  status:            {}", o.order.status)?;
    let amount = match (o.order.amount_total, &o.order.currency) {
        (Some(a), Some(c)) => format!("{a} {c}"),
        (Some(a), None) => a.to_string(),
        _ => "-".into(),
    };
    writeln!(out, "  amount:            {amount}")?;
    print_lifecycle(o, out)?;
    writeln!(out, "  customer email:    {}", opt(&o.order.customer_email))?;
    writeln!(
        out,
        "  checkout session:  {}",
        opt(&o.order.checkout_session_id)
    )?;
    writeln!(
        out,
        "  payment intent:    {}",
        opt(&o.order.payment_intent_id)
    )?;
    print_payment_method(&o.payments, out)?;
    writeln!(out, "  livemode:          {}", o.order.livemode)?;
    if let Some(account) = &o.order.account {
        writeln!(out, "  connect account:   {account}")?;
    }
    writeln!(out, "  created:           {}", o.order.created_at)?;
    writeln!(out, "  updated:           {}", o.order.updated_at)?;
    if !o.disputes.is_empty() {
        writeln!(out, "\ndisputes ({}):", o.disputes.len())?;
        for d in &o.disputes {
            writeln!(out, "  {}", dispute_line(d, o.order.currency.as_deref()))?;
        }
    }
    writeln!(out, "\nevents ({}):", o.events.len())?;
    for e in &o.events {
        // When it arrived; when it took effect, if that was later (a parked
        // event released by its session).
        let received = e.received_at.as_deref().unwrap_or(&e.processed_at);
        let later = if received == e.processed_at {
            String::new()
        } else {
            format!("  (applied {})", e.processed_at)
        };
        writeln!(
            out,
            "  {received}  {:<10} {}  {}{later}",
            e.outcome, e.event_id, e.event_type
        )?;
    }
    writeln!(out, "\ntransitions ({}):", o.transitions.len())?;
    for t in &o.transitions {
        let from = t.from_status.as_deref().unwrap_or("none");
        writeln!(
            out,
            "  {}  {} -> {}  by {}",
            t.created_at, from, t.to_status, t.event_id
        )?;
    }
    writeln!(out, "\nmessages ({}):", o.messages.len())?;
    for m in &o.messages {
        let state = match &m.published_at {
            Some(at) => format!("published {at}"),
            None if m.awaiting_line_items => "WAITING for its line items (below)".into(),
            None => format!(
                "NOT PUBLISHED yet ({} attempts, last error: {})",
                m.attempts,
                opt(&m.last_error)
            ),
        };
        writeln!(
            out,
            "  {}  {}  {}  {}",
            m.created_at, m.routing_key, m.message_id, state
        )?;
    }
    if !o.parked.is_empty() {
        writeln!(
            out,
            "\nparked events for its PaymentIntent ({}):",
            o.parked.len()
        )?;
        for p in &o.parked {
            writeln!(out, "  {}", parked_line(p))?;
        }
    }
    print_payments(&o.payments, out)?;
    print_line_items(&o.line_items, out)
}

/// Refund and failed attempts, under the amount.
fn print_lifecycle(o: &OrderStory, out: &mut impl Write) -> std::io::Result<()> {
    let r = &o.order;
    if let (Some(amount), Some(status)) = (r.amount_refunded, &r.refund_status) {
        let currency = r.currency.as_deref().unwrap_or("");
        writeln!(out, "  refunded:          {amount} {currency} ({status})")?;
    }
    if r.failed_attempts > 0 {
        let code = [&r.last_failure_code, &r.last_decline_code]
            .iter()
            .map(|c| opt(c))
            .collect::<Vec<_>>()
            .join(" / ");
        writeln!(
            out,
            "  failed attempts:   {} (last: {code}, {:?}, by {})",
            r.failed_attempts,
            opt(&r.last_failure_message),
            opt(&r.last_failure_event_id)
        )?;
    }
    Ok(())
}

fn dispute_line(d: &DisputeLine, order_currency: Option<&str>) -> String {
    let amount = match (d.amount, d.currency.as_deref().or(order_currency)) {
        (Some(a), Some(c)) => format!("{a} {c}"),
        (Some(a), None) => a.to_string(),
        _ => "-".into(),
    };
    let state = match d.status.as_str() {
        // The one a person has to act on: say so, with the deadline.
        "open" => format!(
            "OPEN, evidence due by {} (answer in the Stripe Dashboard)",
            opt(&d.evidence_due_by)
        ),
        closed => format!("{closed} (closed {})", d.updated_at),
    };
    format!(
        "{}  {state}  reason {}  {amount}  charge {}  opened {}",
        d.dispute_id,
        opt(&d.reason),
        opt(&d.charge_id),
        d.created_at
    )
}
