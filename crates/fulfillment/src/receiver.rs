//! `POST /webhooks/stripe`: verify, publish with confirm, then answer.
//!
//! The order of checks is the order of cost: size before reading, signature
//! before parsing, parsing before touching the broker. Nothing is published
//! unless every check passed, and 200 is sent only after the broker's ack.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use lapin::BasicProperties;
use lapin::types::ShortString;
use stripe_webhook_signature::Verifier;
use tracing::{debug, warn};

use crate::broker::{Outgoing, Publisher};
use crate::http::{Body, json, text};
use crate::metrics as m;
use crate::topology::{EVENTS_EXCHANGE, is_handled};

pub const WEBHOOK_PATH: &str = "/webhooks/stripe";
/// Seconds Stripe (or any client) is asked to wait when we cannot accept.
const RETRY_AFTER_SECS: &str = "5";
const MAX_AMQP_SHORT_STRING: usize = 255;

pub struct Receiver {
    pub verifier: Verifier,
    pub max_body_bytes: usize,
    pub body_read_timeout: Duration,
    pub publisher: Publisher,
}

/// What a process serves on `HTTP_ADDR`: the webhook (when it receives) and
/// the health checks (always).
pub struct Endpoints {
    pub receiver: Option<Receiver>,
    /// `/readyz`: true while this process can do its job.
    pub ready: Box<dyn Fn() -> bool + Send + Sync>,
}

impl Endpoints {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        match (req.method(), req.uri().path(), &self.receiver) {
            (&Method::POST, WEBHOOK_PATH, Some(receiver)) => receiver.webhook(req).await,
            (_, WEBHOOK_PATH, Some(_)) => method_not_allowed("POST"),
            (&Method::GET, "/healthz", _) => text(200, "ok\n"),
            (&Method::GET, "/readyz", _) if (self.ready)() => text(200, "ready\n"),
            (&Method::GET, "/readyz", _) => text(503, "not ready\n"),
            (_, "/healthz" | "/readyz", _) => method_not_allowed("GET"),
            _ => text(404, "not found\n"),
        }
    }
}

/// What happened to one webhook POST; the label is the metric's `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Accepted,
    BadSignature,
    BadRequest,
    TooLarge,
    Unavailable,
}

