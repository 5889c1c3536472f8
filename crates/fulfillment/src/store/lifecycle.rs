//! Storing the lifecycle facts of orders (contract 8.6, migration 0006):
//! failed attempts and the refund in `orders` columns, disputes in
//! `order_disputes`. Read in the same statement as the order rows (the
//! disputes as a JSON array from a correlated subquery on their primary
//! key), written with them: the columns in the orders upsert, the disputes
//! as one more part of the batch's statement.

use std::collections::BTreeMap;

use fulfillment_core::{
    Dispute, DisputeStatus, LastFailure, Lifecycle, Order, PaymentError, Refund, RefundStatus,
};
use serde::Deserialize;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;

use super::Writes;

/// The lifecycle columns of `orders`, and the order's disputes, for a
/// `SELECT … FROM orders o` (the table must be aliased `o`).
pub(super) const COLUMNS: &str = "o.failed_attempts, o.last_failure_event_id, \
    o.last_failure_created, o.last_failure_payment_intent_id, o.last_failure_code, \
    o.last_decline_code, o.last_failure_message, o.amount_refunded, o.refund_status, \
    (SELECT coalesce(json_agg(json_build_object('dispute_id', d.dispute_id, 'status', d.status, \
     'charge_id', d.charge_id, 'reason', d.reason, 'amount', d.amount, 'currency', d.currency, \
     'evidence_due_by', extract(epoch FROM d.evidence_due_by)::bigint)), '[]') \
     FROM order_disputes d WHERE d.order_id = o.order_id) AS disputes";

#[derive(Deserialize)]
struct DisputeRow {
    dispute_id: String,
    status: String,
    charge_id: Option<String>,
    reason: Option<String>,
    amount: Option<i64>,
    currency: Option<String>,
    evidence_due_by: Option<i64>,
}

/// The lifecycle of the order in `row`, read with [`COLUMNS`].
pub(super) fn from_row(row: &PgRow) -> Result<Lifecycle, sqlx::Error> {
    let attempts: i32 = row.try_get("failed_attempts")?;
    let last_failure = match (
        row.try_get::<Option<String>, _>("last_failure_event_id")?,
        row.try_get::<Option<i64>, _>("last_failure_created")?,
        row.try_get::<Option<String>, _>("last_failure_payment_intent_id")?,
    ) {
        (Some(event_id), Some(created), Some(payment_intent_id)) => Some(LastFailure {
            event_id,
            created,
            payment_intent_id,
            error: PaymentError {
                failure_code: row.try_get("last_failure_code")?,
                decline_code: row.try_get("last_decline_code")?,
                failure_message: row.try_get("last_failure_message")?,
            },
        }),
        _ => None,
    };
    let refund = match (
        row.try_get::<Option<i64>, _>("amount_refunded")?,
        row.try_get::<Option<String>, _>("refund_status")?,
    ) {
        (Some(amount_refunded), Some(status)) => Some(Refund {
            amount_refunded,
            status: parse::<RefundStatus>(&status)?,
        }),
        _ => None,
    };
    let Json(rows): Json<Vec<DisputeRow>> = row.try_get("disputes")?;
    let mut disputes = BTreeMap::new();
    for d in rows {
        let dispute = Dispute {
            status: parse::<DisputeStatus>(&d.status)?,
            charge_id: d.charge_id,
            reason: d.reason,
            amount: d.amount,
            currency: d.currency,
            evidence_due_by: d.evidence_due_by,
        };
        disputes.insert(d.dispute_id, dispute);
    }
    Ok(Lifecycle {
        failed_attempts: u32::try_from(attempts).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        last_failure,
        refund,
        disputes,
    })
}

