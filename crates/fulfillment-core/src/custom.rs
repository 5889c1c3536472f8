//! Off-Stripe payments: the report a merchant's backend sends after it
//! completed a payment with a custom payment method (`cpmt_…`) at another
//! processor (`POST /payments/custom`, contract 8.2), and how that report
//! travels through the same queue as Stripe's events.
//!
//! [`parse_custom_payment`] is the one validation of a report: the receiver
//! answers 400 naming the field for anything it refuses, and the worker reads
//! the report back with the same function, so the two cannot disagree.
//!
//! # On the bus
//!
//! A report is published to `stripe.events` wrapped in an event-shaped
//! envelope ([`envelope`]): `{"id":"custom_payment:{report id}","object":"event",
//! "type":"custom_payment.reported","created":…,"data":{"object":<the body as
//! received, byte for byte>}}`. So everything that handles an event (dedup
//! by event id in `processed_events`, retries, the DLQ and its replay,
//! `events show`) handles a report unchanged. The `custom_payment:` prefix
//! is the report's namespace: Stripe's event ids never contain a `:`, and the
//! webhook route refuses any event in that namespace or of that type
//! ([`is_reserved`]), so a report id can never collide with a Stripe event.
//!
//! # Unknown members
//!
//! Refused (400 naming the member). The caller is the merchant's own code,
//! not Stripe: a misspelt `stripe_customr` silently dropped would lose data
//! nobody notices, while a 400 shows up in their first test. A field we add
//! later is added here first, so a newer caller never meets an older server
//! that matters (workers are upgraded with the receivers; a report a worker
//! cannot read is dead-lettered and replayed after the upgrade).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::json::{self, Key, Mismatch};
use crate::status::OrderStatus;

/// Routing key, AMQP `type` and envelope `type` of a report on the bus.
pub const CUSTOM_PAYMENT_TYPE: &str = "custom_payment.reported";
/// Prefix of a report's event id: its own namespace in `processed_events`.
pub const CUSTOM_EVENT_ID_PREFIX: &str = "custom_payment:";

/// Longest report `id`: with the prefix it stays an AMQP short string
/// (255 bytes) and an `Idempotency-Key` (255 characters).
pub const MAX_REPORT_ID_BYTES: usize = 200;
/// Longest `order_id` (Stripe's own limit for metadata values).
pub const MAX_ORDER_ID_BYTES: usize = 500;
/// Longest `payment_reference` and `customer_email`.
pub const MAX_TEXT_BYTES: usize = 500;
/// Longest `custom_payment_method_type` and `stripe_customer`.
pub const MAX_STRIPE_ID_BYTES: usize = 100;
/// Latest timestamp accepted: 9999-12-31T23:59:59Z.
pub const MAX_UNIX_SECONDS: i64 = 253_402_300_799;
/// Unknown or duplicated member names are quoted at most this long.
const MAX_QUOTED_NAME: usize = 64;

/// What the merchant's processor said about the payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomOutcome {
    /// The money is guaranteed: the order is paid.
    Guaranteed,
    /// The payment failed.
    Failed,
}

impl CustomOutcome {
    pub const ALL: [CustomOutcome; 2] = [CustomOutcome::Guaranteed, CustomOutcome::Failed];

    pub const fn as_str(self) -> &'static str {
        match self {
            CustomOutcome::Guaranteed => "guaranteed",
            CustomOutcome::Failed => "failed",
        }
    }

    /// The order status this outcome asks for (same precedence as Stripe's events).
    pub const fn target_status(self) -> OrderStatus {
        match self {
            CustomOutcome::Guaranteed => OrderStatus::Paid,
            CustomOutcome::Failed => OrderStatus::PaymentFailed,
        }
    }
}

