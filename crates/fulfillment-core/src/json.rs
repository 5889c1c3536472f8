//! Borrowing, lenient access to the few JSON members the worker reads.
//!
//! Every object the parser looks into is read with a [`members!`] struct: one
//! `Option<&RawValue>` per member it needs, everything else skipped unread (`data` and
//! `data.object` are read in the same pass, as [`Nested`]). Only then is each member
//! turned into a typed value, on its own, so that a member the worker cannot use
//! becomes an error naming its path, never an error about the whole body.
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

/// Declares a struct holding the listed members of one JSON object (each `Option`al,
/// usually a [`Raw`] value), and its borrowing `Deserialize`. Other members are
/// skipped without being decoded. A duplicated key keeps its last value, as
/// `serde_json::Value` does; the derive would reject the whole object instead.
macro_rules! members {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident<$lt:lifetime> {
            $($fvis:vis $field:ident: $ty:ty = $key:literal),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default)]
        $vis struct $name<$lt> {
            $($fvis $field: Option<$ty>,)*
        }

        impl<$lt> ::serde::Deserialize<$lt> for $name<$lt> {
            fn deserialize<D: ::serde::Deserializer<$lt>>(deserializer: D) -> Result<Self, D::Error> {
                struct MembersVisitor;

                impl<$lt> ::serde::de::Visitor<$lt> for MembersVisitor {
                    type Value = $name<$lt>;

                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        f.write_str("a JSON object")
                    }

                    fn visit_map<A: ::serde::de::MapAccess<$lt>>(
                        self,
                        mut map: A,
                    ) -> Result<Self::Value, A::Error> {
                        let mut members = $name::default();
                        while let Some(key) = map.next_key::<$crate::json::Key<$lt>>()? {
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

/// A member kept as its JSON text, checked for syntax only.
pub(crate) type Raw<'a> = &'a RawValue;

/// An object member read in the same pass as its parent, or what else it was.
///
/// Reading it needs serde_json's `deserialize_any`, which refuses what a typed parse
/// refuses (a number out of range, a string with a lone surrogate). Callers then fall
/// back to reading the parent with the member [`Raw`] and converting it with
/// [`nested`]: the fallback decides, the single pass is only the fast way there.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Nested<T> {
    Null,
    Object(T),
    /// Any other JSON type.
    Other,
}

impl<T> Nested<T> {
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Nested<U> {
        match self {
            Nested::Null => Nested::Null,
            Nested::Object(t) => Nested::Object(f(t)),
            Nested::Other => Nested::Other,
        }
    }
}

impl<'de, T: de::Deserialize<'de>> de::Deserialize<'de> for Nested<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NestedVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: de::Deserialize<'de>> Visitor<'de> for NestedVisitor<T> {
            type Value = Nested<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_unit<E>(self) -> Result<Nested<T>, E> {
                Ok(Nested::Null)
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Nested<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Nested::Object)
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Nested<T>, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Nested::Other)
            }

            fn visit_bool<E>(self, _: bool) -> Result<Nested<T>, E> {
                Ok(Nested::Other)
            }

            fn visit_i64<E>(self, _: i64) -> Result<Nested<T>, E> {
                Ok(Nested::Other)
            }

            fn visit_u64<E>(self, _: u64) -> Result<Nested<T>, E> {
                Ok(Nested::Other)
            }

            fn visit_f64<E>(self, _: f64) -> Result<Nested<T>, E> {
                Ok(Nested::Other)
            }

            fn visit_str<E>(self, _: &str) -> Result<Nested<T>, E> {
                Ok(Nested::Other)
            }
        }

        deserializer.deserialize_any(NestedVisitor(std::marker::PhantomData))
    }
}

/// The slow path of [`Nested`]: a raw member, absent when `None`.
pub(crate) fn nested<'a, T: de::Deserialize<'a>>(raw: Option<&'a RawValue>) -> Option<Nested<T>> {
    raw.map(|raw| match shape(raw) {
        Shape::Null => Nested::Null,
        // Cannot fail for a `members!` struct of raw members on text serde_json
        // already accepted; if it ever did, it is a wrong member, not a panic.
        Shape::Object(raw) => members_of(raw).map_or(Nested::Other, Nested::Object),
        Shape::String(_) | Shape::Other => Nested::Other,
    })
}

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
    let Some(text) = present(raw).map(RawValue::get) else {
        return Ok(None);
    };
    // Valid JSON made of digits and `-` only is an integer literal; serde_json reads
    // `-0` as a float, and anything with `.`, `e` or `E` too.
    let integer_literal = text.bytes().all(|b| b.is_ascii_digit() || b == b'-');
    match text.parse::<i64>() {
        Ok(n) if integer_literal && text != "-0" => Ok(Some(n)),
        _ => Err(Mismatch::WrongType),
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
    let text = raw.get();
    // Without a backslash, a valid JSON string is its own content (control characters
    // were refused by the syntax check); this is the common case, kept cheap.
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"'))
        && !inner.contains('\\')
    {
        return Ok(Cow::Borrowed(inner));
    }

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

    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_str(StrVisitor)
        .map_err(|_| Mismatch::NotUnicode)
}

#[cfg(test)]
mod tests {
    use super::*;

    members! {
        struct Pair<'a> {
            a: Raw<'a> = "a",
            b: Raw<'a> = "b",
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
