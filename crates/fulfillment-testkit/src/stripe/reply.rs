//! Answers: Stripe's error objects and JSON bodies.

use serde_json::{Value, json};

/// An error answer: status and Stripe's `{"error": {…}}` object.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiFailure {
    pub status: u16,
    pub error: Value,
    /// `Stripe-Should-Retry`, when the answer carries it.
    pub should_retry: Option<bool>,
}

impl ApiFailure {
    fn new(status: u16, error: Value) -> ApiFailure {
        ApiFailure {
            status,
            error,
            should_retry: None,
        }
    }

    /// 400 `invalid_request_error` about `param`.
    pub fn invalid(param: &str, message: &str) -> ApiFailure {
        ApiFailure::new(
            400,
            json!({"type": "invalid_request_error", "param": param, "message": message}),
        )
    }

    /// 400 `parameter_missing`.
    pub fn missing_param(param: &str) -> ApiFailure {
        ApiFailure::new(
            400,
            json!({"type": "invalid_request_error", "code": "parameter_missing", "param": param,
                   "message": format!("Missing required param: {param}.")}),
        )
    }

    /// 400 `resource_missing` for a cursor naming no object.
    pub fn missing(param: &str, message: &str) -> ApiFailure {
        ApiFailure::new(
            400,
            json!({"type": "invalid_request_error", "code": "resource_missing", "param": param,
                   "message": message}),
        )
    }

    /// 404 `resource_missing` for an object that is not there.
    pub fn not_found(param: &str, message: &str) -> ApiFailure {
        ApiFailure::new(
            404,
            json!({"type": "invalid_request_error", "code": "resource_missing", "param": param,
                   "message": message}),
        )
    }

    pub fn unrecognized_url(method: &str, path: &str) -> ApiFailure {
        ApiFailure::new(
            404,
            json!({"type": "invalid_request_error",
                   "message": format!("Unrecognized request URL ({method}: {path}).")}),
        )
    }

    /// 401: no key, or a wrong one. Stripe quotes the key masked but for
    /// its last four characters, so the caller must not print the message.
    pub fn unauthorized(given: Option<&str>) -> ApiFailure {
        let message = match given {
            None => "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').".to_owned(),
            Some(key) => format!("Invalid API Key provided: {}", masked(key)),
        };
        ApiFailure::new(
            401,
            json!({"type": "invalid_request_error", "message": message}),
        )
    }

    pub fn idempotency_mismatch(key: &str) -> ApiFailure {
        ApiFailure::new(
            400,
            json!({"type": "idempotency_error",
                   "message": format!("Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request.")}),
        )
    }

    pub fn idempotency_in_use() -> ApiFailure {
        ApiFailure::new(
            409,
            json!({"type": "invalid_request_error", "code": "idempotency_key_in_use",
                   "message": "There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through): please try again later."}),
        )
    }

    /// An injected or outage answer with `status`.
    pub fn injected(status: u16, should_retry: Option<bool>) -> ApiFailure {
        let error = match status {
            429 => json!({"type": "invalid_request_error", "code": "rate_limit",
                          "message": "Too many requests hit the API too quickly."}),
            409 => json!({"type": "invalid_request_error", "code": "lock_timeout",
                          "message": "This object cannot be accessed right now because another API request or Stripe process is currently accessing it."}),
            _ => json!({"type": "api_error",
                        "message": "An unknown error occurred while processing your request."}),
        };
        ApiFailure {
            status,
            error,
            should_retry,
        }
    }

    pub fn body(&self) -> Value {
        json!({ "error": self.error })
    }
}

/// `sk_test_****…wxyz`: Stripe's way of naming a key in an error.
fn masked(key: &str) -> String {
    let prefix: String = key.chars().take(8).collect();
    let tail: String = {
        let chars: Vec<char> = key.chars().collect();
        chars[chars.len().saturating_sub(4)..].iter().collect()
    };
    format!(
        "{prefix}{}{tail}",
        "*".repeat(key.chars().count().saturating_sub(12))
    )
}

/// `{"object":"list",…}` around one page.
pub fn list(data: Vec<Value>, has_more: bool, url: &str) -> Value {
    json!({"object": "list", "data": data, "has_more": has_more, "url": url})
}
