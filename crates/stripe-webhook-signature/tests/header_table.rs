//! Table tests: every malformed or odd header, with the exact outcome, plus
//! timestamp tolerance edges and the secret-list parser.

use stripe_webhook_signature::{
    DEFAULT_TOLERANCE_SECS, Secrets, SecretsError, Verified, Verifier, VerifyError,
    compute_signature, parse_header, sign_header,
};

const SECRET: &str = "whsec_table_secret";
const PAYLOAD: &[u8] = b"{\"id\":\"evt_1\"}";
const T: i64 = 12345;

fn sig() -> String {
    hex::encode(compute_signature(SECRET, T, PAYLOAD))
}

fn verifier(tolerance_secs: u64) -> Verifier {
    Verifier::new(Secrets::new([SECRET]).unwrap(), tolerance_secs)
}

fn malformed(reason: &'static str) -> Result<Verified, VerifyError> {
    Err(VerifyError::Malformed(reason))
}

const OK: Result<Verified, VerifyError> = Ok(Verified { timestamp: T });

#[test]
fn header_table() {
    let s = sig();
    let v0 = "63f3a72374a733066c4be69ed7f8e5ac85c22c9f0a6a612ab9a025a9e4ee7eef";
    let upper = s.to_ascii_uppercase();
    let cases: Vec<(&str, String, Result<Verified, VerifyError>)> = vec![
        ("valid", format!("t={T},v1={s}"), OK),
        ("empty", String::new(), Err(VerifyError::MissingHeader)),
        ("spaces only", "   ".into(), Err(VerifyError::MissingHeader)),
        (
            "tab and newline only",
            "\t\r\n".into(),
            Err(VerifyError::MissingHeader),
        ),
        (
            "missing t",
            format!("v1={s}"),
            malformed("missing timestamp"),
        ),
        (
            "t key is case-sensitive",
            format!("T={T},v1={s}"),
            malformed("missing timestamp"),
        ),
        (
            "space before =",
            format!("t ={T},v1={s}"),
            malformed("missing timestamp"),
        ),
        (
            "non-numeric t",
            format!("t=abc,v1={s}"),
            malformed("non-numeric timestamp"),
        ),
        (
            "negative t",
            format!("t=-{T},v1={s}"),
            malformed("non-numeric timestamp"),
        ),
        (
            "t with + sign",
            format!("t=+{T},v1={s}"),
            malformed("non-numeric timestamp"),
        ),
        (
            "space inside t",
            format!("t=123 45,v1={s}"),
            malformed("non-numeric timestamp"),
        ),
        (
            "space after =",
            format!("t= {T},v1={s}"),
            malformed("non-numeric timestamp"),
        ),
        (
            "underscore in t",
            format!("t=12_345,v1={s}"),
            malformed("non-numeric timestamp"),
        ),
        (
            "trailing junk in t",
            format!("t={T}abc,v1={s}"),
            malformed("non-numeric timestamp"),
        ),
        (
            "decimal t",
            format!("t={T}.0,v1={s}"),
            malformed("non-numeric timestamp"),
        ),
        (
            "unicode digit t",
            format!("t=\u{663},v1={s}"),
            malformed("non-numeric timestamp"),
        ),
        (
            "empty t",
            format!("t=,v1={s}"),
            malformed("non-numeric timestamp"),
        ),
        (
            "20-digit t",
            format!("t=12345678901234567890,v1={s}"),
            malformed("non-numeric timestamp"),
        ),
        (
            "19-digit t above i64::MAX",
            format!("t=9223372036854775808,v1={s}"),
            malformed("non-numeric timestamp"),
        ),
        (
            "semicolon separators",
            format!("t={T};v1={s}"),
            malformed("non-numeric timestamp"),
        ),
        (
            "duplicate t",
            format!("t={T},t={T},v1={s}"),
            malformed("duplicate timestamp"),
        ),
        (
            "duplicate t after v1",
            format!("t={T},v1={s},t=1"),
            malformed("duplicate timestamp"),
        ),
        ("leading zeros in t", format!("t=000{T},v1={s}"), OK),
        (
            "element without =",
            format!("t={T},v1{s}"),
            malformed("element without '='"),
        ),
        (
            "bare v1",
            format!("t={T},v1"),
            malformed("element without '='"),
        ),
        (
            "prose",
            "I'm not even a real signature header".into(),
            malformed("element without '='"),
        ),
        (
            "bare word before t",
            format!("v1,t={T}"),
            malformed("element without '='"),
        ),
        (
            "empty v1",
            format!("t={T},v1="),
            Err(VerifyError::NoV1Signature),
        ),
        (
            "odd-length hex",
            format!("t={T},v1={}", &s[..63]),
            Err(VerifyError::NoV1Signature),
        ),
        (
            "non-hex",
            format!("t={T},v1={}", "g".repeat(64)),
            Err(VerifyError::NoV1Signature),
        ),
        (
            "62 hex chars",
            format!("t={T},v1={}", &s[..62]),
            Err(VerifyError::NoV1Signature),
        ),
        (
            "66 hex chars",
            format!("t={T},v1={s}00"),
            Err(VerifyError::NoV1Signature),
        ),
        (
            "v1 with 0x prefix",
            format!("t={T},v1=0x{}", &s[..62]),
            Err(VerifyError::NoV1Signature),
        ),
        (
            "v1 value containing =",
            format!("t={T},v1={s}="),
            Err(VerifyError::NoV1Signature),
        ),
        ("uppercase hex accepted", format!("t={T},v1={upper}"), OK),
        (
            "only v0",
            format!("t={T},v0={v0}"),
            Err(VerifyError::NoV1Signature),
        ),
        (
            "unknown scheme only",
            format!("t={T},v2={s}"),
            Err(VerifyError::NoV1Signature),
        ),
        ("only t", format!("t={T}"), Err(VerifyError::NoV1Signature)),
        ("valid v1 plus v0", format!("t={T},v1={s},v0={v0}"), OK),
        (
            "v0 and unknown before t",
            format!("v0={v0},x=y,t={T},v1={s}"),
            OK,
        ),
        (
            "garbage v1 before valid",
            format!("t={T},v1=potato,v1={s}"),
            OK,
        ),
        (
            "garbage v1 after valid",
            format!("t={T},v1={s},v1=potato"),
            OK,
        ),
        ("empty key ignored", format!("t={T},={s},v1={s}"), OK),
        (
            "whitespace around elements",
            format!(" t={T} ,\tv1={s}\t, v0={v0} "),
            OK,
        ),
        (
            "trailing comma",
            format!("t={T},v1={s},"),
            malformed("empty element"),
        ),
        (
            "leading comma",
            format!(",t={T},v1={s}"),
            malformed("empty element"),
        ),
        (
            "double comma",
            format!("t={T},,v1={s}"),
            malformed("empty element"),
        ),
        (
            "whitespace-only element",
            format!("t={T}, ,v1={s}"),
            malformed("empty element"),
        ),
        (
            "wrong signature",
            format!("t={T},v1={}", "0".repeat(64)),
            Err(VerifyError::NoMatch),
        ),
        (
            "wrong t, valid v1",
            format!("t={},v1={s}", T + 1),
            Err(VerifyError::NoMatch),
        ),
        (
            "huge header",
            format!("t={T},v1={s},x={}", "a".repeat(9000)),
            malformed("header too long"),
        ),
        (
            "huge whitespace header",
            " ".repeat(8193),
            malformed("header too long"),
        ),
        (
            "33 elements",
            format!("t={T},v1={s}{}", ",x=y".repeat(31)),
            malformed("too many elements"),
        ),
        (
            "33 empty elements",
            ",".repeat(32),
            malformed("too many elements"),
        ),
        (
            "32 elements",
            format!("t={T},v1={s}{}", ",x=y".repeat(30)),
            OK,
        ),
    ];

    let v = verifier(DEFAULT_TOLERANCE_SECS);
    for (name, header, expected) in &cases {
        assert_eq!(&v.verify(header, PAYLOAD, T), expected, "case {name}");
        // Parsing alone agrees with verify on every pre-crypto outcome.
        let parsed = parse_header(header);
        match expected {
            Ok(_) | Err(VerifyError::NoMatch) => assert!(parsed.is_ok(), "case {name}"),
            Err(e) => assert_eq!(parsed.as_ref().err(), Some(e), "case {name}"),
        }
    }
}

