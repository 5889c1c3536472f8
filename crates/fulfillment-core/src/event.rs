use serde_json::{Map, Value};

use crate::envelope::{EnvelopeError, parse_raw};
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
    /// `amount_received`, else `amount`.
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
}

impl EventKind {
    /// The status this event asks for (it only gets it if it outranks the current one).
    pub fn target_status(&self) -> OrderStatus {
        match self {
            EventKind::CheckoutSessionCompleted(session) => match session.payment_status {
                PaymentStatus::Paid | PaymentStatus::NoPaymentRequired => OrderStatus::Paid,
                PaymentStatus::Unpaid => OrderStatus::AwaitingPayment,
            },
            EventKind::CheckoutSessionExpired(_) => OrderStatus::Expired,
            EventKind::CheckoutSessionAsyncPaymentSucceeded(_) => OrderStatus::Paid,
            EventKind::CheckoutSessionAsyncPaymentFailed(_) => OrderStatus::PaymentFailed,
            EventKind::PaymentIntentSucceeded(_) => OrderStatus::Paid,
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
        }
    }

    /// The PaymentIntent this event is about or references, if any.
    pub fn payment_intent_id(&self) -> Option<&str> {
        match self {
            EventKind::PaymentIntentSucceeded(intent) => Some(&intent.payment_intent_id),
            _ => self.session().and_then(|s| s.payment_intent_id.as_deref()),
        }
    }

    pub fn session(&self) -> Option<&SessionFacts> {
        match self {
            EventKind::CheckoutSessionCompleted(session)
            | EventKind::CheckoutSessionExpired(session)
            | EventKind::CheckoutSessionAsyncPaymentSucceeded(session)
            | EventKind::CheckoutSessionAsyncPaymentFailed(session) => Some(session),
            EventKind::PaymentIntentSucceeded(_) => None,
        }
    }

    pub fn payment_intent(&self) -> Option<&PaymentIntentFacts> {
        match self {
            EventKind::PaymentIntentSucceeded(intent) => Some(intent),
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
    pub kind: EventKind,
}

impl OrderEvent {
    /// Order this event names without any lookup: sessions always do; a PaymentIntent
    /// only via `metadata.order_id`. `None` means: the worker must look the order up by
    /// [`EventKind::payment_intent_id`], and if none exists yet, park the event until a
    /// session referencing that PaymentIntent arrives.
    pub fn order_id(&self) -> Option<&str> {
        match &self.kind {
            EventKind::PaymentIntentSucceeded(intent) => intent.order_id.as_deref(),
            kind => kind.session().map(|s| s.order_id.as_str()),
        }
    }

    pub fn target_status(&self) -> OrderStatus {
        self.kind.target_status()
    }
}

pub const HANDLED_EVENT_TYPES: &[&str] = &[
    "checkout.session.completed",
    "checkout.session.expired",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "payment_intent.succeeded",
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
        }
    }
}

/// Parses a full Stripe event body.
///
/// Unhandled types are `Ok(Parsed::Unhandled)` whatever their `data`. A handled type
/// whose `data.object` lacks what the state machine needs is an error naming the field.
pub fn parse_event(body: &[u8]) -> Result<Parsed, ParseError> {
    let (envelope, data) = parse_raw(body, true)?.into_envelope()?;
    let Some(handled) = Handled::from_type(&envelope.event_type) else {
        return Ok(Parsed::Unhandled {
            id: envelope.id,
            event_type: envelope.event_type,
        });
    };
    let created = envelope.created.ok_or(ParseError::InvalidField {
        field: "created",
        expected: "an integer",
    })?;
    let object = data_object(data.as_ref())?;
    let kind = handled.kind(object, envelope.livemode)?;
    Ok(Parsed::Handled(OrderEvent {
        id: envelope.id,
        event_type: envelope.event_type,
        created,
        kind,
    }))
}

