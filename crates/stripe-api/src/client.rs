//! The IO: one HTTP/1.1 client over rustls, the shared rate budget, the
//! retry loop, and what every answer becomes.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT};
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use tracing::{error, warn};

use crate::bucket::TokenBucket;
use crate::config::Config;
use crate::error::{ApiError, Error};
use crate::request::{Endpoint, Request, check};
use crate::retry::{Answer, should_retry};

/// Told about every attempt's answer: the endpoint and the HTTP status, or
/// `None` when there was no answer (the metric's `status="error"`).
pub type Observer = Arc<dyn Fn(Endpoint, Option<u16>) + Send + Sync>;

/// The Stripe API client. Cheap to clone; clones share the connection pool,
/// the rate budget and the knowledge that the key was refused.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    http: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Held by one caller at a time, across its wait: see `wait_for_budget`.
    budget: tokio::sync::Mutex<TokenBucket>,
    refused: AtomicBool,
    observer: Option<Observer>,
}

/// An HTTP answer, read whole.
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

/// No usable answer from one attempt.
enum NoAnswer {
    Connection(String),
    Timeout,
    TooLarge,
}

impl Client {
    /// A client for `config`; `observer` hears about every attempt.
    pub fn new(config: Config, observer: Option<Observer>) -> Result<Client, Error> {
        // One request at a time leaves the budget (burst 1), so "at most
        // `rate` per second" holds in every one-second window.
        let budget = TokenBucket::new(config.rate, NonZeroU32::MIN, Instant::now())
            .ok_or_else(|| Error::Invalid("the rate must be a positive number".into()))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http: http_client(&config)?,
                budget: tokio::sync::Mutex::new(budget),
                refused: AtomicBool::new(false),
                observer,
                config,
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Sends `request` (retrying as Stripe's libraries do) and reads the
    /// answer as `T`.
    pub async fn send<T: DeserializeOwned>(&self, request: &Request) -> Result<T, Error> {
        let body = self.send_raw(request).await?;
        serde_json::from_slice(&body)
            .map_err(|e| Error::Decode(format!("{} answer: {e}", request.endpoint.label())))
    }

    /// Sends `request` and returns the successful answer's body as is.
    pub async fn send_raw(&self, request: &Request) -> Result<Bytes, Error> {
        check(request)?;
        let mut retries = 0;
        loop {
            self.refused_already()?;
            self.wait_for_budget().await;
            let answer = self.attempt(request).await;
            if let Some(observe) = &self.inner.observer {
                observe(request.endpoint, answer.as_ref().ok().map(|r| r.status));
            }
            let verdict = match &answer {
                Ok(reply) => {
                    Answer::status(reply.status, header(&reply.headers, "stripe-should-retry"))
                }
                Err(_) => Answer::NoAnswer,
            };
            if matches!(&answer, Ok(reply) if (200..300).contains(&reply.status)) {
                return Ok(answer.ok().map(|r| r.body).unwrap_or_default());
            }
            if matches!(&answer, Ok(reply) if reply.status == 401) {
                return Err(self.refused(request));
            }
            if !should_retry(verdict, retries, self.inner.config.max_retries) {
                return Err(self.failure(answer));
            }
            retries += 1;
            let delay = self.inner.config.backoff.delay(retries, fastrand::f64());
            warn!(
                endpoint = request.endpoint.label(),
                answer = %describe(&answer),
                retry = retries,
                delay_ms = delay.as_millis() as u64,
                "Stripe call failed; retrying with the same idempotency key"
            );
            tokio::time::sleep(delay).await;
        }
    }

    fn refused_already(&self) -> Result<(), Error> {
        if self.inner.refused.load(Ordering::Relaxed) {
            return Err(Error::Unauthorized {
                setting: self.inner.config.key_setting,
            });
        }
        Ok(())
    }

    /// A 401: loud once per process, then every call fails fast.
    fn refused(&self, request: &Request) -> Error {
        let setting = self.inner.config.key_setting;
        if !self.inner.refused.swap(true, Ordering::Relaxed) {
            // Stripe's message quotes part of the key: it is not logged.
            error!(
                endpoint = request.endpoint.label(),
                "Stripe refused the API key (401 Unauthorized): check {setting}; every Stripe call now fails at once until the key is replaced and the process restarted"
            );
        }
        Error::Unauthorized { setting }
    }

    /// Waits for this request's turn in the budget. Callers take turns (the
    /// lock is fair) and each takes its token only when it actually goes:
    /// one that wakes late (a busy runtime) moves the next one back instead
    /// of leaving it a shorter gap, so the spacing holds for the requests as
    /// sent, not only as booked.
    async fn wait_for_budget(&self) {
        let mut budget = self.inner.budget.lock().await;
        loop {
            let wait = budget.ready_in(Instant::now());
            if wait.is_zero() {
                break;
            }
            tokio::time::sleep(wait).await;
        }
        budget.reserve(Instant::now());
    }

    async fn attempt(&self, request: &Request) -> Result<Reply, NoAnswer> {
        let config = &self.inner.config;
        let http_request = self.http_request(request)?;
        let exchange = async {
            let response = self
                .inner
                .http
                .request(http_request)
                .await
                .map_err(|e| NoAnswer::Connection(error_chain(&e)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, config.max_response_bytes)
                .collect()
                .await
                .map_err(
                    |e| match e.downcast_ref::<http_body_util::LengthLimitError>() {
                        Some(_) => NoAnswer::TooLarge,
                        None => NoAnswer::Connection(e.to_string()),
                    },
                )?
                .to_bytes();
            Ok(Reply {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(config.call_timeout, exchange)
            .await
            .unwrap_or(Err(NoAnswer::Timeout))
    }

    fn http_request(&self, request: &Request) -> Result<http::Request<Full<Bytes>>, NoAnswer> {
        let config = &self.inner.config;
        let method = request.endpoint.method();
        let encoded = request.params.encode();
        let (uri, body) = match method {
            Method::POST => (format!("{}{}", config.base.as_str(), request.path), encoded),
            _ if encoded.is_empty() => (
                format!("{}{}", config.base.as_str(), request.path),
                String::new(),
            ),
            _ => (
                format!("{}{}?{encoded}", config.base.as_str(), request.path),
                String::new(),
            ),
        };
        let mut auth = HeaderValue::try_from(format!("Bearer {}", config.api_key.expose()))
            .map_err(|_| NoAnswer::Connection("the API key cannot be sent in a header".into()))?;
        auth.set_sensitive(true);
        let mut builder = http::Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(AUTHORIZATION, auth)
            .header("stripe-version", &config.version)
            .header(
                USER_AGENT,
                concat!("fulfillment-stripe-api/", env!("CARGO_PKG_VERSION")),
            );
        if method == Method::POST {
            builder = builder.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        if let Some(key) = &request.idempotency_key {
            builder = builder.header("idempotency-key", key);
        }
        if let Some(account) = &request.account {
            builder = builder.header("stripe-account", account);
        }
        builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| NoAnswer::Connection(format!("cannot build the request: {e}")))
    }

    /// The error for an attempt we do not retry (any more).
    fn failure(&self, answer: Result<Reply, NoAnswer>) -> Error {
        match answer {
            Ok(reply) => Error::Api(Box::new(api_error(&reply))),
            Err(NoAnswer::Connection(why)) => Error::Connection(why),
            Err(NoAnswer::Timeout) => Error::Timeout(self.inner.config.call_timeout),
            Err(NoAnswer::TooLarge) => Error::Decode(format!(
                "answer larger than {} bytes",
                self.inner.config.max_response_bytes
            )),
        }
    }
}

fn api_error(reply: &Reply) -> ApiError {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: ApiError,
    }
    let mut error = serde_json::from_slice::<Envelope>(&reply.body)
        .map(|e| e.error)
        .unwrap_or_default();
    error.status = reply.status;
    error.request_id = header(&reply.headers, "request-id").map(str::to_owned);
    error.should_retry = match header(&reply.headers, "stripe-should-retry") {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    };
    error
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn describe(answer: &Result<Reply, NoAnswer>) -> String {
    match answer {
        Ok(reply) => match header(&reply.headers, "stripe-should-retry") {
            Some(h) => format!("{} (Stripe-Should-Retry: {h})", reply.status),
            None => reply.status.to_string(),
        },
        Err(NoAnswer::Connection(why)) => format!("no answer: {why}"),
        Err(NoAnswer::Timeout) => "no answer in time".into(),
        Err(NoAnswer::TooLarge) => "answer too large".into(),
    }
}

/// An error with its causes ("connection refused" sits a few levels down
/// in hyper's errors).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn http_client(
    config: &Config,
) -> Result<HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>, Error> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(config.connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Invalid(format!("TLS set-up: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Plain http is only ever allowed to loopback (`ApiBase::parse`).
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(8)
        .build(https))
}