#[test]
fn header_of_exactly_8192_bytes_is_accepted() {
    let prefix = format!("t={T},v1={},x=", sig());
    let header = format!("{prefix}{}", "a".repeat(8192 - prefix.len()));
    assert_eq!(header.len(), 8192);
    assert_eq!(verifier(300).verify(&header, PAYLOAD, T), OK);
    let longer = format!("{header}a");
    assert_eq!(
        verifier(300).verify(&longer, PAYLOAD, T),
        malformed("header too long")
    );
}

#[test]
fn parse_keeps_all_well_formed_v1_in_order() {
    let a = "ab".repeat(32);
    let b = "CD".repeat(32);
    let parsed = parse_header(&format!("t=7,v1={a},v1=nope,v0={a},v1={b}")).unwrap();
    assert_eq!(parsed.timestamp, 7);
    assert_eq!(parsed.v1, vec![[0xab; 32], [0xcd; 32]]);
}

#[test]
fn max_i64_timestamp_round_trips() {
    let header = sign_header(SECRET, i64::MAX, PAYLOAD);
    assert_eq!(
        header,
        format!(
            "t=9223372036854775807,v1={}",
            hex::encode(compute_signature(SECRET, i64::MAX, PAYLOAD))
        )
    );
    assert_eq!(
        verifier(300).verify(&header, PAYLOAD, i64::MAX),
        Ok(Verified {
            timestamp: i64::MAX
        })
    );
}