impl fmt::Display for CustomOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated custom-payment report (contract 8.2). Serialises to the body
/// a caller sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CustomPaymentReport {
    /// The caller's unique id of this report: the dedup key.
    pub id: String,
    pub order_id: String,
    pub outcome: CustomOutcome,
    /// Positive, in the currency's minor unit.
    pub amount: i64,
    /// Three lowercase ASCII letters.
    pub currency: String,
    /// `cpmt_…`, the type created in Stripe's Dashboard.
    pub custom_payment_method_type: String,
    /// The other processor's id of the payment.
    pub payment_reference: String,
    /// Unix seconds.
    pub initiated_at: i64,
    /// Unix seconds, not before `initiated_at`.
    pub completed_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_email: Option<String>,
    /// `cus_…`, when the customer is known to Stripe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stripe_customer: Option<String>,
}

impl CustomPaymentReport {
    /// The event id this report has in `processed_events` and on the bus.
    pub fn event_id(&self) -> String {
        event_id(&self.id)
    }

    /// The body a caller would send for this report.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a report serialises to JSON")
    }
}

/// `custom_payment:{report id}`.
pub fn event_id(report_id: &str) -> String {
    format!("{CUSTOM_EVENT_ID_PREFIX}{report_id}")
}

/// Why a report body is refused. Every variant names the member at fault
/// (except the two about the body as a whole); the text is safe to return to
/// the caller and to log: member names the caller made up are quoted,
/// escaped and cut.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("body is not valid JSON")]
    NotJson,
    #[error("body is not a JSON object")]
    NotObject,
    #[error("`{field}` is missing")]
    Missing { field: &'static str },
    #[error("`{field}` must be {expected}")]
    Invalid {
        field: &'static str,
        expected: &'static str,
    },
    #[error("unknown member {name}")]
    Unknown { name: QuotedName },
    #[error("member {name} appears more than once")]
    Duplicate { name: QuotedName },
    #[error("`completed_at` must not be before `initiated_at`")]
    CompletedBeforeInitiated,
}

impl ReportError {
    /// The member at fault, for the 400's `field`; `None` for the whole body.
    pub fn field(&self) -> Option<Cow<'static, str>> {
        match self {
            ReportError::NotJson | ReportError::NotObject => None,
            ReportError::Missing { field } | ReportError::Invalid { field, .. } => {
                Some(Cow::Borrowed(field))
            }
            ReportError::Unknown { name } | ReportError::Duplicate { name } => {
                Some(Cow::Owned(name.0.clone()))
            }
            ReportError::CompletedBeforeInitiated => Some(Cow::Borrowed("completed_at")),
        }
    }
}

/// A member name the caller chose, cut to a few dozen characters; displayed
/// quoted with escapes, so it cannot forge a log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotedName(String);

impl QuotedName {
    fn new(name: Option<&str>) -> QuotedName {
        let name = name.unwrap_or("(not Unicode text)");
        QuotedName(name.chars().take(MAX_QUOTED_NAME).collect())
    }
}

impl fmt::Display for QuotedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Reads and validates a report body (see the module docs for what is refused).
pub fn parse_custom_payment(body: &[u8]) -> Result<CustomPaymentReport, ReportError> {
    let text = std::str::from_utf8(body).map_err(|_| ReportError::NotJson)?;
    let members = serde_json::from_str::<Members>(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ReportError::NotObject,
        _ => ReportError::NotJson,
    })?;
    members.report()
}

/// Every member of the report object, raw, in order; names as text (`None`
/// for a name escaping a lone surrogate, which is never one of ours).
struct Members<'a>(Vec<(Option<Cow<'a, str>>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;

        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    let name = key.as_str().map(|s| Cow::Owned(s.to_owned()));
                    members.push((name, map.next_value::<&'de RawValue>()?));
                }
                Ok(Members(members))
            }
        }

        deserializer.deserialize_map(MembersVisitor)
    }
}

const FIELDS: &[&str] = &[
    "id",
    "order_id",
    "outcome",
    "amount",
    "currency",
    "custom_payment_method_type",
    "payment_reference",
    "initiated_at",
    "completed_at",
    "customer_email",
    "stripe_customer",
];

