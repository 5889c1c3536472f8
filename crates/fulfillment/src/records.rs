//! The Payment Records reporter: records every custom-payment report to
//! Stripe once (`POST /v1/payment_records/report_payment`) and announces the
//! record as `order.payment_recorded`. What to do and what an answer means
//! is decided by `fulfillment_core::record`; this module claims, calls and
//! stores.
//!
//! Driven from the database, `crates_io_worker` style: a job is claimed
//! with `FOR UPDATE SKIP LOCKED` in a transaction that stays open across the
//! Stripe call, so replicas share the jobs and a reporter that dies (even
//! between Stripe's answer and its commit) releases its job to the next one,
//! which sends the same `Idempotency-Key` and gets the same record. The
//! transaction holds that job's row and nothing else: no order lock, and it
//! is never the worker's transaction.
//!
//! Outcomes (`fulfillment_payment_records_total{outcome}`): `recorded`;
//! `retried` (no answer, 409, 429, 5xx, our key refused, an answer we could
//! not read: the job waits `record::retry_delay` and goes again); `refused`
//! (any other 4xx: kept, state `refused`, for a person; `orders
//! retry-record` sends it again with a new key).

use std::time::Duration;

use sqlx::{PgConnection, PgPool, Row};
use time::OffsetDateTime;
use tracing::{debug, info, warn};

use fulfillment_core::record::{
    self, CallResult, Job, JobState, Next, PaymentRecordedMessage, Plan, REPORT_ID_METADATA,
};
use fulfillment_core::{CustomOutcome, CustomPaymentReport};
use stripe_api::{Params, Value};

use crate::clock::unix_now;
use crate::metrics as m;
use crate::shutdown::Shutdown;
use crate::wakeup::Wakeup;

/// Jobs one process works on at once (each holds a connection while it
/// waits for Stripe).
pub const CONCURRENCY: usize = 2;
/// How long an idle reporter sleeps when no notification arrives, and how
/// often it recounts the refused jobs.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// The notification a new job sends (store/payments.rs).
const CHANNEL: &str = "payment_record_jobs";

#[derive(Clone)]
pub struct Reporter {
    pub pool: PgPool,
    pub client: stripe_api::Client,
}

impl Reporter {
    pub async fn run(self, shutdown: Shutdown) {
        info!(
            concurrency = CONCURRENCY,
            "Payment Records reporter on: custom payments are recorded to Stripe"
        );
        let lanes = (0..CONCURRENCY).map(|_| tokio::spawn(self.clone().lane(shutdown.clone())));
        for lane in lanes.collect::<Vec<_>>() {
            let _ = lane.await;
        }
    }

    async fn lane(self, shutdown: Shutdown) {
        let mut wakeup = Wakeup::new(CHANNEL);
        while !shutdown.is_triggered() {
            match self.work_one().await {
                Ok(true) => continue,
                Ok(false) => {
                    self.count_refused().await;
                    wakeup.wait(&self.pool, IDLE_POLL, &shutdown).await;
                }
                Err(e) => {
                    warn!(error = %e, "Payment Records reporter: a job could not be handled; trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                        _ = shutdown.wait() => {}
                    }
                }
            }
        }
    }

    /// Claims one due job and takes it as far as it goes now; false when
    /// none was due.
    async fn work_one(&self) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let Some(job) = claim(&mut tx).await? else {
            tx.commit().await?;
            return Ok(false);
        };
        let Some(next) = self.call(&job).await else {
            tx.commit().await?;
            return Ok(true);
        };
        store(&mut tx, &job, &next).await?;
        tx.commit().await?;
        observe(&job, &next);
        Ok(true)
    }

    /// The calls the job's plan names (a lookup, then maybe a report), and
    /// what to store; `None` when there was nothing to call.
    async fn call(&self, job: &Job) -> Option<Next> {
        let mut plan = record::plan(job, unix_now());
        loop {
            let result = match plan {
                Plan::Nothing => return None,
                Plan::LookUp { since } => self.look_up(&job.report, since).await,
                Plan::Report => self.report(job).await,
            };
            match record::after_call(job, result, unix_now()) {
                Next::Report => plan = Plan::Report,
                next => return Some(next),
            }
        }
    }

    async fn report(&self, job: &Job) -> CallResult {
        let params = params(&job.report);
        match self
            .client
            .report_payment(params, &job.idempotency_key, None)
            .await
        {
            Ok(record) => CallResult::Recorded {
                record_id: record.id,
            },
            Err(e) => classify(&e),
        }
    }

    /// The record of `report` among those Stripe made since `since`, if any.
    async fn look_up(&self, report: &CustomPaymentReport, since: i64) -> CallResult {
        let mut pages = self.client.payment_records(since, None);
        loop {
            match pages.next().await {
                Ok(Some(page)) => {
                    let ours = page.into_iter().find(|r| {
                        r.metadata.get(REPORT_ID_METADATA).map(String::as_str) == Some(&report.id)
                    });
                    if let Some(found) = ours {
                        info!(report_id = %report.id, record_id = %found.id, "Payment Record found at Stripe; not sending the report again");
                        return CallResult::Recorded {
                            record_id: found.id,
                        };
                    }
                }
                Ok(None) => return CallResult::NotFound,
                Err(e) => return classify(&e),
            }
        }
    }

    /// `fulfillment_payment_records_refused`: refused jobs waiting for a person.
    async fn count_refused(&self) {
        let refused: Result<i64, _> =
            sqlx::query_scalar("SELECT count(*) FROM payment_record_jobs WHERE state = 'refused'")
                .fetch_one(&self.pool)
                .await;
        if let Ok(n) = refused {
            metrics::gauge!(m::PAYMENT_RECORDS_REFUSED).set(n as f64);
        }
    }
}

