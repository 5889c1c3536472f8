use std::borrow::Cow;

use serde_json::value::RawValue;

use crate::custom::{self, CUSTOM_PAYMENT_TYPE, CustomPaymentReport, EnvelopeReportError};
use crate::envelope::{Data, Document, EnvelopeError};
use crate::json::{self, Mismatch, Nested, Raw, StringOrObject, members};
use crate::lifecycle::parse as lifecycle;
use crate::lifecycle::{DisputeFacts, FailedAttempt, RefundFacts};
use crate::payment::{PaymentMethod, PaymentSource};
use crate::status::{OrderStatus, PaymentStatus};

/// Facts taken from a Checkout Session object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionFacts {
    pub session_id: String,
    /// `client_reference_id`, else `metadata.order_id`, else the session id.
    pub order_id: String,
    pub payment_intent_id: Option<String>,
    pub payment_status: PaymentStatus,
    pub amount_total: Option<i64>,
    pub currency: Option<String>,
    /// `customer_details.email`, else `customer_email`.
    pub customer_email: Option<String>,
    pub livemode: bool,
}

/// Facts taken from a PaymentIntent object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentIntentFacts {
    pub payment_intent_id: String,
    /// `metadata.order_id`.
    pub order_id: Option<String>,
    /// For `payment_intent.succeeded` `amount_received`, else `amount`; for the
    /// other types `amount` (nothing was received yet).
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub receipt_email: Option<String>,
    pub livemode: bool,
}

/// A handled event, reduced to what the state machine needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    CheckoutSessionCompleted(SessionFacts),
    CheckoutSessionExpired(SessionFacts),
    CheckoutSessionAsyncPaymentSucceeded(SessionFacts),
    CheckoutSessionAsyncPaymentFailed(SessionFacts),
    PaymentIntentSucceeded(PaymentIntentFacts),
    // The rest of the payment lifecycle (contract 8.6, `crate::lifecycle`).
    PaymentIntentProcessing(PaymentIntentFacts),
    PaymentIntentPaymentFailed(Box<FailedAttempt>),
    PaymentIntentCanceled(PaymentIntentFacts),
    ChargeRefunded(RefundFacts),
    ChargeDisputeCreated(DisputeFacts),
    ChargeDisputeClosed(DisputeFacts),
    /// A payment made outside Stripe with a custom payment method, reported
    /// by the merchant's backend (`POST /payments/custom`).
    CustomPayment(Box<CustomPaymentReport>),
}

impl EventKind {
    /// The status this event asks for (it only gets it if it outranks the current
    /// one). `None` for refunds and disputes: facts recorded beside the status,
    /// which can neither create an order nor move it.
    pub fn target_status(&self) -> Option<OrderStatus> {
        Some(match self {
            EventKind::CheckoutSessionCompleted(session) => match session.payment_status {
                PaymentStatus::Paid | PaymentStatus::NoPaymentRequired => OrderStatus::Paid,
                PaymentStatus::Unpaid => OrderStatus::AwaitingPayment,
            },
            EventKind::CheckoutSessionExpired(_) => OrderStatus::Expired,
            EventKind::CheckoutSessionAsyncPaymentSucceeded(_) => OrderStatus::Paid,
            EventKind::CheckoutSessionAsyncPaymentFailed(_) => OrderStatus::PaymentFailed,
            EventKind::PaymentIntentSucceeded(_) => OrderStatus::Paid,
            EventKind::CustomPayment(report) => report.outcome.target_status(),
            // A failed attempt is not the end: the PaymentIntent can still
            // succeed, so it only makes a new order await payment.
            EventKind::PaymentIntentProcessing(_) | EventKind::PaymentIntentPaymentFailed(_) => {
                OrderStatus::AwaitingPayment
            }
            EventKind::PaymentIntentCanceled(_) => OrderStatus::Canceled,
            EventKind::ChargeRefunded(_)
            | EventKind::ChargeDisputeCreated(_)
            | EventKind::ChargeDisputeClosed(_) => return None,
        })
    }

