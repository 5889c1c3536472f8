//! One request: outage, auth, route, parameters, idempotency, scripted
//! faults, then the endpoint itself; every request is logged.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::Value;

use super::idempotency::{Claim, Fingerprint, Saved};
use super::list::{page, page_request};
use super::objects::{EventQuery, check_known, param};
use super::records::payment_record;
use super::reply::{ApiFailure, list};
use super::{Fault, Logged, Outage, Shared};

/// What the stand-in answers when no version is asked for.
const DEFAULT_VERSION: &str = "2026-07-29.dahlia";
const MAX_BODY: usize = 1024 * 1024;

/// An answer before it becomes HTTP.
struct Answer {
    status: u16,
    body: Vec<u8>,
    should_retry: Option<bool>,
    replayed_from: Option<String>,
}

impl Answer {
    fn ok(value: &Value) -> Answer {
        Answer {
            status: 200,
            body: pretty(value),
            should_retry: None,
            replayed_from: None,
        }
    }

    fn failure(f: &ApiFailure) -> Answer {
        Answer {
            status: f.status,
            body: pretty(&f.body()),
            should_retry: f.should_retry,
            replayed_from: None,
        }
    }
}

fn pretty(value: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(value).expect("JSON values serialise")
}

/// The operations the stand-in knows, with their metric labels.
enum Route {
    ListEvents,
    RetrieveEvent(String),
    LineItems(String),
    ReportPayment,
    RetrievePaymentRecord(String),
    ListPaymentRecords,
}

impl Route {
    fn find(method: &str, path: &str) -> Option<Route> {
        let segments: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(percent_decode)
            .collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        Some(match (method, segments.as_slice()) {
            ("GET", ["v1", "events"]) => Route::ListEvents,
            ("GET", ["v1", "events", id]) => Route::RetrieveEvent(id.to_string()),
            ("GET", ["v1", "checkout", "sessions", id, "line_items"]) => {
                Route::LineItems(id.to_string())
            }
            ("POST", ["v1", "payment_records", "report_payment"]) => Route::ReportPayment,
            ("GET", ["v1", "payment_records"]) => Route::ListPaymentRecords,
            ("GET", ["v1", "payment_records", id]) => Route::RetrievePaymentRecord(id.to_string()),
            _ => return None,
        })
    }

    fn label(&self) -> &'static str {
        match self {
            Route::ListEvents => "GET /v1/events",
            Route::RetrieveEvent(_) => "GET /v1/events/:id",
            Route::LineItems(_) => "GET /v1/checkout/sessions/:id/line_items",
            Route::ReportPayment => "POST /v1/payment_records/report_payment",
            Route::RetrievePaymentRecord(_) => "GET /v1/payment_records/:id",
            Route::ListPaymentRecords => "GET /v1/payment_records",
        }
    }
}

pub(super) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path().to_owned();
    let form = if method == "POST" {
        body.to_vec()
    } else {
        parts.uri.query().unwrap_or("").as_bytes().to_vec()
    };
    let mut entry = Logged {
        started,
        finished: started,
        method: method.clone(),
        path: path.clone(),
        endpoint: Route::find(&method, &path).map(|r| r.label()),
        params: form_urlencoded::parse(&form).into_owned().collect(),
        stripe_version: header("stripe-version"),
        idempotency_key: header("idempotency-key"),
        stripe_account: header("stripe-account"),
        authorized: header("authorization").as_deref() == Some(&format!("Bearer {}", shared.key)),
        status: 0,
        replayed: false,
    };
    let answer = respond(&shared, &entry, header("authorization")).await;
    entry.status = answer.status;
    entry.replayed = answer.replayed_from.is_some();
    entry.finished = Instant::now();
    let version = entry.stripe_version.clone();
    shared.state().log.push(entry);
    http_response(answer, version)
}