impl<'a> Members<'a> {
    fn report(&self) -> Result<CustomPaymentReport, ReportError> {
        self.check_names()?;
        let initiated_at = self.timestamp("initiated_at")?;
        let completed_at = self.timestamp("completed_at")?;
        let report = CustomPaymentReport {
            id: self.required("id", report_id)?,
            order_id: self.required("order_id", order_id)?,
            outcome: self.required("outcome", outcome)?,
            amount: self.amount()?,
            currency: self.required("currency", currency)?,
            custom_payment_method_type: self
                .required("custom_payment_method_type", custom_payment_method_type)?,
            payment_reference: self.required("payment_reference", payment_reference)?,
            initiated_at,
            completed_at,
            customer_email: self.optional("customer_email", customer_email)?,
            stripe_customer: self.optional("stripe_customer", stripe_customer)?,
        };
        if completed_at < initiated_at {
            return Err(ReportError::CompletedBeforeInitiated);
        }
        Ok(report)
    }

    /// No member we do not know, none twice: checked first, so the answer
    /// does not depend on which other member is also wrong.
    fn check_names(&self) -> Result<(), ReportError> {
        let mut seen: Vec<&str> = Vec::with_capacity(self.0.len());
        for (name, _) in &self.0 {
            let known = name.as_deref().filter(|n| FIELDS.contains(n));
            let Some(known) = known else {
                return Err(ReportError::Unknown {
                    name: QuotedName::new(name.as_deref()),
                });
            };
            if seen.contains(&known) {
                return Err(ReportError::Duplicate {
                    name: QuotedName::new(Some(known)),
                });
            }
            seen.push(known);
        }
        Ok(())
    }

    /// The member's raw value; absent and `null` are both `None`.
    fn raw(&self, field: &str) -> Option<&'a RawValue> {
        let raw = self
            .0
            .iter()
            .find(|(name, _)| name.as_deref() == Some(field))
            .map(|(_, raw)| *raw);
        json::present(raw)
    }

    fn string(&self, field: &'static str) -> Result<Option<Cow<'a, str>>, ReportError> {
        json::string(self.raw(field)).map_err(|mismatch| match mismatch {
            Mismatch::WrongType => invalid(field, "a string"),
            Mismatch::NotUnicode => invalid(field, "Unicode text (it escapes a lone surrogate)"),
        })
    }

    fn required<T>(
        &self,
        field: &'static str,
        check: fn(&str) -> Result<T, &'static str>,
    ) -> Result<T, ReportError> {
        let value = self.string(field)?.ok_or(ReportError::Missing { field })?;
        check(&value).map_err(|expected| invalid(field, expected))
    }

    fn optional<T>(
        &self,
        field: &'static str,
        check: fn(&str) -> Result<T, &'static str>,
    ) -> Result<Option<T>, ReportError> {
        match self.string(field)? {
            None => Ok(None),
            Some(value) => check(&value)
                .map(Some)
                .map_err(|expected| invalid(field, expected)),
        }
    }

    fn integer(&self, field: &'static str, expected: &'static str) -> Result<i64, ReportError> {
        json::int(self.raw(field))
            .map_err(|_| invalid(field, expected))?
            .ok_or(ReportError::Missing { field })
    }

    fn amount(&self) -> Result<i64, ReportError> {
        const EXPECTED: &str = "a positive integer (minor units, e.g. 4200 for 42.00 EUR)";
        match self.integer("amount", EXPECTED)? {
            n if n > 0 => Ok(n),
            _ => Err(invalid("amount", EXPECTED)),
        }
    }

    fn timestamp(&self, field: &'static str) -> Result<i64, ReportError> {
        const EXPECTED: &str = "a positive integer of Unix seconds, before the year 10000";
        match self.integer(field, EXPECTED)? {
            n if (1..=MAX_UNIX_SECONDS).contains(&n) => Ok(n),
            _ => Err(invalid(field, EXPECTED)),
        }
    }
}

