//! Borrowing, lenient access to the few JSON members the worker reads.
//!
//! Every object the parser looks into is read with a [`members!`] struct: one
//! `Option<&RawValue>` per member it needs, everything else skipped unread. Only then
//! is each member turned into a typed value, on its own, so that a member the worker
//! cannot use becomes an error naming its path, never an error about the whole body.
//!
//! This split is what keeps the receiver's acceptance rule and the worker's parse one
//! rule (see the `envelope` module): serde_json checks the *syntax* of a raw or skipped
//! value but not its *meaning*, and three things are valid JSON text that a typed parse
//! refuses:
//!
//! - numbers out of `f64` range (`1E99999000`),
//! - strings with a lone UTF-16 surrogate escape (`"\ud800"`), not Unicode text,
//! - nesting deeper than serde_json's recursion limit (128).
//!
//! Raw and skipped values never hit any of them (serde_json skips iteratively, without
//! a depth limit), and each typed conversion below starts a fresh, shallow parse of one
//! member's text that is already known to be valid JSON. So after the body's syntax
//! check, nothing can fail except a member the worker reads, and that failure names it.
//! Keys are read raw too, so a lone surrogate in a key is just a key we skip.

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer;
use serde::de::{self, Visitor};
use serde_json::value::RawValue;

/// Declares a struct holding the raw values of the listed members of one JSON object,
/// and its borrowing `Deserialize`. Other members are skipped without being decoded.
/// A duplicated key keeps its last value, as `serde_json::Value` does; the derive
/// would reject the whole object instead.
macro_rules! members {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($field:ident: $key:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Default)]
        $vis struct $name<'a> {
            $($field: Option<&'a ::serde_json::value::RawValue>,)*
        }

        impl<'de> ::serde::Deserialize<'de> for $name<'de> {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct MembersVisitor;

                impl<'de> ::serde::de::Visitor<'de> for MembersVisitor {
                    type Value = $name<'de>;

                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        f.write_str("a JSON object")
                    }

                    fn visit_map<A: ::serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<Self::Value, A::Error> {
                        let mut members = $name::default();
                        while let Some(key) = map.next_key::<$crate::json::Key<'de>>()? {
                            match key.as_str() {
                                $(Some($key) => members.$field = Some(map.next_value()?),)*
                                _ => {
                                    map.next_value::<::serde::de::IgnoredAny>()?;
                                }
                            }
                        }
                        Ok(members)
                    }
                }

                deserializer.deserialize_map(MembersVisitor)
            }
        }
    };
}
pub(crate) use members;

/// An object key. Read raw, like members, so that serde_json checks its syntax (a
/// control character is an error) but not its meaning: a key escaping a lone
/// surrogate is not text, so it matches no member we read and is skipped.
pub(crate) struct Key<'a>(Option<Cow<'a, str>>);

impl Key<'_> {
    pub(crate) fn as_str(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <&'de RawValue>::deserialize(deserializer)?;
        Ok(Key(decode_str(raw).ok()))
    }
}

/// Why a member cannot be read as the type asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mismatch {
    /// A value of another JSON type (or a number that is not an `i64`).
    WrongType,
    /// A string that is not Unicode text (it escapes a lone surrogate).
    NotUnicode,
}

/// One member's value, by JSON type. Absent and `null` are both `None` at the call
/// sites: the parser never tells them apart.
enum Shape<'a> {
    Null,
    String(&'a RawValue),
    Object(&'a RawValue),
    Other,
}

fn shape(raw: &RawValue) -> Shape<'_> {
    // A raw value is valid JSON without leading whitespace, so its first byte says
    // which type it is.
    match raw.get().as_bytes().first() {
        Some(b'n') => Shape::Null,
        Some(b'"') => Shape::String(raw),
        Some(b'{') => Shape::Object(raw),
        _ => Shape::Other,
    }
}

/// A non-null member.
pub(crate) fn present(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|raw| !matches!(shape(raw), Shape::Null))
}

/// The member as a string (possibly empty); `Ok(None)` when absent or null.
pub(crate) fn string(raw: Option<&RawValue>) -> Result<Option<Cow<'_, str>>, Mismatch> {
    match present(raw).map(shape) {
        None => Ok(None),
        Some(Shape::String(raw)) => decode_str(raw).map(Some),
        Some(_) => Err(Mismatch::WrongType),
    }
}

/// The member as an `i64`, exactly as `serde_json::Value::as_i64` would see it (so
/// `1.0`, `-0`, `1e3` and numbers out of range are not integers).
pub(crate) fn int(raw: Option<&RawValue>) -> Result<Option<i64>, Mismatch> {
    match present(raw) {
        None => Ok(None),
        Some(raw) => serde_json::from_str::<i64>(raw.get())
            .map(Some)
            .map_err(|_| Mismatch::WrongType),
    }
}

pub(crate) fn boolean(raw: Option<&RawValue>) -> Result<Option<bool>, Mismatch> {
    match present(raw).map(RawValue::get) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(Mismatch::WrongType),
    }
}

