use fulfillment_core::{
    Envelope, EnvelopeError, EventKind, HANDLED_EVENT_TYPES, OrderStatus, ParseError, Parsed,
    PaymentIntentFacts, PaymentStatus, SessionFacts, parse_envelope, parse_event,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{Value, json};

/// A `checkout.session.completed` as Stripe sends it (2025-04-30.basil), trimmed of
/// members the worker ignores but keeping a realistic mix of them.
const SESSION_COMPLETED: &str = r#"{
  "id": "evt_1RTkq2Q8iJWBZFaMcS0qX9nA",
  "object": "event",
  "api_version": "2025-04-30.basil",
  "created": 1700000000,
  "data": {
    "object": {
      "id": "cs_test_a1B2c3D4e5F6g7H8i9J0",
      "object": "checkout.session",
      "adaptive_pricing": {"enabled": true},
      "after_expiration": null,
      "amount_subtotal": 2000,
      "amount_total": 2000,
      "automatic_tax": {"enabled": false, "liability": null, "status": null},
      "cancel_url": "https://shop.example.com/cancel",
      "client_reference_id": "ord_42",
      "created": 1699999000,
      "currency": "usd",
      "customer": null,
      "customer_creation": "if_required",
      "customer_details": {
        "address": {"city": null, "country": "FR", "line1": null, "line2": null, "postal_code": null, "state": null},
        "email": "a@example.com",
        "name": "Ada Lovelace",
        "phone": null,
        "tax_exempt": "none",
        "tax_ids": []
      },
      "customer_email": null,
      "expires_at": 1700086400,
      "invoice": null,
      "livemode": false,
      "locale": null,
      "metadata": {"order_id": "ord_from_metadata", "cart": "c_9"},
      "mode": "payment",
      "payment_intent": "pi_3RTkpYQ8iJWBZFaM1LBHNo0J",
      "payment_link": null,
      "payment_method_types": ["card"],
      "payment_status": "paid",
      "status": "complete",
      "success_url": "https://shop.example.com/success",
      "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
      "ui_mode": "hosted",
      "url": null
    }
  },
  "livemode": false,
  "pending_webhooks": 1,
  "request": {"id": null, "idempotency_key": null},
  "type": "checkout.session.completed"
}"#;

const INTENT_SUCCEEDED: &str = r#"{
  "id": "evt_3RTkpYQ8iJWBZFaM1G1JtOIT",
  "object": "event",
  "api_version": "2025-04-30.basil",
  "created": 1700000100,
  "data": {
    "object": {
      "id": "pi_3RTkpYQ8iJWBZFaM1LBHNo0J",
      "object": "payment_intent",
      "amount": 2000,
      "amount_capturable": 0,
      "amount_details": {"tip": {}},
      "amount_received": 1900,
      "capture_method": "automatic_async",
      "client_secret": "pi_3RTkpYQ8iJWBZFaM1LBHNo0J_secret_x",
      "created": 1700000090,
      "currency": "usd",
      "customer": null,
      "latest_charge": "ch_3RTkpYQ8iJWBZFaM1WnB7qvm",
      "livemode": false,
      "metadata": {"order_id": "ord_42"},
      "payment_method": "pm_1RTkpWQ8iJWBZFaMdDm6wKzg",
      "receipt_email": "receipt@example.com",
      "status": "succeeded"
    }
  },
  "livemode": false,
  "pending_webhooks": 2,
  "request": {"id": "req_8GknGVjaPItZiK", "idempotency_key": "3f9c1d2e-8b7a-4c5d-9e0f-1a2b3c4d5e6f"},
  "type": "payment_intent.succeeded"
}"#;

fn value(body: &str) -> Value {
    serde_json::from_str(body).unwrap()
}

/// The completed session with `edit` applied to the event.
fn session_event(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut event = value(SESSION_COMPLETED);
    edit(&mut event);
    serde_json::to_vec(&event).unwrap()
}

