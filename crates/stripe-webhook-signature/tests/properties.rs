//! Property tests: round trips, tamper detection, rotation, robustness.

use proptest::prelude::*;
use stripe_webhook_signature::{
    Secrets, Verified, Verifier, VerifyError, parse_header, sign_header, sign_header_multi,
};

fn verifier(secrets: &[&str], tolerance_secs: u64) -> Verifier {
    Verifier::new(
        Secrets::new(secrets.iter().copied()).unwrap(),
        tolerance_secs,
    )
}

/// Non-empty printable ASCII secrets, not whitespace-only.
fn secret() -> impl Strategy<Value = String> {
    "[!-~][ -~]{0,40}"
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..512)
}

/// Entries that must never affect the outcome of a valid header.
fn garbage_entry() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("v1=potato".to_owned()),
        Just("v1=".to_owned()),
        "[0-9a-f]{1,63}".prop_map(|h| format!("v1={h}")),
        "[0-9a-f]{65,80}".prop_map(|h| format!("v1={h}")),
        "[0-9a-fA-F]{64}".prop_map(|h| format!("v1={h}")),
        "[0-9a-f]{64}".prop_map(|h| format!("v0={h}")),
        "[a-z][a-z0-9]{0,3}=[ -+\\--~]{0,20}".prop_filter("not t/v1", |e| {
            !e.starts_with("t=") && !e.starts_with("v1=")
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sign_then_verify_round_trips(
        secret in secret(),
        body in body(),
        t in 0..=i64::MAX,
        tolerance in 1..=100_000u64,
        skew_frac in -1.0..=1.0f64,
    ) {
        // Any `now` within the tolerance, in either direction.
        let skew = (tolerance as f64 * skew_frac) as i64;
        let now = t.saturating_add(skew);
        prop_assume!(now.abs_diff(t) <= tolerance);
        let header = sign_header(&secret, t, &body);
        prop_assert_eq!(
            verifier(&[&secret], tolerance).verify(&header, &body, now),
            Ok(Verified { timestamp: t })
        );
    }

    #[test]
    fn outside_tolerance_fails_after_signature_check(
        secret in secret(),
        body in body(),
        t in 0..=i64::MAX,
        tolerance in 1..=100_000u64,
        now in any::<i64>(),
    ) {
        let header = sign_header(&secret, t, &body);
        let expected = if now.abs_diff(t) > tolerance {
            Err(VerifyError::TimestampOutOfTolerance)
        } else {
            Ok(Verified { timestamp: t })
        };
        prop_assert_eq!(verifier(&[&secret], tolerance).verify(&header, &body, now), expected);
    }

    #[test]
    fn body_bit_flip_fails(
        secret in secret(),
        body in prop::collection::vec(any::<u8>(), 1..512),
        t in 0..=i64::MAX,
        index in any::<prop::sample::Index>(),
        bit in 0..8u8,
    ) {
        let header = sign_header(&secret, t, &body);
        let mut tampered = body.clone();
        tampered[index.index(body.len())] ^= 1 << bit;
        prop_assert_eq!(
            verifier(&[&secret], 0).verify(&header, &tampered, t),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn timestamp_bit_flip_fails(
        secret in secret(),
        body in body(),
        // At most 18 digits, so every digit change still fits in i64.
        t in 0..=999_999_999_999_999_999i64,
        index in any::<prop::sample::Index>(),
        bit in 0..7u8,
    ) {
        let header = sign_header(&secret, t, &body);
        let digits = t.to_string().len();
        let mut bytes = header.into_bytes();
        let pos = 2 + index.index(digits);
        bytes[pos] ^= 1 << bit;
        let flipped = bytes[pos];
        let tampered = String::from_utf8(bytes).unwrap();
        let result = verifier(&[&secret], 0).verify(&tampered, &body, t);
        if flipped.is_ascii_digit() {
            // Still parseable, different number: the signature no longer fits.
            prop_assert_eq!(result, Err(VerifyError::NoMatch));
        } else if flipped == b' ' && pos == 2 + digits - 1 {
            // A last digit turned into a space is trimmed like any space
            // around an element: a shorter number, so again no match.
            prop_assert_eq!(result, Err(VerifyError::NoMatch));
        } else {
            prop_assert_eq!(result, Err(VerifyError::Malformed("non-numeric timestamp")));
        }
    }

    #[test]
    fn signature_char_bit_flip_fails(
        secret in secret(),
        body in body(),
        t in 0..=i64::MAX,
        index in 0..64usize,
        bit in 0..7u8,
    ) {
        let header = sign_header(&secret, t, &body);
        let start = header.find(",v1=").unwrap() + 4;
        let mut bytes = header.into_bytes();
        let original = bytes[start + index];
        bytes[start + index] ^= 1 << bit;
        let flipped = bytes[start + index];
        let tampered = String::from_utf8(bytes).unwrap();
        let result = verifier(&[&secret], 0).verify(&tampered, &body, t);
        if flipped.eq_ignore_ascii_case(&original) {
            // 'a' <-> 'A' is a one-bit flip; hex is case-insensitive.
            prop_assert_eq!(result, Ok(Verified { timestamp: t }));
        } else if flipped.is_ascii_hexdigit() {
            prop_assert_eq!(result, Err(VerifyError::NoMatch));
        } else {
            // No longer 64 hex digits: ignored, leaving no v1 at all.
            prop_assert_eq!(result, Err(VerifyError::NoV1Signature));
        }
    }

    #[test]
    fn rotation(
        a in secret(),
        b in secret(),
        c in secret(),
        body in body(),
        t in 0..=i64::MAX,
    ) {
        prop_assume!(a != b && b != c && a != c);
        let header = sign_header_multi(&[&a, &b], t, &body);
        let ok = Ok(Verified { timestamp: t });
        prop_assert_eq!(verifier(&[&a], 300).verify(&header, &body, t), ok.clone());
        prop_assert_eq!(verifier(&[&b], 300).verify(&header, &body, t), ok.clone());
        prop_assert_eq!(verifier(&[&c, &b], 300).verify(&header, &body, t), ok);
        prop_assert_eq!(
            verifier(&[&c], 300).verify(&header, &body, t),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn garbage_entries_around_valid_v1_still_verify(
        secret in secret(),
        body in body(),
        t in 0..=i64::MAX,
        before in prop::collection::vec(garbage_entry(), 0..10),
        after in prop::collection::vec(garbage_entry(), 0..10),
    ) {
        let valid = sign_header(&secret, t, &body);
        let v1 = &valid[valid.find(",v1=").unwrap() + 1..];
        let mut elements = vec![format!("t={t}")];
        elements.extend(before);
        elements.push(v1.to_owned());
        elements.extend(after);
        let header = elements.join(",");
        prop_assert_eq!(
            verifier(&[&secret], 300).verify(&header, &body, t),
            Ok(Verified { timestamp: t })
        );
    }

    #[test]
    fn never_panics_on_arbitrary_input(
        header in any::<String>(),
        body in body(),
        now in any::<i64>(),
        tolerance in any::<u64>(),
    ) {
        let _ = parse_header(&header);
        let result = verifier(&["whsec_x"], tolerance).verify(&header, &body, now);
        // A random string is never a valid signature.
        prop_assert!(result.is_err());
    }

    #[test]
    fn never_panics_on_header_like_input(
        header in "[tv01 ,=+\\-a-fA-F0-9\t]{0,200}",
        body in body(),
        now in any::<i64>(),
    ) {
        let _ = parse_header(&header);
        prop_assert!(verifier(&["whsec_x"], 300).verify(&header, &body, now).is_err());
    }

    #[test]
    fn unsigned_well_formed_header_never_verifies(
        secret in secret(),
        body in body(),
        t in 0..=i64::MAX,
        sigs in prop::collection::vec(any::<[u8; 32]>(), 1..5),
    ) {
        let mut header = format!("t={t}");
        for sig in &sigs {
            header.push_str(",v1=");
            header.push_str(&hex::encode(sig));
        }
        prop_assert_eq!(
            verifier(&[&secret], 0).verify(&header, &body, t),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn parse_header_finds_the_signed_values(
        secrets in prop::collection::vec(secret(), 0..5),
        body in body(),
        t in 0..=i64::MAX,
    ) {
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let header = sign_header_multi(&refs, t, &body);
        let parsed = parse_header(&header);
        if secrets.is_empty() {
            prop_assert_eq!(parsed, Err(VerifyError::NoV1Signature));
        } else {
            let parsed = parsed.unwrap();
            prop_assert_eq!(parsed.timestamp, t);
            let expected: Vec<[u8; 32]> = refs
                .iter()
                .map(|s| stripe_webhook_signature::compute_signature(s, t, &body))
                .collect();
            prop_assert_eq!(parsed.v1, expected);
        }
    }
}
