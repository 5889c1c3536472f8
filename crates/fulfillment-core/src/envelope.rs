use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

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

/// Checks that `body` is a JSON object with a non-empty string `id` and `type`.
///
/// Only the envelope fields are materialised; everything else (notably `data`) is
/// skipped without building values.
pub fn parse_envelope(body: &[u8]) -> Result<Envelope, EnvelopeError> {
    parse_raw(body, false)?
        .into_envelope()
        .map(|(envelope, _)| envelope)
}

/// Envelope fields before validation, plus `data` when asked for.
pub(crate) struct RawEnvelope {
    id: Option<Value>,
    event_type: Option<Value>,
    created: Option<Value>,
    livemode: Option<Value>,
    data: Option<Value>,
}

impl RawEnvelope {
    /// Validates the envelope and hands back `data` (if it was kept).
    pub(crate) fn into_envelope(self) -> Result<(Envelope, Option<Value>), EnvelopeError> {
        let id = required_string(
            self.id,
            EnvelopeError::MissingId,
            EnvelopeError::IdNotString,
            EnvelopeError::EmptyId,
        )?;
        let event_type = required_string(
            self.event_type,
            EnvelopeError::MissingType,
            EnvelopeError::TypeNotString,
            EnvelopeError::EmptyType,
        )?;
        let envelope = Envelope {
            id,
            event_type,
            created: self.created.as_ref().and_then(Value::as_i64),
            livemode: self.livemode.as_ref().and_then(Value::as_bool),
        };
        Ok((envelope, self.data))
    }
}

fn required_string(
    value: Option<Value>,
    missing: EnvelopeError,
    not_string: EnvelopeError,
    empty: EnvelopeError,
) -> Result<String, EnvelopeError> {
    match value {
        None | Some(Value::Null) => Err(missing),
        Some(Value::String(s)) if s.is_empty() => Err(empty),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(not_string),
    }
}

/// Parses the top-level object in one pass; `keep_data` also materialises `data`.
pub(crate) fn parse_raw(body: &[u8], keep_data: bool) -> Result<RawEnvelope, EnvelopeError> {
    // Checked up front because serde_json does not validate the strings it skips: the
    // receiver must not accept a body that the worker's full parse would reject.
    let body = std::str::from_utf8(body).map_err(|_| EnvelopeError::NotJson)?;
    let mut de = serde_json::Deserializer::from_str(body);
    let parsed = RawSeed { keep_data }
        .deserialize(&mut de)
        .and_then(|raw| de.end().map(|()| raw));
    parsed.map_err(|err| classify(body, &err))
}

/// A data error can only come from a top-level value that is not an object (every
/// member value is accepted), but it is raised before the rest is read, so the body is
/// re-read to tell "valid JSON, wrong shape" from "not JSON". Error path only.
fn classify(body: &str, err: &serde_json::Error) -> EnvelopeError {
    if err.is_data() && serde_json::from_str::<IgnoredAny>(body).is_ok() {
        EnvelopeError::NotObject
    } else {
        EnvelopeError::NotJson
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Key {
    Id,
    Type,
    Created,
    Livemode,
    Data,
    #[serde(other)]
    Other,
}

struct RawSeed {
    keep_data: bool,
}

impl<'de> DeserializeSeed<'de> for RawSeed {
    type Value = RawEnvelope;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<RawEnvelope, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RawSeed {
    type Value = RawEnvelope;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Stripe event object")
    }

    // Duplicate keys: the last one wins, as in `serde_json::Value`.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEnvelope, A::Error> {
        let mut raw = RawEnvelope {
            id: None,
            event_type: None,
            created: None,
            livemode: None,
            data: None,
        };
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Id => raw.id = Some(map.next_value()?),
                Key::Type => raw.event_type = Some(map.next_value()?),
                Key::Created => raw.created = Some(map.next_value()?),
                Key::Livemode => raw.livemode = Some(map.next_value()?),
                Key::Data if self.keep_data => raw.data = Some(map.next_value()?),
                Key::Data | Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(raw)
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
    fn data_is_kept_only_on_request() {
        let body = br#"{"id":"evt_1","type":"x","data":{"object":{"id":"cs_1"}}}"#;
        assert!(parse_raw(body, false).unwrap().data.is_none());
        assert!(parse_raw(body, true).unwrap().data.is_some());
    }

    #[test]
    fn last_duplicate_key_wins() {
        let envelope = parse_envelope(br#"{"id":"a","id":"b","type":"t"}"#).unwrap();
        assert_eq!(envelope.id, "b");
    }
}