fn invalid(field: &'static str, expected: &'static str) -> ReportError {
    ReportError::Invalid { field, expected }
}

// One check per member: the value is already a string; each returns what it
// expected when the value does not fit.

fn report_id(s: &str) -> Result<String, &'static str> {
    let ok =
        (1..=MAX_REPORT_ID_BYTES).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| s.to_owned())
        .ok_or("1 to 200 visible ASCII characters (no spaces)")
}

fn order_id(s: &str) -> Result<String, &'static str> {
    text(s, MAX_ORDER_ID_BYTES).ok_or("1 to 500 bytes of text without control characters")
}

fn payment_reference(s: &str) -> Result<String, &'static str> {
    text(s, MAX_TEXT_BYTES).ok_or("1 to 500 bytes of text without control characters")
}

fn outcome(s: &str) -> Result<CustomOutcome, &'static str> {
    CustomOutcome::ALL
        .into_iter()
        .find(|o| o.as_str() == s)
        .ok_or("\"guaranteed\" or \"failed\"")
}

fn currency(s: &str) -> Result<String, &'static str> {
    let ok = s.len() == 3 && s.bytes().all(|b| b.is_ascii_lowercase());
    ok.then(|| s.to_owned())
        .ok_or("a three-letter ISO currency code in lowercase, e.g. \"eur\"")
}

fn custom_payment_method_type(s: &str) -> Result<String, &'static str> {
    stripe_id(s, "cpmt_")
        .ok_or("a custom payment method type id: \"cpmt_\" and letters, digits or _ (at most 100)")
}

fn stripe_customer(s: &str) -> Result<String, &'static str> {
    stripe_id(s, "cus_")
        .ok_or("a Stripe customer id: \"cus_\" and letters, digits or _ (at most 100)")
}

fn customer_email(s: &str) -> Result<String, &'static str> {
    let ok = s.len() <= MAX_TEXT_BYTES
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && s.split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
    ok.then(|| s.to_owned())
        .ok_or("an email address (at most 500 bytes), or absent")
}

/// `prefix` followed by at least one letter, digit or `_`, at most 100 bytes.
fn stripe_id(s: &str, prefix: &str) -> Option<String> {
    let rest = s.strip_prefix(prefix)?;
    let ok = s.len() <= MAX_STRIPE_ID_BYTES
        && !rest.is_empty()
        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    ok.then(|| s.to_owned())
}

/// Non-empty, at most `max` bytes, no control characters (a NUL would not
/// even fit a PostgreSQL text).
fn text(s: &str, max: usize) -> Option<String> {
    let ok = !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control);
    ok.then(|| s.to_owned())
}

/// The event-shaped envelope a validated report travels in (module docs).
/// `body` must be the report as received (it is valid JSON, since
/// [`parse_custom_payment`] accepted it) and `report_id` its `id`;
/// `received_at` (Unix seconds) becomes `created`.
pub fn envelope(body: &[u8], report_id: &str, received_at: i64) -> Vec<u8> {
    let id = serde_json::to_string(&event_id(report_id)).expect("a string serialises");
    let mut out = Vec::with_capacity(body.len() + 128);
    out.extend_from_slice(b"{\"id\":");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b",\"object\":\"event\",\"type\":\"");
    out.extend_from_slice(CUSTOM_PAYMENT_TYPE.as_bytes());
    out.extend_from_slice(b"\",\"created\":");
    out.extend_from_slice(received_at.to_string().as_bytes());
    out.extend_from_slice(b",\"data\":{\"object\":");
    out.extend_from_slice(body);
    out.extend_from_slice(b"}}");
    out
}