fn intent_event(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut event = value(INTENT_SUCCEEDED);
    edit(&mut event);
    serde_json::to_vec(&event).unwrap()
}

fn object(event: &mut Value) -> &mut Value {
    &mut event["data"]["object"]
}

fn handled(body: &[u8]) -> fulfillment_core::OrderEvent {
    match parse_event(body) {
        Ok(Parsed::Handled(event)) => event,
        other => panic!("expected a handled event, got {other:?}"),
    }
}

fn session(body: &[u8]) -> SessionFacts {
    handled(body)
        .kind
        .session()
        .cloned()
        .expect("a Checkout Session event")
}

fn parse_error(body: &[u8]) -> ParseError {
    match parse_event(body) {
        Err(err) => err,
        Ok(parsed) => panic!("expected an error, got {parsed:?}"),
    }
}

// ---- handled events

#[test]
fn checkout_session_completed() {
    let event = handled(SESSION_COMPLETED.as_bytes());
    assert_eq!(event.id, "evt_1RTkq2Q8iJWBZFaMcS0qX9nA");
    assert_eq!(event.event_type, "checkout.session.completed");
    assert_eq!(event.created, 1_700_000_000);
    assert_eq!(event.order_id(), Some("ord_42"));
    assert_eq!(event.kind.target_status(), Some(OrderStatus::Paid));
    assert_eq!(
        event.kind.payment_intent_id(),
        Some("pi_3RTkpYQ8iJWBZFaM1LBHNo0J")
    );
    let EventKind::CheckoutSessionCompleted(facts) = event.kind else {
        panic!("wrong kind: {:?}", event.kind)
    };
    assert_eq!(
        facts,
        SessionFacts {
            session_id: "cs_test_a1B2c3D4e5F6g7H8i9J0".into(),
            order_id: "ord_42".into(),
            payment_intent_id: Some("pi_3RTkpYQ8iJWBZFaM1LBHNo0J".into()),
            payment_status: PaymentStatus::Paid,
            amount_total: Some(2000),
            currency: Some("usd".into()),
            customer_email: Some("a@example.com".into()),
            livemode: false,
        }
    );
}

#[test]
fn every_session_event_type() {
    let cases = [
        (
            "checkout.session.completed",
            "unpaid",
            OrderStatus::AwaitingPayment,
        ),
        (
            "checkout.session.completed",
            "no_payment_required",
            OrderStatus::Paid,
        ),
        ("checkout.session.expired", "unpaid", OrderStatus::Expired),
        (
            "checkout.session.async_payment_succeeded",
            "paid",
            OrderStatus::Paid,
        ),
        (
            "checkout.session.async_payment_failed",
            "unpaid",
            OrderStatus::PaymentFailed,
        ),
    ];
    for (event_type, payment_status, target) in cases {
        let body = session_event(|e| {
            e["type"] = json!(event_type);
            object(e)["payment_status"] = json!(payment_status);
        });
        let event = handled(&body);
        assert_eq!(event.kind.event_type(), event_type);
        assert_eq!(event.event_type, event_type);
        assert_eq!(
            event.kind.target_status(),
            Some(target),
            "{event_type}/{payment_status}"
        );
    }
}

#[test]
fn expired_session_without_payment_intent_or_customer() {
    let body = session_event(|e| {
        e["type"] = json!("checkout.session.expired");
        let o = object(e);
        o["status"] = json!("expired");
        o["payment_status"] = json!("unpaid");
        o["payment_intent"] = Value::Null;
        o["customer_details"] = Value::Null;
    });
    let event = handled(&body);
    assert!(matches!(event.kind, EventKind::CheckoutSessionExpired(_)));
    assert_eq!(event.kind.payment_intent_id(), None);
    assert_eq!(event.kind.session().unwrap().customer_email, None);
}