#[test]
fn negative_timestamp_header_is_rejected() {
    let header = sign_header(SECRET, -1, PAYLOAD);
    assert!(header.starts_with("t=-1,v1="));
    assert_eq!(
        verifier(0).verify(&header, PAYLOAD, -1),
        malformed("non-numeric timestamp")
    );
}

#[test]
fn tolerance_edges_both_directions() {
    let t = 1_700_000_000;
    let header = sign_header(SECRET, t, PAYLOAD);
    let v = verifier(300);
    let ok = Ok(Verified { timestamp: t });
    let late = Err(VerifyError::TimestampOutOfTolerance);
    assert_eq!(v.verify(&header, PAYLOAD, t), ok);
    assert_eq!(v.verify(&header, PAYLOAD, t + 300), ok);
    assert_eq!(v.verify(&header, PAYLOAD, t - 300), ok);
    assert_eq!(v.verify(&header, PAYLOAD, t + 301), late);
    // A timestamp in the future beyond the tolerance is rejected too.
    assert_eq!(v.verify(&header, PAYLOAD, t - 301), late);
    assert_eq!(v.verify(&header, PAYLOAD, 0), late);
    // Official-suite case: 15 s old with tolerance 10.
    assert_eq!(verifier(10).verify(&header, PAYLOAD, t + 15), late);
}

#[test]
fn zero_tolerance_disables_the_check() {
    let header = sign_header(SECRET, T, PAYLOAD);
    let v = verifier(0);
    for now in [i64::MIN, -1, 0, T, i64::MAX] {
        assert_eq!(v.verify(&header, PAYLOAD, now), OK, "now={now}");
    }
}

#[test]
fn forged_request_learns_nothing_about_the_clock() {
    // Wrong signature and stale timestamp: the signature error wins.
    let header = format!("t=1,v1={}", "0".repeat(64));
    assert_eq!(
        verifier(300).verify(&header, PAYLOAD, 1_700_000_000),
        Err(VerifyError::NoMatch)
    );
}

#[test]
fn extreme_values_do_not_panic() {
    let late = Err(VerifyError::TimestampOutOfTolerance);
    for t in [0, 1, i64::MAX - 1, i64::MAX] {
        let header = sign_header(SECRET, t, PAYLOAD);
        for now in [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX] {
            let expected = if now.abs_diff(t) > 300 {
                late.clone()
            } else {
                Ok(Verified { timestamp: t })
            };
            assert_eq!(
                verifier(300).verify(&header, PAYLOAD, now),
                expected,
                "t={t} now={now}"
            );
            // The widest possible tolerance accepts everything without overflow.
            assert_eq!(
                verifier(u64::MAX).verify(&header, PAYLOAD, now),
                Ok(Verified { timestamp: t })
            );
            assert_eq!(
                verifier(u64::MAX - 1).verify(&header, PAYLOAD, now).is_ok(),
                now.abs_diff(t) < u64::MAX
            );
        }
    }
}