    /// How the payment this event is about was made.
    pub fn payment_method(&self) -> PaymentMethod {
        match self {
            EventKind::CustomPayment(report) => PaymentMethod::Custom {
                method_type: report.custom_payment_method_type.clone(),
                payment_reference: report.payment_reference.clone(),
            },
            _ => PaymentMethod::Stripe,
        }
    }

    /// The payment this event shows, when it pays its order (see
    /// [`PaymentSource`] for why every Stripe payment is one source).
    pub fn payment_source(&self) -> Option<PaymentSource> {
        if self.target_status() != Some(OrderStatus::Paid) {
            return None;
        }
        Some(match self {
            EventKind::CustomPayment(report) => PaymentSource::Custom {
                report_id: report.id.clone(),
            },
            _ => PaymentSource::Stripe,
        })
    }

    pub fn custom_payment(&self) -> Option<&CustomPaymentReport> {
        match self {
            EventKind::CustomPayment(report) => Some(report),
            _ => None,
        }
    }

    /// The Stripe event type this kind is parsed from.
    pub fn event_type(&self) -> &'static str {
        match self {
            EventKind::CheckoutSessionCompleted(_) => "checkout.session.completed",
            EventKind::CheckoutSessionExpired(_) => "checkout.session.expired",
            EventKind::CheckoutSessionAsyncPaymentSucceeded(_) => {
                "checkout.session.async_payment_succeeded"
            }
            EventKind::CheckoutSessionAsyncPaymentFailed(_) => {
                "checkout.session.async_payment_failed"
            }
            EventKind::PaymentIntentSucceeded(_) => "payment_intent.succeeded",
            EventKind::PaymentIntentProcessing(_) => "payment_intent.processing",
            EventKind::PaymentIntentPaymentFailed(_) => "payment_intent.payment_failed",
            EventKind::PaymentIntentCanceled(_) => "payment_intent.canceled",
            EventKind::ChargeRefunded(_) => "charge.refunded",
            EventKind::ChargeDisputeCreated(_) => "charge.dispute.created",
            EventKind::ChargeDisputeClosed(_) => "charge.dispute.closed",
            EventKind::CustomPayment(_) => CUSTOM_PAYMENT_TYPE,
        }
    }

    /// The PaymentIntent this event is about or references, if any: a charge's
    /// or a dispute's is how their order is found.
    pub fn payment_intent_id(&self) -> Option<&str> {
        match self {
            EventKind::ChargeRefunded(refund) => Some(&refund.payment_intent_id),
            EventKind::ChargeDisputeCreated(dispute) | EventKind::ChargeDisputeClosed(dispute) => {
                Some(&dispute.payment_intent_id)
            }
            _ => match self.payment_intent() {
                Some(intent) => Some(&intent.payment_intent_id),
                None => self.session().and_then(|s| s.payment_intent_id.as_deref()),
            },
        }
    }

    pub fn session(&self) -> Option<&SessionFacts> {
        match self {
            EventKind::CheckoutSessionCompleted(session)
            | EventKind::CheckoutSessionExpired(session)
            | EventKind::CheckoutSessionAsyncPaymentSucceeded(session)
            | EventKind::CheckoutSessionAsyncPaymentFailed(session) => Some(session),
            _ => None,
        }
    }

    /// The PaymentIntent object of a `payment_intent.*` event.
    pub fn payment_intent(&self) -> Option<&PaymentIntentFacts> {
        match self {
            EventKind::PaymentIntentSucceeded(intent)
            | EventKind::PaymentIntentProcessing(intent)
            | EventKind::PaymentIntentCanceled(intent) => Some(intent),
            EventKind::PaymentIntentPaymentFailed(attempt) => Some(&attempt.intent),
            _ => None,
        }
    }
}

/// A parsed event of one of the [`HANDLED_EVENT_TYPES`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderEvent {
    pub id: String,
    pub event_type: String,
    pub created: i64,
    /// The Connect account the event belongs to (Stripe's top-level
    /// `account`); `None` for the platform's own events and custom payments.
    /// Calls to Stripe about the event's objects act for it (`Stripe-Account`).
    pub account: Option<String>,
    pub kind: EventKind,
}