fn parse<T: std::str::FromStr>(s: &str) -> Result<T, sqlx::Error>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    s.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// Binds the lifecycle columns of `orders` to the orders upsert
/// (`store::write_orders`, its `$10` to `$18`, in this order): every order
/// the batch touched, whole. A lifecycle only grows, so an order without
/// one writes back the defaults it was read with.
pub(super) fn bind_columns(w: &mut Writes, orders: &[Order]) {
    let attempts: Vec<i32> = orders
        .iter()
        .map(|o| i32::try_from(o.lifecycle.failed_attempts).unwrap_or(i32::MAX))
        .collect();
    let last = |f: fn(&LastFailure) -> Option<&str>| -> Vec<Option<&str>> {
        orders
            .iter()
            .map(|o| o.lifecycle.last_failure.as_ref().and_then(f))
            .collect()
    };
    let created: Vec<Option<i64>> = orders
        .iter()
        .map(|o| o.lifecycle.last_failure.as_ref().map(|l| l.created))
        .collect();
    let refunded: Vec<Option<i64>> = orders
        .iter()
        .map(|o| o.lifecycle.refund.map(|r| r.amount_refunded))
        .collect();
    let refund_status: Vec<Option<&str>> = orders
        .iter()
        .map(|o| o.lifecycle.refund.map(|r| r.status.as_str()))
        .collect();
    w.bind(attempts)
        .bind(last(|l| Some(l.event_id.as_str())))
        .bind(created)
        .bind(last(|l| Some(l.payment_intent_id.as_str())))
        .bind(last(|l| l.error.failure_code.as_deref()))
        .bind(last(|l| l.error.decline_code.as_deref()))
        .bind(last(|l| l.error.failure_message.as_deref()))
        .bind(refunded)
        .bind(refund_status);
}

/// The disputes of `orders` (rows written by the same statement: the
/// foreign key is checked at its end).
pub(super) fn write_disputes(w: &mut Writes, orders: &[Order]) {
    let disputes: Vec<(&str, &str, &Dispute)> = orders
        .iter()
        .flat_map(|o| {
            o.lifecycle
                .disputes
                .iter()
                .map(|(id, d)| (o.order_id.as_str(), id.as_str(), d))
        })
        .collect();
    if disputes.is_empty() {
        return;
    }
    let col = |f: fn(&Dispute) -> Option<&str>| -> Vec<Option<&str>> {
        disputes.iter().map(|(_, _, d)| f(d)).collect()
    };
    let orders: Vec<&str> = disputes.iter().map(|(o, _, _)| *o).collect();
    let ids: Vec<&str> = disputes.iter().map(|(_, id, _)| *id).collect();
    let statuses: Vec<&str> = disputes.iter().map(|(_, _, d)| d.status.as_str()).collect();
    let amounts: Vec<Option<i64>> = disputes.iter().map(|(_, _, d)| d.amount).collect();
    let due: Vec<Option<i64>> = disputes.iter().map(|(_, _, d)| d.evidence_due_by).collect();
    w.part(
        "INSERT INTO order_disputes (order_id, dispute_id, status, charge_id, reason, amount, \
         currency, evidence_due_by) \
         SELECT o, id, s, c, r, a, cur, to_timestamp(due) FROM unnest($1::text[], $2::text[], \
         $3::text[], $4::text[], $5::text[], $6::int8[], $7::text[], $8::int8[]) \
         AS u(o, id, s, c, r, a, cur, due) \
         ON CONFLICT (order_id, dispute_id) DO UPDATE SET status = EXCLUDED.status, \
         charge_id = EXCLUDED.charge_id, reason = EXCLUDED.reason, amount = EXCLUDED.amount, \
         currency = EXCLUDED.currency, evidence_due_by = EXCLUDED.evidence_due_by, \
         updated_at = now() \
         WHERE (order_disputes.status, order_disputes.charge_id, order_disputes.reason, \
         order_disputes.amount, order_disputes.currency, order_disputes.evidence_due_by) \
         IS DISTINCT FROM (EXCLUDED.status, EXCLUDED.charge_id, EXCLUDED.reason, \
         EXCLUDED.amount, EXCLUDED.currency, EXCLUDED.evidence_due_by)",
    )
    .bind(orders)
    .bind(ids)
    .bind(statuses)
    .bind(col(|d| d.charge_id.as_deref()))
    .bind(col(|d| d.reason.as_deref()))
    .bind(amounts)
    .bind(col(|d| d.currency.as_deref()))
    .bind(due);
}