fn http_response(answer: Answer, version: Option<String>) -> Response<Full<Bytes>> {
    let mut builder = Response::builder()
        .status(answer.status)
        .header("content-type", "application/json")
        .header("request-id", format!("req_{:x}", fastish_id()))
        .header(
            "stripe-version",
            version.unwrap_or_else(|| DEFAULT_VERSION.to_owned()),
        );
    if let Some(retry) = answer.should_retry {
        builder = builder.header("stripe-should-retry", retry.to_string());
    }
    if let Some(original) = answer.replayed_from {
        builder = builder
            .header("idempotent-replayed", "true")
            .header("original-request", original);
    }
    builder
        .body(Full::new(Bytes::from(answer.body)))
        .expect("a valid response")
}

/// A request id: unique enough for a test run.
fn fastish_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

async fn respond(shared: &Shared, req: &Logged, authorization: Option<String>) -> Answer {
    if *shared.outage.borrow() == Outage::Unavailable {
        return Answer::failure(&ApiFailure::injected(503, None));
    }
    if !req.authorized {
        let given = authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "));
        return Answer::failure(&ApiFailure::unauthorized(given));
    }
    let Some(route) = Route::find(&req.method, &req.path) else {
        return Answer::failure(&ApiFailure::unrecognized_url(&req.method, &req.path));
    };
    if let Some(version) = &req.stripe_version
        && !looks_like_a_version(version)
    {
        return Answer::failure(&ApiFailure::invalid(
            "Stripe-Version",
            &format!("Invalid Stripe API version: {version}"),
        ));
    }
    let account = req.stripe_account.as_deref();
    let key = req
        .idempotency_key
        .as_deref()
        .filter(|_| req.method == "POST");
    if let Some(key) = key {
        if key.chars().count() > 255 {
            return Answer::failure(&ApiFailure::invalid(
                "Idempotency-Key",
                "Idempotency keys can be at most 255 characters long.",
            ));
        }
        let fingerprint = Fingerprint::new(&req.method, &req.path, &req.params);
        let claim = shared.state().keys.claim(account, key, fingerprint);
        match claim {
            Claim::Run => {}
            Claim::Replay(saved) => {
                return Answer {
                    status: saved.status,
                    body: saved.body,
                    should_retry: None,
                    replayed_from: Some(saved.request_id),
                };
            }
            Claim::Mismatch => return Answer::failure(&ApiFailure::idempotency_mismatch(key)),
            Claim::InUse => return Answer::failure(&ApiFailure::idempotency_in_use()),
        }
    }
    let answer = run_after_faults(shared, &route, req).await;
    if let Some(key) = key {
        let saved = (200..300).contains(&answer.status).then(|| Saved {
            status: answer.status,
            body: answer.body.clone(),
            request_id: format!("req_{:x}", fastish_id()),
        });
        shared.state().keys.finish(account, key, saved);
    }
    answer
}