#[test]
fn order_id_precedence() {
    let resolved = |client_reference_id: Value, metadata: Value| {
        session(&session_event(|e| {
            object(e)["client_reference_id"] = client_reference_id;
            object(e)["metadata"] = metadata;
        }))
        .order_id
    };
    let metadata = json!({"order_id": "ord_meta"});
    assert_eq!(resolved(json!("ord_ref"), metadata.clone()), "ord_ref");
    assert_eq!(resolved(Value::Null, metadata.clone()), "ord_meta");
    assert_eq!(resolved(json!(""), metadata), "ord_meta");
    assert_eq!(
        resolved(Value::Null, json!({"order_id": ""})),
        "cs_test_a1B2c3D4e5F6g7H8i9J0"
    );
    assert_eq!(
        resolved(Value::Null, json!({})),
        "cs_test_a1B2c3D4e5F6g7H8i9J0"
    );
    assert_eq!(
        resolved(Value::Null, Value::Null),
        "cs_test_a1B2c3D4e5F6g7H8i9J0"
    );
    let without_members = session(&session_event(|e| {
        let o = object(e).as_object_mut().unwrap();
        o.remove("client_reference_id");
        o.remove("metadata");
    }));
    assert_eq!(without_members.order_id, "cs_test_a1B2c3D4e5F6g7H8i9J0");
}

#[test]
fn customer_email_precedence() {
    let email = |details: Value, customer_email: Value| {
        session(&session_event(|e| {
            object(e)["customer_details"] = details;
            object(e)["customer_email"] = customer_email;
        }))
        .customer_email
    };
    let details = json!({"email": "details@example.com"});
    assert_eq!(
        email(details, json!("prefill@example.com")).as_deref(),
        Some("details@example.com")
    );
    assert_eq!(
        email(Value::Null, json!("prefill@example.com")).as_deref(),
        Some("prefill@example.com")
    );
    assert_eq!(
        email(json!({"email": null}), json!("prefill@example.com")).as_deref(),
        Some("prefill@example.com")
    );
    assert_eq!(email(Value::Null, Value::Null), None);
    assert_eq!(email(json!({"email": ""}), json!("")), None);
}

#[test]
fn expanded_payment_intent_is_accepted() {
    let facts = session(&session_event(|e| {
        object(e)["payment_intent"] = json!({"id": "pi_expanded", "object": "payment_intent"});
    }));
    assert_eq!(facts.payment_intent_id.as_deref(), Some("pi_expanded"));
    let empty = session(&session_event(|e| object(e)["payment_intent"] = json!("")));
    assert_eq!(empty.payment_intent_id, None);
}

#[test]
fn livemode_falls_back_to_the_envelope() {
    let facts = session(&session_event(|e| {
        object(e).as_object_mut().unwrap().remove("livemode");
        e["livemode"] = json!(true);
    }));
    assert!(facts.livemode);
}

#[test]
fn the_connect_account_is_read_from_the_top_level() {
    assert_eq!(handled(&session_event(|_| {})).account, None);
    let of_account = session_event(|e| e["account"] = json!("acct_1Pgc76B7WZ01zgkW"));
    assert_eq!(
        handled(&of_account).account.as_deref(),
        Some("acct_1Pgc76B7WZ01zgkW")
    );
    let null = intent_event(|e| e["account"] = Value::Null);
    assert_eq!(handled(&null).account, None);
    let intent = intent_event(|e| e["account"] = json!("acct_2"));
    assert_eq!(handled(&intent).account.as_deref(), Some("acct_2"));
    // Stripe always sends a string; anything else is a malformed event.
    let err = parse_error(&session_event(|e| e["account"] = json!(5)));
    assert_eq!(err.field(), "account");
}

