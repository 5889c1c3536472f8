//! The HTTP load generator: N keep-alive HTTP/1.1 connections POSTing signed
//! events, closed loop or open loop.
//!
//! - Closed loop: every connection sends its next request as soon as the
//!   previous answer arrived; measures the most the server accepts.
//! - Open loop: request `i` is due at `start + i / rate`, whatever the server
//!   does; connection `c` carries requests `c, c+N, c+2N, …` (as wrk2 does).
//!   Latency is measured from the *due* time, so a stalled server shows up as
//!   the latency of every request that had to wait, instead of being hidden
//!   by the generator sending less (coordinated omission).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;

use crate::events::Events;
use crate::report::Latency;

pub const WEBHOOK_PATH: &str = "/webhooks/stripe";

#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Closed,
    /// Requests per second, all connections together.
    Open {
        rate: f64,
    },
}

/// When a run stops: after `count` requests, or when `duration` (after the
/// warm-up) is over, whichever comes first.
#[derive(Debug, Clone)]
pub struct Spec {
    pub addr: SocketAddr,
    pub connections: usize,
    pub mode: Mode,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    /// Requests due before this much time has passed are sent but not counted.
    pub warmup: Duration,
    /// The first event's sequence number (ids stay unique across runs on one database).
    pub first_seq: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// 2xx answers counted (due after the warm-up).
    pub ok: u64,
    /// Other answers and connection errors counted.
    pub errors: u64,
    /// Every request sent, warm-up included.
    pub sent: u64,
    /// 2xx answers, warm-up included: events the service now has.
    pub accepted_all: u64,
    /// From the end of the warm-up to the last counted answer.
    pub seconds: f64,
    pub ok_per_sec: f64,
    pub latency: Latency,
    /// Wall-clock time (Unix seconds) of the start: request `first_seq` was due then.
    #[serde(skip)]
    pub started_unix: f64,
    /// The first error, to say what went wrong.
    pub first_error: Option<String>,
}

struct Shared {
    spec: Spec,
    events: Arc<Events>,
    start: Instant,
    count_from: Instant,
    end: Option<Instant>,
    /// Closed loop: the next request index.
    next: AtomicU64,
}

#[derive(Default)]
struct ConnStats {
    ok: u64,
    errors: u64,
    sent: u64,
    accepted_all: u64,
    latencies_us: Vec<u64>,
    last_counted: Option<Instant>,
    first_error: Option<String>,
}

pub async fn run(spec: Spec, events: Arc<Events>) -> Outcome {
    let start = Instant::now();
    let started_unix = unix_now_f64();
    let count_from = start + spec.warmup;
    let end = spec.duration.map(|d| count_from + d);
    let shared = Arc::new(Shared {
        spec: spec.clone(),
        events,
        start,
        count_from,
        end,
        next: AtomicU64::new(0),
    });
    let tasks: Vec<_> = (0..spec.connections)
        .map(|c| tokio::spawn(connection(shared.clone(), c as u64)))
        .collect();
    let mut all = ConnStats::default();
    for task in tasks {
        let s = task.await.expect("connection task panicked");
        all.ok += s.ok;
        all.errors += s.errors;
        all.sent += s.sent;
        all.accepted_all += s.accepted_all;
        all.latencies_us.extend(s.latencies_us);
        all.last_counted = all.last_counted.max(s.last_counted);
        all.first_error = all.first_error.or(s.first_error);
    }
    let seconds = all.last_counted.map_or(0.0, |t| {
        t.saturating_duration_since(count_from).as_secs_f64()
    });
    Outcome {
        ok: all.ok,
        errors: all.errors,
        sent: all.sent,
        accepted_all: all.accepted_all,
        seconds,
        ok_per_sec: if seconds > 0.0 {
            all.ok as f64 / seconds
        } else {
            0.0
        },
        latency: Latency::from_micros(all.latencies_us),
        started_unix,
        first_error: all.first_error,
    }
}

async fn connection(shared: Arc<Shared>, c: u64) -> ConnStats {
    let spec = &shared.spec;
    let mut stats = ConnStats::default();
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    for k in 0.. {
        // Which request is next, and when it is due.
        let (i, due) = match spec.mode {
            Mode::Closed => (shared.next.fetch_add(1, Ordering::Relaxed), Instant::now()),
            Mode::Open { rate } => {
                let i = c + k * spec.connections as u64;
                (i, shared.start + Duration::from_secs_f64(i as f64 / rate))
            }
        };
        if spec.count.is_some_and(|n| i >= n) || shared.end.is_some_and(|end| due >= end) {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let (body, signature) = shared.events.signed(spec.first_seq + i, unix_now());
        let request = Request::post(WEBHOOK_PATH)
            .header("host", spec.addr.to_string())
            .header("content-type", "application/json; charset=utf-8")
            .header("stripe-signature", signature)
            .body(Full::new(body))
            .expect("a valid request");
        stats.sent += 1;
        let result = post(&mut sender, spec.addr, request).await;
        let counted = due >= shared.count_from;
        let failure = match result {
            Ok(status) if status.is_success() => None,
            Ok(status) => Some(format!("HTTP {status}")),
            Err(e) => {
                // The connection is unusable: open a new one, without spinning.
                sender = None;
                tokio::time::sleep(Duration::from_millis(10)).await;
                Some(format!("{e:#}"))
            }
        };
        stats.accepted_all += u64::from(failure.is_none());
        match failure {
            None if counted => {
                stats.ok += 1;
                stats.latencies_us.push(due.elapsed().as_micros() as u64);
                stats.last_counted = Some(Instant::now());
            }
            None => {}
            Some(error) => {
                stats.errors += u64::from(counted);
                stats.first_error.get_or_insert(error);
            }
        }
    }
    stats
}

/// Sends one request on the connection, opening it first if needed.
async fn post(
    sender: &mut Option<SendRequest<Full<Bytes>>>,
    addr: SocketAddr,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<StatusCode> {
    let s = match sender {
        Some(s) => s,
        None => sender.insert(connect(addr).await?),
    };
    s.ready().await?;
    let response = s.send_request(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}

async fn connect<B>(addr: SocketAddr) -> anyhow::Result<SendRequest<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

pub use fulfillment_testkit::{unix_now, unix_now_f64};