impl OrderEvent {
    /// Order this event names without any lookup: sessions always do; a PaymentIntent
    /// only via `metadata.order_id`. `None` means: the worker must look the order up by
    /// [`EventKind::payment_intent_id`], and if none exists yet, park the event until a
    /// session referencing that PaymentIntent arrives. Charges and disputes never
    /// name their order: they are always found through their PaymentIntent.
    pub fn order_id(&self) -> Option<&str> {
        if let Some(report) = self.kind.custom_payment() {
            return Some(&report.order_id);
        }
        match self.kind.payment_intent() {
            Some(intent) => intent.order_id.as_deref(),
            None => self.kind.session().map(|s| s.order_id.as_str()),
        }
    }

    /// The PaymentIntent → order link this event records, if any: an event that
    /// names its own order (a session; a PaymentIntent with `metadata.order_id`)
    /// and references a PaymentIntent. Later events of that PaymentIntent (its
    /// charges' refunds and disputes too) find the order through it.
    pub fn link(&self) -> Option<(&str, &str)> {
        Some((self.kind.payment_intent_id()?, self.order_id()?))
    }

    pub fn target_status(&self) -> Option<OrderStatus> {
        self.kind.target_status()
    }
}

pub const HANDLED_EVENT_TYPES: &[&str] = &[
    "checkout.session.completed",
    "checkout.session.expired",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "payment_intent.succeeded",
    "payment_intent.processing",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.closed",
];

/// Outcome of [`parse_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    Handled(OrderEvent),
    /// A well-formed event of a type the worker ignores.
    Unhandled {
        id: String,
        event_type: String,
    },
    /// A well-formed event of a handled type that can belong to no order (a
    /// charge not made through a PaymentIntent, say): acknowledged and counted
    /// as ignored, with the reason in the log.
    Ignored {
        id: String,
        event_type: String,
        reason: &'static str,
    },
}

/// Why a body is not a usable event. Permanent: the worker dead-letters these.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("`{field}` is missing")]
    MissingField { field: &'static str },
    #[error("`{field}` must be {expected}")]
    InvalidField {
        field: &'static str,
        expected: &'static str,
    },
    #[error("`data.object.object` is {found:?}, expected {expected:?}")]
    WrongObject {
        expected: &'static str,
        found: String,
    },
    #[error("`data.object.payment_status` has unknown value {value:?}")]
    UnknownPaymentStatus { value: String },
    #[error(transparent)]
    CustomPayment(#[from] EnvelopeReportError),
}

impl ParseError {
    /// The JSON path of the offending field.
    pub fn field(&self) -> &'static str {
        match self {
            ParseError::Envelope(EnvelopeError::NotJson | EnvelopeError::NotObject) => "",
            ParseError::Envelope(
                EnvelopeError::MissingId | EnvelopeError::IdNotString | EnvelopeError::EmptyId,
            ) => "id",
            ParseError::Envelope(_) => "type",
            ParseError::MissingField { field } | ParseError::InvalidField { field, .. } => field,
            ParseError::WrongObject { .. } => "data.object.object",
            ParseError::UnknownPaymentStatus { .. } => "data.object.payment_status",
            ParseError::CustomPayment(EnvelopeReportError::IdMismatch) => "id",
            ParseError::CustomPayment(_) => "data.object",
        }
    }
}

/// Parses a full Stripe event body.
///
/// Unhandled types are `Ok(Parsed::Unhandled)` whatever their `data`. A handled type
/// whose `data.object` lacks what the state machine needs is an error naming the field.
///
/// The body is judged as JSON by [`Document::parse`] alone, the receiver's acceptance
/// rule: a body the receiver accepted never gives [`ParseError::Envelope`]. Only the
/// members listed in the `members!` structs below are decoded; the rest is skipped.
pub fn parse_event(body: &[u8]) -> Result<Parsed, ParseError> {
    let doc = Document::parse(body)?;
    if doc.event_type == CUSTOM_PAYMENT_TYPE {
        return custom_payment_event(doc, body);
    }
    Ok(handled_event(doc)?)
}

