//! A stand-in for Stripe's API, for tests: a real HTTP server on
//! `127.0.0.1:<free port>`, on a thread and runtime of its own, so the real
//! `fulfillment` binary can be pointed at it (`STRIPE_API_BASE`) from any
//! test, sync or async.
//!
//! It behaves like Stripe on what the service relies on (`../shared/
//! STRIPE_API.md` section 7): Bearer auth (401 with Stripe's error object),
//! form-encoded parameters (unknown ones refused), `Stripe-Version`
//! recorded, newest-first lists with `limit`, `starting_after`,
//! `ending_before`, `has_more` and `url`; `GET /v1/events` with its filters
//! and `GET /v1/events/:id`; Checkout Session line items; Payment Records
//! (`report_payment`, retrieve, and the list with its creation-time
//! window); `Idempotency-Key` replay, mismatch and in-use, and keys
//! forgotten on demand ([`StandIn::forget_idempotency_keys`], Stripe's
//! 24 hours); objects scoped to a `Stripe-Account`. Tests script failures
//! ([`StandIn::fail_next`]), switch an outage on and off
//! ([`StandIn::set_outage`]), and read every request back
//! ([`StandIn::requests`]).
//!
//! ```ignore
//! let stripe = StandIn::start();
//! stripe.set_line_items("cs_1", None, (0..250).map(|n| line_item("cs_1", n, 1, 500, "eur")).collect());
//! stripe.fail_next("GET /v1/checkout/sessions/:id/line_items", 2, Fault::status(503));
//! let svc = Service::start(&env, "serve", &stripe.settings()).await;   // STRIPE_API_KEY, STRIPE_API_BASE
//! // … then assert on stripe.requests_to("GET /v1/checkout/sessions/:id/line_items")
//! ```
//!
//! Counting calls per second: [`most_in_any_window`] reads arrival times at
//! the stand-in. The client spaces its sends exactly; arrivals carry the
//! machine's scheduling jitter (and new connections' set-up), so on a busy
//! machine a one-second window can catch a send or two of the next second:
//! allow for that, or look at the gaps between arrivals.

mod idempotency;
pub mod list;
pub mod objects;
pub mod records;
pub mod reply;
mod routes;
mod server;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

pub use objects::line_item;

/// Scripted answers and outages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status (Stripe's error object for it) and, when
    /// `should_retry` is set, `Stripe-Should-Retry`. The request does not run.
    Status {
        status: u16,
        should_retry: Option<bool>,
    },
    /// Wait this long, then answer normally (an idempotency key is held
    /// meanwhile).
    Slow(Duration),
}

impl Fault {
    pub fn status(status: u16) -> Fault {
        Fault::Status {
            status,
            should_retry: None,
        }
    }

