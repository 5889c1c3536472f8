//! What can go wrong talking to Stripe. No variant ever holds the API key:
//! a 401's message (Stripe echoes part of the key in it) is dropped.

use std::time::Duration;

use serde::Deserialize;

/// Stripe's error object, `{"error": {"type", "code", "message", "param", …}}`,
/// with the status and request id of the answer that carried it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub param: Option<String>,
    /// The answer's `Request-Id` header, to quote to Stripe's support.
    #[serde(skip)]
    pub request_id: Option<String>,
    /// `Stripe-Should-Retry`, when the answer had it.
    #[serde(skip)]
    pub should_retry: Option<bool>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.status)?;
        if let Some(kind) = &self.kind {
            write!(f, " {kind}")?;
        }
        if let Some(code) = &self.code {
            write!(f, " ({code})")?;
        }
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        if let Some(param) = &self.param {
            write!(f, " [param {param}]")?;
        }
        if let Some(id) = &self.request_id {
            write!(f, " [request {id}]")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Stripe refused the key (401). Logged once when it happens; every
    /// later call of the process fails with this at once, without a request.
    #[error(
        "Stripe refused the API key ({setting}): every Stripe call fails until it is replaced and the process restarted"
    )]
    Unauthorized { setting: &'static str },
    /// Stripe answered with an error status (after any retries).
    #[error("Stripe answered {0}")]
    Api(Box<ApiError>),
    /// No answer: connection refused or cut (after any retries).
    #[error("could not reach Stripe: {0}")]
    Connection(String),
    /// No complete answer within the per-call timeout (after any retries).
    #[error("Stripe did not answer within {0:?}")]
    Timeout(Duration),
    /// An answer we cannot read: not the JSON we expected, or too large.
    #[error("Stripe's answer could not be read: {0}")]
    Decode(String),
    /// A request we refuse to send (e.g. an idempotency key over 255 characters).
    #[error("invalid Stripe request: {0}")]
    Invalid(String),
}

impl Error {
    /// True when the same request may succeed later (a higher-level retry,
    /// e.g. the next reconcile run or a delayed message, is worth it): the
    /// client's own retries were used up on an outage, a timeout, a rate
    /// limit or a server error. False for answers no waiting changes (a bad
    /// key, a bad request, a missing object).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connection(_) | Error::Timeout(_) => true,
            Error::Api(e) => match e.should_retry {
                Some(said) => said,
                None => matches!(e.status, 409 | 429) || e.status >= 500,
            },
            Error::Unauthorized { .. } | Error::Decode(_) | Error::Invalid(_) => false,
        }
    }

    /// Stripe's error, if it answered with one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_follows_the_retry_rule() {
        let api = |status, should_retry| {
            Error::Api(Box::new(ApiError {
                status,
                should_retry,
                ..ApiError::default()
            }))
        };
        assert!(api(503, None).is_transient());
        assert!(api(429, None).is_transient());
        assert!(!api(503, Some(false)).is_transient());
        assert!(!api(400, None).is_transient());
        assert!(!api(404, None).is_transient());
        assert!(Error::Timeout(Duration::from_secs(1)).is_transient());
        assert!(!Error::Unauthorized { setting: "K" }.is_transient());
    }

    #[test]
    fn display_names_what_stripe_said() {
        let e = ApiError {
            status: 400,
            kind: Some("invalid_request_error".into()),
            code: Some("parameter_missing".into()),
            message: Some("Missing required param: initiated_at.".into()),
            param: Some("initiated_at".into()),
            request_id: Some("req_1".into()),
            should_retry: None,
        };
        assert_eq!(
            e.to_string(),
            "400 invalid_request_error (parameter_missing): Missing required param: initiated_at. [param initiated_at] [request req_1]"
        );
    }
}