/// What a failed call means for the job: the same call may work later, or
/// Stripe refused this report. Our own key refused (401) is not the
/// report's fault: it waits for the key to be fixed, like an outage.
pub fn classify(error: &stripe_api::Error) -> CallResult {
    use stripe_api::Error as E;
    let error_text = error.to_string();
    match error {
        E::Unauthorized { .. } | E::Decode(_) => CallResult::Transient { error: error_text },
        E::Invalid(_) => CallResult::Refused { error: error_text },
        e if e.is_transient() => CallResult::Transient { error: error_text },
        _ => CallResult::Refused { error: error_text },
    }
}

/// The report's `report_payment` parameters (`fulfillment_core::record`),
/// as the client sends them.
fn params(report: &CustomPaymentReport) -> Params {
    record::report_payment_params(report)
        .into_iter()
        .fold(Params::new(), |params, (key, value)| {
            params.with(key, Value::from(value))
        })
}

/// The first due pending job, locked for this transaction (others skip it).
async fn claim(tx: &mut PgConnection) -> Result<Option<Job>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT j.report_id, j.state, j.attempts, extract(epoch FROM j.created_at)::int8 AS created, \
         j.idempotency_key, j.record_id, c.order_id, c.outcome, c.amount, c.currency, \
         c.custom_payment_method_type, c.payment_reference, \
         extract(epoch FROM c.initiated_at)::int8 AS initiated, \
         extract(epoch FROM c.completed_at)::int8 AS completed, c.customer_email, c.stripe_customer \
         FROM payment_record_jobs j JOIN custom_payments c USING (report_id) \
         WHERE j.state = 'pending' AND j.next_attempt_at <= now() \
         ORDER BY j.next_attempt_at LIMIT 1 FOR UPDATE OF j SKIP LOCKED",
    )
    .fetch_optional(&mut *tx)
    .await?;
    row.map(|row| job_of(&row)).transpose()
}

fn job_of(row: &sqlx::postgres::PgRow) -> Result<Job, sqlx::Error> {
    let decode = |what: &str| sqlx::Error::Decode(format!("payment_record_jobs: {what}").into());
    let outcome: String = row.get("outcome");
    let state: String = row.get("state");
    let attempts: i32 = row.get("attempts");
    Ok(Job {
        report: CustomPaymentReport {
            id: row.get("report_id"),
            order_id: row.get("order_id"),
            outcome: match outcome.as_str() {
                "guaranteed" => CustomOutcome::Guaranteed,
                "failed" => CustomOutcome::Failed,
                _ => return Err(decode("outcome")),
            },
            amount: row.get("amount"),
            currency: row.get("currency"),
            custom_payment_method_type: row.get("custom_payment_method_type"),
            payment_reference: row.get("payment_reference"),
            initiated_at: row.get("initiated"),
            completed_at: row.get("completed"),
            customer_email: row.get("customer_email"),
            stripe_customer: row.get("stripe_customer"),
        },
        state: JobState::parse(&state).ok_or_else(|| decode("state"))?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        created_at: row.get("created"),
        idempotency_key: row.get("idempotency_key"),
        record_id: row.get("record_id"),
    })
}