/// A custom-payment report in its envelope (see `custom`): the report is read
/// by the receiver's own rule, `custom::parse_custom_payment`.
fn custom_payment_event(doc: Document<'_>, body: &[u8]) -> Result<Parsed, ParseError> {
    let created = doc.created().ok_or(ParseError::InvalidField {
        field: "created",
        expected: "an integer",
    })?;
    let report = custom::report_in_envelope(body, &doc.id)?;
    Ok(Parsed::Handled(OrderEvent {
        id: doc.id.into_owned(),
        event_type: doc.event_type.into_owned(),
        created,
        account: None,
        kind: EventKind::CustomPayment(Box::new(report)),
    }))
}

/// Everything after the acceptance rule. Its error type cannot hold an envelope error,
/// so this stage cannot reject a body as "not JSON".
fn handled_event(doc: Document<'_>) -> Result<Parsed, FieldError> {
    let Some(handled) = Handled::from_type(&doc.event_type) else {
        return Ok(Parsed::Unhandled {
            id: doc.id.into_owned(),
            event_type: doc.event_type.into_owned(),
        });
    };
    let created = doc.created().ok_or(FieldError::Invalid {
        field: "created",
        expected: "an integer",
    })?;
    let livemode = json::boolean(doc.livemode).ok().flatten();
    let account = owned(str(doc.account, "account")?);
    let kind = match handled.kind(data_object(doc.data)?, livemode)? {
        Kind::Event(kind) => kind,
        Kind::NotOurs(reason) => {
            return Ok(Parsed::Ignored {
                id: doc.id.into_owned(),
                event_type: doc.event_type.into_owned(),
                reason,
            });
        }
    };
    Ok(Parsed::Handled(OrderEvent {
        id: doc.id.into_owned(),
        event_type: doc.event_type.into_owned(),
        created,
        account,
        kind,
    }))
}

/// A member of a handled event the worker cannot use: [`ParseError`] minus the
/// envelope errors, which only [`Document::parse`] may raise.
#[derive(Debug)]
pub(crate) enum FieldError {
    Missing {
        field: &'static str,
    },
    Invalid {
        field: &'static str,
        expected: &'static str,
    },
    WrongObject {
        expected: &'static str,
        found: String,
    },
    UnknownPaymentStatus {
        value: String,
    },
}

