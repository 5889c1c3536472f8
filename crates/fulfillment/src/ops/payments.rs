//! The payment part of `orders show`: what paid the order, its distinct
//! payments, the custom-payment reports for it, and its anomalies.

use std::io::Write;

use serde::Serialize;
use sqlx::PgConnection;

use super::opt;

#[derive(Debug, Default, Serialize)]
pub struct PaymentStory {
    /// What paid the order (the payment of its transition to `paid`):
    /// `{"kind":"stripe"}` or `{"kind":"custom",…}`, as `order.paid` said.
    pub payment_method: Option<serde_json::Value>,
    /// Every distinct payment that reached it, first first.
    pub payments: Vec<PaymentLine>,
    pub custom_payments: Vec<CustomPaymentLine>,
    pub anomalies: Vec<AnomalyLine>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct PaymentLine {
    /// `stripe` or `custom:{report id}`.
    pub source: String,
    pub event_id: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct CustomPaymentLine {
    pub report_id: String,
    pub outcome: String,
    pub amount: i64,
    pub currency: String,
    pub custom_payment_method_type: String,
    pub payment_reference: String,
    pub initiated_at: String,
    pub completed_at: String,
    pub customer_email: Option<String>,
    pub stripe_customer: Option<String>,
    pub received_at: String,
    /// Its Payment Record at Stripe: `pending`, `recorded` or `refused`
    /// (None for a report taken in before migration 0008 ran).
    pub record_state: Option<String>,
    /// The `pr_…` once recorded.
    pub record_id: Option<String>,
    pub record_attempts: Option<i32>,
    pub record_error: Option<String>,
    pub record_next_attempt_at: Option<String>,
    pub recorded_at: Option<String>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct AnomalyLine {
    pub kind: String,
    pub event_id: String,
    pub payment: String,
    pub earlier_payments: Vec<String>,
    pub detected_at: String,
}

/// Reads the payment story of `order_id` in the caller's snapshot.
pub(super) async fn payment_story(
    tx: &mut PgConnection,
    order_id: &str,
) -> anyhow::Result<PaymentStory> {
    let payments = sqlx::query_as(concat!(
        "SELECT source, event_id, ",
        ts!("created_at"),
        " AS created_at FROM order_payments WHERE order_id = $1 ORDER BY created_at, source"
    ))
    .bind(order_id)
    .fetch_all(&mut *tx)
    .await?;
    let custom_payments: Vec<CustomPaymentLine> = sqlx::query_as(concat!(
        "SELECT c.report_id, c.outcome, c.amount, c.currency, c.custom_payment_method_type, \
         c.payment_reference, ",
        ts!("c.initiated_at"),
        " AS initiated_at, ",
        ts!("c.completed_at"),
        " AS completed_at, c.customer_email, c.stripe_customer, ",
        ts!("c.received_at"),
        " AS received_at, j.state AS record_state, j.record_id, j.attempts AS record_attempts, \
         j.last_error AS record_error, ",
        ts!("j.next_attempt_at"),
        " AS record_next_attempt_at, ",
        ts!("j.recorded_at"),
        " AS recorded_at FROM custom_payments c \
         LEFT JOIN payment_record_jobs j USING (report_id) \
         WHERE c.order_id = $1 ORDER BY c.received_at, c.report_id"
    ))
    .bind(order_id)
    .fetch_all(&mut *tx)
    .await?;
    let anomalies = sqlx::query_as(concat!(
        "SELECT kind, event_id, payment, earlier_payments, ",
        ts!("detected_at"),
        " AS detected_at FROM order_anomalies WHERE order_id = $1 ORDER BY id"
    ))
    .bind(order_id)
    .fetch_all(&mut *tx)
    .await?;
    let paid_by: Option<String> = sqlx::query_scalar(
        "SELECT event_id FROM order_transitions WHERE order_id = $1 AND to_status = 'paid'",
    )
    .bind(order_id)
    .fetch_optional(&mut *tx)
    .await?;
    let payment_method = paid_by.map(|event_id| method_of(&event_id, &custom_payments));
    Ok(PaymentStory {
        payment_method,
        payments,
        custom_payments,
        anomalies,
    })
}

/// The payment method of the event that paid the order, as `order.paid` carried it.
fn method_of(event_id: &str, reports: &[CustomPaymentLine]) -> serde_json::Value {
    let report = event_id
        .strip_prefix(fulfillment_core::custom::CUSTOM_EVENT_ID_PREFIX)
        .and_then(|id| reports.iter().find(|r| r.report_id == id));
    match report {
        Some(r) => serde_json::json!({
            "kind": "custom",
            "type": r.custom_payment_method_type,
            "payment_reference": r.payment_reference,
        }),
        None => serde_json::json!({ "kind": "stripe" }),
    }
}

pub(super) fn print_payment_method(p: &PaymentStory, out: &mut impl Write) -> std::io::Result<()> {
    let method = match &p.payment_method {
        None => "-".to_owned(),
        Some(m) if m["kind"] == "custom" => format!(
            "custom {} (reference {})",
            m["type"].as_str().unwrap_or("?"),
            m["payment_reference"].as_str().unwrap_or("?")
        ),
        Some(_) => "stripe".to_owned(),
    };
    writeln!(out, "  payment method:    {method}")
}

pub(super) fn print_payments(p: &PaymentStory, out: &mut impl Write) -> std::io::Result<()> {
    if !p.custom_payments.is_empty() {
        writeln!(out, "\ncustom payments ({}):", p.custom_payments.len())?;
        for c in &p.custom_payments {
            writeln!(
                out,
                "  {}  {:<10} {}  {} {}  {}  reference {}  completed {}  email {}",
                c.received_at,
                c.outcome,
                c.report_id,
                c.amount,
                c.currency,
                c.custom_payment_method_type,
                c.payment_reference,
                c.completed_at,
                opt(&c.customer_email),
            )?;
            writeln!(out, "      Payment Record: {}", record_line(c))?;
        }
    }
    if p.payments.len() > 1 || !p.anomalies.is_empty() {
        writeln!(out, "\npayments ({}):", p.payments.len())?;
        for pay in &p.payments {
            writeln!(
                out,
                "  {}  {}  by {}",
                pay.created_at, pay.source, pay.event_id
            )?;
        }
    }
    if !p.anomalies.is_empty() {
        writeln!(out, "\nANOMALIES ({}):", p.anomalies.len())?;
        for a in &p.anomalies {
            writeln!(
                out,
                "  {}  {}  {} after {} (by {}): the customer may have paid twice; see the runbook",
                a.detected_at,
                a.kind,
                a.payment,
                a.earlier_payments.join(", "),
                a.event_id
            )?;
        }
    }
    Ok(())
}

/// What became of a report's Payment Record at Stripe, for a person.
fn record_line(c: &CustomPaymentLine) -> String {
    let attempts = c.record_attempts.unwrap_or(0);
    match c.record_state.as_deref() {
        Some("recorded") => format!("{} (recorded {})", opt(&c.record_id), opt(&c.recorded_at)),
        Some("refused") => format!(
            "REFUSED by Stripe after {attempts} attempt(s): {}; fix the cause, then `fulfillment orders retry-record ORDER_ID`",
            opt(&c.record_error)
        ),
        Some(_) if attempts == 0 => {
            "pending (not sent yet; needs a worker with STRIPE_API_KEY)".to_owned()
        }
        Some(_) => format!(
            "pending, {attempts} failed attempt(s), next {}: {}",
            opt(&c.record_next_attempt_at),
            opt(&c.record_error)
        ),
        None => "-".to_owned(),
    }
}