#[derive(Clone, Copy)]
enum Handled {
    Completed,
    Expired,
    AsyncSucceeded,
    AsyncFailed,
    IntentSucceeded,
}

impl Handled {
    fn from_type(event_type: &str) -> Option<Handled> {
        Some(match event_type {
            "checkout.session.completed" => Handled::Completed,
            "checkout.session.expired" => Handled::Expired,
            "checkout.session.async_payment_succeeded" => Handled::AsyncSucceeded,
            "checkout.session.async_payment_failed" => Handled::AsyncFailed,
            "payment_intent.succeeded" => Handled::IntentSucceeded,
            _ => return None,
        })
    }

    fn kind(self, object: Obj<'_>, livemode: Option<bool>) -> Result<EventKind, ParseError> {
        let session =
            |wrap: fn(SessionFacts) -> EventKind| session_facts(object, livemode).map(wrap);
        match self {
            Handled::Completed => session(EventKind::CheckoutSessionCompleted),
            Handled::Expired => session(EventKind::CheckoutSessionExpired),
            Handled::AsyncSucceeded => session(EventKind::CheckoutSessionAsyncPaymentSucceeded),
            Handled::AsyncFailed => session(EventKind::CheckoutSessionAsyncPaymentFailed),
            Handled::IntentSucceeded => {
                payment_intent_facts(object, livemode).map(EventKind::PaymentIntentSucceeded)
            }
        }
    }
}

fn data_object(data: Option<&Value>) -> Result<Obj<'_>, ParseError> {
    let data = match data {
        None | Some(Value::Null) => return Err(ParseError::MissingField { field: "data" }),
        Some(Value::Object(data)) => Obj(data),
        Some(_) => {
            return Err(ParseError::InvalidField {
                field: "data",
                expected: "an object",
            });
        }
    };
    data.object("data.object")?.ok_or(ParseError::MissingField {
        field: "data.object",
    })
}

fn session_facts(obj: Obj<'_>, livemode: Option<bool>) -> Result<SessionFacts, ParseError> {
    obj.expect_kind("checkout.session")?;
    let session_id = obj.required_str("data.object.id")?;
    let order_id = obj
        .str("data.object.client_reference_id")?
        .or(metadata_order_id(obj)?)
        .unwrap_or(session_id);
    Ok(SessionFacts {
        session_id: session_id.to_owned(),
        order_id: order_id.to_owned(),
        payment_intent_id: obj.expandable_id(
            "data.object.payment_intent",
            "data.object.payment_intent.id",
        )?,
        payment_status: payment_status(obj)?,
        amount_total: obj.i64("data.object.amount_total")?,
        currency: owned(obj.str("data.object.currency")?),
        customer_email: owned(customer_email(obj)?),
        livemode: object_livemode(obj, livemode)?,
    })
}

fn payment_intent_facts(
    obj: Obj<'_>,
    livemode: Option<bool>,
) -> Result<PaymentIntentFacts, ParseError> {
    obj.expect_kind("payment_intent")?;
    let received = obj.i64("data.object.amount_received")?;
    Ok(PaymentIntentFacts {
        payment_intent_id: obj.required_str("data.object.id")?.to_owned(),
        order_id: owned(metadata_order_id(obj)?),
        amount: received.or(obj.i64("data.object.amount")?),
        currency: owned(obj.str("data.object.currency")?),
        receipt_email: owned(obj.str("data.object.receipt_email")?),
        livemode: object_livemode(obj, livemode)?,
    })
}

fn metadata_order_id(obj: Obj<'_>) -> Result<Option<&str>, ParseError> {
    match obj.object("data.object.metadata")? {
        Some(metadata) => metadata.str("data.object.metadata.order_id"),
        None => Ok(None),
    }
}

fn customer_email(obj: Obj<'_>) -> Result<Option<&str>, ParseError> {
    let from_details = match obj.object("data.object.customer_details")? {
        Some(details) => details.str("data.object.customer_details.email")?,
        None => None,
    };
    Ok(from_details.or(obj.str("data.object.customer_email")?))
}