/// An object member, still raw; `Ok(None)` when absent or null.
pub(crate) fn raw_object(raw: Option<&RawValue>) -> Result<Option<&RawValue>, Mismatch> {
    match present(raw).map(shape) {
        None => Ok(None),
        Some(Shape::Object(raw)) => Ok(Some(raw)),
        Some(_) => Err(Mismatch::WrongType),
    }
}

/// The listed members of an object member; `Ok(None)` when absent or null.
pub(crate) fn object<'a, T: de::Deserialize<'a>>(
    raw: Option<&'a RawValue>,
) -> Result<Option<T>, Mismatch> {
    match present(raw).map(shape) {
        None => Ok(None),
        Some(Shape::Object(raw)) => members_of(raw).map(Some),
        Some(_) => Err(Mismatch::WrongType),
    }
}

/// What a member holds when it may be a string or an object (Stripe's expandable
/// references).
pub(crate) enum StringOrObject<'a, T> {
    String(Cow<'a, str>),
    Object(T),
}

pub(crate) fn string_or_object<'a, T: de::Deserialize<'a>>(
    raw: Option<&'a RawValue>,
) -> Result<Option<StringOrObject<'a, T>>, Mismatch> {
    match present(raw).map(shape) {
        None => Ok(None),
        Some(Shape::String(raw)) => decode_str(raw).map(|s| Some(StringOrObject::String(s))),
        Some(Shape::Object(raw)) => members_of(raw).map(|o| Some(StringOrObject::Object(o))),
        Some(_) => Err(Mismatch::WrongType),
    }
}

/// Reads a `members!` struct from an object's text. Cannot fail on text serde_json
/// already accepted as a value (keys are bytes, members raw or skipped); the error arm
/// is there so that a broken invariant is a field error, not a panic.
fn members_of<'a, T: de::Deserialize<'a>>(raw: &'a RawValue) -> Result<T, Mismatch> {
    serde_json::from_str(raw.get()).map_err(|_| Mismatch::WrongType)
}

/// Decodes a JSON string's text, borrowing it when it has no escapes. The text is
/// valid JSON already, so the only possible failure is a lone surrogate escape.
fn decode_str(raw: &RawValue) -> Result<Cow<'_, str>, Mismatch> {
    struct StrVisitor;

    impl<'de> Visitor<'de> for StrVisitor {
        type Value = Cow<'de, str>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }

        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
            Ok(Cow::Borrowed(v))
        }

        fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
            Ok(Cow::Owned(v.to_owned()))
        }
    }

    let mut de = serde_json::Deserializer::from_str(raw.get());
    de.deserialize_str(StrVisitor)
        .map_err(|_| Mismatch::NotUnicode)
}

#[cfg(test)]
mod tests {
    use super::*;

    members! {
        struct Pair {
            a: "a",
            b: "b",
        }
    }

    fn raw(text: &str) -> &RawValue {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn members_keep_the_last_duplicate_and_skip_the_rest() {
        let pair: Pair =
            serde_json::from_str(r#"{"a":1,"x":[[["\ud800"]]],"a":2,"\ud800":3}"#).unwrap();
        assert_eq!(pair.a.map(RawValue::get), Some("2"));
        assert!(pair.b.is_none());
    }

    #[test]
    fn keys_are_checked_json_strings() {
        assert!(serde_json::from_str::<Pair>("{\"a\u{0}\":1}").is_err());
        assert!(serde_json::from_str::<Pair>(r#"{"\x":1}"#).is_err());
        assert!(serde_json::from_str::<Pair>(r#"{1:1}"#).is_err());
    }

    #[test]
    fn escaped_keys_match() {
        let pair: Pair = serde_json::from_str(r#"{"\u0061":"x"}"#).unwrap();
        assert_eq!(pair.a.map(RawValue::get), Some(r#""x""#));
    }

    #[test]
    fn integers_are_what_value_as_i64_accepts() {
        assert_eq!(int(Some(raw("-12"))), Ok(Some(-12)));
        assert_eq!(int(Some(raw("null"))), Ok(None));
        assert_eq!(int(None), Ok(None));
        for text in [
            "1.0",
            "1e3",
            "-0",
            "0",
            "-9223372036854775808",
            "9223372036854775808",
        ] {
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(
                int(Some(raw(text))).ok().flatten(),
                value.as_i64(),
                "{text}"
            );
        }
        for text in ["1.0", "1E99999000", "9223372036854775808", "\"1\"", "[1]"] {
            assert_eq!(int(Some(raw(text))), Err(Mismatch::WrongType), "{text}");
        }
    }

    #[test]
    fn strings_borrow_unless_escaped_and_refuse_lone_surrogates() {
        assert!(matches!(
            string(Some(raw(r#""usd""#))),
            Ok(Some(Cow::Borrowed("usd")))
        ));
        assert_eq!(
            string(Some(raw(r#""\u00e9\ud83d\ude00""#)))
                .unwrap()
                .as_deref(),
            Some("é😀")
        );
        assert_eq!(string(Some(raw(r#""\ud800""#))), Err(Mismatch::NotUnicode));
        assert_eq!(string(Some(raw("1"))), Err(Mismatch::WrongType));
    }
}
