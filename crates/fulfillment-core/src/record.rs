//! Recording custom payments to Stripe as Payment Records
//! (`POST /v1/payment_records/report_payment`, contract 8.3): the decisions
//! of the reporter, pure. The reporter (`fulfillment::records`) claims one
//! job at a time from `payment_record_jobs`, asks [`plan`] what to do, makes
//! the one Stripe call it names, and stores what [`after_call`] says, all
//! while holding only that job's row lock: never an order's, never inside
//! the worker's transaction.
//!
//! Exactly one record per report, whatever fails:
//! - the `Idempotency-Key` ([`idempotency_key`]) is derived from the
//!   report's id and stored with the job when the report is taken in, before
//!   any call; a retry (same process or another, after a crash between
//!   Stripe's answer and our commit) sends the same key, and Stripe answers
//!   with the record it already made;
//! - Stripe may forget a key once it is 24 hours old, so a job older than
//!   [`KEY_TRUST`] first looks for its record at Stripe (the records created
//!   since the job, matched by `metadata[fulfillment_report_id]`) and sends
//!   only when there is none;
//! - a record id, once stored, is final: the job is done and is never sent
//!   again.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::custom::{CustomOutcome, CustomPaymentReport};
use crate::message::rfc3339;
use crate::payment::PaymentMethod;

/// Metadata the record carries so that it can be found again by report.
pub const REPORT_ID_METADATA: &str = "fulfillment_report_id";
/// Metadata naming the order, for people reading the record at Stripe.
pub const ORDER_ID_METADATA: &str = "order_id";
/// How long a job trusts its idempotency key. Stripe keeps keys at least 24
/// hours; an hour of margin covers clocks and a call in flight at the edge.
pub const KEY_TRUST: Duration = Duration::from_secs(23 * 3600);
/// How far before the job's creation the lookup starts listing: the job is
/// written in the worker's transaction, and Stripe's clock is not ours.
pub const LOOKUP_SLACK: Duration = Duration::from_secs(3600);
/// Routing key (and `type`) of the message announcing a record.
pub const PAYMENT_RECORDED: &str = "order.payment_recorded";

/// `fulfillment-payment-record/{report id}`, and `…/retry-{n}` after a
/// person sent a refused job again (`orders retry-record`): Stripe saves a
/// refusal under its key, so the same key would only replay it. A refused
/// call created nothing, so a new key cannot make a second record.
/// At most 200 + 46 characters: within Stripe's 255.
pub fn idempotency_key(report_id: &str, generation: u32) -> String {
    match generation {
        0 => format!("fulfillment-payment-record/{report_id}"),
        n => format!("fulfillment-payment-record/{report_id}/retry-{n}"),
    }
}

/// The state of a job as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting for its (next) call.
    Pending,
    /// The record exists; its id is stored.
    Recorded,
    /// Stripe refused the report for good; kept for a person.
    Refused,
}

impl JobState {
    pub const ALL: [JobState; 3] = [JobState::Pending, JobState::Recorded, JobState::Refused];

    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Recorded => "recorded",
            JobState::Refused => "refused",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

/// What the reporter knows of a claimed job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub report: CustomPaymentReport,
    pub state: JobState,
    /// Calls made so far (failed ones; a successful one ends the job).
    pub attempts: u32,
    /// When the job was written (Unix seconds): the key exists since then.
    pub created_at: i64,
    pub idempotency_key: String,
    pub record_id: Option<String>,
}

/// The one call (or none) a claimed job needs now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to call: the record id is stored (or the job is not pending).
    Nothing,
    /// The key may be forgotten: list the records created since `since`
    /// (Unix seconds) and look for this report's before sending.
    LookUp { since: i64 },
    /// Send `report_payment` with the stored key.
    Report,
}

