//! Verify and produce Stripe's `Stripe-Signature` webhook header.
//!
//! Stripe signs every webhook delivery with HMAC-SHA256 and sends
//! `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`, where each
//! `v1 = hex(HMAC-SHA256(key = endpoint secret, msg = "<t>" + "." + raw body))`.
//! The key is the whole secret string as UTF-8 bytes, `whsec_` prefix
//! included (no base64 decoding, unlike Standard Webhooks / Svix).
//!
//! The crate is pure: no I/O, no clock. The caller passes "now" (unix
//! seconds) so verification is deterministic and testable.
//!
//! ```
//! use stripe_webhook_signature::{DEFAULT_TOLERANCE_SECS, Secrets, Verifier, VerifyError, sign_header};
//!
//! let body = br#"{"id":"evt_123","object":"event"}"#;
//! let header = sign_header("whsec_test_secret", 1_700_000_000, body);
//! assert!(header.starts_with("t=1700000000,v1="));
//!
//! // The variable may hold several comma-separated secrets during a roll.
//! let secrets = Secrets::parse_list("whsec_old, whsec_test_secret")?;
//! let verifier = Verifier::new(secrets, DEFAULT_TOLERANCE_SECS);
//!
//! let ok = verifier.verify(&header, body, 1_700_000_042)?;
//! assert_eq!(ok.timestamp, 1_700_000_000);
//!
//! // A modified body is rejected, and so is a stale timestamp.
//! assert_eq!(verifier.verify(&header, b"{}", 1_700_000_042), Err(VerifyError::NoMatch));
//! assert_eq!(
//!     verifier.verify(&header, body, 1_700_000_000 + 301),
//!     Err(VerifyError::TimestampOutOfTolerance)
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Compatibility
//!
//! Stripe's official libraries (node, python, go, dotnet, ...) differ in
//! edge cases. This crate decides as follows:
//!
//! - **Tolerance in both directions.** `|now - t| > tolerance` is rejected,
//!   as in stripe-dotnet and async-stripe; node/python/go only reject old
//!   timestamps. A tolerance of `0` disables the timestamp check (as in
//!   node/python); use it only in tests and tools, never in production,
//!   since it allows replaying old deliveries forever.
//! - **Signature before timestamp.** A forged request always gets
//!   [`VerifyError::NoMatch`], so it learns nothing about the server clock.
//! - **Strict elements.** The header is split on `,`; spaces and tabs around
//!   each element are trimmed (Stripe never sends them; the SDKs do not trim).
//!   An empty element (`t=1,,v1=..`, leading or trailing comma) or one
//!   without `=` is malformed, like stripe-go; node/python skip them.
//! - **Strict timestamp.** Exactly one `t`, 1 to 19 ASCII digits fitting
//!   `i64`. Signs, spaces, underscores (python's `int`) and trailing junk
//!   (node's `parseInt`) are rejected; a duplicated `t` is rejected where the
//!   SDKs take the first or last one. As in all SDKs the signed payload uses
//!   the parsed number, so leading zeros in `t` do not matter.
//! - **Lenient `v1`.** A `v1` value that is not exactly 64 hex digits is
//!   ignored, never an error (the node/python/go suites require
//!   `<valid>,v1=potato` to verify). Hex is case-insensitive, as in stripe-go.
//!   `v0` and unknown keys are ignored. No usable `v1` gives
//!   [`VerifyError::NoV1Signature`].
//! - **Several secrets.** During a secret roll Stripe sends one `v1` per
//!   active secret; [`Secrets`] holds all secrets the endpoint accepts and any
//!   `v1` matching any secret passes. The SDKs take a single secret.
//! - **Bounded work.** Headers over 8192 bytes or with more than 32 elements
//!   are malformed (the SDKs have no limit).

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Stripe's libraries default to five minutes.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// Real headers are ~150 bytes per secret; the cap only bounds hostile input.
const MAX_HEADER_LEN: usize = 8192;
/// Enough for `t`, `v0` and many rolled secrets; bounds HMAC comparisons.
const MAX_ELEMENTS: usize = 32;

/// One or more endpoint secrets (rotation: Stripe signs with each active
/// secret, one `v1` each).
///
/// `Debug` prints only the number of secrets, so a `Verifier` can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secrets {
    // Invariant: non-empty, and no entry is empty or whitespace-only.
    secrets: Vec<String>,
}

