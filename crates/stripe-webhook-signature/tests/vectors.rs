//! Published vectors from Stripe's SDK test suites, plus vectors read at run
//! time from the sibling `shared/fixtures/stripe` directory (not vendored).

use std::fs;
use std::path::Path;

use stripe_webhook_signature::{
    DEFAULT_TOLERANCE_SECS, Secrets, Verified, Verifier, VerifyError, parse_header, sign_header,
};

fn verifier(secret: &str, tolerance_secs: u64) -> Verifier {
    Verifier::new(Secrets::new([secret]).unwrap(), tolerance_secs)
}

/// Asserts `sign_header` reproduces the header's `t` and `v1` and that the
/// full published header (possibly with `v0`) verifies at `now = t`.
fn check_published(secret: &str, timestamp: i64, payload: &[u8], header: &str) {
    let signed = sign_header(secret, timestamp, payload);
    assert!(
        header.starts_with(&signed),
        "sign_header gave {signed}, published {header}"
    );
    assert_eq!(
        verifier(secret, DEFAULT_TOLERANCE_SECS).verify(header, payload, timestamp),
        Ok(Verified { timestamp })
    );
}

// stripe-node test/Webhook.spec.ts EVENT_PAYLOAD_STRING.
const NODE_PAYLOAD: &[u8] = b"{\n  \"id\": \"evt_test_webhook\",\n  \"object\": \"event\"\n}";
// stripe-python tests/test_webhook.py DUMMY_WEBHOOK_PAYLOAD.
const PYTHON_PAYLOAD: &[u8] = b"{\n  \"id\": \"evt_test_webhook\",\n  \"object\": \"event\",\n  \"data\": { \"object\": { \"id\": \"rdr_123\", \"object\": \"terminal.reader\" } }\n}";
// async-stripe main test_webhook_construct_event (compact, sorted keys).
const ASYNC_STRIPE_PAYLOAD: &[u8] = br#"{"account":"acct_123","api_version":"2017-05-25","created":1533204620,"data":{"object":{"amount":1000,"currency":"usd","customer":"cus_123","date":1533204620,"description":"Test Invoice Item","discountable":false,"id":"ii_123","invoice":"in_123","livemode":false,"metadata":{},"object":"invoiceitem","period":{"end":1533204620,"start":1533204620},"proration":false,"quantity":3,"quantity_decimal":"0"}},"id":"evt_123","livemode":false,"object":"event","pending_webhooks":1,"request":{"id":"req_123","idempotency_key":"idempotency-key-123"},"type":"invoiceitem.created"}"#;

#[test]
fn published_payload_lengths() {
    assert_eq!(NODE_PAYLOAD.len(), 51);
    assert_eq!(PYTHON_PAYLOAD.len(), 125);
    assert_eq!(ASYNC_STRIPE_PAYLOAD.len(), 569);
}

#[test]
fn node_vector() {
    check_published(
        "whsec_test_secret",
        12345,
        NODE_PAYLOAD,
        "t=12345,v1=2672d138c9a412830f3bfe2ecc5bfb3277cf6f5b49d0119d77dd6cb64da1257e",
    );
}

#[test]
fn python_vectors() {
    check_published(
        "whsec_test_secret",
        12345,
        PYTHON_PAYLOAD,
        "t=12345,v1=07b1ede164afb7b5de91267ffa656f568c65d6e0783ce0ac55ee094643578eda",
    );
    check_published(
        "whsec_test_secret",
        1_700_000_000,
        PYTHON_PAYLOAD,
        "t=1700000000,v1=3bfab77baf5f7b6991a46c9b53b6547d7afc56148b10468fcad9f35c1992ffbd",
    );
}

#[test]
fn async_stripe_vector_with_dummy_v0() {
    check_published(
        "secret",
        1_533_204_620,
        ASYNC_STRIPE_PAYLOAD,
        "t=1533204620,v1=d7373bc68f4bd320b253cd7461f87af6e1cdf1b4d7db1614d8d1d746972d2d0a,v0=63f3a72374a733066c4be69ed7f8e5ac85c22c9f0a6a612ab9a025a9e4ee7eef",
    );
}