/// What to do with a claimed job at `now` (Unix seconds).
pub fn plan(job: &Job, now: i64) -> Plan {
    if job.state != JobState::Pending || job.record_id.is_some() {
        return Plan::Nothing;
    }
    let age = now.saturating_sub(job.created_at);
    if age >= KEY_TRUST.as_secs() as i64 {
        return Plan::LookUp {
            since: job.created_at - LOOKUP_SLACK.as_secs() as i64,
        };
    }
    Plan::Report
}

/// How a call ended, as far as the job is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallResult {
    /// Stripe made (or had made) the record.
    Recorded { record_id: String },
    /// The lookup found no record of this report: send it now.
    NotFound,
    /// No answer, a rate limit, a conflict, a server error, or our own key
    /// refused: the same call may work later.
    Transient { error: String },
    /// Stripe refused this report (a 4xx other than 409 and 429): no retry
    /// can change that; a person has to.
    Refused { error: String },
}

/// What to store after a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    Recorded {
        record_id: String,
    },
    /// Call `report_payment` now, in the same claim (a lookup found nothing).
    Report,
    RetryAt {
        /// Unix seconds.
        at: i64,
        attempts: u32,
        error: String,
    },
    Refused {
        attempts: u32,
        error: String,
    },
}

/// The next state of `job` after `result`, at `now` (Unix seconds).
pub fn after_call(job: &Job, result: CallResult, now: i64) -> Next {
    let attempts = job.attempts.saturating_add(1);
    match result {
        CallResult::Recorded { record_id } => Next::Recorded { record_id },
        CallResult::NotFound => Next::Report,
        CallResult::Transient { error } => Next::RetryAt {
            at: now.saturating_add(retry_delay(attempts).as_secs() as i64),
            attempts,
            error,
        },
        CallResult::Refused { error } => Next::Refused { attempts, error },
    }
}

/// The wait before attempt `attempts + 1`: 10 s doubling to at most an hour.
/// The client already retried within the call; this is for outages that
/// last, and keeps a job that fails for hours from calling more than hourly.
pub fn retry_delay(attempts: u32) -> Duration {
    let exponent = attempts.saturating_sub(1).min(16);
    Duration::from_secs((10u64 << exponent).min(3600))
}

/// The parameters of `report_payment` for a report (seeds `000_…`–`002_…`,
/// STRIPE_API.md 6), in Stripe's bracket notation, in a fixed order:
/// the same report always gives the same request, as a key requires.
pub fn report_payment_params(report: &CustomPaymentReport) -> Vec<(String, String)> {
    let mut params = vec![
        ("amount_requested[value]", report.amount.to_string()),
        ("amount_requested[currency]", report.currency.clone()),
        ("initiated_at", report.initiated_at.to_string()),
        ("payment_method_details[type]", "custom".to_owned()),
        (
            "payment_method_details[custom][type]",
            report.custom_payment_method_type.clone(),
        ),
        ("processor_details[type]", "custom".to_owned()),
        (
            "processor_details[custom][payment_reference]",
            report.payment_reference.clone(),
        ),
        // A custom payment method is picked by the customer in the Payment
        // Element: they are in the checkout flow.
        ("customer_presence", "on_session".to_owned()),
    ];
    if let Some(customer) = &report.stripe_customer {
        params.push(("customer_details[customer]", customer.clone()));
    }
    if let Some(email) = &report.customer_email {
        params.push(("customer_details[email]", email.clone()));
    }
    let completed = report.completed_at.to_string();
    match report.outcome {
        CustomOutcome::Guaranteed => {
            params.push(("outcome", "guaranteed".to_owned()));
            params.push(("guaranteed[guaranteed_at]", completed));
        }
        CustomOutcome::Failed => {
            params.push(("outcome", "failed".to_owned()));
            params.push(("failed[failed_at]", completed));
        }
    }
    let report_id_key = format!("metadata[{REPORT_ID_METADATA}]");
    let order_id_key = format!("metadata[{ORDER_ID_METADATA}]");
    let mut params: Vec<(String, String)> =
        params.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    params.push((report_id_key, report.id.clone()));
    params.push((order_id_key, report.order_id.clone()));
    params
}

