//! Stripe events saved from other projects' test suites (see SOURCES.md there). They
//! live outside the repository and are read in place; the tests skip without them.

use std::fs;
use std::path::{Path, PathBuf};

use fulfillment_core::{
    EventKind, Model, OrderEvent, OrderStatus, Outcome, Parsed, PaymentError, PaymentStatus,
    SessionFacts, parse_envelope, parse_event,
};
use time::macros::datetime;

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
        assert_eq!(
            event.kind.target_status(),
            Some(OrderStatus::Paid),
            "{name}"
        );
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
    assert_eq!(event.kind.target_status(), Some(OrderStatus::Paid));
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
        assert_eq!(event.kind.target_status(), Some(OrderStatus::Paid));
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

/// `(file, PaymentIntent, amount, currency, last_payment_error)` of every real
/// `payment_intent.payment_failed`.
fn failed_fixtures() -> [(&'static str, &'static str, i64, &'static str, PaymentError); 3] {
    let text = |s: &str| Some(s.to_owned());
    [
        (
            "stripe-ruby-mock__payment_intent.payment_failed.json",
            "pi_000000000000000000000000",
            2000,
            "usd",
            PaymentError {
                failure_code: text("card_declined"),
                decline_code: text("generic_decline"),
                failure_message: text("Your card was declined."),
            },
        ),
        (
            "lago-api__basil_payment_intent_payment_failed.json",
            "pi_3SVvxMQ8iJWBZFaM1Lao8ehu",
            11880,
            "usd",
            PaymentError {
                failure_code: text("authentication_required"),
                decline_code: text("authentication_not_handled"),
                failure_message: text(
                    "This payment required an authentication action to complete, but \
                     `error_on_requires_action` was set. When you're ready, you can upgrade \
                     your integration to handle actions at \
                     https://stripe.com/docs/payments/payment-intents/upgrade-to-handle-actions.",
                ),
            },
        ),
        // `last_payment_error: null`: a failure Stripe gave no details for.
        (
            "supabase-stripe-sync-engine__payment_intent_payment_failed.json",
            "pi_1IqxJOJDPojXS6LN9uOebAea",
            1000,
            "usd",
            PaymentError::default(),
        ),
    ]
}

#[test]
fn payment_intents_failed() {
    let Some(dir) = fixtures_dir() else { return };
    for (name, pi, amount, currency, error) in failed_fixtures() {
        let event = handled(dir, name);
        let EventKind::PaymentIntentPaymentFailed(attempt) = &event.kind else {
            panic!("{name}: {:?}", event.kind)
        };
        assert_eq!(attempt.intent.payment_intent_id, pi, "{name}");
        // amount_received is 0 in all of them: the order is worth `amount`.
        assert_eq!(attempt.intent.amount, Some(amount), "{name}");
        assert_eq!(attempt.intent.currency.as_deref(), Some(currency), "{name}");
        assert_eq!(attempt.error, error, "{name}");
        assert_eq!(event.order_id(), None, "{name}: no metadata.order_id");
        assert_eq!(
            event.target_status(),
            Some(OrderStatus::AwaitingPayment),
            "{name}: a failed attempt is not the end"
        );
    }
}

#[test]
fn payment_intents_processing_and_canceled() {
    let Some(dir) = fixtures_dir() else { return };
    let processing = handled(dir, "stripe-ruby-mock__payment_intent.processing.json");
    let EventKind::PaymentIntentProcessing(intent) = &processing.kind else {
        panic!("{:?}", processing.kind)
    };
    assert_eq!(intent.payment_intent_id, "pi_00000000000000");
    assert_eq!(intent.amount, Some(900));
    assert_eq!(intent.currency.as_deref(), Some("eur"));
    assert_eq!(
        processing.target_status(),
        Some(OrderStatus::AwaitingPayment)
    );

    let canceled = handled(dir, "stripe-ruby-mock__payment_intent.canceled.json");
    let EventKind::PaymentIntentCanceled(intent) = &canceled.kind else {
        panic!("{:?}", canceled.kind)
    };
    assert_eq!(intent.payment_intent_id, "pi_000000000000000000000000");
    assert_eq!(intent.amount, Some(2000));
    assert_eq!(canceled.target_status(), Some(OrderStatus::Canceled));
    // The same event id as the ruby-mock payment_failed: a dedup trap.
    let failed = handled(dir, "stripe-ruby-mock__payment_intent.payment_failed.json");
    assert_eq!(canceled.id, failed.id);
}

/// The real payloads, byte for byte, through the Model: each parks until a
/// session links its PaymentIntent, then applies to that order.
#[test]
fn real_lifecycle_payloads_apply_once_linked() {
    let Some(dir) = fixtures_dir() else { return };
    let now = datetime!(2025-05-01 12:00 UTC);
    for (name, pi, _, _, error) in failed_fixtures() {
        let mut model = Model::new();
        let failed = handled(dir, name);
        assert_eq!(model.handle(&failed, now), Outcome::Unmatched, "{name}");
        assert_eq!(model.handle(&linking_session(pi), now), Outcome::Applied);
        let order = &model.orders()["ord_fixture"];
        assert_eq!(order.status, OrderStatus::AwaitingPayment, "{name}");
        assert_eq!(order.lifecycle.failed_attempts, 1, "{name}");
        let last = order.lifecycle.last_failure.as_ref().unwrap();
        assert_eq!(
            (last.event_id.as_str(), &last.error),
            (failed.id.as_str(), &error)
        );
        let types: Vec<&str> = model.outbox().iter().map(|m| m.routing_key()).collect();
        assert_eq!(
            types,
            ["order.awaiting_payment", "order.payment_attempt_failed"],
            "{name}"
        );
        assert_eq!(model.handle(&failed, now), Outcome::Duplicate);
    }

    // ruby-mock's payment_failed and canceled share one event id: the second
    // is a duplicate whatever its type, so the order is not canceled.
    let mut model = Model::new();
    let pi = "pi_000000000000000000000000";
    model.handle(&linking_session(pi), now);
    let failed = handled(dir, "stripe-ruby-mock__payment_intent.payment_failed.json");
    let canceled = handled(dir, "stripe-ruby-mock__payment_intent.canceled.json");
    assert_eq!(model.handle(&failed, now), Outcome::Applied);
    assert_eq!(model.handle(&canceled, now), Outcome::Duplicate);
    assert_eq!(
        model.orders()["ord_fixture"].status,
        OrderStatus::AwaitingPayment
    );

    let mut model = Model::new();
    model.handle(&linking_session(pi), now);
    assert_eq!(model.handle(&canceled, now), Outcome::Applied);
    assert_eq!(model.orders()["ord_fixture"].status, OrderStatus::Canceled);

    let mut model = Model::new();
    let processing = handled(dir, "stripe-ruby-mock__payment_intent.processing.json");
    assert_eq!(model.handle(&processing, now), Outcome::Unmatched);
    model.handle(&linking_session("pi_00000000000000"), now);
    assert_eq!(model.parked(), 0);
    assert_eq!(model.processed()[&processing.id].0, Outcome::Stale);
}

/// An unpaid `checkout.session.completed` of order `ord_fixture` referencing `pi`.
fn linking_session(pi: &str) -> OrderEvent {
    let session = SessionFacts {
        session_id: "cs_fixture".to_owned(),
        order_id: "ord_fixture".to_owned(),
        payment_intent_id: Some(pi.to_owned()),
        payment_status: PaymentStatus::Unpaid,
        amount_total: Some(2000),
        currency: Some("usd".to_owned()),
        customer_email: None,
        livemode: false,
    };
    let kind = EventKind::CheckoutSessionCompleted(session);
    OrderEvent {
        id: "evt_fixture_session".to_owned(),
        event_type: kind.event_type().to_owned(),
        created: 1_700_000_000,
        account: None,
        kind,
    }
}
