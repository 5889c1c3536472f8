//! A thin client for the few Stripe API calls the fulfillment service makes.
//!
//! Why not an SDK-shaped crate (async-stripe): we call four endpoints, and
//! what matters for them is the behaviour around the call (Stripe's retry
//! rule, idempotency keys the caller owns, a rate budget shared by the whole
//! process, a refused key that fails loudly once, a metric per attempt),
//! which such crates leave to the caller or do differently; their generated
//! types for the whole API cost minutes of build time for nothing we read.
//!
//! The pure parts decide and are tested on their own:
//! - [`form`]: Stripe's form encoding of nested parameters and arrays;
//! - [`retry`]: whether to retry an answer ([`should_retry`], exactly the
//!   official libraries' rule plus 429) and the jittered backoff;
//! - [`bucket`]: the token bucket, given the time by its caller.
//!
//! The IO is [`Client`]: Bearer auth, a pinned `Stripe-Version`,
//! `Stripe-Account` when acting for a Connect account, the caller's
//! `Idempotency-Key` on every retry of a POST, timeouts on connecting and on
//! each whole attempt, answers capped in size. [`resources`] holds the calls.

pub mod bucket;
mod client;
pub mod config;
mod error;
pub mod form;
mod request;
pub mod resources;
pub mod retry;

pub use bucket::TokenBucket;
pub use client::{Client, Observer};
pub use config::{ApiBase, ApiKey, Config, DEFAULT_API_BASE, DEFAULT_API_VERSION};
pub use error::{ApiError, Error};
pub use form::{Params, Value};
pub use request::{Endpoint, MAX_IDEMPOTENCY_KEY_CHARS, Request};
pub use resources::{
    Event, EventFilter, LineItem, List, Listed, Pages, PaymentRecord, Price, endpoint,
};
pub use retry::{Answer, Backoff, should_retry};
