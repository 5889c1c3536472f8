//! Properties of the pure parts: the form encoding against an independent
//! decoder (the `url` crate's `form_urlencoded`), the retry rule, and the
//! backoff.

use std::time::Duration;

use proptest::prelude::*;
use stripe_api::{Answer, Backoff, Params, Value, should_retry};

/// Keys as Stripe names things: letters, digits, underscores; sometimes
/// something odd, to exercise escaping.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z][a-z0-9_]{0,10}",
        1 => "\\PC{1,6}",
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = "\\PC{0,12}".prop_map(Value::Str);
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec((key(), inner.clone()), 0..4).prop_map(Value::Map),
            proptest::collection::vec(inner, 0..4).prop_map(Value::List),
        ]
    })
}

fn params() -> impl Strategy<Value = Params> {
    proptest::collection::vec((key(), value()), 0..5).prop_map(|members| {
        let mut params = Params::new();
        for (k, v) in members {
            params.push(k, v);
        }
        params
    })
}

/// The pairs Stripe would see, written out by hand from the nesting rules.
fn expected_pairs(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Str(s) => out.push((prefix.to_owned(), s.clone())),
        Value::Map(members) => {
            for (k, v) in members {
                expected_pairs(&format!("{prefix}[{k}]"), v, out);
            }
        }
        Value::List(items) => {
            for (i, item) in items.iter().enumerate() {
                let key = match item {
                    Value::Str(_) => format!("{prefix}[]"),
                    _ => format!("{prefix}[{i}]"),
                };
                expected_pairs(&key, item, out);
            }
        }
    }
}

proptest! {
    #[test]
    fn an_independent_decoder_reads_back_every_pair(params in params()) {
        let encoded = params.encode();
        let decoded: Vec<(String, String)> = form_urlencoded::parse(encoded.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        prop_assert_eq!(&decoded, &params.pairs());
    }

    #[test]
    fn nesting_follows_stripes_rules(key in key(), value in value()) {
        let mut expected = Vec::new();
        expected_pairs(&key, &value, &mut expected);
        prop_assert_eq!(Params::new().with(key, value).pairs(), expected);
    }

    #[test]
    fn the_encoding_is_safe_in_a_query_string(params in params()) {
        let encoded = params.encode();
        prop_assert!(encoded.bytes().all(|b| b.is_ascii_graphic()));
        prop_assert!(!encoded.contains(['#', '?', '+', ' ']));
    }

    #[test]
    fn the_header_wins_whatever_the_status(status in 100u16..600, retries in 0u32..3) {
        prop_assert!(should_retry(Answer::status(status, Some("true")), retries, 3));
        prop_assert!(!should_retry(Answer::status(status, Some("false")), retries, 3));
    }

    #[test]
    fn without_the_header_only_conflicts_limits_and_server_errors_retry(
        status in 100u16..600,
        retries in 0u32..3,
    ) {
        let expected = status == 409 || status == 429 || status >= 500;
        prop_assert_eq!(should_retry(Answer::status(status, None), retries, 3), expected);
        // Any other header value is no header at all.
        prop_assert_eq!(should_retry(Answer::status(status, Some("maybe")), retries, 3), expected);
    }

    #[test]
    fn nothing_retries_past_the_budget(
        status in 100u16..600,
        header in proptest::option::of(prop_oneof![Just("true"), Just("false")]),
        max in 0u32..5,
        extra in 0u32..5,
    ) {
        prop_assert!(!should_retry(Answer::status(status, header), max + extra, max));
        prop_assert!(!should_retry(Answer::NoAnswer, max + extra, max));
    }

    #[test]
    fn backoff_stays_between_initial_and_max_and_grows(
        initial_ms in 1u64..2_000,
        factor in 1u32..20,
        retry in 1u32..40,
        jitter in 0.0f64..1.0,
    ) {
        let backoff = Backoff {
            initial: Duration::from_millis(initial_ms),
            max: Duration::from_millis(initial_ms) * factor,
        };
        let d = backoff.delay(retry, jitter);
        prop_assert!(d >= backoff.initial && d <= backoff.max);
        prop_assert!(backoff.delay(retry + 1, jitter) >= d);
    }
}