impl From<FieldError> for ParseError {
    fn from(err: FieldError) -> ParseError {
        match err {
            FieldError::Missing { field } => ParseError::MissingField { field },
            FieldError::Invalid { field, expected } => ParseError::InvalidField { field, expected },
            FieldError::WrongObject { expected, found } => {
                ParseError::WrongObject { expected, found }
            }
            FieldError::UnknownPaymentStatus { value } => {
                ParseError::UnknownPaymentStatus { value }
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Handled {
    Completed,
    Expired,
    AsyncSucceeded,
    AsyncFailed,
    IntentSucceeded,
    IntentProcessing,
    IntentFailed,
    IntentCanceled,
    Refunded,
    DisputeCreated,
    DisputeClosed,
}

/// What a handled type's object turned out to be.
pub(crate) enum Kind {
    Event(EventKind),
    /// It can belong to no order; the reason is for the log.
    NotOurs(&'static str),
}

impl Handled {
    fn from_type(event_type: &str) -> Option<Handled> {
        Some(match event_type {
            "checkout.session.completed" => Handled::Completed,
            "checkout.session.expired" => Handled::Expired,
            "checkout.session.async_payment_succeeded" => Handled::AsyncSucceeded,
            "checkout.session.async_payment_failed" => Handled::AsyncFailed,
            "payment_intent.succeeded" => Handled::IntentSucceeded,
            "payment_intent.processing" => Handled::IntentProcessing,
            "payment_intent.payment_failed" => Handled::IntentFailed,
            "payment_intent.canceled" => Handled::IntentCanceled,
            "charge.refunded" => Handled::Refunded,
            "charge.dispute.created" => Handled::DisputeCreated,
            "charge.dispute.closed" => Handled::DisputeClosed,
            _ => return None,
        })
    }

    fn kind(self, object: ObjectMembers<'_>, livemode: Option<bool>) -> Result<Kind, FieldError> {
        let session =
            |wrap: fn(SessionFacts) -> EventKind| session_facts(object, livemode).map(wrap);
        let intent = |wrap: fn(PaymentIntentFacts) -> EventKind| {
            payment_intent_facts(object, livemode, Amount::Requested).map(wrap)
        };
        let event = match self {
            Handled::Completed => session(EventKind::CheckoutSessionCompleted),
            Handled::Expired => session(EventKind::CheckoutSessionExpired),
            Handled::AsyncSucceeded => session(EventKind::CheckoutSessionAsyncPaymentSucceeded),
            Handled::AsyncFailed => session(EventKind::CheckoutSessionAsyncPaymentFailed),
            Handled::IntentSucceeded => payment_intent_facts(object, livemode, Amount::Received)
                .map(EventKind::PaymentIntentSucceeded),
            Handled::IntentProcessing => intent(EventKind::PaymentIntentProcessing),
            Handled::IntentCanceled => intent(EventKind::PaymentIntentCanceled),
            Handled::IntentFailed => {
                let intent = payment_intent_facts(object, livemode, Amount::Requested)?;
                let error = lifecycle::payment_error(object)?;
                Ok(EventKind::PaymentIntentPaymentFailed(Box::new(
                    FailedAttempt { intent, error },
                )))
            }
            Handled::Refunded => return lifecycle::refund(object, livemode),
            Handled::DisputeCreated => return lifecycle::dispute(object, livemode, false),
            Handled::DisputeClosed => return lifecycle::dispute(object, livemode, true),
        };
        event.map(Kind::Event)
    }
}

members! {
    /// What the worker reads of `data.object`: a Checkout Session's members, a
    /// PaymentIntent's, a Charge's and a Dispute's (one struct, because it is read
    /// before `type` may be known).
    pub(crate) struct ObjectMembers<'a> {
        pub(crate) object: Raw<'a> = "object",
        pub(crate) id: Raw<'a> = "id",
        client_reference_id: Raw<'a> = "client_reference_id",
        pub(crate) metadata: Raw<'a> = "metadata",
        pub(crate) payment_intent: Raw<'a> = "payment_intent",
        payment_status: Raw<'a> = "payment_status",
        amount_total: Raw<'a> = "amount_total",
        pub(crate) currency: Raw<'a> = "currency",
        customer_details: Raw<'a> = "customer_details",
        customer_email: Raw<'a> = "customer_email",
        pub(crate) livemode: Raw<'a> = "livemode",
        amount_received: Raw<'a> = "amount_received",
        pub(crate) amount: Raw<'a> = "amount",
        receipt_email: Raw<'a> = "receipt_email",
        // PaymentIntent (payment_failed), Charge and Dispute: read by
        // `crate::lifecycle::parse`.
        pub(crate) last_payment_error: Raw<'a> = "last_payment_error",
        pub(crate) amount_refunded: Raw<'a> = "amount_refunded",
        pub(crate) amount_captured: Raw<'a> = "amount_captured",
        pub(crate) refunded: Raw<'a> = "refunded",
        pub(crate) charge: Raw<'a> = "charge",
        pub(crate) reason: Raw<'a> = "reason",
        pub(crate) status: Raw<'a> = "status",
        pub(crate) evidence_details: Raw<'a> = "evidence_details",
    }
}

members! {
    struct MetadataMembers<'a> {
        order_id: Raw<'a> = "order_id",
    }
}

members! {
    struct CustomerDetailsMembers<'a> {
        email: Raw<'a> = "email",
    }
}

members! {
    /// An expanded reference: only its id matters.
    struct ExpandedMembers<'a> {
        id: Raw<'a> = "id",
    }
}

/// `data.object`, read with the envelope in the same pass.
fn data_object(data: Option<Nested<Data<'_>>>) -> Result<ObjectMembers<'_>, FieldError> {
    let data = match data {
        None | Some(Nested::Null) => return Err(FieldError::Missing { field: "data" }),
        Some(Nested::Other) => return Err(invalid("data", "an object")),
        Some(Nested::Object(data)) => data,
    };
    match data.object {
        None | Some(Nested::Null) => Err(FieldError::Missing {
            field: "data.object",
        }),
        Some(Nested::Other) => Err(invalid("data.object", "an object or null")),
        Some(Nested::Object(object)) => Ok(object),
    }
}

fn session_facts(
    obj: ObjectMembers<'_>,
    livemode: Option<bool>,
) -> Result<SessionFacts, FieldError> {
    expect_kind(obj.object, "checkout.session")?;
    let session_id = required_str(obj.id, "data.object.id")?;
    // Every candidate is checked, even when an earlier one wins: a malformed member is
    // an error wherever it sits in the precedence.
    let order_id = str(obj.client_reference_id, "data.object.client_reference_id")?
        .or(metadata_order_id(obj.metadata)?)
        .unwrap_or_else(|| session_id.clone());
    Ok(SessionFacts {
        session_id: session_id.into_owned(),
        order_id: order_id.into_owned(),
        payment_intent_id: expandable_id(
            obj.payment_intent,
            "data.object.payment_intent",
            "data.object.payment_intent.id",
        )?,
        payment_status: payment_status(obj.payment_status)?,
        amount_total: int(obj.amount_total, "data.object.amount_total")?,
        currency: owned(str(obj.currency, "data.object.currency")?),
        customer_email: owned(customer_email(obj.customer_details, obj.customer_email)?),
        livemode: object_livemode(obj.livemode, livemode)?,
    })
}

/// Which PaymentIntent amount an event's order is worth.
#[derive(Clone, Copy)]
enum Amount {
    /// `amount_received`, else `amount`: the money that arrived.
    Received,
    /// `amount`: before success `amount_received` is 0, not the order's worth.
    Requested,
}

fn payment_intent_facts(
    obj: ObjectMembers<'_>,
    livemode: Option<bool>,
    rule: Amount,
) -> Result<PaymentIntentFacts, FieldError> {
    expect_kind(obj.object, "payment_intent")?;
    let received = int(obj.amount_received, "data.object.amount_received")?;
    let requested = int(obj.amount, "data.object.amount")?;
    Ok(PaymentIntentFacts {
        payment_intent_id: required_str(obj.id, "data.object.id")?.into_owned(),
        order_id: owned(metadata_order_id(obj.metadata)?),
        amount: match rule {
            Amount::Received => received.or(requested),
            Amount::Requested => requested,
        },
        currency: owned(str(obj.currency, "data.object.currency")?),
        receipt_email: owned(str(obj.receipt_email, "data.object.receipt_email")?),
        livemode: object_livemode(obj.livemode, livemode)?,
    })
}

fn metadata_order_id(metadata: Option<&RawValue>) -> Result<Option<Cow<'_, str>>, FieldError> {
    match object::<MetadataMembers>(metadata, "data.object.metadata")? {
        Some(metadata) => str(metadata.order_id, "data.object.metadata.order_id"),
        None => Ok(None),
    }
}

/// `customer_details.email`, else `customer_email`.
fn customer_email<'a>(
    details: Option<&'a RawValue>,
    customer_email: Option<&'a RawValue>,
) -> Result<Option<Cow<'a, str>>, FieldError> {
    let from_details =
        match object::<CustomerDetailsMembers>(details, "data.object.customer_details")? {
            Some(details) => str(details.email, "data.object.customer_details.email")?,
            None => None,
        };
    Ok(from_details.or(str(customer_email, "data.object.customer_email")?))
}

