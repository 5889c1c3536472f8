//! `POST /webhooks/stripe` (and `POST /payments/custom`, `custom.rs`):
//! verify, publish with confirm, then answer.
//!
//! The order of checks is the order of cost: size and the signature header's
//! shape and timestamp before reading, room in the shared body budget before
//! buffering, signature before parsing, parsing before touching the broker.
//! Nothing is published unless every check passed, and 200 is sent only
//! after the broker's ack.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Method, StatusCode};
use hyper::body::Incoming;
use hyper::{Request, Response};
use stripe_webhook_signature::{Verifier, VerifyError, parse_header};
use tracing::{debug, warn};

mod body;
mod custom;
mod rejection;
mod throttle;

pub use throttle::ThrottledLog;

use rejection::{Outcome, Rejection, rejection_response};

use crate::broker::{PublishError, Publisher};
use crate::budget::BodyBudget;
use crate::clock::unix_now;
use crate::http::{Body, json, text};
use crate::ingest;
use crate::metrics as m;

pub const WEBHOOK_PATH: &str = "/webhooks/stripe";
pub use custom::CUSTOM_PAYMENT_PATH;
const STRIPE_SIGNATURE: &str = "Stripe-Signature";
/// Seconds Stripe (or any client) is asked to wait when we cannot accept.
pub(crate) const RETRY_AFTER_SECS: &str = "5";

pub struct Receiver {
    pub verifier: Verifier,
    /// `CUSTOM_PAYMENT_SECRET`: `POST /payments/custom` exists only when set.
    pub custom_verifier: Option<Verifier>,
    pub max_body_bytes: usize,
    pub body_read_timeout: Duration,
    pub publisher: Publisher,
    /// Shared by every request still reading its body (`MAX_INFLIGHT_BODY_BYTES`).
    pub body_budget: BodyBudget,
    pub shed_log: ThrottledLog,
}

/// `/readyz`: true while this process can do its job (and is not draining).
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

/// What a process serves on `HTTP_ADDR`: the webhook (when it receives) and
/// the health checks (always).
pub struct Endpoints {
    pub receiver: Option<Receiver>,
    pub ready: Readiness,
}

impl Endpoints {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        match (req.method(), req.uri().path(), &self.receiver) {
            (&Method::POST, WEBHOOK_PATH, Some(receiver)) => receiver.webhook(req).await,
            (_, WEBHOOK_PATH, Some(_)) => method_not_allowed("POST"),
            (method, CUSTOM_PAYMENT_PATH, Some(receiver)) if receiver.custom_verifier.is_some() => {
                match *method {
                    Method::POST => receiver.custom_payment(req).await,
                    _ => method_not_allowed("POST"),
                }
            }
            _ => health(&req, &self.ready).unwrap_or_else(|| text(404, "not found\n")),
        }
    }
}

/// `/healthz` and `/readyz`, the same on every listener that serves them
/// (`HTTP_ADDR` and `METRICS_ADDR`); `None` for any other path.
pub fn health<B>(req: &Request<B>, ready: &Readiness) -> Option<Response<Body>> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(200, "ok\n"),
        (&Method::GET, "/readyz") if ready() => text(200, "ready\n"),
        (&Method::GET, "/readyz") => text(503, "not ready\n"),
        (_, "/healthz" | "/readyz") => method_not_allowed("GET"),
        _ => return None,
    };
    Some(response)
}

/// Which POST route a request came in on: its metric and its log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Webhook,
    CustomPayment,
}

impl Route {
    fn counter(self) -> &'static str {
        match self {
            Route::Webhook => m::WEBHOOK_REQUESTS_TOTAL,
            Route::CustomPayment => m::CUSTOM_PAYMENTS_TOTAL,
        }
    }

    fn rejected(self) -> &'static str {
        match self {
            Route::Webhook => "webhook rejected",
            Route::CustomPayment => "custom payment report rejected",
        }
    }
}

impl Receiver {
    pub async fn webhook(&self, req: Request<Incoming>) -> Response<Body> {
        self.respond(Route::Webhook, self.accept(req)).await
    }

    /// `POST /payments/custom` (see `custom.rs`); only routed here when
    /// `CUSTOM_PAYMENT_SECRET` is set.
    pub async fn custom_payment(&self, req: Request<Incoming>) -> Response<Body> {
        self.respond(Route::CustomPayment, self.accept_custom_payment(req))
            .await
    }

