//! Stripe's form encoding of request parameters (pure).
//!
//! Stripe reads `application/x-www-form-urlencoded` bodies and query strings
//! with nested keys: a map member is `parent[child]=v`, an array of scalars
//! `parent[]=v` once per element (`types[]=a&types[]=b`), and an array of
//! maps indexes its elements, `parent[0][child]=v`, because `parent[][a]=1&
//! parent[][b]=2` could not say whether `a` and `b` belong to one element.
//! Empty maps and arrays produce nothing (Stripe has no way to send an empty
//! container except unsetting with `""`, which a caller writes as a string).
//!
//! Brackets stay literal in keys, as stripe-node sends them (they are
//! readable in logs and Stripe accepts both); everything else outside the
//! unreserved set is percent-encoded as UTF-8, space as `%20`.

use std::fmt::Write;

/// One parameter value: a string, a map of named values, or an array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Map(Vec<(String, Value)>),
    List(Vec<Value>),
}

impl Value {
    /// A map from `(key, value)` pairs, in the given order.
    pub fn map<K: Into<String>, V: Into<Value>>(
        members: impl IntoIterator<Item = (K, V)>,
    ) -> Value {
        Value::Map(
            members
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// An array of values.
    pub fn list<V: Into<Value>>(items: impl IntoIterator<Item = V>) -> Value {
        Value::List(items.into_iter().map(Into::into).collect())
    }

    fn is_scalar(&self) -> bool {
        matches!(self, Value::Str(_))
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}

impl From<&String> for Value {
    fn from(s: &String) -> Value {
        Value::Str(s.clone())
    }
}

macro_rules! display_values {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::Str(v.to_string())
            }
        }
    )*};
}
display_values!(i64, u64, i32, u32, u8, usize, bool);

impl<V: Into<Value>> From<Vec<V>> for Value {
    fn from(items: Vec<V>) -> Value {
        Value::list(items)
    }
}

/// A request's parameters, top-level names in the order they were added.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    members: Vec<(String, Value)>,
}

impl Params {
    pub fn new() -> Params {
        Params::default()
    }

    /// Adds `key = value` (builder style).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Params {
        self.push(key, value);
        self
    }

    /// Adds `key = value` when `value` is `Some`.
    pub fn with_opt<V: Into<Value>>(self, key: impl Into<String>, value: Option<V>) -> Params {
        match value {
            Some(v) => self.with(key, v),
            None => self,
        }
    }

    pub fn push(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        self.members.push((key.into(), value.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.pairs().is_empty()
    }

    /// The flattened `(key, value)` pairs, in encoding order.
    pub fn pairs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (key, value) in &self.members {
            flatten(key.clone(), value, &mut out);
        }
        out
    }

    /// The encoded form: `k=v&k2=v2`, without a leading `?`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (i, (key, value)) in self.pairs().iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            escape(key, true, &mut out);
            out.push('=');
            escape(value, false, &mut out);
        }
        out
    }
}

fn flatten(key: String, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Str(s) => out.push((key, s.clone())),
        Value::Map(members) => {
            for (child, v) in members {
                flatten(format!("{key}[{child}]"), v, out);
            }
        }
        Value::List(items) => {
            for (i, item) in items.iter().enumerate() {
                let element = if item.is_scalar() {
                    format!("{key}[]")
                } else {
                    format!("{key}[{i}]")
                };
                flatten(element, item, out);
            }
        }
    }
}

/// Percent-encodes `s` (UTF-8) into `out`; unreserved characters stay, and
/// in keys the brackets of nesting.
fn escape(s: &str, is_key: bool, out: &mut String) {
    for byte in s.bytes() {
        let keep = byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'_' | b'.' | b'~')
            || (is_key && matches!(byte, b'[' | b']'));
        if keep {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// Percent-encodes one path segment (an object id put into a URL path), so
/// an id can never add segments or a query: `../x` stays one segment.
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape(s, false, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_maps_and_arrays_in_stripe_notation() {
        let params = Params::new()
            .with("limit", 100u32)
            .with("created", Value::map([("gte", 1_700_000_000i64)]))
            .with(
                "types",
                vec!["checkout.session.completed", "payment_intent.succeeded"],
            )
            .with("delivery_success", false)
            .with(
                "amount_requested",
                Value::map([("value", Value::from(4200i64)), ("currency", "eur".into())]),
            );
        assert_eq!(
            params.encode(),
            "limit=100&created[gte]=1700000000\
             &types[]=checkout.session.completed&types[]=payment_intent.succeeded\
             &delivery_success=false&amount_requested[value]=4200&amount_requested[currency]=eur"
        );
    }

    #[test]
    fn arrays_of_maps_are_indexed() {
        let params = Params::new().with(
            "line_items",
            Value::list([
                Value::map([("price", "price_1"), ("quantity", "2")]),
                Value::map([("price", "price_2"), ("quantity", "1")]),
            ]),
        );
        assert_eq!(
            params.encode(),
            "line_items[0][price]=price_1&line_items[0][quantity]=2\
             &line_items[1][price]=price_2&line_items[1][quantity]=1"
        );
    }

    #[test]
    fn values_and_keys_are_escaped() {
        let params = Params::new()
            .with("metadata", Value::map([("order id", "a&b=c d/é")]))
            .with("q", "[x]");
        assert_eq!(
            params.encode(),
            "metadata[order%20id]=a%26b%3Dc%20d%2F%C3%A9&q=%5Bx%5D"
        );
    }

    #[test]
    fn empty_containers_send_nothing() {
        let params = Params::new()
            .with("types", Value::List(vec![]))
            .with("metadata", Value::Map(vec![]));
        assert!(params.is_empty());
        assert_eq!(params.encode(), "");
    }

    #[test]
    fn path_segments_cannot_escape_their_segment() {
        assert_eq!(path_segment("cs_test_123"), "cs_test_123");
        assert_eq!(path_segment("../v1/x?y=1"), "..%2Fv1%2Fx%3Fy%3D1");
    }
}