impl Outcome {
    fn label(self) -> &'static str {
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
struct Rejection {
    outcome: Outcome,
    status: StatusCode,
    reason: String,
    event_id: Option<String>,
}

impl Rejection {
    fn new(outcome: Outcome, status: StatusCode, reason: impl Into<String>) -> Self {
        Rejection {
            outcome,
            status,
            reason: reason.into(),
            event_id: None,
        }
    }
}

impl Receiver {
    pub async fn webhook(&self, req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let gauge = metrics::gauge!(m::WEBHOOK_IN_FLIGHT);
        gauge.increment(1.0);
        let (outcome, response) = match self.accept(req).await {
            Ok(event_id) => {
                debug!(event_id, "event accepted");
                (
                    Outcome::Accepted,
                    json(200, r#"{"received":true}"#.to_owned()),
                )
            }
            Err(rejection) => {
                warn!(
                    outcome = rejection.outcome.label(),
                    status = rejection.status.as_u16(),
                    reason = %rejection.reason,
                    event_id = rejection.event_id.as_deref(),
                    "webhook rejected"
                );
                (rejection.outcome, rejection_response(&rejection))
            }
        };
        gauge.decrement(1.0);
        metrics::counter!(m::WEBHOOK_REQUESTS_TOTAL, "outcome" => outcome.label()).increment(1);
        metrics::histogram!(m::WEBHOOK_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
        response
    }

    /// Returns the accepted event's id.
    async fn accept(&self, req: Request<Incoming>) -> Result<String, Rejection> {
        self.check_declared_length(&req)?;
        let signature = signature_header(&req)?;
        let body = self.read_body(req).await?;
        self.verifier
            .verify(&signature, &body, unix_now())
            .map_err(|e| {
                Rejection::new(
                    Outcome::BadSignature,
                    StatusCode::BAD_REQUEST,
                    e.to_string(),
                )
            })?;
        let envelope = fulfillment_core::parse_envelope(&body).map_err(|e| {
            Rejection::new(Outcome::BadRequest, StatusCode::BAD_REQUEST, e.to_string())
        })?;
        check_amqp_names(&envelope.id, &envelope.event_type)?;
        self.publish(&envelope.id, &envelope.event_type, &body)
            .await
            .map_err(|mut r| {
                r.event_id = Some(envelope.id.clone());
                r
            })?;
        Ok(envelope.id)
    }

    fn check_declared_length(&self, req: &Request<Incoming>) -> Result<(), Rejection> {
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared {
            Some(len) if len > self.max_body_bytes as u64 => Err(too_large(self.max_body_bytes)),
            _ => Ok(()),
        }
    }

    async fn read_body(&self, req: Request<Incoming>) -> Result<Bytes, Rejection> {
        let limited = Limited::new(req.into_body(), self.max_body_bytes);
        match tokio::time::timeout(self.body_read_timeout, limited.collect()).await {
            Err(_) => Err(Rejection::new(
                Outcome::BadRequest,
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            )),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                Err(too_large(self.max_body_bytes))
            }
            Ok(Err(e)) => Err(Rejection::new(
                Outcome::BadRequest,
                StatusCode::BAD_REQUEST,
                format!("could not read the request body: {e}"),
            )),
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
        }
    }

    async fn publish(&self, id: &str, event_type: &str, body: &[u8]) -> Result<(), Rejection> {
        let properties = BasicProperties::default()
            .with_message_id(ShortString::from(id))
            .with_type(ShortString::from(event_type))
            .with_content_type(ShortString::from("application/json"))
            .with_delivery_mode(2)
            .with_timestamp(unix_now().max(0) as u64);
        let outgoing = Outgoing {
            exchange: EVENTS_EXCHANGE,
            routing_key: event_type,
            body,
            properties,
            // Types we handle must reach our queue; others are published for
            // whoever binds them, and may legitimately route nowhere.
            mandatory: is_handled(event_type),
        };
        self.publisher.publish(outgoing).await.map_err(|e| {
            Rejection::new(
                Outcome::Unavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                format!("event not stored, retry later ({})", e.label()),
            )
        })
    }
}

fn signature_header(req: &Request<Incoming>) -> Result<String, Rejection> {
    let bad = |reason: &str| Rejection::new(Outcome::BadSignature, StatusCode::BAD_REQUEST, reason);
    let mut values = req.headers().get_all("stripe-signature").iter();
    let value = values
        .next()
        .ok_or_else(|| bad("missing Stripe-Signature header"))?;
    if values.next().is_some() {
        return Err(bad("more than one Stripe-Signature header"));
    }
    value
        .to_str()
        .map(str::to_owned)
        .map_err(|_| bad("Stripe-Signature header is not ASCII"))
}

/// AMQP short strings (message id, routing key) hold at most 255 bytes.
fn check_amqp_names(id: &str, event_type: &str) -> Result<(), Rejection> {
    if id.len() > MAX_AMQP_SHORT_STRING || event_type.len() > MAX_AMQP_SHORT_STRING {
        return Err(Rejection::new(
            Outcome::BadRequest,
            StatusCode::BAD_REQUEST,
            "event id or type longer than 255 bytes",
        ));
    }
    Ok(())
}

fn too_large(limit: usize) -> Rejection {
    Rejection::new(
        Outcome::TooLarge,
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("body larger than {limit} bytes"),
    )
}

fn rejection_response(r: &Rejection) -> Response<Body> {
    let body = serde_json::json!({ "error": r.outcome.label(), "reason": r.reason }).to_string();
    let mut response = json(r.status.as_u16(), body);
    let headers = response.headers_mut();
    match r.outcome {
        Outcome::Unavailable => {
            headers.insert("retry-after", HeaderValue::from_static(RETRY_AFTER_SECS));
        }
        // The rest of an oversized or stalled body is never read, so the
        // connection cannot be reused.
        Outcome::TooLarge => {
            headers.insert("connection", HeaderValue::from_static("close"));
        }
        _ if r.status == StatusCode::REQUEST_TIMEOUT => {
            headers.insert("connection", HeaderValue::from_static("close"));
        }
        _ => {}
    }
    response
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = text(405, "method not allowed\n");
    response
        .headers_mut()
        .insert("allow", HeaderValue::from_static(allow));
    response
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