async fn run_after_faults(shared: &Shared, route: &Route, req: &Logged) -> Answer {
    let fault = next_fault(shared, route.label());
    match fault {
        Some(Fault::Status {
            status,
            should_retry,
        }) => return Answer::failure(&ApiFailure::injected(status, should_retry)),
        Some(Fault::Slow(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }
    match run(shared, route, req) {
        Ok(value) => Answer::ok(&value),
        Err(failure) => Answer::failure(&failure),
    }
}

fn next_fault(shared: &Shared, label: &str) -> Option<Fault> {
    let mut state = shared.state();
    state
        .faults
        .iter_mut()
        .filter(|(endpoint, _)| endpoint == label || endpoint == "*")
        .find_map(|(_, queue)| queue.pop_front())
}

/// `2026-07-29.dahlia` or `2020-08-27`.
fn looks_like_a_version(v: &str) -> bool {
    let date = v.split('.').next().unwrap_or("");
    let digits: Vec<&str> = date.split('-').collect();
    digits.len() == 3
        && digits
            .iter()
            .zip([4, 2, 2])
            .all(|(d, n)| d.len() == n && d.bytes().all(|b| b.is_ascii_digit()))
}

fn run(shared: &Shared, route: &Route, req: &Logged) -> Result<Value, ApiFailure> {
    let account = req.stripe_account.as_deref();
    let params = &req.params;
    let mut state = shared.state();
    match route {
        Route::ListEvents => {
            let query = EventQuery::parse(params)?;
            let request = page_request(params)?;
            let (data, more) = page(
                &state.events,
                |e| e.account.as_deref() == account && query.matches(e),
                |e| e.id.as_str(),
                &request,
                "event",
            )?;
            let data = data.into_iter().map(|e| e.body.clone()).collect();
            Ok(list(data, more, "/v1/events"))
        }
        Route::RetrieveEvent(id) => {
            check_known(params, &["expand"])?;
            state
                .events
                .iter()
                .find(|e| e.id == *id && e.account.as_deref() == account)
                .map(|e| e.body.clone())
                .ok_or_else(|| ApiFailure::not_found("id", &format!("No such event: '{id}'")))
        }
        Route::LineItems(session_id) => {
            check_known(
                params,
                &["ending_before", "expand", "limit", "starting_after"],
            )?;
            let request = page_request(params)?;
            let session = state
                .sessions
                .iter()
                .find(|s| s.id == *session_id && s.account.as_deref() == account)
                .ok_or_else(|| {
                    ApiFailure::not_found(
                        "session",
                        &format!("No such checkout.session: '{session_id}'"),
                    )
                })?;
            let (data, more) = page(
                &session.items,
                |_| true,
                |item| item["id"].as_str().unwrap_or(""),
                &request,
                "line_item",
            )?;
            let url = format!("/v1/checkout/sessions/{session_id}/line_items");
            Ok(list(data.into_iter().cloned().collect(), more, &url))
        }
        Route::ReportPayment => {
            state.next_id += 1;
            let id = format!("pr_standin{:06}", state.next_id);
            let record = payment_record(&id, params, crate::unix_now())?;
            state
                .records
                .push((account.map(str::to_owned), record.clone()));
            Ok(record)
        }
        Route::ListPaymentRecords => {
            // Stripe's filters: a creation time window, and processor type.
            check_known(
                params,
                &[
                    "created_after",
                    "created_before",
                    "ending_before",
                    "expand",
                    "limit",
                    "processor_details_type",
                    "starting_after",
                ],
            )?;
            let time = |key: &str| -> Result<Option<i64>, ApiFailure> {
                param(params, key)
                    .map(|v| {
                        v.parse::<i64>().map_err(|_| {
                            ApiFailure::invalid(key, &format!("Invalid timestamp: {v}"))
                        })
                    })
                    .transpose()
            };
            let (after, before) = (time("created_after")?, time("created_before")?);
            let processor = param(params, "processor_details_type");
            let request = page_request(params)?;
            // Newest first, as every list.
            let newest_first: Vec<&(Option<String>, Value)> = state.records.iter().rev().collect();
            let (data, more) = page(
                &newest_first,
                |(a, r)| {
                    let created = r["created"].as_i64().unwrap_or(0);
                    a.as_deref() == account
                        && after.is_none_or(|t| created > t)
                        && before.is_none_or(|t| created < t)
                        && processor.is_none_or(|p| r["processor_details"]["type"] == p)
                },
                |(_, r)| r["id"].as_str().unwrap_or(""),
                &request,
                "payment_record",
            )?;
            let data = data.into_iter().map(|(_, r)| r.clone()).collect();
            Ok(list(data, more, "/v1/payment_records"))
        }
        Route::RetrievePaymentRecord(id) => {
            check_known(params, &["expand"])?;
            state
                .records
                .iter()
                .find(|(a, r)| a.as_deref() == account && r["id"] == id.as_str())
                .map(|(_, r)| r.clone())
                .ok_or_else(|| {
                    ApiFailure::not_found("id", &format!("No such payment_record: '{id}'"))
                })
        }
    }
}

fn percent_decode(segment: &str) -> String {
    let bytes: Vec<u8> =
        form_urlencoded::parse(format!("x={}", segment.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned().into_bytes())
            .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}
