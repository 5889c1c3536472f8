//! Validated client settings: the key, where Stripe is, the pinned version,
//! the rate budget, timeouts and retries.

use std::fmt;
use std::time::Duration;

use crate::retry::Backoff;

/// The API version the calls and the types of this crate were written
/// against, sent as `Stripe-Version` unless configured otherwise. The
/// version of the stripe-go snapshot our webhook research read (module v86);
/// every endpoint used here (events, Checkout line items, Payment Records)
/// exists in it.
pub const DEFAULT_API_VERSION: &str = "2026-07-29.dahlia";

/// Stripe's production API.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";

/// A secret or restricted key. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Refuses an empty key and one that cannot be sent in a header.
    pub fn new(key: impl Into<String>) -> Result<ApiKey, String> {
        let key = key.into();
        if key.trim().is_empty() {
            return Err("is empty".into());
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("holds spaces or characters a key never has".into());
        }
        Ok(ApiKey(key))
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// Where Stripe's API is: `https://host[:port]`, or plain `http` to a
/// loopback address only (a stand-in in tests): the key travels in every
/// request and must never cross a network in clear text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiBase(String);

impl ApiBase {
    pub fn parse(s: &str) -> Result<ApiBase, String> {
        let uri: http::Uri = s.parse().map_err(|_| "not a URL".to_owned())?;
        let scheme = uri.scheme_str().ok_or("has no scheme (https://…)")?;
        let authority = uri.authority().ok_or("has no host")?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err("must be only scheme, host and port (the API paths start with /v1)".into());
        }
        let loopback = matches!(
            authority.host(),
            "127.0.0.1" | "localhost" | "[::1]" | "::1"
        );
        match scheme {
            "https" => {}
            "http" if loopback => {}
            "http" => return Err("must be https (plain http only to a loopback address)".into()),
            _ => return Err("must be an https URL".into()),
        }
        Ok(ApiBase(format!("{scheme}://{authority}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Everything a [`crate::Client`] needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub api_key: ApiKey,
    /// The setting the key came from, named in the 401 error (never the key).
    pub key_setting: &'static str,
    pub base: ApiBase,
    /// Sent as `Stripe-Version` on every request.
    pub version: String,
    /// Requests per second this process sends at most (all calls together).
    pub rate: f64,
    /// Time to establish a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time one attempt may take, from sending to the last byte of the answer.
    pub call_timeout: Duration,
    /// Retries after the first attempt (Stripe's libraries default to 1–2;
    /// our calls run in background jobs that can afford a few more).
    pub max_retries: u32,
    pub backoff: Backoff,
    /// Answers larger than this are refused rather than buffered (a list
    /// page of 100 events is well under 1 MiB).
    pub max_response_bytes: usize,
}

impl Config {
    /// The defaults for everything but the four settings.
    pub fn new(api_key: ApiKey, base: ApiBase, version: impl Into<String>, rate: f64) -> Config {
        Config {
            api_key,
            key_setting: "STRIPE_API_KEY",
            base,
            version: version.into(),
            rate,
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(30),
            max_retries: 3,
            backoff: Backoff::default(),
            max_response_bytes: 16 * 1024 * 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_never_shows() {
        let key = ApiKey::new("sk_test_hunter2").unwrap();
        assert!(!format!("{key:?}").contains("hunter2"));
        assert!(ApiKey::new("").is_err());
        assert!(ApiKey::new("sk_test with space").is_err());
    }

    #[test]
    fn bases_are_https_or_local_http() {
        assert_eq!(
            ApiBase::parse("https://api.stripe.com").unwrap().as_str(),
            "https://api.stripe.com"
        );
        assert_eq!(
            ApiBase::parse("https://api.stripe.com/").unwrap().as_str(),
            "https://api.stripe.com"
        );
        assert!(ApiBase::parse("http://127.0.0.1:12111").is_ok());
        assert!(ApiBase::parse("http://localhost:12111").is_ok());
        assert!(ApiBase::parse("http://[::1]:12111").is_ok());
        assert!(ApiBase::parse("http://api.stripe.com").is_err());
        assert!(ApiBase::parse("ftp://api.stripe.com").is_err());
        assert!(ApiBase::parse("https://api.stripe.com/v1").is_err());
        assert!(ApiBase::parse("api.stripe.com").is_err());
    }
}
