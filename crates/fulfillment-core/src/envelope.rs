//! The one acceptance rule shared by the receiver and the worker.
//!
//! The receiver answers 200 to a signed body exactly when [`Document::parse`] accepts
//! it, and the worker's [`parse_event`](crate::parse_event) starts with that same
//! call: it is the only place a body is judged as JSON, so the two cannot drift. What
//! the worker does after it can only fail on a *member* it reads (the type is enforced:
//! `event::FieldError` has no envelope variant), never with "not valid JSON".
//!
//! The rule: UTF-8, valid JSON text (RFC 8259 grammar: any nesting depth, any number
//! literal, any `\u` escape), a top-level object, and a non-empty string `id` and `type`
//! (a lone surrogate escape in them is "not a string": it is not Unicode text and
//! could not become an AMQP message id). Everything else is for the worker to judge.
//!
//! # Why a signed but unusable event gets 200, not 400
//!
//! A signed event of a handled type can still carry members the worker cannot use
//! (`created` that is not an integer, an unknown `payment_status`, a lone surrogate in
//! an email). The receiver accepts it anyway, and the worker dead-letters it at once
//! as permanent, with the reason. Answering 400 instead would gain nothing and cost a
//! lot: Stripe retries a failed delivery for up to three days, then disables the
//! endpoint for *every* event type, so one body we cannot read would eventually stop
//! all fulfillment; and the body would be gone. In the DLQ it is kept byte for byte,
//! with a reason naming the member, ready to be replayed once the parser is fixed.
//! Only bodies that are not an event at all (not JSON, no `id` or `type`) are 400:
//! Stripe never sends those, so they are not worth keeping.

use std::borrow::Cow;

use serde::de::IgnoredAny;

use crate::event::ObjectMembers;
use crate::json::{self, Nested, Raw, members};

/// The minimal envelope the HTTP receiver checks before publishing an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub id: String,
    pub event_type: String,
    /// `None` when absent or not an integer: the receiver does not need it.
    pub created: Option<i64>,
    /// `None` when absent or not a boolean.
    pub livemode: Option<bool>,
}

/// Why a body is not an event envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.reason())]
pub enum EnvelopeError {
    NotJson,
    NotObject,
    MissingId,
    IdNotString,
    EmptyId,
    MissingType,
    TypeNotString,
    EmptyType,
}

impl EnvelopeError {
    /// Short, stable text suitable for an HTTP response or a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            EnvelopeError::NotJson => "body is not valid JSON",
            EnvelopeError::NotObject => "body is not a JSON object",
            EnvelopeError::MissingId => "`id` is missing",
            EnvelopeError::IdNotString => "`id` is not a string",
            EnvelopeError::EmptyId => "`id` is empty",
            EnvelopeError::MissingType => "`type` is missing",
            EnvelopeError::TypeNotString => "`type` is not a string",
            EnvelopeError::EmptyType => "`type` is empty",
        }
    }
}

/// Checks that `body` is a JSON object with a non-empty string `id` and `type`: the
/// receiver's whole acceptance rule (see the module docs).
///
/// Built on the same [`Document::parse`] as the worker's `parse_event`, so a body it
/// accepts never gives the worker an envelope error. Members are kept raw, not decoded.
pub fn parse_envelope(body: &[u8]) -> Result<Envelope, EnvelopeError> {
    Document::parse(body).map(|doc| doc.envelope())
}

/// A body that passed the acceptance rule: its `id` and `type`, and the other
/// members the worker may read, borrowed from the body and not decoded yet.
pub(crate) struct Document<'a> {
    pub(crate) id: Cow<'a, str>,
    pub(crate) event_type: Cow<'a, str>,
    pub(crate) created: Option<Raw<'a>>,
    pub(crate) livemode: Option<Raw<'a>>,
    /// The Connect account the event belongs to (top level), if any.
    pub(crate) account: Option<Raw<'a>>,
    pub(crate) data: Option<Nested<Data<'a>>>,
}

/// `data`, when it is an object.
#[derive(Debug)]
pub(crate) struct Data<'a> {
    pub(crate) object: Option<Nested<ObjectMembers<'a>>>,
}