/// Stores what the call decided. A record's job row is written before its
/// message: the record id is final the moment it commits, with the message.
async fn store(tx: &mut PgConnection, job: &Job, next: &Next) -> Result<(), sqlx::Error> {
    let report_id = job.report.id.as_str();
    match next {
        Next::Recorded { record_id } => {
            sqlx::query(
                "UPDATE payment_record_jobs SET state = 'recorded', record_id = $2, \
                 recorded_at = now(), last_error = NULL WHERE report_id = $1",
            )
            .bind(report_id)
            .bind(record_id)
            .execute(&mut *tx)
            .await?;
            let message =
                PaymentRecordedMessage::new(&job.report, record_id, OffsetDateTime::now_utc());
            sqlx::query(
                "INSERT INTO outbox (message_id, routing_key, body, order_id) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (message_id) DO NOTHING",
            )
            .bind(&message.message_id)
            .bind(record::PAYMENT_RECORDED)
            .bind(message.to_json())
            .bind(&message.order_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("SELECT pg_notify('outbox', '')")
                .execute(&mut *tx)
                .await?;
        }
        Next::RetryAt {
            at,
            attempts,
            error,
        } => {
            sqlx::query(
                "UPDATE payment_record_jobs SET attempts = $2, next_attempt_at = to_timestamp($3), \
                 last_error = $4 WHERE report_id = $1",
            )
            .bind(report_id)
            .bind(i32::try_from(*attempts).unwrap_or(i32::MAX))
            .bind(*at as f64)
            .bind(error)
            .execute(&mut *tx)
            .await?;
        }
        Next::Refused { attempts, error } => {
            sqlx::query(
                "UPDATE payment_record_jobs SET state = 'refused', attempts = $2, last_error = $3 \
                 WHERE report_id = $1",
            )
            .bind(report_id)
            .bind(i32::try_from(*attempts).unwrap_or(i32::MAX))
            .bind(error)
            .execute(&mut *tx)
            .await?;
        }
        Next::Report => unreachable!("a lookup that found nothing is followed by a report"),
    }
    Ok(())
}

fn observe(job: &Job, next: &Next) {
    let report_id = job.report.id.as_str();
    let order_id = job.report.order_id.as_str();
    let outcome = match next {
        Next::Recorded { record_id } => {
            info!(report_id, order_id, record_id = %record_id, "custom payment recorded to Stripe");
            "recorded"
        }
        Next::RetryAt {
            at,
            attempts,
            error,
        } => {
            warn!(report_id, order_id, attempts, retry_in_secs = at - unix_now(), error = %error, "Payment Record not made yet; will try again");
            "retried"
        }
        Next::Refused { error, .. } => {
            warn!(report_id, order_id, error = %error, "Stripe refused the Payment Record; kept for a person (fulfillment orders show, then orders retry-record)");
            "refused"
        }
        Next::Report => return debug!(report_id, "nothing stored"),
    };
    metrics::counter!(m::PAYMENT_RECORDS_TOTAL, "outcome" => outcome).increment(1);
}

/// `orders retry-record ORDER_ID`: the refused jobs of the order go back to
/// pending, due now, each with a new key (Stripe saved the refusal under the
/// old one). Returns the report ids sent again.
pub async fn retry_refused(pool: &PgPool, order_id: &str) -> anyhow::Result<Vec<String>> {
    let mut tx = pool.begin().await?;
    let rows: Vec<(String, i32)> = sqlx::query_as(
        "SELECT report_id, key_generation FROM payment_record_jobs \
         WHERE order_id = $1 AND state = 'refused' ORDER BY report_id FOR UPDATE",
    )
    .bind(order_id)
    .fetch_all(&mut *tx)
    .await?;
    for (report_id, generation) in &rows {
        let generation = generation.saturating_add(1);
        let key = record::idempotency_key(report_id, u32::try_from(generation).unwrap_or(1));
        sqlx::query(
            "UPDATE payment_record_jobs SET state = 'pending', key_generation = $2, \
             idempotency_key = $3, next_attempt_at = now() WHERE report_id = $1",
        )
        .bind(report_id)
        .bind(generation)
        .bind(&key)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("SELECT pg_notify('payment_record_jobs', '')")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(|(id, _)| id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stripe_api::ApiError;

    fn api(status: u16, should_retry: Option<bool>) -> stripe_api::Error {
        stripe_api::Error::Api(Box::new(ApiError {
            status,
            should_retry,
            message: Some("why".into()),
            ..ApiError::default()
        }))
    }

    fn is_refused(result: CallResult) -> bool {
        matches!(result, CallResult::Refused { .. })
    }

    #[test]
    fn refusals_are_4xx_answers_other_than_conflicts_and_rate_limits() {
        for status in [400, 402, 403, 404, 422] {
            assert!(is_refused(classify(&api(status, None))), "{status}");
        }
        for status in [409, 429, 500, 502, 503] {
            assert!(!is_refused(classify(&api(status, None))), "{status}");
        }
        // Stripe's own header wins, as in the client's retry rule.
        assert!(!is_refused(classify(&api(400, Some(true)))));
        assert!(is_refused(classify(&api(503, Some(false)))));
        // Not the report's fault: held, not refused.
        let key = stripe_api::Error::Unauthorized {
            setting: "STRIPE_API_KEY",
        };
        assert!(!is_refused(classify(&key)));
        assert!(!is_refused(classify(&stripe_api::Error::Timeout(
            Duration::from_secs(1)
        ))));
        assert!(!is_refused(classify(&stripe_api::Error::Decode(
            "half an answer".into()
        ))));
        assert!(is_refused(classify(&stripe_api::Error::Invalid(
            "key too long".into()
        ))));
    }

    #[test]
    fn the_params_are_the_cores_in_the_clients_encoding() {
        let report = fulfillment_core::sample::custom_payment(
            "cpay_1",
            "ord 1",
            CustomOutcome::Failed,
            1_795_460_100,
        );
        let encoded = params(&report).encode();
        assert!(encoded.starts_with("amount_requested[value]=4200&amount_requested[currency]=eur"));
        assert!(encoded.contains("&failed[failed_at]=1795460100"));
        assert!(encoded.contains("&metadata[fulfillment_report_id]=cpay_1"));
        assert!(encoded.contains("&metadata[order_id]=ord%201"), "{encoded}");
    }
}