/// Why a secret list was rejected. Messages never contain secret material.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SecretsError {
    /// No secret at all (empty or whitespace-only list).
    #[error("no webhook secret configured")]
    Empty,
    /// An entry is empty or whitespace-only, e.g. `"whsec_a,,whsec_b"` or a
    /// trailing comma.
    #[error("empty entry in the webhook secret list")]
    EmptyEntry,
}

impl Secrets {
    /// Parses a comma-separated list as found in `STRIPE_WEBHOOK_SECRET`;
    /// trims ASCII whitespace around each entry; rejects an empty list or
    /// any empty entry.
    pub fn parse_list(s: &str) -> Result<Secrets, SecretsError> {
        if s.trim_ascii().is_empty() {
            return Err(SecretsError::Empty);
        }
        Secrets::new(s.split(',').map(str::trim_ascii))
    }

    /// Takes secrets verbatim (no trimming: the key is the exact bytes).
    /// Rejects an empty list and empty or whitespace-only entries, which can
    /// only be configuration mistakes.
    pub fn new<I, S>(secrets: I) -> Result<Secrets, SecretsError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let secrets: Vec<String> = secrets.into_iter().map(Into::into).collect();
        if secrets.is_empty() {
            return Err(SecretsError::Empty);
        }
        if secrets.iter().any(|s| s.trim_ascii().is_empty()) {
            return Err(SecretsError::EmptyEntry);
        }
        Ok(Secrets { secrets })
    }

    /// Whether any secret is in both lists: two endpoints that must not
    /// vouch for each other (e.g. Stripe's webhook and another sender)
    /// should be refused at start when they do.
    pub fn overlaps(&self, other: &Secrets) -> bool {
        self.secrets.iter().any(|s| other.secrets.contains(s))
    }

    /// Number of secrets (always at least one).
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// Always `false`: construction rejects empty lists. Present for API
    /// symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("count", &self.secrets.len())
            .finish()
    }
}

/// Why a `Stripe-Signature` header was rejected.
///
/// Messages never contain the secret, a signature or the header itself.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// The header is empty or whitespace-only.
    #[error("no Stripe-Signature header")]
    MissingHeader,
    /// The header does not follow the `t=..,v1=..` grammar; the reason is a
    /// short static string.
    #[error("malformed Stripe-Signature header: {0}")]
    Malformed(&'static str),
    /// The header has no well-formed `v1` entry (e.g. only `v0`).
    #[error("no v1 signature in Stripe-Signature header")]
    NoV1Signature,
    /// No `v1` entry matches the payload under any configured secret.
    #[error("no signature matches the payload")]
    NoMatch,
    /// The signature is valid but `t` is further than the tolerance from now.
    #[error("timestamp outside the tolerance")]
    TimestampOutOfTolerance,
}

impl VerifyError {
    /// Stable snake_case label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader => "missing_header",
            VerifyError::Malformed(_) => "malformed_header",
            VerifyError::NoV1Signature => "no_v1_signature",
            VerifyError::NoMatch => "no_match",
            VerifyError::TimestampOutOfTolerance => "timestamp_out_of_tolerance",
        }
    }
}

/// Parsed header. Pure parsing, no crypto.
///
/// `Debug` shows the number of signatures, not their values.
#[derive(Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    /// The `t` value, unix seconds (never negative).
    pub timestamp: i64,
    /// Only well-formed (64 hex digits) `v1` entries, in header order.
    pub v1: Vec<[u8; 32]>,
}

impl fmt::Debug for SignatureHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignatureHeader")
            .field("timestamp", &self.timestamp)
            .field("v1_count", &self.v1.len())
            .finish()
    }
}

/// Parses a `Stripe-Signature` header (see the crate docs for the grammar
/// and the compatibility decisions).
pub fn parse_header(header: &str) -> Result<SignatureHeader, VerifyError> {
    // Size checks first so hostile input costs at most one bounded scan.
    if header.len() > MAX_HEADER_LEN {
        return Err(VerifyError::Malformed("header too long"));
    }
    if header.trim_ascii().is_empty() {
        return Err(VerifyError::MissingHeader);
    }
    if header.split(',').count() > MAX_ELEMENTS {
        return Err(VerifyError::Malformed("too many elements"));
    }

    let mut timestamp = None;
    let mut v1 = Vec::new();
    for element in header.split(',') {
        let element = element.trim_matches([' ', '\t']);
        if element.is_empty() {
            return Err(VerifyError::Malformed("empty element"));
        }
        let Some((key, value)) = element.split_once('=') else {
            return Err(VerifyError::Malformed("element without '='"));
        };
        match key {
            "t" => {
                if timestamp.is_some() {
                    return Err(VerifyError::Malformed("duplicate timestamp"));
                }
                timestamp = Some(parse_timestamp(value)?);
            }
            "v1" => {
                let mut sig = [0u8; 32];
                // Wrong length or non-hex: ignored, as the SDKs do, so a
                // junk entry cannot hide a valid one.
                if value.len() == 64 && hex::decode_to_slice(value, &mut sig).is_ok() {
                    v1.push(sig);
                }
            }
            // v0 (legacy, test-mode only) and future schemes are ignored.
            _ => {}
        }
    }

    let timestamp = timestamp.ok_or(VerifyError::Malformed("missing timestamp"))?;
    if v1.is_empty() {
        return Err(VerifyError::NoV1Signature);
    }
    Ok(SignatureHeader { timestamp, v1 })
}