fn payment_status(raw: Option<&RawValue>) -> Result<PaymentStatus, FieldError> {
    const FIELD: &str = "data.object.payment_status";
    let value = raw_str(raw, FIELD)?.ok_or(FieldError::Missing { field: FIELD })?;
    value.parse().map_err(|_| FieldError::UnknownPaymentStatus {
        value: value.into_owned(),
    })
}

/// The object's own `livemode`, else the envelope's: they never differ in real events.
pub(crate) fn object_livemode(
    raw: Option<&RawValue>,
    envelope: Option<bool>,
) -> Result<bool, FieldError> {
    const FIELD: &str = "data.object.livemode";
    json::boolean(raw)
        .map_err(|_| invalid(FIELD, "a boolean or null"))?
        .or(envelope)
        .ok_or(FieldError::Missing { field: FIELD })
}

/// Stripe tags every object with its kind; a different kind means a malformed event.
pub(crate) fn expect_kind(
    raw: Option<&RawValue>,
    expected: &'static str,
) -> Result<(), FieldError> {
    match raw_str(raw, "data.object.object")? {
        Some(found) if found != expected => Err(FieldError::WrongObject {
            expected,
            found: found.into_owned(),
        }),
        _ => Ok(()),
    }
}

/// A reference to another Stripe object: its id, or the object itself when expanded.
pub(crate) fn expandable_id(
    raw: Option<&RawValue>,
    path: &'static str,
    id_path: &'static str,
) -> Result<Option<String>, FieldError> {
    match json::string_or_object::<ExpandedMembers>(raw) {
        Ok(None) => Ok(None),
        Ok(Some(StringOrObject::String(id))) => {
            Ok(Some(id.into_owned()).filter(|id| !id.is_empty()))
        }
        Ok(Some(StringOrObject::Object(expanded))) => {
            Ok(Some(required_str(expanded.id, id_path)?.into_owned()))
        }
        Err(Mismatch::NotUnicode) => Err(not_unicode(path)),
        Err(Mismatch::WrongType) => Err(invalid(path, "an id, an expanded object or null")),
    }
}