#[test]
fn labels_are_stable() {
    let cases = [
        (VerifyError::MissingHeader, "missing_header"),
        (VerifyError::Malformed("x"), "malformed_header"),
        (VerifyError::NoV1Signature, "no_v1_signature"),
        (VerifyError::NoMatch, "no_match"),
        (
            VerifyError::TimestampOutOfTolerance,
            "timestamp_out_of_tolerance",
        ),
    ];
    for (e, label) in cases {
        assert_eq!(e.label(), label);
    }
    assert_eq!(
        VerifyError::Malformed("empty element").to_string(),
        "malformed Stripe-Signature header: empty element"
    );
}

#[test]
fn secrets_parse_list() {
    let s = Secrets::parse_list(" whsec_a ,\twhsec_b\n").unwrap();
    assert_eq!(s.len(), 2);
    assert!(!s.is_empty());
    // Trimmed: the key is exactly "whsec_b".
    let header = sign_header("whsec_b", T, PAYLOAD);
    assert_eq!(Verifier::new(s, 0).verify(&header, PAYLOAD, T), OK);

    assert_eq!(Secrets::parse_list("whsec_a").unwrap().len(), 1);
    assert_eq!(Secrets::parse_list(""), Err(SecretsError::Empty));
    assert_eq!(Secrets::parse_list(" \t\n"), Err(SecretsError::Empty));
    assert_eq!(Secrets::parse_list(","), Err(SecretsError::EmptyEntry));
    assert_eq!(
        Secrets::parse_list("whsec_a,"),
        Err(SecretsError::EmptyEntry)
    );
    assert_eq!(
        Secrets::parse_list(",whsec_a"),
        Err(SecretsError::EmptyEntry)
    );
    assert_eq!(
        Secrets::parse_list("whsec_a, ,whsec_b"),
        Err(SecretsError::EmptyEntry)
    );
}

#[test]
fn secrets_new() {
    assert_eq!(Secrets::new(Vec::<String>::new()), Err(SecretsError::Empty));
    assert_eq!(Secrets::new([""]), Err(SecretsError::EmptyEntry));
    assert_eq!(
        Secrets::new(["whsec_a", "  "]),
        Err(SecretsError::EmptyEntry)
    );
    assert_eq!(Secrets::new(["whsec_a", "whsec_b"]).unwrap().len(), 2);
    // Not trimmed: a trailing space is part of the key.
    let v = Verifier::new(Secrets::new(["whsec_a "]).unwrap(), 0);
    assert_eq!(
        v.verify(&sign_header("whsec_a", T, PAYLOAD), PAYLOAD, T),
        Err(VerifyError::NoMatch)
    );
    assert_eq!(
        v.verify(&sign_header("whsec_a ", T, PAYLOAD), PAYLOAD, T),
        OK
    );
}

#[test]
fn no_secret_material_in_debug_or_messages() {
    let secret = "whsec_do_not_leak_me";
    let secrets = Secrets::parse_list(&format!("{secret},whsec_other")).unwrap();
    assert_eq!(format!("{secrets:?}"), "Secrets { count: 2 }");
    let v = Verifier::new(secrets, 300);
    let debug = format!("{v:?}");
    assert!(!debug.contains("do_not_leak"), "{debug}");

    let header = sign_header(secret, T, PAYLOAD);
    let sig_hex = &header["t=12345,v1=".len()..];
    let parsed = parse_header(&header).unwrap();
    let debug = format!("{parsed:?}");
    assert_eq!(debug, "SignatureHeader { timestamp: 12345, v1_count: 1 }");

    for header in [
        header.clone(),
        format!("{header},"),
        format!("t=x,v1={sig_hex}"),
    ] {
        let err = v.verify(&header, b"other", T + 1000).unwrap_err();
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains(secret) && !text.contains(sig_hex), "{text}");
        }
    }
    for err in [SecretsError::Empty, SecretsError::EmptyEntry] {
        assert!(!err.to_string().contains("whsec"));
    }
}