/// `order.payment_recorded`: a custom payment is now a Payment Record at Stripe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecordedMessage {
    #[serde(rename = "type")]
    pub message_type: String,
    pub message_id: String,
    pub order_id: String,
    /// The Payment Record (`pr_…`).
    pub payment_record_id: String,
    /// The custom-payment report it records, and what it said.
    pub report_id: String,
    pub outcome: CustomOutcome,
    pub amount: i64,
    pub currency: String,
    pub payment_method: PaymentMethod,
    /// The Connect account the record was made in, like every message's
    /// `account`: always `null`, because a report names no Connect account
    /// and is recorded in the platform's own.
    pub account: Option<String>,
    /// RFC 3339, UTC.
    pub occurred_at: String,
}

impl PaymentRecordedMessage {
    /// `now` becomes `occurred_at`.
    pub fn new(report: &CustomPaymentReport, record_id: &str, now: OffsetDateTime) -> Self {
        PaymentRecordedMessage {
            message_type: PAYMENT_RECORDED.to_owned(),
            message_id: Self::message_id(&report.id),
            order_id: report.order_id.clone(),
            payment_record_id: record_id.to_owned(),
            report_id: report.id.clone(),
            outcome: report.outcome,
            amount: report.amount,
            currency: report.currency.clone(),
            payment_method: PaymentMethod::Custom {
                method_type: report.custom_payment_method_type.clone(),
                payment_reference: report.payment_reference.clone(),
            },
            account: None,
            occurred_at: rfc3339(now),
        }
    }