fn payment_status(obj: Obj<'_>) -> Result<PaymentStatus, ParseError> {
    let value = obj
        .raw_str("data.object.payment_status")?
        .ok_or(ParseError::MissingField {
            field: "data.object.payment_status",
        })?;
    value.parse().map_err(|_| ParseError::UnknownPaymentStatus {
        value: value.to_owned(),
    })
}

/// The object's own `livemode`, else the envelope's: they never differ in real events.
fn object_livemode(obj: Obj<'_>, envelope: Option<bool>) -> Result<bool, ParseError> {
    obj.bool("data.object.livemode")?
        .or(envelope)
        .ok_or(ParseError::MissingField {
            field: "data.object.livemode",
        })
}

fn owned(value: Option<&str>) -> Option<String> {
    value.map(str::to_owned)
}

/// Typed, path-aware access to a JSON object. Each accessor takes the field's full path
/// (for error messages) and reads the path's last segment from this object. Absent and
/// `null` are the same; a present value of the wrong type is an error, because a
/// verified Stripe payload never has one and guessing would hide a bug.
#[derive(Clone, Copy)]
struct Obj<'a>(&'a Map<String, Value>);

impl<'a> Obj<'a> {
    fn get(self, path: &'static str) -> Option<&'a Value> {
        let key = path.rsplit_once('.').map_or(path, |(_, key)| key);
        self.0.get(key).filter(|value| !value.is_null())
    }

    fn invalid(path: &'static str, expected: &'static str) -> ParseError {
        ParseError::InvalidField {
            field: path,
            expected,
        }
    }

    /// A string, possibly empty.
    fn raw_str(self, path: &'static str) -> Result<Option<&'a str>, ParseError> {
        match self.get(path) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Self::invalid(path, "a string or null")),
        }
    }

    /// A string; empty counts as absent.
    fn str(self, path: &'static str) -> Result<Option<&'a str>, ParseError> {
        Ok(self.raw_str(path)?.filter(|s| !s.is_empty()))
    }

    fn required_str(self, path: &'static str) -> Result<&'a str, ParseError> {
        self.str(path)?
            .ok_or(ParseError::MissingField { field: path })
    }

    fn i64(self, path: &'static str) -> Result<Option<i64>, ParseError> {
        self.get(path)
            .map(|value| {
                value
                    .as_i64()
                    .ok_or_else(|| Self::invalid(path, "an integer or null"))
            })
            .transpose()
    }

    fn bool(self, path: &'static str) -> Result<Option<bool>, ParseError> {
        self.get(path)
            .map(|value| {
                value
                    .as_bool()
                    .ok_or_else(|| Self::invalid(path, "a boolean or null"))
            })
            .transpose()
    }

    fn object(self, path: &'static str) -> Result<Option<Obj<'a>>, ParseError> {
        match self.get(path) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Obj(map))),
            Some(_) => Err(Self::invalid(path, "an object or null")),
        }
    }

    /// A reference to another Stripe object: its id, or the object itself when expanded.
    fn expandable_id(
        self,
        path: &'static str,
        id_path: &'static str,
    ) -> Result<Option<String>, ParseError> {
        match self.get(path) {
            None => Ok(None),
            Some(Value::String(id)) => Ok(Some(id.clone()).filter(|id| !id.is_empty())),
            Some(Value::Object(map)) => Ok(Some(Obj(map).required_str(id_path)?.to_owned())),
            Some(_) => Err(Self::invalid(path, "an id, an expanded object or null")),
        }
    }

    /// Stripe tags every object with its kind; a different kind means a malformed event.
    fn expect_kind(self, expected: &'static str) -> Result<(), ParseError> {
        match self.raw_str("data.object.object")? {
            Some(found) if found != expected => Err(ParseError::WrongObject {
                expected,
                found: found.to_owned(),
            }),
            _ => Ok(()),
        }
    }
}
