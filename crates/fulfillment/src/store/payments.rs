//! The payment side of a batch: the distinct payments of the orders it
//! touches (loaded under their locks), and what the ledger decided about
//! them (`order_payments`, `order_anomalies`) and about custom-payment
//! reports (`custom_payments`, and the job that records each to Stripe:
//! `payment_record_jobs`), one statement per table, in the batch's
//! transaction. No rule lives here either: `fulfillment_core::Ledger` decides.

use std::collections::{BTreeMap, BTreeSet};

use fulfillment_core::{Anomaly, CustomPaymentReport, Effects, NewPayment, PaymentSource, record};
use sqlx::PgConnection;

use super::Writes;

/// Order id → its recorded payments, for the orders the batch reads.
pub(super) async fn load(
    tx: &mut PgConnection,
    order_ids: &[&str],
) -> Result<BTreeMap<String, BTreeSet<PaymentSource>>, sqlx::Error> {
    if order_ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT order_id, source FROM order_payments WHERE order_id = ANY($1)")
            .bind(order_ids)
            .fetch_all(&mut *tx)
            .await?;
    let mut payments: BTreeMap<String, BTreeSet<PaymentSource>> = BTreeMap::new();
    for (order_id, source) in rows {
        let source = source
            .parse::<PaymentSource>()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        payments.entry(order_id).or_default().insert(source);
    }
    Ok(payments)
}

/// The payment side of the batch's statement (`super::writes`).
pub(super) fn write(w: &mut Writes, effects: &Effects) {
    write_payments(w, &effects.new_payments);
    write_anomalies(w, &effects.anomalies);
    write_reports(w, &effects.custom_reports);
}

fn write_payments(w: &mut Writes, payments: &[NewPayment]) {
    if payments.is_empty() {
        return;
    }
    let orders: Vec<&str> = payments.iter().map(|p| p.order_id.as_str()).collect();
    let sources: Vec<String> = payments.iter().map(|p| p.source.key()).collect();
    let events: Vec<&str> = payments.iter().map(|p| p.event_id.as_str()).collect();
    w.part(
        "INSERT INTO order_payments (order_id, source, event_id) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING",
    )
    .bind(&orders)
    .bind(&sources)
    .bind(&events);
}

fn write_anomalies(w: &mut Writes, anomalies: &[Anomaly]) {
    if anomalies.is_empty() {
        return;
    }
    let orders: Vec<&str> = anomalies.iter().map(|a| a.order_id.as_str()).collect();
    let kinds: Vec<&str> = anomalies.iter().map(|a| a.kind.label()).collect();
    let events: Vec<&str> = anomalies.iter().map(|a| a.event_id.as_str()).collect();
    let payments: Vec<String> = anomalies.iter().map(|a| a.payment.key()).collect();
    // unnest cannot take an array of arrays of different lengths: each
    // earlier list travels as one text, split back in SQL.
    let earlier: Vec<String> = anomalies
        .iter()
        .map(|a| {
            let keys: Vec<String> = a.earlier.iter().map(PaymentSource::key).collect();
            serde_json::to_string(&keys).expect("strings serialise")
        })
        .collect();
    w.part(
        "INSERT INTO order_anomalies (order_id, kind, event_id, payment, earlier_payments) \
         SELECT o, k, e, p, ARRAY(SELECT jsonb_array_elements_text(x::jsonb)) \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS u(o, k, e, p, x) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&orders)
    .bind(&kinds)
    .bind(&events)
    .bind(&payments)
    .bind(&earlier);
}

fn write_reports(w: &mut Writes, reports: &[CustomPaymentReport]) {
    if reports.is_empty() {
        return;
    }
    let col =
        |f: fn(&CustomPaymentReport) -> &str| -> Vec<&str> { reports.iter().map(f).collect() };
    let ids = col(|r| &r.id);
    let orders = col(|r| &r.order_id);
    let outcomes = col(|r| r.outcome.as_str());
    let currencies = col(|r| &r.currency);
    let types = col(|r| &r.custom_payment_method_type);
    let references = col(|r| &r.payment_reference);
    let amounts: Vec<i64> = reports.iter().map(|r| r.amount).collect();
    let initiated: Vec<i64> = reports.iter().map(|r| r.initiated_at).collect();
    let completed: Vec<i64> = reports.iter().map(|r| r.completed_at).collect();
    let emails: Vec<Option<&str>> = reports
        .iter()
        .map(|r| r.customer_email.as_deref())
        .collect();
    let customers: Vec<Option<&str>> = reports
        .iter()
        .map(|r| r.stripe_customer.as_deref())
        .collect();
    w.part(
        "INSERT INTO custom_payments (report_id, order_id, outcome, amount, currency, \
         custom_payment_method_type, payment_reference, initiated_at, completed_at, \
         customer_email, stripe_customer) \
         SELECT id, o, oc, a, c, t, r, to_timestamp(i), to_timestamp(d), e, s \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::text[], \
         $7::text[], $8::int8[], $9::int8[], $10::text[], $11::text[]) \
         AS u(id, o, oc, a, c, t, r, i, d, e, s) \
         ON CONFLICT (report_id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&orders)
    .bind(&outcomes)
    .bind(&amounts)
    .bind(&currencies)
    .bind(&types)
    .bind(&references)
    .bind(&initiated)
    .bind(&completed)
    .bind(&emails)
    .bind(&customers);
    // Each report is recorded to Stripe once: its job, with the key every
    // call will carry, commits with the report (and wakes the reporter).
    let keys: Vec<String> = reports
        .iter()
        .map(|r| record::idempotency_key(&r.id, 0))
        .collect();
    w.part(
        "INSERT INTO payment_record_jobs (report_id, order_id, idempotency_key) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING",
    )
    .bind(&ids)
    .bind(&orders)
    .bind(&keys);
    w.notify("payment_record_jobs");
}