/// Whether a Stripe-signed event claims the reports' namespace or type: the
/// webhook route refuses those, so only `POST /payments/custom` (with its
/// own secret) can put a report on the bus.
pub fn is_reserved(event_id: &str, event_type: &str) -> bool {
    event_type == CUSTOM_PAYMENT_TYPE || event_id.starts_with(CUSTOM_EVENT_ID_PREFIX)
}

/// Why an envelope on the bus does not hold a report the worker can apply.
/// Permanent: the worker dead-letters these.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeReportError {
    #[error("`data.object` holds no report object")]
    NoReport,
    #[error("the report in `data.object` is refused: {0}")]
    Report(ReportError),
    #[error("`id` is not the report's `custom_payment:` id")]
    IdMismatch,
}

/// The report inside an envelope made by [`envelope`], checked again by
/// [`parse_custom_payment`] (the receiver's rule) and against the envelope's `id`.
pub(crate) fn report_in_envelope(
    body: &[u8],
    envelope_id: &str,
) -> Result<CustomPaymentReport, EnvelopeReportError> {
    #[derive(Deserialize)]
    struct Outer<'a> {
        #[serde(borrow)]
        data: Data<'a>,
    }
    #[derive(Deserialize)]
    struct Data<'a> {
        #[serde(borrow)]
        object: &'a RawValue,
    }
    let outer: Outer = serde_json::from_slice(body).map_err(|_| EnvelopeReportError::NoReport)?;
    let report = parse_custom_payment(outer.data.object.get().as_bytes())
        .map_err(EnvelopeReportError::Report)?;
    if report.event_id() != envelope_id {
        return Err(EnvelopeReportError::IdMismatch);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"id": "cpay_123", "order_id": "ord_42", "outcome": "guaranteed",
   "amount": 4200, "currency": "eur", "custom_payment_method_type": "cpmt_abc",
   "payment_reference": "psp_txn_987", "initiated_at": 1795460000,
   "completed_at": 1795460100, "customer_email": "a@example.com",
   "stripe_customer": "cus_123"}"#;

    #[test]
    fn the_contracts_example_is_accepted() {
        let report = parse_custom_payment(GOOD.as_bytes()).unwrap();
        assert_eq!(
            report,
            CustomPaymentReport {
                id: "cpay_123".into(),
                order_id: "ord_42".into(),
                outcome: CustomOutcome::Guaranteed,
                amount: 4200,
                currency: "eur".into(),
                custom_payment_method_type: "cpmt_abc".into(),
                payment_reference: "psp_txn_987".into(),
                initiated_at: 1795460000,
                completed_at: 1795460100,
                customer_email: Some("a@example.com".into()),
                stripe_customer: Some("cus_123".into()),
            }
        );
        assert_eq!(report.event_id(), "custom_payment:cpay_123");
        assert_eq!(parse_custom_payment(&report.to_json()), Ok(report));
    }

    #[test]
    fn the_envelope_carries_the_body_verbatim_and_reads_back() {
        let env = envelope(GOOD.as_bytes(), "cpay_123", 1795460101);
        let text = String::from_utf8(env.clone()).unwrap();
        assert!(text.contains(GOOD), "{text}");
        let value: serde_json::Value = serde_json::from_slice(&env).unwrap();
        assert_eq!(value["id"], "custom_payment:cpay_123");
        assert_eq!(value["type"], CUSTOM_PAYMENT_TYPE);
        assert_eq!(value["created"], 1795460101);
        let report = report_in_envelope(&env, "custom_payment:cpay_123").unwrap();
        assert_eq!(report.id, "cpay_123");
        assert_eq!(
            report_in_envelope(&env, "custom_payment:other"),
            Err(EnvelopeReportError::IdMismatch)
        );
    }

    #[test]
    fn the_namespace_and_type_are_reserved() {
        assert!(is_reserved(
            "custom_payment:x",
            "checkout.session.completed"
        ));
        assert!(is_reserved("evt_1", CUSTOM_PAYMENT_TYPE));
        assert!(!is_reserved("evt_1", "checkout.session.completed"));
    }
}