    /// Runs one POST to its answer: the same metrics, logs and responses on
    /// every route, labelled by route. `accepted` yields the id taken in.
    async fn respond(
        &self,
        route: Route,
        accepted: impl std::future::Future<Output = Result<String, Rejection>>,
    ) -> Response<Body> {
        let started = Instant::now();
        let gauge = metrics::gauge!(m::WEBHOOK_IN_FLIGHT);
        gauge.increment(1.0);
        let (outcome, response) = match accepted.await {
            Ok(id) => {
                debug!(id, route = ?route, "accepted");
                (
                    Outcome::Accepted,
                    json(200, r#"{"received":true}"#.to_owned()),
                )
            }
            Err(rejection) if rejection.shed => {
                metrics::counter!(m::WEBHOOK_BODY_BUDGET_SHED_TOTAL).increment(1);
                self.shed_log.note(|shed| {
                    warn!(
                        shed,
                        budget_bytes = self.body_budget.limit(),
                        "in-flight body budget exhausted; requests shed with 503 (count since the last line)"
                    )
                });
                (rejection.outcome, rejection_response(&rejection))
            }
            Err(rejection) => {
                warn!(
                    outcome = rejection.outcome.label(),
                    status = rejection.status.as_u16(),
                    reason = %rejection.reason,
                    event_id = rejection.event_id.as_deref(),
                    "{}", route.rejected()
                );
                (rejection.outcome, rejection_response(&rejection))
            }
        };
        gauge.decrement(1.0);
        metrics::counter!(route.counter(), "outcome" => outcome.label()).increment(1);
        if route == Route::Webhook {
            metrics::histogram!(m::WEBHOOK_DURATION_SECONDS)
                .record(started.elapsed().as_secs_f64());
        }
        response
    }

    /// Returns the accepted event's id.
    async fn accept(&self, req: Request<Incoming>) -> Result<String, Rejection> {
        let body = self
            .verified_body(req, STRIPE_SIGNATURE, &self.verifier)
            .await?;
        let envelope = fulfillment_core::parse_envelope(&body).map_err(|e| {
            Rejection::new(Outcome::BadRequest, StatusCode::BAD_REQUEST, e.to_string())
        })?;
        if fulfillment_core::custom::is_reserved(&envelope.id, &envelope.event_type) {
            // Only POST /payments/custom, with its own secret, may speak for
            // a custom payment.
            return Err(Rejection::new(
                Outcome::BadRequest,
                StatusCode::BAD_REQUEST,
                "event id or type reserved for custom-payment reports",
            ));
        }
        self.publish(&envelope.id, &envelope.event_type, &body)
            .await?;
        Ok(envelope.id)
    }

    /// The body of a request signed in `header` with one of `verifier`'s
    /// secrets, read within every limit. The order of checks is the order of
    /// cost (module docs); every route that takes a signed body uses this.
    async fn verified_body(
        &self,
        req: Request<Incoming>,
        header: &'static str,
        verifier: &Verifier,
    ) -> Result<Bytes, Rejection> {
        let declared = self.check_declared_length(&req)?;
        let signature = signature_header(&req, header).map_err(Rejection::closing)?;
        precheck_signature(verifier, &signature).map_err(Rejection::closing)?;
        let mut reservation = self.reserve(declared)?;
        let body = self.read_body(req, declared, &mut reservation).await?;
        let verified = verifier.verify(&signature, &body, unix_now());
        // Authentic or not, the bytes are no longer "unverified": free them
        // for the next stranger before the (possibly slow) publish.
        drop(reservation);
        verified.map_err(|e| {
            Rejection::new(
                Outcome::BadSignature,
                StatusCode::BAD_REQUEST,
                e.to_string(),
            )
        })?;
        Ok(body)
    }
}

impl Receiver {
    /// Publishes through the one ingest path (`ingest::publish_event`, which
    /// `reconcile` uses too) and turns a failure into this route's answer.
    async fn publish(&self, id: &str, event_type: &str, body: &[u8]) -> Result<(), Rejection> {
        ingest::publish_event(&self.publisher, id, event_type, body)
            .await
            .map_err(|e| publish_rejection(e, id))
    }
}

/// What can be judged without the body: the header's grammar and its
/// timestamp. A stranger's junk header or a replay outside the tolerance
/// costs us no body buffer. Same answer (400) as after reading.
fn precheck_signature(verifier: &Verifier, header: &str) -> Result<(), Rejection> {
    let bad = |e: VerifyError| {
        Rejection::new(
            Outcome::BadSignature,
            StatusCode::BAD_REQUEST,
            e.to_string(),
        )
    };
    let parsed = parse_header(header).map_err(bad)?;
    let tolerance = verifier.tolerance_secs();
    if tolerance != 0 && unix_now().abs_diff(parsed.timestamp) > tolerance {
        return Err(bad(VerifyError::TimestampOutOfTolerance));
    }
    Ok(())
}

/// The one signature header `name` (e.g. `Stripe-Signature`), as text.
fn signature_header(req: &Request<Incoming>, name: &'static str) -> Result<String, Rejection> {
    let bad =
        |reason: String| Rejection::new(Outcome::BadSignature, StatusCode::BAD_REQUEST, reason);
    let mut values = req.headers().get_all(name).iter();
    let value = values
        .next()
        .ok_or_else(|| bad(format!("missing {name} header")))?;
    if values.next().is_some() {
        return Err(bad(format!("more than one {name} header")));
    }
    value
        .to_str()
        .map(str::to_owned)
        .map_err(|_| bad(format!("{name} header is not ASCII")))
}

/// Why the event was not stored: too long for AMQP is the sender's fault
/// (400); anything else is ours, and the sender should retry (503).
fn publish_rejection(e: PublishError, id: &str) -> Rejection {
    match e {
        PublishError::NameTooLong => Rejection::new(
            Outcome::BadRequest,
            StatusCode::BAD_REQUEST,
            "event id or type longer than 255 bytes",
        ),
        e => {
            let mut r = Rejection::new(
                Outcome::Unavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                format!("event not stored, retry later ({})", e.label()),
            );
            r.event_id = Some(id.to_owned());
            r
        }
    }
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = text(405, "method not allowed\n");
    response
        .headers_mut()
        .insert("allow", HeaderValue::from_static(allow));
    response
}
