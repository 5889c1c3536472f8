//! Stripe events saved from other projects' test suites (see SOURCES.md there). They
//! live outside the repository and are read in place; the tests skip without them.

use std::fs;
use std::path::{Path, PathBuf};

use fulfillment_core::{
    EventKind, OrderEvent, OrderStatus, Parsed, PaymentStatus, parse_envelope, parse_event,
};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/stripe/events"
);

fn fixtures_dir() -> Option<&'static Path> {
    let dir = Path::new(FIXTURES);
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("skipped: fixture directory {FIXTURES} not found");
        None
    }
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    fs::read(dir.join(name)).unwrap_or_else(|err| panic!("{name}: {err}"))
}

fn handled(dir: &Path, name: &str) -> OrderEvent {
    match parse_event(&read(dir, name)) {
        Ok(Parsed::Handled(event)) => event,
        other => panic!("{name}: expected a handled event, got {other:?}"),
    }
}

fn full_events(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .expect("readable fixture directory")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".json") && !name.contains("DATA_ONLY") && !name.contains("_EXCERPT")
        })
        .collect();
    paths.sort();
    paths
}

#[test]
fn every_full_event_has_an_envelope() {
    let Some(dir) = fixtures_dir() else { return };
    let paths = full_events(dir);
    assert!(!paths.is_empty());
    for path in paths {
        let body = fs::read(&path).unwrap();
        let envelope = parse_envelope(&body)
            .unwrap_or_else(|err| panic!("{}: {}", path.display(), err.reason()));
        assert!(envelope.id.starts_with("evt_"), "{}", path.display());
        // parse_event must never reject what the receiver accepted as an envelope,
        // except for a handled type with a bad object, which none of these have.
        parse_event(&body).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    }
}

#[test]
fn paid_checkout_sessions() {
    let Some(dir) = fixtures_dir() else { return };
    for name in [
        "stripe-ruby-mock__checkout.session.completed.json",
        "stripe-ruby-mock__checkout.session.completed.payment_mode.json",
        "supabase-stripe-sync-engine__checkout_session_completed.json",
    ] {
        let event = handled(dir, name);
        let EventKind::CheckoutSessionCompleted(session) = &event.kind else {
            panic!("{name}: {:?}", event.kind)
        };
        assert_eq!(session.payment_status, PaymentStatus::Paid, "{name}");
        assert_eq!(event.kind.target_status(), OrderStatus::Paid, "{name}");
        // No client_reference_id or metadata in these: the order is named by the session.
        assert_eq!(session.order_id, session.session_id, "{name}");
        assert!(session.payment_intent_id.is_some(), "{name}");
        assert!(session.customer_email.is_some(), "{name}");
    }

    let supabase = handled(
        dir,
        "supabase-stripe-sync-engine__checkout_session_completed.json",
    );
    let session = supabase.kind.session().unwrap();
    assert_eq!(session.amount_total, Some(999));
    assert_eq!(session.currency.as_deref(), Some("eur"));
    assert_eq!(session.customer_email.as_deref(), Some("billz@supabase.io"));
    assert!(session.livemode);
}

#[test]
fn setup_mode_session_needs_no_payment() {
    let Some(dir) = fixtures_dir() else { return };
    let event = handled(
        dir,
        "stripe-ruby-mock__checkout.session.completed.setup_mode.json",
    );
    let session = event.kind.session().expect("a session event");
    assert!(matches!(event.kind, EventKind::CheckoutSessionCompleted(_)));
    assert_eq!(session.payment_status, PaymentStatus::NoPaymentRequired);
    assert_eq!(event.kind.target_status(), OrderStatus::Paid);
    assert_eq!(session.payment_intent_id, None);
    assert_eq!(session.customer_email, None);
    assert_eq!(session.amount_total, None);
}

#[test]
fn payment_intents_succeeded() {
    let Some(dir) = fixtures_dir() else { return };
    for (name, amount) in [
        ("stripe-ruby-mock__payment_intent.succeeded.json", 2000),
        ("lago-api__basil_payment_intent_succeeded.json", 4620),
        ("lago-api__acacia_payment_intent_succeeded.json", 3897),
        // Inconsistent fixture (status requires_payment_method, amount_received 0).
        (
            "supabase-stripe-sync-engine__payment_intent_succeeded.json",
            0,
        ),
    ] {
        let event = handled(dir, name);
        let EventKind::PaymentIntentSucceeded(intent) = &event.kind else {
            panic!("{name}: {:?}", event.kind)
        };
        assert_eq!(intent.amount, Some(amount), "{name}");
        assert!(intent.payment_intent_id.starts_with("pi_"), "{name}");
        // None of them carries metadata.order_id: the worker must look the order up.
        assert_eq!(event.order_id(), None, "{name}");
        assert_eq!(event.kind.target_status(), OrderStatus::Paid);
    }
}

#[test]
fn unrelated_types_are_unhandled() {
    let Some(dir) = fixtures_dir() else { return };
    for name in [
        "stripe-ruby-mock__customer.created.json",
        "stripe-dotnet__event_test_signature_customer.created.json",
        "stripe-java__api_fixtures_customer_created.json",
        "stripe-ruby-mock__invoice.paid.json",
        "supabase-stripe-sync-engine__invoice_paid.json",
        "stripe-ruby-mock__charge.succeeded.json",
        "supabase-stripe-sync-engine__charge_succeeded.json",
        "stripe-ruby-mock__payment_intent.payment_failed.json",
        "lago-api__basil_customer_updated.json",
    ] {
        let parsed = parse_event(&read(dir, name));
        assert!(
            matches!(parsed, Ok(Parsed::Unhandled { .. })),
            "{name}: {parsed:?}"
        );
    }
}

#[test]
fn data_only_file_is_not_an_event() {
    let Some(dir) = fixtures_dir() else { return };
    let body = read(dir, "pay-rails__checkout.session.completed.DATA_ONLY.json");
    assert!(parse_envelope(&body).is_err());
}