    pub fn status_should_retry(status: u16, should_retry: bool) -> Fault {
        Fault::Status {
            status,
            should_retry: Some(should_retry),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outage {
    /// Serving normally.
    None,
    /// Every request gets 503.
    Unavailable,
    /// Nothing listens: connections are refused, open ones cut.
    Refused,
}

/// One request, as the stand-in saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub started: Instant,
    pub finished: Instant,
    pub method: String,
    pub path: String,
    /// The operation, as the client's metric names it (`GET /v1/events`);
    /// `None` for an unknown URL.
    pub endpoint: Option<&'static str>,
    pub params: Vec<(String, String)>,
    pub stripe_version: Option<String>,
    pub idempotency_key: Option<String>,
    pub stripe_account: Option<String>,
    /// Whether it carried the right key.
    pub authorized: bool,
    pub status: u16,
    /// Answered from a saved idempotent result.
    pub replayed: bool,
}

impl Logged {
    pub fn param(&self, key: &str) -> Option<&str> {
        objects::param(&self.params, key)
    }

    /// Every value of `key` (e.g. `types[]`).
    pub fn params_named(&self, key: &str) -> Vec<&str> {
        self.params
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A Checkout Session's line items, in the account that owns it.
struct Session {
    account: Option<String>,
    id: String,
    items: Vec<Value>,
}

#[derive(Default)]
struct State {
    /// Newest first, as lists are served.
    events: Vec<objects::StoredEvent>,
    sessions: Vec<Session>,
    records: Vec<(Option<String>, Value)>,
    keys: idempotency::Keys,
    faults: Vec<(String, VecDeque<Fault>)>,
    log: Vec<Logged>,
    next_id: u64,
}

struct Shared {
    key: String,
    state: Mutex<State>,
    outage: watch::Sender<Outage>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding it has failed already.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running stand-in; stops when dropped.
pub struct StandIn {
    pub port: u16,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl StandIn {
    /// Starts with a fresh secret key of its own.
    pub fn start() -> StandIn {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        StandIn::start_with_key(&format!(
            "sk_test_standin_{:x}{nanos:08x}",
            std::process::id()
        ))
    }

    pub fn start_with_key(key: &str) -> StandIn {
        let shared = Arc::new(Shared {
            key: key.to_owned(),
            state: Mutex::new(State::default()),
            outage: watch::channel(Outage::None).0,
        });
        let (stop, stopped) = watch::channel(false);
        let (port, thread) = server::spawn(shared.clone(), stopped);
        StandIn {
            port,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    /// The secret key it accepts.
    pub fn key(&self) -> &str {
        &self.shared.key
    }

    /// `http://127.0.0.1:<port>`, for `STRIPE_API_BASE`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `STRIPE_API_KEY` and `STRIPE_API_BASE` for a service started against it.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("STRIPE_API_KEY", self.key().to_owned()),
            ("STRIPE_API_BASE", self.base_url()),
        ]
    }

    /// Adds an event (a full event object with `id`, `type`, `created`,
    /// and `account` for a Connect account's event). `delivered: false`
    /// makes it one `delivery_success=false` lists.
    pub fn add_event(&self, body: &[u8], delivered: bool) {
        let value: Value = serde_json::from_slice(body).expect("an event is JSON");
        let event = objects::StoredEvent::new(value, delivered);
        let mut state = self.shared.state();
        // Newest first; among equal `created`, the later added first.
        let at = state
            .events
            .iter()
            .position(|e| e.created <= event.created)
            .unwrap_or(state.events.len());
        state.events.insert(at, event);
    }

    /// Gives a Checkout Session (of `account`, or of the platform) these
    /// line items, served in this order.
    pub fn set_line_items(&self, session_id: &str, account: Option<&str>, items: Vec<Value>) {
        let mut state = self.shared.state();
        state
            .sessions
            .retain(|s| !(s.id == session_id && s.account.as_deref() == account));
        state.sessions.push(Session {
            account: account.map(str::to_owned),
            id: session_id.to_owned(),
            items,
        });
    }

    /// The next `n` requests to `endpoint` (e.g. `GET /v1/events`, or `*`
    /// for any) get `fault`, after those already scripted.
    pub fn fail_next(&self, endpoint: &str, n: usize, fault: Fault) {
        let mut state = self.shared.state();
        let queue = match state.faults.iter_mut().position(|(e, _)| e == endpoint) {
            Some(i) => &mut state.faults[i].1,
            None => {
                state.faults.push((endpoint.to_owned(), VecDeque::new()));
                &mut state.faults.last_mut().expect("just pushed").1
            }
        };
        queue.extend(std::iter::repeat_n(fault, n));
    }

    /// Switches an outage on (or off with [`Outage::None`]).
    pub fn set_outage(&self, outage: Outage) {
        self.shared.outage.send_replace(outage);
    }

    /// Every request so far, in the order they were answered.
    pub fn requests(&self) -> Vec<Logged> {
        self.shared.state().log.clone()
    }

    /// The requests to `endpoint`.
    pub fn requests_to(&self, endpoint: &str) -> Vec<Logged> {
        self.requests()
            .into_iter()
            .filter(|r| r.endpoint == Some(endpoint))
            .collect()
    }

    /// Forgets every saved idempotency key, as Stripe may once a key is 24
    /// hours old: a request with a forgotten key runs again as a new one.
    pub fn forget_idempotency_keys(&self) {
        self.shared.state().keys = idempotency::Keys::default();
    }

    /// The payment records reported so far.
    pub fn payment_records(&self) -> Vec<Value> {
        self.shared
            .state()
            .records
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }
}

/// The most requests that started within any `window`.
pub fn most_in_any_window(requests: &[Logged], window: Duration) -> usize {
    let mut starts: Vec<Instant> = requests.iter().map(|r| r.started).collect();
    starts.sort();
    let mut most = 0;
    let mut first = 0;
    for (last, t) in starts.iter().enumerate() {
        while *t - starts[first] >= window {
            first += 1;
        }
        most = most.max(last - first + 1);
    }
    most
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
