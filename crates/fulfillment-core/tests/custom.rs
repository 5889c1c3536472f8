//! Custom-payment reports: the one validation (`parse_custom_payment`), the
//! envelope they travel in, and what they do to orders (paid, failed, paying
//! twice) next to Stripe's events.

mod common;

use common::*;
use fulfillment_core::custom::{self, MAX_REPORT_ID_BYTES};
use fulfillment_core::{
    AnomalyKind, CustomOutcome, CustomPaymentReport, EventKind, Model, OrderEvent, OrderStatus,
    Outcome, ParseError, Parsed, PaymentMethod, PaymentSource, PaymentStatus, ReportError,
    parse_custom_payment, parse_event,
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn good() -> Value {
    json!({
        "id": "cpay_123", "order_id": "ord_42", "outcome": "guaranteed",
        "amount": 4200, "currency": "eur", "custom_payment_method_type": "cpmt_abc",
        "payment_reference": "psp_txn_987", "initiated_at": 1795460000,
        "completed_at": 1795460100, "customer_email": "a@example.com",
        "stripe_customer": "cus_123"
    })
}

fn parse(value: &Value) -> Result<CustomPaymentReport, ReportError> {
    parse_custom_payment(&serde_json::to_vec(value).unwrap())
}

/// `good()` with `field` set to `value` (`None`: removed).
fn with(field: &str, value: Option<Value>) -> Value {
    let mut body = good();
    match value {
        Some(v) => body[field] = v,
        None => {
            body.as_object_mut().unwrap().remove(field);
        }
    }
    body
}

fn report(id: &str, order_id: &str, outcome: CustomOutcome) -> CustomPaymentReport {
    CustomPaymentReport {
        id: id.to_owned(),
        order_id: order_id.to_owned(),
        outcome,
        amount: 2000,
        currency: "usd".to_owned(),
        custom_payment_method_type: "cpmt_abc".to_owned(),
        payment_reference: format!("psp_{id}"),
        initiated_at: 1_700_000_000,
        completed_at: 1_700_000_060,
        customer_email: None,
        stripe_customer: None,
    }
}

fn custom_event(id: &str, order_id: &str, outcome: CustomOutcome) -> OrderEvent {
    event(
        &custom::event_id(id),
        EventKind::CustomPayment(Box::new(report(id, order_id, outcome))),
    )
}

// ---- validation

#[test]
fn every_rule_names_its_field() {
    let long_id = "x".repeat(MAX_REPORT_ID_BYTES + 1);
    let cases: Vec<(Value, &str)> = vec![
        (with("id", None), "id"),
        (with("id", Some(json!(""))), "id"),
        (with("id", Some(json!("has space"))), "id"),
        (with("id", Some(json!(long_id))), "id"),
        (with("id", Some(json!(12))), "id"),
        (with("order_id", None), "order_id"),
        (with("order_id", Some(json!(""))), "order_id"),
        (with("order_id", Some(json!("a\u{0}b"))), "order_id"),
        (with("order_id", Some(json!("x".repeat(501)))), "order_id"),
        (with("outcome", Some(json!("canceled"))), "outcome"),
        (with("outcome", Some(json!("Guaranteed"))), "outcome"),
        (with("outcome", None), "outcome"),
        (with("amount", Some(json!(0))), "amount"),
        (with("amount", Some(json!(-5))), "amount"),
        (with("amount", Some(json!(42.5))), "amount"),
        (with("amount", Some(json!(4200.0))), "amount"),
        (with("amount", Some(json!("4200"))), "amount"),
        (with("amount", None), "amount"),
        (with("currency", Some(json!("EUR"))), "currency"),
        (with("currency", Some(json!("euro"))), "currency"),
        (with("currency", Some(json!("e1r"))), "currency"),
        (
            with("custom_payment_method_type", Some(json!("pm_abc"))),
            "custom_payment_method_type",
        ),
        (
            with("custom_payment_method_type", Some(json!("cpmt_"))),
            "custom_payment_method_type",
        ),
        (
            with("custom_payment_method_type", Some(json!("cpmt_a-b"))),
            "custom_payment_method_type",
        ),
        (with("payment_reference", None), "payment_reference"),
        (
            with("payment_reference", Some(json!("line\nbreak"))),
            "payment_reference",
        ),
        (
            with("initiated_at", Some(json!("1795460000"))),
            "initiated_at",
        ),
        (with("initiated_at", Some(json!(0))), "initiated_at"),
        (with("initiated_at", None), "initiated_at"),
        (
            with("completed_at", Some(json!(253402300800i64))),
            "completed_at",
        ),
        (
            with("completed_at", Some(json!(1795459999))),
            "completed_at",
        ),
        (
            with("customer_email", Some(json!("not an email"))),
            "customer_email",
        ),
        (with("customer_email", Some(json!(""))), "customer_email"),
        (with("customer_email", Some(json!(7))), "customer_email"),
        (
            with("stripe_customer", Some(json!("cust_1"))),
            "stripe_customer",
        ),
        (with("metadata", Some(json!({}))), "metadata"),
        (
            with("stripe_customr", Some(json!("cus_1"))),
            "stripe_customr",
        ),
    ];
    for (body, field) in cases {
        let err = parse(&body).expect_err(&body.to_string());
        assert_eq!(err.field().as_deref(), Some(field), "{err} for {body}");
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[test]
fn optional_members_may_be_absent_or_null() {
    for field in ["customer_email", "stripe_customer"] {
        let absent = parse(&with(field, None)).unwrap();
        let null = parse(&with(field, Some(Value::Null))).unwrap();
        assert_eq!(absent, null);
    }
    let report = parse(&with("customer_email", None)).unwrap();
    assert_eq!(report.customer_email, None);
}

#[test]
fn a_failed_payment_and_an_instant_one_are_accepted() {
    let failed = parse(&with("outcome", Some(json!("failed")))).unwrap();
    assert_eq!(failed.outcome, CustomOutcome::Failed);
    let instant = parse(&with("completed_at", Some(json!(1795460000)))).unwrap();
    assert_eq!(instant.completed_at, instant.initiated_at);
}

#[test]
fn the_body_as_a_whole() {
    for (body, expected) in [
        (&b"not json"[..], ReportError::NotJson),
        (b"{\"id\":", ReportError::NotJson),
        (b"\xff\xfe", ReportError::NotJson),
        (b"[]", ReportError::NotObject),
        (b"\"cpay_1\"", ReportError::NotObject),
        (b"null", ReportError::NotObject),
    ] {
        assert_eq!(parse_custom_payment(body), Err(expected), "{body:?}");
    }
    let twice = br#"{"id":"a","id":"b"}"#;
    let err = parse_custom_payment(twice).unwrap_err();
    assert!(matches!(err, ReportError::Duplicate { .. }), "{err}");
    assert_eq!(err.field().as_deref(), Some("id"));
}

#[test]
fn a_made_up_member_name_is_quoted_cut_and_escaped() {
    let name = format!("evil\n{}", "y".repeat(500));
    let err = parse(&with(&name, Some(json!(1)))).unwrap_err();
    let text = err.to_string();
    assert!(!text.contains('\n'), "{text}");
    assert!(text.len() < 120, "{text}");
    let surrogate = br#"{"\ud800": 1}"#;
    let err = parse_custom_payment(surrogate).unwrap_err();
    assert!(matches!(err, ReportError::Unknown { .. }), "{err}");
}

// ---- on the bus

#[test]
fn the_envelope_parses_as_a_handled_event() {
    let body = serde_json::to_vec(&good()).unwrap();
    let envelope = custom::envelope(&body, "cpay_123", 1795460101);
    let Ok(Parsed::Handled(event)) = parse_event(&envelope) else {
        panic!("not handled: {:?}", parse_event(&envelope));
    };
    assert_eq!(event.id, "custom_payment:cpay_123");
    assert_eq!(event.event_type, custom::CUSTOM_PAYMENT_TYPE);
    assert_eq!(event.created, 1795460101);
    assert_eq!(event.order_id(), Some("ord_42"));
    assert_eq!(event.kind.payment_intent_id(), None);
    assert_eq!(event.target_status(), Some(OrderStatus::Paid));
    assert_eq!(event.kind.custom_payment(), Some(&parse(&good()).unwrap()));
}

#[test]
fn an_envelope_that_lies_is_a_permanent_parse_error() {
    let body = serde_json::to_vec(&good()).unwrap();
    let wrong_id = custom::envelope(&body, "cpay_other", 1);
    let err = parse_event(&wrong_id).unwrap_err();
    assert_eq!(err.field(), "id", "{err}");

    let bad = serde_json::to_vec(&with("amount", Some(json!(-1)))).unwrap();
    let err = parse_event(&custom::envelope(&bad, "cpay_123", 1)).unwrap_err();
    assert!(matches!(err, ParseError::CustomPayment(_)), "{err}");
    assert!(err.to_string().contains("amount"), "{err}");

    let no_report = br#"{"id":"custom_payment:x","type":"custom_payment.reported","created":1,"data":{"object":null}}"#;
    assert!(parse_event(no_report).is_err());
}

// ---- orders

#[test]
fn guaranteed_pays_and_failed_fails() {
    let mut model = Model::new();
    let guaranteed = custom_event("cpay_1", "ord_1", CustomOutcome::Guaranteed);
    assert_eq!(model.handle(&guaranteed, NOW), Outcome::Applied);
    let order = &model.orders()["ord_1"];
    assert_eq!(order.status, OrderStatus::Paid);
    // An order paid only off Stripe takes its details from the report.
    assert_eq!(order.amount_total, Some(2000));
    assert_eq!(order.currency.as_deref(), Some("usd"));
    let message = &model.outbox()[0];
    assert_eq!(message.routing_key(), "order.paid");
    assert_eq!(message.event_id, "custom_payment:cpay_1");
    assert_eq!(
        message.payment_method,
        PaymentMethod::Custom {
            method_type: "cpmt_abc".into(),
            payment_reference: "psp_cpay_1".into()
        }
    );

    let mut model = Model::new();
    let failed = custom_event("cpay_2", "ord_2", CustomOutcome::Failed);
    model.handle(&failed, NOW);
    assert_eq!(model.orders()["ord_2"].status, OrderStatus::PaymentFailed);
    assert_eq!(model.outbox()[0].routing_key(), "order.payment_failed");
    assert!(model.anomalies().is_empty());
}

#[test]
fn same_precedence_as_stripe() {
    // Failed, then paid by a second report: paid.
    let mut model = Model::new();
    model.handle(&custom_event("c1", "ord_1", CustomOutcome::Failed), NOW);
    model.handle(&custom_event("c2", "ord_1", CustomOutcome::Guaranteed), NOW);
    assert_eq!(model.orders()["ord_1"].status, OrderStatus::Paid);
    // Paid through Stripe, then a failed custom attempt: stays paid, stale.
    let mut model = Model::new();
    model.handle(&completed("evt_1", "ord_1", PaymentStatus::Paid), NOW);
    let late = custom_event("c3", "ord_1", CustomOutcome::Failed);
    assert_eq!(model.handle(&late, NOW), Outcome::Stale);
    assert_eq!(model.orders()["ord_1"].status, OrderStatus::Paid);
    assert!(
        model.anomalies().is_empty(),
        "a failed payment is not a payment"
    );
    // An expired session does not override a custom payment.
    let mut model = Model::new();
    model.handle(&custom_event("c4", "ord_1", CustomOutcome::Guaranteed), NOW);
    model.handle(&expired("evt_2", "ord_1"), NOW);
    assert_eq!(model.orders()["ord_1"].status, OrderStatus::Paid);
}

fn paid_messages(model: &Model) -> usize {
    model
        .outbox()
        .iter()
        .filter(|m| m.routing_key() == "order.paid")
        .count()
}

#[test]
fn stripe_and_custom_is_paying_twice_whichever_comes_first() {
    let stripe = completed("evt_1", "ord_1", PaymentStatus::Paid);
    let custom = custom_event("c1", "ord_1", CustomOutcome::Guaranteed);
    for (first, second) in [(&stripe, &custom), (&custom, &stripe)] {
        let mut model = Model::new();
        model.handle(first, NOW);
        assert_eq!(model.handle(second, NOW), Outcome::Stale);
        assert_eq!(model.orders()["ord_1"].status, OrderStatus::Paid);
        assert_eq!(paid_messages(&model), 1);
        let [anomaly] = model.anomalies() else {
            panic!("{:?}", model.anomalies());
        };
        assert_eq!(anomaly.kind, AnomalyKind::PaidTwice);
        assert_eq!(anomaly.order_id, "ord_1");
        assert_eq!(anomaly.event_id, second.id);
        assert_eq!(anomaly.payment, second.kind.payment_source().unwrap());
        assert_eq!(anomaly.earlier, vec![first.kind.payment_source().unwrap()]);
        // The message says what paid the order: the first payment.
        assert_eq!(
            model.outbox()[0].payment_method,
            first.kind.payment_method()
        );
    }
}

#[test]
fn two_custom_reports_are_paying_twice_but_one_report_twice_is_not() {
    let mut model = Model::new();
    let first = custom_event("c1", "ord_1", CustomOutcome::Guaranteed);
    model.handle(&first, NOW);
    assert_eq!(model.handle(&first, NOW), Outcome::Duplicate);
    assert!(model.anomalies().is_empty());
    model.handle(&custom_event("c2", "ord_1", CustomOutcome::Guaranteed), NOW);
    assert_eq!(model.anomalies().len(), 1);
    assert_eq!(paid_messages(&model), 1);
    assert_eq!(
        model.anomalies()[0].payment,
        PaymentSource::Custom {
            report_id: "c2".into()
        }
    );
    // Each report is taken in once.
    let ids: Vec<&str> = model
        .custom_reports()
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(ids, ["c1", "c2"]);
}

#[test]
fn a_session_and_its_payment_intent_are_one_payment() {
    let mut model = Model::new();
    model.handle(&completed("evt_1", "ord_1", PaymentStatus::Paid), NOW);
    model.handle(&intent_succeeded("evt_2", "pi_ord_1", None), NOW);
    model.handle(&async_succeeded("evt_3", "ord_1"), NOW);
    assert!(model.anomalies().is_empty());
    assert_eq!(model.payments().len(), 1);
    // A PaymentIntent parked before its session, released by it: still one.
    let mut model = Model::new();
    model.handle(&intent_succeeded("evt_2", "pi_ord_1", None), NOW);
    model.handle(&completed("evt_1", "ord_1", PaymentStatus::Paid), NOW);
    assert!(model.anomalies().is_empty());
    // ...and a custom report after both is the second payment.
    model.handle(&custom_event("c1", "ord_1", CustomOutcome::Guaranteed), NOW);
    assert_eq!(model.anomalies().len(), 1);
}

#[test]
fn a_released_payment_intent_can_reveal_the_double_payment() {
    let mut model = Model::new();
    model.handle(&custom_event("c1", "ord_1", CustomOutcome::Guaranteed), NOW);
    model.handle(&intent_succeeded("evt_2", "pi_ord_1", None), NOW);
    assert!(model.anomalies().is_empty(), "parked, not applied yet");
    // An unpaid session links the PaymentIntent; the released event pays.
    model.handle(&completed("evt_1", "ord_1", PaymentStatus::Unpaid), NOW);
    let [anomaly] = model.anomalies() else {
        panic!("{:?}", model.anomalies());
    };
    assert_eq!(anomaly.event_id, "evt_2");
    assert_eq!(anomaly.payment, PaymentSource::Stripe);
}

// ---- properties

/// Members with plausible names and arbitrary JSON values.
fn member_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        "[a-z_]{0,8}".prop_map(Value::String),
        Just(json!([])),
        Just(json!({"nested": 1})),
    ]
}

fn valid_report() -> impl Strategy<Value = CustomPaymentReport> {
    (
        "[!-~]{1,200}",
        "[^\\p{Cc}]{1,40}",
        prop_oneof![Just(CustomOutcome::Guaranteed), Just(CustomOutcome::Failed)],
        1..=i64::MAX,
        "[a-z]{3}",
        "cpmt_[A-Za-z0-9_]{1,95}",
        "[^\\p{Cc}]{1,60}",
        (1..=custom::MAX_UNIX_SECONDS, 0..=86_400i64),
        proptest::option::of("[a-z0-9.]{1,20}@[a-z]{1,10}\\.[a-z]{2,3}"),
        proptest::option::of("cus_[A-Za-z0-9]{1,20}"),
    )
        .prop_map(
            |(id, order_id, outcome, amount, currency, cpmt, reference, (at, took), email, cus)| {
                CustomPaymentReport {
                    id,
                    order_id,
                    outcome,
                    amount,
                    currency,
                    custom_payment_method_type: cpmt,
                    payment_reference: reference,
                    initiated_at: at,
                    completed_at: (at + took).min(custom::MAX_UNIX_SECONDS),
                    customer_email: email,
                    stripe_customer: cus,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Garbage never panics, and whatever is accepted reads back the same.
    #[test]
    fn garbage_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(report) = parse_custom_payment(&body) {
            prop_assert_eq!(parse_custom_payment(&report.to_json()), Ok(report));
        }
    }

    /// Objects of our member names with arbitrary values: an error names a
    /// member of the body (or is about the whole); an accepted one round-trips.
    #[test]
    fn garbage_members_are_refused_by_name(
        members in proptest::collection::btree_map(
            prop_oneof![
                Just("id".to_owned()), Just("order_id".to_owned()), Just("outcome".to_owned()),
                Just("amount".to_owned()), Just("currency".to_owned()),
                Just("initiated_at".to_owned()), Just("completed_at".to_owned()),
                Just("customer_email".to_owned()), "[a-z_]{1,10}",
            ],
            member_value(),
            0..12,
        ),
    ) {
        let body = Value::Object(members.clone().into_iter().collect());
        match parse(&body) {
            Ok(report) => prop_assert_eq!(parse_custom_payment(&report.to_json()), Ok(report)),
            Err(err) => {
                let field = err.field();
                prop_assert!(field.is_some(), "{}", err);
                let field = field.unwrap();
                let known = [
                    "custom_payment_method_type", "payment_reference", "stripe_customer",
                ];
                prop_assert!(
                    members.contains_key(field.as_ref()) || known.contains(&field.as_ref())
                        || matches!(err, ReportError::Missing { .. }),
                    "{} names {} not in {:?}", err, field, members.keys()
                );
            }
        }
    }

    /// Every valid report is accepted and reads back equal; breaking one of
    /// its members is refused naming that member.
    #[test]
    fn valid_reports_round_trip_and_one_broken_member_is_named(
        report in valid_report(),
        broken in 0..9usize,
        value in member_value(),
    ) {
        let body = report.to_json();
        prop_assert_eq!(parse_custom_payment(&body), Ok(report.clone()));
        let fields = [
            "id", "order_id", "outcome", "amount", "currency", "custom_payment_method_type",
            "payment_reference", "initiated_at", "completed_at",
        ];
        let field = fields[broken];
        let mut json: Value = serde_json::from_slice(&body).unwrap();
        json[field] = value;
        match parse(&json) {
            Ok(accepted) => prop_assert_eq!(parse_custom_payment(&accepted.to_json()), Ok(accepted)),
            Err(err) => {
                let named = err.field().map(|f| f.into_owned());
                let ok = named.as_deref() == Some(field)
                    // Moving one timestamp can break their order instead.
                    || matches!(err, ReportError::CompletedBeforeInitiated);
                prop_assert!(ok, "{} for {} = {}", err, field, json[field]);
            }
        }
    }

    /// The envelope carries any valid report to the worker unchanged.
    #[test]
    fn any_valid_report_travels(report in valid_report(), created in any::<u32>()) {
        let envelope = custom::envelope(&report.to_json(), &report.id, i64::from(created));
        let parsed = parse_event(&envelope);
        let expected = OrderEvent {
            id: report.event_id(),
            event_type: custom::CUSTOM_PAYMENT_TYPE.to_owned(),
            created: i64::from(created),
            account: None,
            kind: EventKind::CustomPayment(Box::new(report)),
        };
        prop_assert_eq!(parsed, Ok(Parsed::Handled(expected)));
    }
}