#[test]
fn payment_intent_succeeded() {
    let event = handled(INTENT_SUCCEEDED.as_bytes());
    assert_eq!(event.order_id(), Some("ord_42"));
    assert_eq!(event.kind.target_status(), Some(OrderStatus::Paid));
    assert_eq!(
        event.kind,
        EventKind::PaymentIntentSucceeded(PaymentIntentFacts {
            payment_intent_id: "pi_3RTkpYQ8iJWBZFaM1LBHNo0J".into(),
            order_id: Some("ord_42".into()),
            amount: Some(1900),
            currency: Some("usd".into()),
            receipt_email: Some("receipt@example.com".into()),
            livemode: false,
        })
    );
}

#[test]
fn payment_intent_without_order_metadata_needs_a_lookup() {
    for metadata in [json!({}), json!({"order_id": ""}), Value::Null] {
        let event = handled(&intent_event(|e| object(e)["metadata"] = metadata.clone()));
        assert_eq!(event.order_id(), None, "{metadata}");
        assert_eq!(
            event.kind.payment_intent_id(),
            Some("pi_3RTkpYQ8iJWBZFaM1LBHNo0J")
        );
    }
}

#[test]
fn payment_intent_amount_falls_back_to_amount() {
    let event = handled(&intent_event(|e| {
        object(e)["amount_received"] = Value::Null
    }));
    assert_eq!(event.kind.payment_intent().unwrap().amount, Some(2000));
}

#[test]
fn unhandled_types_are_not_inspected() {
    let bodies = [
        r#"{"id":"evt_1","object":"event","type":"customer.created","data":{"object":{"id":"cus_1","object":"customer"}}}"#,
        r#"{"id":"evt_2","type":"invoice.paid"}"#,
        r#"{"id":"evt_3","type":"payment_intent.requires_action","data":"whatever"}"#,
        r#"{"id":"evt_4","type":"checkout.session.completed.v2","data":null}"#,
    ];
    for body in bodies {
        match parse_event(body.as_bytes()) {
            Ok(Parsed::Unhandled { id, event_type }) => {
                assert!(id.starts_with("evt_"));
                assert!(!HANDLED_EVENT_TYPES.contains(&event_type.as_str()));
            }
            other => panic!("{body}: {other:?}"),
        }
    }
}

// ---- envelope