fn parse_timestamp(value: &str) -> Result<i64, VerifyError> {
    // `i64::from_str` alone would accept a leading '+' and '-'.
    let digits_only = (1..=19).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_digit());
    if !digits_only {
        return Err(VerifyError::Malformed("non-numeric timestamp"));
    }
    // Still fails for 19-digit values above i64::MAX.
    value
        .parse()
        .map_err(|_| VerifyError::Malformed("non-numeric timestamp"))
}

/// The keyed MAC over `"<timestamp>.<payload>"`, not yet finalized, so the
/// payload is hashed once per secret however many `v1` entries there are.
fn signed_payload_mac(secret: &str, timestamp: i64, payload: &[u8]) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

/// `HMAC-SHA256(secret, "<timestamp>.<payload>")`, the raw `v1` bytes.
pub fn compute_signature(secret: &str, timestamp: i64, payload: &[u8]) -> [u8; 32] {
    signed_payload_mac(secret, timestamp, payload)
        .finalize()
        .into_bytes()
        .into()
}

/// Produces a header exactly like Stripe's `generateTestHeaderString`:
/// `"t={t},v1={lowercase hex}"`.
///
/// Meant for tests and tools. A negative `timestamp` yields a header that
/// [`parse_header`] rejects, since Stripe timestamps are never negative.
pub fn sign_header(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    sign_header_multi(&[secret], timestamp, payload)
}

/// Same as [`sign_header`] with one `v1` per secret, in order (what Stripe
/// sends during a secret roll). With no secrets the result is just `t=..`.
pub fn sign_header_multi(secrets: &[&str], timestamp: i64, payload: &[u8]) -> String {
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        header.push_str(",v1=");
        header.push_str(&hex::encode(compute_signature(secret, timestamp, payload)));
    }
    header
}

/// Successful verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The signed `t` value, unix seconds.
    pub timestamp: i64,
}

/// Verifies `Stripe-Signature` headers against a set of secrets.
///
/// `Debug` prints the secret count and tolerance only.
#[derive(Debug, Clone)]
pub struct Verifier {
    secrets: Secrets,
    tolerance_secs: u64,
}

impl Verifier {
    /// `tolerance_secs` is the allowed clock skew in both directions; use
    /// [`DEFAULT_TOLERANCE_SECS`]. `0` disables the timestamp check and must
    /// not be used in production.
    pub fn new(secrets: Secrets, tolerance_secs: u64) -> Verifier {
        Verifier {
            secrets,
            tolerance_secs,
        }
    }

    /// The configured tolerance in seconds.
    pub fn tolerance_secs(&self) -> u64 {
        self.tolerance_secs
    }

    /// Verifies `header` for the raw request body `payload` (exact bytes as
    /// received, never re-serialized JSON).
    ///
    /// `now` is unix seconds supplied by the caller (the crate never reads
    /// the clock).
    pub fn verify(&self, header: &str, payload: &[u8], now: i64) -> Result<Verified, VerifyError> {
        let parsed = parse_header(header)?;

        let matched = self.secrets.secrets.iter().any(|secret| {
            let mac = signed_payload_mac(secret, parsed.timestamp, payload);
            // `verify_slice` compares in constant time.
            parsed
                .v1
                .iter()
                .any(|candidate| mac.clone().verify_slice(candidate).is_ok())
        });
        if !matched {
            return Err(VerifyError::NoMatch);
        }

        // Only reached with an authentic header; `abs_diff` cannot overflow.
        if self.tolerance_secs != 0 && now.abs_diff(parsed.timestamp) > self.tolerance_secs {
            return Err(VerifyError::TimestampOutOfTolerance);
        }
        Ok(Verified {
            timestamp: parsed.timestamp,
        })
    }
}
