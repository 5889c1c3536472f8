//! One call, before it is sent: which operation, its path, parameters,
//! idempotency key and Connect account; and what we refuse to send.

use http::Method;
use http::header::HeaderValue;

use crate::error::Error;
use crate::form::{Params, path_segment};

/// Longest idempotency key Stripe accepts.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

/// One API operation, named by its method and path template, e.g.
/// `GET /v1/checkout/sessions/:id/line_items`. The name is the metric's
/// `endpoint` label (low cardinality: ids never appear in it); the request
/// path is the template with each `:id` replaced, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint(pub &'static str);

impl Endpoint {
    pub fn label(self) -> &'static str {
        self.0
    }

    pub fn method(self) -> Method {
        match self.0.split_once(' ').map(|(m, _)| m) {
            Some("POST") => Method::POST,
            Some("DELETE") => Method::DELETE,
            _ => Method::GET,
        }
    }

    /// The request path: each `:id` segment of the template replaced by the
    /// next of `ids`, percent-encoded so an id stays one segment.
    pub fn path(self, ids: &[&str]) -> String {
        let template = self.0.split_once(' ').map_or(self.0, |(_, p)| p);
        let mut ids = ids.iter();
        template
            .split('/')
            .map(|segment| {
                let id = segment.starts_with(':').then(|| ids.next()).flatten();
                id.map_or_else(|| segment.to_owned(), |id| path_segment(id))
            })
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// One call: an endpoint, its path, parameters, and for a POST the caller's
/// idempotency key (derived from what the request is for, stored before the
/// call, and reused on every retry).
#[derive(Clone, Debug)]
pub struct Request {
    pub endpoint: Endpoint,
    pub path: String,
    pub params: Params,
    pub idempotency_key: Option<String>,
    /// `Stripe-Account`: act for this Connect account.
    pub account: Option<String>,
}

impl Request {
    pub fn new(endpoint: Endpoint, ids: &[&str]) -> Request {
        Request {
            endpoint,
            path: endpoint.path(ids),
            params: Params::new(),
            idempotency_key: None,
            account: None,
        }
    }

    pub fn params(mut self, params: Params) -> Request {
        self.params = params;
        self
    }

    pub fn idempotency_key(mut self, key: impl Into<String>) -> Request {
        self.idempotency_key = Some(key.into());
        self
    }

    pub fn account(mut self, account: Option<&str>) -> Request {
        self.account = account.map(str::to_owned);
        self
    }
}

/// Refuses what Stripe would refuse anyway, before spending budget on it.
pub(crate) fn check(request: &Request) -> Result<(), Error> {
    if let Some(key) = &request.idempotency_key {
        if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS {
            return Err(Error::Invalid(format!(
                "an idempotency key has 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"
            )));
        }
        if HeaderValue::from_str(key).is_err() {
            return Err(Error::Invalid(
                "the idempotency key cannot be sent in a header".into(),
            ));
        }
    }
    if let Some(account) = &request.account
        && HeaderValue::from_str(account).is_err()
    {
        return Err(Error::Invalid(
            "the account id cannot be sent in a header".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_paths_fill_ids_in_order_and_escape_them() {
        let e = Endpoint("GET /v1/checkout/sessions/:id/line_items");
        assert_eq!(e.method(), Method::GET);
        assert_eq!(
            e.path(&["cs_test_1"]),
            "/v1/checkout/sessions/cs_test_1/line_items"
        );
        assert_eq!(e.path(&["a/b"]), "/v1/checkout/sessions/a%2Fb/line_items");
        assert_eq!(Endpoint("GET /v1/events").path(&[]), "/v1/events");
        assert_eq!(
            Endpoint("POST /v1/payment_records/report_payment").method(),
            Method::POST
        );
    }

    #[test]
    fn idempotency_keys_are_checked_before_sending() {
        let post = Request::new(Endpoint("POST /v1/payment_records/report_payment"), &[]);
        assert!(check(&post.clone().idempotency_key("ord_1/report")).is_ok());
        assert!(check(&post.clone().idempotency_key("")).is_err());
        assert!(check(&post.clone().idempotency_key("k".repeat(256))).is_err());
        assert!(check(&post.idempotency_key("k\n")).is_err());
    }
}