#[test]
fn envelope_of_a_real_event() {
    assert_eq!(
        parse_envelope(SESSION_COMPLETED.as_bytes()),
        Ok(Envelope {
            id: "evt_1RTkq2Q8iJWBZFaMcS0qX9nA".into(),
            event_type: "checkout.session.completed".into(),
            created: Some(1_700_000_000),
            livemode: Some(false),
        })
    );
    let loose = parse_envelope(br#"{"id":"evt_1","type":"t","created":"soon","livemode":1}"#);
    assert_eq!(loose.map(|e| (e.created, e.livemode)), Ok((None, None)));
}

#[test]
fn envelope_errors() {
    let cases: &[(&str, EnvelopeError)] = &[
        ("", EnvelopeError::NotJson),
        ("not json", EnvelopeError::NotJson),
        (r#"{"id":"evt_1","type":"t""#, EnvelopeError::NotJson),
        (
            r#"{"id":"evt_1","type":"t"} trailing"#,
            EnvelopeError::NotJson,
        ),
        (r#"[{"id":"evt_1","type":"t"}]"#, EnvelopeError::NotObject),
        ("[1,2", EnvelopeError::NotJson),
        (r#""evt_1""#, EnvelopeError::NotObject),
        ("null", EnvelopeError::NotObject),
        ("42", EnvelopeError::NotObject),
        (r#"{"type":"t"}"#, EnvelopeError::MissingId),
        (r#"{"id":null,"type":"t"}"#, EnvelopeError::MissingId),
        (r#"{"id":123,"type":"t"}"#, EnvelopeError::IdNotString),
        (r#"{"id":{"x":1},"type":"t"}"#, EnvelopeError::IdNotString),
        (r#"{"id":"","type":"t"}"#, EnvelopeError::EmptyId),
        (r#"{"id":"evt_1"}"#, EnvelopeError::MissingType),
        (
            r#"{"id":"evt_1","type":["t"]}"#,
            EnvelopeError::TypeNotString,
        ),
        (r#"{"id":"evt_1","type":""}"#, EnvelopeError::EmptyType),
    ];
    let not_utf8 = b"{\"id\":\"evt_1\",\"type\":\"t\",\"data\":\"\xff\"}";
    assert_eq!(parse_envelope(not_utf8), Err(EnvelopeError::NotJson));
    for (body, expected) in cases {
        assert_eq!(parse_envelope(body.as_bytes()), Err(*expected), "{body}");
        assert_eq!(
            parse_event(body.as_bytes()),
            Err(ParseError::Envelope(*expected)),
            "{body}"
        );
        assert!(!expected.reason().is_empty());
        assert_eq!(expected.to_string(), expected.reason());
    }
}

// ---- parse errors of handled events

#[test]
fn handled_events_with_bad_objects() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            session_event(|e| drop(e.as_object_mut().unwrap().remove("data"))),
            "data",
        ),
        (session_event(|e| e["data"] = json!([])), "data"),
        (session_event(|e| e["data"] = json!({})), "data.object"),
        (
            session_event(|e| e["data"]["object"] = json!("cs_1")),
            "data.object",
        ),
        (
            session_event(|e| e["data"]["object"] = json!([1])),
            "data.object",
        ),
        (
            session_event(|e| drop(e.as_object_mut().unwrap().remove("created"))),
            "created",
        ),
        (
            session_event(|e| e["created"] = json!("yesterday")),
            "created",
        ),
        (
            session_event(|e| object(e)["object"] = json!("payment_intent")),
            "data.object.object",
        ),
        (
            session_event(|e| object(e)["id"] = Value::Null),
            "data.object.id",
        ),
        (
            session_event(|e| object(e)["id"] = json!("")),
            "data.object.id",
        ),
        (
            session_event(|e| object(e)["id"] = json!(7)),
            "data.object.id",
        ),
        (
            session_event(|e| drop(object(e).as_object_mut().unwrap().remove("payment_status"))),
            "data.object.payment_status",
        ),
        (
            session_event(|e| object(e)["payment_status"] = json!("refunded")),
            "data.object.payment_status",
        ),
        (
            session_event(|e| object(e)["payment_status"] = json!(true)),
            "data.object.payment_status",
        ),
        (
            session_event(|e| object(e)["client_reference_id"] = json!(42)),
            "data.object.client_reference_id",
        ),
        (
            session_event(|e| object(e)["metadata"] = json!("x")),
            "data.object.metadata",
        ),
        (
            session_event(|e| object(e)["metadata"] = json!({"order_id": 5})),
            "data.object.metadata.order_id",
        ),
        (
            session_event(|e| object(e)["payment_intent"] = json!(["pi_1"])),
            "data.object.payment_intent",
        ),
        (
            session_event(|e| object(e)["payment_intent"] = json!({"object": "payment_intent"})),
            "data.object.payment_intent.id",
        ),
        (
            session_event(|e| object(e)["amount_total"] = json!("20.00")),
            "data.object.amount_total",
        ),
        (
            session_event(|e| object(e)["amount_total"] = json!(20.5)),
            "data.object.amount_total",
        ),
        (
            session_event(|e| object(e)["customer_details"] = json!({"email": 1})),
            "data.object.customer_details.email",
        ),
        (
            session_event(|e| {
                drop(object(e).as_object_mut().unwrap().remove("livemode"));
                drop(e.as_object_mut().unwrap().remove("livemode"));
            }),
            "data.object.livemode",
        ),
        (
            intent_event(|e| object(e)["object"] = json!("checkout.session")),
            "data.object.object",
        ),
        (
            intent_event(|e| object(e)["id"] = Value::Null),
            "data.object.id",
        ),
        (
            intent_event(|e| object(e)["amount_received"] = json!("1900")),
            "data.object.amount_received",
        ),
        (
            intent_event(|e| object(e)["livemode"] = json!("false")),
            "data.object.livemode",
        ),
    ];
    for (body, field) in cases {
        let err = parse_error(&body);
        assert_eq!(err.field(), field, "{err}");
        assert!(err.to_string().contains(field), "{err} should name {field}");
    }
}

#[test]
fn unknown_payment_status_names_the_value() {
    let err = parse_error(&session_event(|e| {
        object(e)["payment_status"] = json!("refunded")
    }));
    assert_eq!(
        err,
        ParseError::UnknownPaymentStatus {
            value: "refunded".into()
        }
    );
    assert!(err.to_string().contains("\"refunded\""));
}

// ---- robustness

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "id", "type", "object", "data", "created", "livemode", "payment_status",
            "client_reference_id", "metadata", "order_id", "payment_intent", "customer_details",
            "email", "customer_email", "amount_total", "amount", "amount_received", "currency",
            "receipt_email",
        ])
        .prop_map(str::to_owned),
        1 => ".{0,8}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            "paid",
            "unpaid",
            "no_payment_required",
            "checkout.session",
            "payment_intent",
            "",
        ])
        .prop_map(Value::from),
        prop::sample::select(HANDLED_EVENT_TYPES.to_vec()).prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(json_key(), inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `parse_event` and `parse_envelope` agree on the envelope, whatever the body.
fn check_consistent(body: &[u8]) -> Result<(), TestCaseError> {
    let envelope = parse_envelope(body);
    let event = parse_event(body);
    match (&envelope, &event) {
        (Err(e), Err(ParseError::Envelope(p))) => prop_assert_eq!(e, p),
        (Err(_), _) => prop_assert!(false, "envelope {envelope:?} but event {event:?}"),
        (Ok(_), Err(ParseError::Envelope(_))) => {
            prop_assert!(false, "envelope {envelope:?} but event {event:?}")
        }
        (Ok(env), Ok(Parsed::Handled(ev))) => {
            prop_assert_eq!(&env.id, &ev.id);
            prop_assert!(HANDLED_EVENT_TYPES.contains(&ev.event_type.as_str()));
        }
        (Ok(env), Ok(Parsed::Unhandled { id, event_type })) => {
            prop_assert_eq!(&env.id, id);
            prop_assert!(!HANDLED_EVENT_TYPES.contains(&event_type.as_str()));
        }
        (Ok(env), Ok(Parsed::Ignored { id, event_type, .. })) => {
            prop_assert_eq!(&env.id, id);
            prop_assert!(HANDLED_EVENT_TYPES.contains(&event_type.as_str()));
        }
        (Ok(env), Err(_)) => {
            prop_assert!(HANDLED_EVENT_TYPES.contains(&env.event_type.as_str()))
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_bytes_never_panic(body in vec(any::<u8>(), 0..256)) {
        check_consistent(&body)?;
    }

    #[test]
    fn arbitrary_json_never_panics(body in json_value()) {
        check_consistent(&serde_json::to_vec(&body).unwrap())?;
    }

    #[test]
    fn arbitrary_data_object_never_panics(
        event_type in prop::sample::select(HANDLED_EVENT_TYPES.to_vec()),
        object in json_value(),
    ) {
        let body = json!({"id": "evt_1", "type": event_type, "created": 1, "data": {"object": object}});
        check_consistent(&serde_json::to_vec(&body).unwrap())?;
    }

    #[test]
    fn arbitrary_session_member_never_panics(key in json_key(), member in json_value()) {
        let body = session_event(|e| object(e)[key.as_str()] = member);
        check_consistent(&body)?;
    }

    #[test]
    fn mutated_real_event_never_panics(
        cut in 0..SESSION_COMPLETED.len(),
        byte in any::<u8>(),
    ) {
        let mut body = SESSION_COMPLETED.as_bytes().to_vec();
        body[cut] = byte;
        check_consistent(&body)?;
        check_consistent(&body[..cut])?;
    }
}
