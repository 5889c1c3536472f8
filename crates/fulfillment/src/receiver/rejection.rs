//! How a webhook request is refused: its outcome (the metric's label), its
//! status and a reason safe to show the caller and to log.

use http::StatusCode;
use http::header::HeaderValue;
use hyper::Response;

use super::RETRY_AFTER_SECS;
use crate::http::{Body, json};

/// What happened to one webhook POST; the label is the metric's `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Accepted,
    BadSignature,
    BadRequest,
    TooLarge,
    Unavailable,
}

impl Outcome {
    pub(super) fn label(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::BadSignature => "bad_signature",
            Outcome::BadRequest => "bad_request",
            Outcome::TooLarge => "too_large",
            Outcome::Unavailable => "unavailable",
        }
    }
}

/// A rejected request: its outcome, HTTP status and a short reason that is
/// safe to show the caller and to log (never a secret or a signature).
pub(super) struct Rejection {
    pub(super) outcome: Outcome,
    pub(super) status: StatusCode,
    pub(super) reason: String,
    pub(super) event_id: Option<String>,
    /// The request member at fault, when one is (shown to the caller).
    pub(super) field: Option<String>,
    /// The body was not (wholly) read, so the connection cannot be reused.
    pub(super) close: bool,
    /// Shed for lack of budget: logged in aggregate, never once per request,
    /// so whoever floods us cannot flood the logs too.
    pub(super) shed: bool,
}

impl Rejection {
    pub(super) fn new(outcome: Outcome, status: StatusCode, reason: impl Into<String>) -> Self {
        Rejection {
            outcome,
            status,
            reason: reason.into(),
            event_id: None,
            field: None,
            close: false,
            shed: false,
        }
    }

    pub(super) fn closing(mut self) -> Self {
        self.close = true;
        self
    }
}

pub(super) fn rejection_response(r: &Rejection) -> Response<Body> {
    let mut body = serde_json::json!({ "error": r.outcome.label(), "reason": r.reason });
    if let Some(field) = &r.field {
        body["field"] = field.as_str().into();
    }
    let body = body.to_string();
    let mut response = json(r.status.as_u16(), body);
    let headers = response.headers_mut();
    if r.outcome == Outcome::Unavailable {
        headers.insert("retry-after", HeaderValue::from_static(RETRY_AFTER_SECS));
    }
    // A body not wholly read leaves the connection mid-request: not reusable.
    if r.close {
        headers.insert("connection", HeaderValue::from_static("close"));
    }
    response
}