    /// `custom_payment:{report id}/payment_recorded`: one per report, ever
    /// (a report id is at most 200 bytes, so this fits an AMQP short string).
    pub fn message_id(report_id: &str) -> String {
        format!("{}/payment_recorded", crate::custom::event_id(report_id))
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("strings, integers and enums serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::custom::MAX_REPORT_ID_BYTES;
    use crate::sample;

    fn job(age: i64, attempts: u32) -> Job {
        Job {
            report: sample::custom_payment("cpay_1", "ord_1", CustomOutcome::Guaranteed, 1_000),
            state: JobState::Pending,
            attempts,
            created_at: 1_000_000 - age,
            idempotency_key: idempotency_key("cpay_1", 0),
            record_id: None,
        }
    }

    #[test]
    fn keys_fit_stripes_limit_and_change_only_when_resent_by_a_person() {
        let longest = "x".repeat(MAX_REPORT_ID_BYTES);
        assert!(idempotency_key(&longest, u32::MAX).len() <= 255);
        assert_eq!(idempotency_key("a", 0), idempotency_key("a", 0));
        assert_ne!(idempotency_key("a", 0), idempotency_key("a", 1));
        assert_ne!(idempotency_key("a", 1), idempotency_key("a", 2));
        let message_id = PaymentRecordedMessage::message_id(&longest);
        assert!(message_id.len() <= crate::MAX_MESSAGE_ID_BYTES);
    }

    #[test]
    fn a_young_job_reports_an_old_one_looks_first_a_recorded_one_never_calls() {
        assert_eq!(plan(&job(60, 0), 1_000_000), Plan::Report);
        assert_eq!(plan(&job(22 * 3600, 7), 1_000_000), Plan::Report);
        let old = job(KEY_TRUST.as_secs() as i64, 1);
        assert_eq!(
            plan(&old, 1_000_000),
            Plan::LookUp {
                since: old.created_at - 3600
            }
        );
        let mut recorded = job(30 * 3600, 1);
        recorded.record_id = Some("pr_1".into());
        assert_eq!(plan(&recorded, 1_000_000), Plan::Nothing);
        let mut refused = job(60, 1);
        refused.state = JobState::Refused;
        assert_eq!(plan(&refused, 1_000_000), Plan::Nothing);
    }

    #[test]
    fn results_become_states() {
        let j = job(60, 2);
        let recorded = CallResult::Recorded {
            record_id: "pr_1".into(),
        };
        assert_eq!(
            after_call(&j, recorded, 5),
            Next::Recorded {
                record_id: "pr_1".into()
            }
        );
        assert_eq!(after_call(&j, CallResult::NotFound, 5), Next::Report);
        let transient = CallResult::Transient {
            error: "503".into(),
        };
        assert_eq!(
            after_call(&j, transient, 5),
            Next::RetryAt {
                at: 5 + 40,
                attempts: 3,
                error: "503".into()
            }
        );
        let refused = CallResult::Refused {
            error: "400".into(),
        };
        assert_eq!(
            after_call(&j, refused, 5),
            Next::Refused {
                attempts: 3,
                error: "400".into()
            }
        );
    }

    #[test]
    fn retry_delays_grow_to_an_hour() {
        let delays: Vec<u64> = (1..=12).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(
            delays,
            [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600, 3600]
        );
        assert_eq!(retry_delay(0).as_secs(), 10);
        assert_eq!(retry_delay(u32::MAX).as_secs(), 3600);
    }

    #[test]
    fn the_request_has_what_the_reference_requires() {
        let mut report = sample::custom_payment("cpay_9", "ord_9", CustomOutcome::Guaranteed, 500);
        report.stripe_customer = Some("cus_1".into());
        let params = report_payment_params(&report);
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("amount_requested[value]"), Some("4200"));
        assert_eq!(get("amount_requested[currency]"), Some("eur"));
        assert_eq!(get("initiated_at"), Some("440"));
        assert_eq!(get("payment_method_details[type]"), Some("custom"));
        assert_eq!(
            get("payment_method_details[custom][type]"),
            Some("cpmt_sample")
        );
        assert_eq!(get("processor_details[type]"), Some("custom"));
        assert_eq!(
            get("processor_details[custom][payment_reference]"),
            Some("psp_cpay_9")
        );
        assert_eq!(get("customer_presence"), Some("on_session"));
        assert_eq!(get("customer_details[customer]"), Some("cus_1"));
        assert_eq!(get("customer_details[email]"), Some("buyer@example.com"));
        assert_eq!(get("outcome"), Some("guaranteed"));
        assert_eq!(get("guaranteed[guaranteed_at]"), Some("500"));
        assert_eq!(get("failed[failed_at]"), None);
        assert_eq!(get("metadata[fulfillment_report_id]"), Some("cpay_9"));
        assert_eq!(get("metadata[order_id]"), Some("ord_9"));

        report.outcome = CustomOutcome::Failed;
        report.customer_email = None;
        let failed = report_payment_params(&report);
        let get = |k: &str| {
            failed
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("outcome"), Some("failed"));
        assert_eq!(get("failed[failed_at]"), Some("500"));
        assert_eq!(get("guaranteed[guaranteed_at]"), None);
        assert_eq!(get("customer_details[email]"), None);
        // The same report, the same request (a key may only be reused so).
        assert_eq!(report_payment_params(&report), failed);
    }

    #[test]
    fn the_message_names_the_record_the_report_and_the_order() {
        let report = sample::custom_payment("cpay_2", "ord_2", CustomOutcome::Guaranteed, 100);
        let now = time::macros::datetime!(2026-01-01 00:00 UTC);
        let message = PaymentRecordedMessage::new(&report, "pr_123", now);
        let json: serde_json::Value = serde_json::from_slice(&message.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "order.payment_recorded",
                "message_id": "custom_payment:cpay_2/payment_recorded",
                "order_id": "ord_2",
                "payment_record_id": "pr_123",
                "report_id": "cpay_2",
                "outcome": "guaranteed",
                "amount": 4200,
                "currency": "eur",
                "payment_method": {"kind": "custom", "type": "cpmt_sample", "payment_reference": "psp_cpay_2"},
                "account": null,
                "occurred_at": "2026-01-01T00:00:00Z",
            })
        );
    }
}
