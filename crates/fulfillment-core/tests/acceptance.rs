//! One JSON contract: the receiver accepts (`parse_envelope`) exactly the bodies whose
//! JSON the worker can read (`parse_event` gives no envelope error), and a signed event
//! the worker cannot use fails on a named member, never as "not valid JSON".
//!
//! Issue 9, item 1: valid JSON text that a `serde_json::Value` refuses (a number out of
//! `f64` range, a lone surrogate escape, nesting deeper than 128) was accepted by the
//! receiver and dead-lettered by the worker as "not valid JSON".

use std::fs;
use std::path::Path;
use std::sync::OnceLock;

use fulfillment_core::sample::{self, SAMPLE_TYPES, SampleSpec};
use fulfillment_core::{
    EnvelopeError, HANDLED_EVENT_TYPES, ParseError, Parsed, parse_envelope, parse_event,
};
use proptest::prelude::*;
use serde::de::IgnoredAny;
use serde_json::Value;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/stripe/events"
);

fn sample_session() -> String {
    let spec = SampleSpec {
        event_id: "evt_sample",
        order_id: "ord_sample",
        payment_intent_id: Some("pi_sample"),
        payment_status: "paid",
        order_in_metadata: true,
        created: 1_700_000_000,
    };
    let body = sample::event("checkout.session.completed", &spec).unwrap();
    String::from_utf8(body).unwrap()
}

fn sample_intent() -> String {
    let spec = SampleSpec {
        event_id: "evt_sample_pi",
        order_id: "ord_sample",
        payment_intent_id: Some("pi_sample"),
        payment_status: "paid",
        order_in_metadata: true,
        created: 1_700_000_000,
    };
    let body = sample::event("payment_intent.succeeded", &spec).unwrap();
    String::from_utf8(body).unwrap()
}

/// `body` with the JSON value at `pointer` replaced by the raw text `raw`.
fn with_raw(body: &str, pointer: &str, raw: &str) -> Vec<u8> {
    const HOLE: &str = "\u{1}hole\u{1}";
    let mut value: Value = serde_json::from_str(body).unwrap();
    *value
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("{pointer}")) = Value::from(HOLE);
    let text = serde_json::to_string(&value).unwrap();
    let hole = serde_json::to_string(HOLE).unwrap();
    assert_eq!(text.matches(&hole).count(), 1);
    text.replace(&hole, raw).into_bytes()
}