// Typed access to one member, with its full JSON path for the error. Absent and `null`
// are the same; a present value of the wrong type is an error, because a verified
// Stripe payload never has one and guessing would hide a bug.

/// A string, possibly empty.
pub(crate) fn raw_str<'a>(
    raw: Option<&'a RawValue>,
    path: &'static str,
) -> Result<Option<Cow<'a, str>>, FieldError> {
    json::string(raw).map_err(|mismatch| match mismatch {
        Mismatch::WrongType => invalid(path, "a string or null"),
        Mismatch::NotUnicode => not_unicode(path),
    })
}

/// A string; empty counts as absent.
pub(crate) fn str<'a>(
    raw: Option<&'a RawValue>,
    path: &'static str,
) -> Result<Option<Cow<'a, str>>, FieldError> {
    Ok(raw_str(raw, path)?.filter(|s| !s.is_empty()))
}

pub(crate) fn required_str<'a>(
    raw: Option<&'a RawValue>,
    path: &'static str,
) -> Result<Cow<'a, str>, FieldError> {
    str(raw, path)?.ok_or(FieldError::Missing { field: path })
}

pub(crate) fn int(raw: Option<&RawValue>, path: &'static str) -> Result<Option<i64>, FieldError> {
    json::int(raw).map_err(|_| invalid(path, "an integer or null"))
}

pub(crate) fn object<'a, T: serde::Deserialize<'a>>(
    raw: Option<&'a RawValue>,
    path: &'static str,
) -> Result<Option<T>, FieldError> {
    json::object(raw).map_err(|_| invalid(path, "an object or null"))
}

pub(crate) fn owned(value: Option<Cow<'_, str>>) -> Option<String> {
    value.map(Cow::into_owned)
}

pub(crate) fn invalid(field: &'static str, expected: &'static str) -> FieldError {
    FieldError::Invalid { field, expected }
}

/// A string escaping a lone UTF-16 surrogate is valid JSON but not text: it has no
/// Rust `String`, and would not survive PostgreSQL either.
pub(crate) fn not_unicode(field: &'static str) -> FieldError {
    invalid(field, "Unicode text (it escapes a lone surrogate)")
}