members! {
    /// The top-level members anyone reads, `data` and `data.object` in the same pass.
    struct OnePass<'a> {
        id: Raw<'a> = "id",
        event_type: Raw<'a> = "type",
        created: Raw<'a> = "created",
        livemode: Raw<'a> = "livemode",
        account: Raw<'a> = "account",
        data: Nested<OnePassData<'a>> = "data",
    }
}

members! {
    struct OnePassData<'a> {
        object: Nested<ObjectMembers<'a>> = "object",
    }
}

members! {
    /// The same members with `data` raw: what decides when [`OnePass`] fails.
    struct Fallback<'a> {
        id: Raw<'a> = "id",
        event_type: Raw<'a> = "type",
        created: Raw<'a> = "created",
        livemode: Raw<'a> = "livemode",
        account: Raw<'a> = "account",
        data: Raw<'a> = "data",
    }
}

members! {
    struct FallbackData<'a> {
        object: Raw<'a> = "object",
    }
}

/// The top-level members, before `id` and `type` are checked.
#[derive(Debug)]
struct Members<'a> {
    id: Option<Raw<'a>>,
    event_type: Option<Raw<'a>>,
    created: Option<Raw<'a>>,
    livemode: Option<Raw<'a>>,
    account: Option<Raw<'a>>,
    data: Option<Nested<Data<'a>>>,
}

impl<'a> Document<'a> {
    /// The acceptance rule. Everything that can make a body "not an event" is decided
    /// here and only here.
    pub(crate) fn parse(body: &'a [u8]) -> Result<Document<'a>, EnvelopeError> {
        // serde_json does not check the UTF-8 of the strings it skips when reading
        // bytes; a `&str` is checked once, up front.
        let body = std::str::from_utf8(body).map_err(|_| EnvelopeError::NotJson)?;
        let members = Members::read(body)?;
        Ok(Document {
            id: required_string(
                members.id,
                EnvelopeError::MissingId,
                EnvelopeError::IdNotString,
                EnvelopeError::EmptyId,
            )?,
            event_type: required_string(
                members.event_type,
                EnvelopeError::MissingType,
                EnvelopeError::TypeNotString,
                EnvelopeError::EmptyType,
            )?,
            created: members.created,
            livemode: members.livemode,
            account: members.account,
            data: members.data,
        })
    }

    /// The envelope as the receiver sees it: `created` and `livemode` only when they
    /// have the right type (the receiver does not need them).
    pub(crate) fn envelope(&self) -> Envelope {
        Envelope {
            id: self.id.clone().into_owned(),
            event_type: self.event_type.clone().into_owned(),
            created: self.created(),
            livemode: json::boolean(self.livemode).ok().flatten(),
        }
    }

    /// `created`, when it is an integer.
    pub(crate) fn created(&self) -> Option<i64> {
        json::int(self.created).ok().flatten()
    }
}

impl<'a> Members<'a> {
    /// One pass over the body in the common case; when that pass fails (not JSON, or
    /// `data` / `data.object` is something `deserialize_any` refuses, see [`Nested`]),
    /// a second read with those two members raw decides. Both give the same members.
    fn read(body: &'a str) -> Result<Members<'a>, EnvelopeError> {
        match Members::one_pass(body) {
            Some(members) => Ok(members),
            None => Members::fallback(body),
        }
    }

    fn one_pass(body: &'a str) -> Option<Members<'a>> {
        let one: OnePass<'a> = serde_json::from_str(body).ok()?;
        Some(Members {
            id: one.id,
            event_type: one.event_type,
            created: one.created,
            livemode: one.livemode,
            account: one.account,
            data: one.data.map(|data| {
                data.map(|data| Data {
                    object: data.object,
                })
            }),
        })
    }

    fn fallback(body: &'a str) -> Result<Members<'a>, EnvelopeError> {
        let fallback: Fallback<'a> =
            serde_json::from_str(body).map_err(|err| classify(body, &err))?;
        Ok(Members {
            id: fallback.id,
            event_type: fallback.event_type,
            created: fallback.created,
            livemode: fallback.livemode,
            account: fallback.account,
            data: json::nested::<FallbackData<'a>>(fallback.data).map(|data| {
                data.map(|data| Data {
                    object: json::nested(data.object),
                })
            }),
        })
    }
}

fn required_string<'a>(
    raw: Option<Raw<'a>>,
    missing: EnvelopeError,
    not_string: EnvelopeError,
    empty: EnvelopeError,
) -> Result<Cow<'a, str>, EnvelopeError> {
    match json::string(raw) {
        Ok(None) => Err(missing),
        Ok(Some(s)) if s.is_empty() => Err(empty),
        Ok(Some(s)) => Ok(s),
        Err(_) => Err(not_string),
    }
}