fn deep_array(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn deep_object(depth: usize) -> String {
    format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
}

/// The body is JSON a typed `serde_json::Value` parse refuses: the old worker said
/// "not valid JSON" to it (kept here so each regression shows it hits the old bug).
fn value_refuses(body: &[u8]) -> bool {
    serde_json::from_slice::<IgnoredAny>(body).is_ok()
        && serde_json::from_slice::<Value>(body).is_err()
}

/// Accepted by the receiver and handled by the worker, with the same id.
fn assert_handled(body: &[u8]) -> fulfillment_core::OrderEvent {
    let envelope = parse_envelope(body).expect("the receiver accepts");
    match parse_event(body) {
        Ok(Parsed::Handled(event)) => {
            assert_eq!(event.id, envelope.id);
            event
        }
        other => panic!("expected a handled event, got {other:?}"),
    }
}

/// Accepted by the receiver, then refused by the worker for the member at `field`.
fn assert_member_error(body: &[u8], field: &str) {
    assert!(parse_envelope(body).is_ok(), "the receiver accepts");
    match parse_event(body) {
        Err(err @ ParseError::Envelope(_)) => panic!("envelope error {err:?} after a 200"),
        Err(err) => {
            assert_eq!(err.field(), field, "{err}");
            assert!(err.to_string().contains(field), "{err}");
        }
        Ok(parsed) => panic!("expected an error naming {field}, got {parsed:?}"),
    }
}

// ---- the three observed cases

#[test]
fn huge_number_in_a_skipped_member_is_handled() {
    // The issue's minimal case was `data.object.created`, a member the worker skips.
    for pointer in [
        "/data/object/amount_subtotal",
        "/request/id",
        "/pending_webhooks",
    ] {
        let body = with_raw(&sample_session(), pointer, "1E99999000");
        assert!(value_refuses(&body), "{pointer}");
        assert_eq!(assert_handled(&body).created, 1_700_000_000);
    }
}

#[test]
fn huge_number_in_created_is_a_member_error() {
    let body = with_raw(&sample_session(), "/created", "1E99999000");
    assert!(value_refuses(&body));
    assert_eq!(parse_envelope(&body).unwrap().created, None);
    assert_member_error(&body, "created");
    let body = with_raw(&sample_session(), "/data/object/amount_total", "1E99999000");
    assert_member_error(&body, "data.object.amount_total");
}

#[test]
fn lone_surrogate_in_a_skipped_member_is_handled() {
    let session = sample_session();
    for (pointer, raw) in [
        ("/data/object/customer_details/name", r#""Ada \ud800""#),
        ("/data/object/success_url", r#""\udc00""#),
        ("/request/id", r#""\ud800\ud800""#),
        (
            "/data/object/metadata",
            r#"{"\ud800":"x","order_id":"ord_sample"}"#,
        ),
    ] {
        let body = with_raw(&session, pointer, raw);
        assert!(value_refuses(&body), "{pointer}");
        assert_eq!(assert_handled(&body).order_id(), Some("ord_sample"));
    }
}

#[test]
fn lone_surrogate_in_a_read_member_is_a_member_error() {
    for (pointer, field) in [
        (
            "/data/object/customer_details/email",
            "data.object.customer_details.email",
        ),
        (
            "/data/object/client_reference_id",
            "data.object.client_reference_id",
        ),
        ("/data/object/payment_intent", "data.object.payment_intent"),
        ("/data/object/payment_status", "data.object.payment_status"),
        ("/data/object/object", "data.object.object"),
    ] {
        let body = with_raw(&sample_session(), pointer, r#""x\ud800""#);
        assert!(value_refuses(&body), "{pointer}");
        assert_member_error(&body, field);
    }
    let body = with_raw(
        &sample_intent(),
        "/data/object/metadata/order_id",
        r#""\udfff""#,
    );
    assert_member_error(&body, "data.object.metadata.order_id");
}

#[test]
fn lone_surrogate_in_id_or_type_is_rejected_by_both() {
    for (pointer, expected) in [
        ("/id", EnvelopeError::IdNotString),
        ("/type", EnvelopeError::TypeNotString),
    ] {
        let body = with_raw(&sample_session(), pointer, r#""\ud800""#);
        assert_eq!(parse_envelope(&body), Err(expected));
        assert_eq!(parse_event(&body), Err(ParseError::Envelope(expected)));
    }
}

#[test]
fn deep_nesting_in_a_skipped_member_is_handled() {
    let session = sample_session();
    for depth in [129, 10_000] {
        for (pointer, raw) in [
            ("/data/object/payment_method_types", deep_array(depth)),
            ("/data/object/customer_details/name", deep_object(depth)),
            ("/request", deep_object(depth)),
        ] {
            let body = with_raw(&session, pointer, &raw);
            assert!(value_refuses(&body), "{pointer} {depth}");
            assert_handled(&body);
        }
    }
    // The whole `data` of a type the worker does not handle.
    let body = format!(
        r#"{{"id":"evt_1","type":"customer.created","data":{}}}"#,
        deep_array(1_000)
    );
    assert_eq!(
        parse_event(body.as_bytes()),
        Ok(Parsed::Unhandled {
            id: "evt_1".into(),
            event_type: "customer.created".into()
        })
    );
}

#[test]
fn deep_nesting_in_a_read_member_is_a_member_error() {
    for (pointer, field) in [
        (
            "/data/object/client_reference_id",
            "data.object.client_reference_id",
        ),
        ("/data/object/amount_total", "data.object.amount_total"),
        ("/data/object/payment_intent", "data.object.payment_intent"),
        ("/data/object", "data.object"),
        ("/data", "data"),
        ("/created", "created"),
    ] {
        let body = with_raw(&sample_session(), pointer, &deep_array(200));
        assert!(value_refuses(&body), "{pointer}");
        assert_member_error(&body, field);
    }
    let body = with_raw(
        &sample_session(),
        "/data/object/metadata",
        &format!(r#"{{"order_id":{}}}"#, deep_array(200)),
    );
    assert_member_error(&body, "data.object.metadata.order_id");
    // Deep inside an object the worker reads, but below the members it reads.
    let body = with_raw(
        &sample_session(),
        "/data/object/payment_intent",
        &format!(r#"{{"id":"pi_deep","charges":{}}}"#, deep_object(300)),
    );
    assert_eq!(
        assert_handled(&body).kind.payment_intent_id(),
        Some("pi_deep")
    );
}

// ---- the rule, against independent oracles

/// Checks the one contract on any body.
fn check_contract(body: &[u8]) -> Result<(), TestCaseError> {
    let envelope = parse_envelope(body);
    let event = parse_event(body);
    // Valid JSON text (serde_json's grammar, which skips without typing) is never
    // "not JSON", whatever a typed parse thinks of it.
    let is_json =
        std::str::from_utf8(body).is_ok() && serde_json::from_slice::<IgnoredAny>(body).is_ok();
    prop_assert_eq!(
        envelope == Err(EnvelopeError::NotJson),
        !is_json,
        "{:?}",
        envelope
    );
    // Whatever the old, typed parse could read as an event, the receiver accepts.
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
        let non_empty = |key| {
            map.get(key)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
        };
        prop_assert_eq!(envelope.is_ok(), non_empty("id") && non_empty("type"));
    }
    match (&envelope, &event) {
        (Err(e), Err(ParseError::Envelope(p))) => prop_assert_eq!(e, p),
        (Err(_), _) => prop_assert!(false, "receiver {envelope:?} but worker {event:?}"),
        (Ok(_), Err(ParseError::Envelope(_))) => {
            prop_assert!(false, "receiver {envelope:?} but worker {event:?}")
        }
        (Ok(env), Ok(Parsed::Handled(ev))) => {
            prop_assert_eq!(&env.id, &ev.id);
            prop_assert_eq!(&env.event_type, &ev.event_type);
            prop_assert_eq!(env.created, Some(ev.created));
            prop_assert!(HANDLED_EVENT_TYPES.contains(&ev.event_type.as_str()));
        }
        (Ok(env), Ok(Parsed::Unhandled { id, event_type })) => {
            prop_assert_eq!(&env.id, id);
            prop_assert_eq!(&env.event_type, event_type);
            prop_assert!(!HANDLED_EVENT_TYPES.contains(&event_type.as_str()));
        }
        (
            Ok(env),
            Ok(Parsed::Ignored {
                id,
                event_type,
                reason,
            }),
        ) => {
            prop_assert_eq!(&env.id, id);
            prop_assert_eq!(&env.event_type, event_type);
            prop_assert!(HANDLED_EVENT_TYPES.contains(&event_type.as_str()));
            prop_assert!(!reason.is_empty());
        }
        (Ok(env), Err(err)) => {
            prop_assert!(HANDLED_EVENT_TYPES.contains(&env.event_type.as_str()));
            prop_assert!(!err.field().is_empty());
            prop_assert!(err.to_string().contains(err.field()), "{err}");
        }
    }
    Ok(())
}

/// Every real fixture event (when the shared fixtures are there) and every sample.
fn corpus() -> &'static [String] {
    static CORPUS: OnceLock<Vec<String>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut corpus = Vec::new();
        let dir = Path::new(FIXTURES);
        if dir.is_dir() {
            let mut paths: Vec<_> = fs::read_dir(dir)
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.extension().is_some_and(|e| e == "json"))
                .collect();
            paths.sort();
            for path in paths {
                corpus.push(fs::read_to_string(&path).unwrap());
            }
        }
        for (i, event_type) in SAMPLE_TYPES.iter().enumerate() {
            let spec = SampleSpec {
                event_id: "evt_sample",
                order_id: "ord_sample",
                payment_intent_id: (i % 2 == 0).then_some("pi_sample"),
                payment_status: ["paid", "unpaid", "no_payment_required"][i % 3],
                order_in_metadata: i % 2 == 1,
                created: 1_700_000_000,
            };
            let body = sample::event(event_type, &spec).unwrap();
            corpus.push(String::from_utf8(body).unwrap());
        }
        corpus
    })
}

/// Raw JSON texts that are valid JSON yet refused by a typed parse, or that sit on
/// the edge of what a member accepts.
const HOSTILE_VALUES: &[&str] = &[
    "1E99999000",
    "-1E99999000",
    "1e-99999",
    "-0",
    "1.0",
    "9223372036854775808",
    "-9223372036854775809",
    r#""\ud800""#,
    r#""a\udc00b""#,
    r#""\ud83d\ude00""#,
    r#""\u0000""#,
    r#""""#,
    "null",
    "true",
    "[]",
    "{}",
    r#"{"id":"\ud800"}"#,
    r#"{"id":"pi_x","id":"pi_y"}"#,
    r#"{"\ud800":1}"#,
    r#"{"object":"checkout.session","id":"cs_1"}"#,
];

/// A snippet inserted anywhere (mostly giving invalid JSON, on purpose).
const HOSTILE_BYTES: &[&[u8]] = &[
    b"1E99999000",
    b"\\ud800",
    b"\\udc00",
    b"\\u",
    b"\"",
    b"\\",
    b",",
    b"}",
    b"]",
    b":",
    b"\xff",
    b"\xed\xa0\x80",
    b"\x00",
    b"\n",
    b"[[[[[[[[",
];

fn hostile_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(HOSTILE_VALUES).prop_map(str::to_owned),
        1 => (120usize..140).prop_map(deep_array),
        1 => (120usize..140).prop_map(deep_object),
        1 => (1000usize..3000).prop_map(deep_array),
    ]
}

/// Every JSON pointer to a member or element of `value`.
fn pointers(value: &Value, prefix: String, out: &mut Vec<String>) {
    let children: Vec<(String, &Value)> = match value {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.replace('~', "~0").replace('/', "~1"), v))
            .collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => return,
    };
    for (key, child) in children {
        let pointer = format!("{prefix}/{key}");
        out.push(pointer.clone());
        pointers(child, pointer, out);
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    /// One byte replaced.
    Byte { at: prop::sample::Index, byte: u8 },
    /// Cut short.
    Cut { at: prop::sample::Index },
    /// A snippet inserted.
    Insert {
        at: prop::sample::Index,
        snippet: &'static [u8],
    },
    /// One member's value (read by the worker or not) replaced by a hostile one.
    Value {
        member: prop::sample::Index,
        raw: String,
    },
    /// The event's type set to a handled one, then a member replaced: reaches the
    /// members the worker reads in events of any shape.
    Retyped {
        event_type: &'static str,
        member: prop::sample::Index,
        raw: String,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => (any::<prop::sample::Index>(), any::<u8>())
            .prop_map(|(at, byte)| Mutation::Byte { at, byte }),
        1 => any::<prop::sample::Index>().prop_map(|at| Mutation::Cut { at }),
        2 => (any::<prop::sample::Index>(), prop::sample::select(HOSTILE_BYTES))
            .prop_map(|(at, snippet)| Mutation::Insert { at, snippet }),
        4 => (any::<prop::sample::Index>(), hostile_value())
            .prop_map(|(member, raw)| Mutation::Value { member, raw }),
        2 => (
            prop::sample::select(HANDLED_EVENT_TYPES),
            any::<prop::sample::Index>(),
            hostile_value(),
        )
            .prop_map(|(event_type, member, raw)| Mutation::Retyped { event_type, member, raw }),
    ]
}