#[test]
fn stripe_docs_example_parses() {
    // P4: format-only fixture from docs.stripe.com/webhooks.
    let parsed = parse_header("t=1492774577,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd,v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39").unwrap();
    assert_eq!(parsed.timestamp, 1_492_774_577);
    assert_eq!(parsed.v1.len(), 1);
    assert_eq!(
        hex::encode(parsed.v1[0]),
        "5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"
    );
}

// ---- Shared fixtures (read at run time, never copied into the repo) ----

const SHARED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/stripe"
);

/// Returns the events directory, or `None` (after saying so) when the
/// sibling checkout is absent.
fn events_dir(test: &str) -> Option<std::path::PathBuf> {
    let dir = Path::new(SHARED).join("events");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("{test}: skipped, {} not found", dir.display());
        None
    }
}

fn read_event(dir: &Path, name: &str) -> Vec<u8> {
    fs::read(dir.join(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

#[test]
fn shared_p1_stripe_dotnet() {
    let Some(dir) = events_dir("shared_p1_stripe_dotnet") else {
        return;
    };
    let payload = read_event(
        &dir,
        "stripe-dotnet__event_test_signature_customer.created.json",
    );
    assert_eq!(payload.len(), 484);
    let t = 1_533_204_620;
    let header = "t=1533204620,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7,v0=63f3a72374a733066c4be69ed7f8e5ac85c22c9f0a6a612ab9a025a9e4ee7eef";
    let v = verifier("webhook_secret", 300);

    assert!(header.starts_with(&sign_header("webhook_secret", t, &payload)));
    assert_eq!(
        v.verify(header, &payload, t + 100),
        Ok(Verified { timestamp: t })
    );
    assert_eq!(
        v.verify(header, &payload, t + 400),
        Err(VerifyError::TimestampOutOfTolerance)
    );
    let mut changed = payload.clone();
    changed.extend_from_slice(b"this_changes_the_json");
    assert_eq!(
        v.verify(header, &changed, t + 100),
        Err(VerifyError::NoMatch)
    );
}

#[test]
fn shared_p2_async_stripe_v041() {
    let Some(dir) = events_dir("shared_p2_async_stripe_v041") else {
        return;
    };
    let payload = read_event(
        &dir,
        "async-stripe__v0.41_webhook_test_invoiceitem.created.json",
    );
    assert_eq!(payload.len(), 756);
    check_published(
        "webhook_secret",
        1_533_204_620,
        &payload,
        "t=1533204620,v1=82216eca827bcb7b34b8055eb2d2d9e6bc13b9ac39ded14a61e69f70c565f53a,v0=63f3a72374a733066c4be69ed7f8e5ac85c22c9f0a6a612ab9a025a9e4ee7eef",
    );
}

#[test]
fn shared_events_round_trip_byte_exact() {
    let Some(dir) = events_dir("shared_events_round_trip_byte_exact") else {
        return;
    };
    let secret = "whsec_made_up_for_round_trip";
    let v = verifier(secret, DEFAULT_TOLERANCE_SECS);
    let t = 1_700_000_000;
    let mut count = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let payload = fs::read(&path).unwrap();
        let header = sign_header(secret, t, &payload);
        assert_eq!(
            v.verify(&header, &payload, t),
            Ok(Verified { timestamp: t }),
            "{}",
            path.display()
        );
        // One byte more (e.g. an added newline) must not verify.
        let mut longer = payload.clone();
        longer.push(b'\n');
        assert_eq!(
            v.verify(&header, &longer, t),
            Err(VerifyError::NoMatch),
            "{}",
            path.display()
        );
        count += 1;
    }
    assert!(count > 0, "no *.json in {}", dir.display());
}