/// A data error can only come from a top-level value that is not an object (keys are
/// read as bytes, members raw or skipped), but it is raised before the rest is read,
/// so the body is re-read to tell "valid JSON, wrong shape" from "not JSON". Error
/// path only.
fn classify(body: &str, err: &serde_json::Error) -> EnvelopeError {
    if err.is_data() && serde_json::from_str::<IgnoredAny>(body).is_ok() {
        EnvelopeError::NotObject
    } else {
        EnvelopeError::NotJson
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_envelope_fields() {
        let body = br#"{"id":"evt_1","object":"event","created":1700000000,"data":{"object":{}},"livemode":true,"type":"x.y"}"#;
        let envelope = parse_envelope(body).unwrap();
        assert_eq!(
            envelope,
            Envelope {
                id: "evt_1".into(),
                event_type: "x.y".into(),
                created: Some(1_700_000_000),
                livemode: Some(true),
            }
        );
    }

    #[test]
    fn data_object_is_read_in_the_same_pass() {
        let body = br#"{"id":"evt_1","type":"x","data":{"object":{"id":"cs_1"}}}"#;
        let doc = Document::parse(body).unwrap();
        assert!(matches!(
            doc.data,
            Some(Nested::Object(Data {
                object: Some(Nested::Object(_))
            }))
        ));
    }

    #[test]
    fn lone_surrogates_in_id_or_type_are_not_strings() {
        assert_eq!(
            parse_envelope(br#"{"id":"\ud800","type":"t"}"#),
            Err(EnvelopeError::IdNotString)
        );
        assert_eq!(
            parse_envelope(br#"{"id":"evt_1","type":"a\udc00"}"#),
            Err(EnvelopeError::TypeNotString)
        );
    }

    /// The one-pass read is only a fast way to what the fallback decides.
    fn assert_paths_agree(body: &str) {
        if let Some(one) = Members::one_pass(body) {
            let fallback = Members::fallback(body).expect("the fallback accepts it too");
            assert_eq!(format!("{one:?}"), format!("{fallback:?}"), "{body}");
        }
    }

    #[test]
    fn one_pass_and_fallback_agree() {
        let session = String::from_utf8(
            crate::sample::event(
                "checkout.session.completed",
                &crate::sample::SampleSpec {
                    event_id: "evt_1",
                    order_id: "ord_1",
                    payment_intent_id: Some("pi_1"),
                    payment_status: "paid",
                    order_in_metadata: true,
                    created: 1,
                },
            )
            .unwrap(),
        )
        .unwrap();
        assert!(Members::one_pass(&session).is_some());
        assert_paths_agree(&session);
        let values = [
            "null",
            "1",
            "-0",
            "1.5",
            "1E99999000",
            "true",
            r#""s""#,
            r#""\ud800""#,
            "[]",
            "[[1]]",
            "{}",
            r#"{"object":1}"#,
            r#"{"object":"\ud800"}"#,
            r#"{"object":1E99999000}"#,
            r#"{"object":null}"#,
            r#"{"object":[{}]}"#,
            r#"{"object":{"id":"x","id":1E99999000}}"#,
            r#"{"object":{},"object":2}"#,
        ];
        for value in values {
            let body = format!(r#"{{"id":"evt_1","type":"t","data":{value}}}"#);
            assert_paths_agree(&body);
            assert!(Members::fallback(&body).is_ok(), "{body}");
        }
        for cut in 0..session.len() {
            if session.is_char_boundary(cut) {
                assert_paths_agree(&session[..cut]);
            }
        }
    }

    #[test]
    fn last_duplicate_key_wins() {
        let envelope = parse_envelope(br#"{"id":"a","id":"b","type":"t"}"#).unwrap();
        assert_eq!(envelope.id, "b");
    }
}