fn mutate(body: &[u8], mutation: &Mutation) -> Vec<u8> {
    match mutation {
        Mutation::Byte { at, byte } if !body.is_empty() => {
            let mut out = body.to_vec();
            out[at.index(body.len())] = *byte;
            out
        }
        Mutation::Byte { .. } => body.to_vec(),
        Mutation::Cut { at } => body[..at.index(body.len() + 1)].to_vec(),
        Mutation::Insert { at, snippet } => {
            let at = at.index(body.len() + 1);
            [&body[..at], snippet, &body[at..]].concat()
        }
        Mutation::Value { member, raw } => replace_member(body, None, member, raw),
        Mutation::Retyped {
            event_type,
            member,
            raw,
        } => replace_member(body, Some(event_type), member, raw),
    }
}

/// Sets `type` (when asked) and replaces one member's value by `raw`. A body that is
/// not a JSON object (after an earlier mutation) is left as it is.
fn replace_member(
    body: &[u8],
    event_type: Option<&str>,
    member: &prop::sample::Index,
    raw: &str,
) -> Vec<u8> {
    let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(body) else {
        return body.to_vec();
    };
    if let Some(event_type) = event_type {
        map.insert("type".into(), event_type.into());
    }
    let value = Value::Object(map);
    let mut all = Vec::new();
    pointers(&value, String::new(), &mut all);
    if all.is_empty() {
        return serde_json::to_vec(&value).unwrap();
    }
    with_raw(&value.to_string(), &all[member.index(all.len())], raw)
}

proptest! {
    // Cases: PROPTEST_CASES when set (the issue asks for 20000), else 1024.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(1024),
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_events_get_one_answer(
        event in any::<prop::sample::Index>(),
        mutation in mutation(),
    ) {
        let corpus = corpus();
        let body = mutate(corpus[event.index(corpus.len())].as_bytes(), &mutation);
        check_contract(&body)?;
    }

    #[test]
    fn twice_mutated_events_get_one_answer(
        event in any::<prop::sample::Index>(),
        first in mutation(),
        second in mutation(),
    ) {
        let corpus = corpus();
        let once = mutate(corpus[event.index(corpus.len())].as_bytes(), &first);
        let twice = mutate(&once, &second);
        check_contract(&once)?;
        check_contract(&twice)?;
    }
}

#[test]
fn every_corpus_event_gets_one_answer() {
    let corpus = corpus();
    assert!(corpus.len() >= SAMPLE_TYPES.len());
    for body in corpus {
        check_contract(body.as_bytes()).unwrap();
    }
}
