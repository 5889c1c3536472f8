//! The enrichment job: gives each held-back `order.paid` its line items
//! from Stripe, then releases it to the relay (contract 8.3).
//!
//! The worker wrote the message held back (`outbox.awaiting_line_items`)
//! with a job, in the event's transaction (`store/line_items.rs`). Here,
//! in a loop of its own in every `serve`/`worker` process with a Stripe key:
//!
//! 1. claim a few due jobs in one statement (`jobs::claim`: `SKIP LOCKED`,
//!    then a lease in `next_attempt_at`), so replicas share the work;
//! 2. fetch every page of each session's line items with no transaction
//!    open and no lock held, through the process's one client (its rate
//!    budget, `STRIPE_API_RATE`, spaces the calls however many jobs wait);
//! 3. in one short transaction, if the claim still holds: store the items,
//!    rewrite the message with them (same `message_id`), release it, delete
//!    the job, wake the relay. Or schedule a retry, or keep the job for a
//!    person (`verdict.rs` says which).
//!
//! A crash anywhere loses nothing and duplicates nothing: before step 3
//! commits, the message is still held back and the job still open (taken
//! up again when the lease ends); after it, the relay publishes the one
//! message as it publishes any other.

mod jobs;
mod verdict;

pub use jobs::retry_held;

use std::time::Duration;

use futures_util::future::join_all;
use sqlx::PgPool;
use tracing::{debug, error, info, warn};

use fulfillment_core::line_items::retry_delay;

use crate::metrics as m;
use crate::shutdown::Shutdown;
use crate::store::LINE_ITEMS_CHANNEL;
use crate::wakeup::Wakeup;
use jobs::{Claimed, Closed};
use verdict::{Verdict, judge};

/// Jobs claimed at once; the client's rate budget spaces their calls.
const CLAIM: i64 = 10;
/// The most one fetch (every page, with the client's own retries) may take;
/// past it the try counts as failed and is retried.
const FETCH_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a claim keeps other replicas off a job: longer than a fetch can
/// take, so a live claimant is never overtaken; after a crash, how long
/// the job waits for another replica.
const LEASE: Duration = Duration::from_secs(150);
/// How often an idle loop looks for jobs that came due (retries), besides
/// the wake-up new jobs send.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// What one fetch came to, as `fulfillment_line_items_total{outcome}`
/// counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Items stored, message released.
    Fetched,
    /// Tried again later.
    Retried,
    /// Kept for a person.
    Held,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Fetched, Outcome::Retried, Outcome::Held];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Fetched => "fetched",
            Outcome::Retried => "retried",
            Outcome::Held => "held",
        }
    }

    fn count(self) {
        metrics::counter!(m::LINE_ITEMS_TOTAL, "outcome" => self.label()).increment(1);
    }
}

pub struct Enricher {
    pub pool: PgPool,
    pub stripe: stripe_api::Client,
}

impl Enricher {
    pub async fn run(self, shutdown: Shutdown) {
        info!("line items: order.paid of Checkout orders waits for its line items from Stripe");
        let mut wakeup = Wakeup::new(LINE_ITEMS_CHANNEL);
        while !shutdown.is_triggered() {
            match jobs::claim(&self.pool, CLAIM, LEASE).await {
                Ok(claimed) if claimed.is_empty() => {
                    wakeup.wait(&self.pool, IDLE_POLL, &shutdown).await;
                }
                Ok(claimed) => self.enrich_all(claimed, &shutdown).await,
                Err(e) => {
                    warn!(error = %e, "line items: could not claim jobs; trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                        _ = shutdown.wait() => {}
                    }
                }
            }
        }
    }

    /// Works the claimed jobs concurrently; at shutdown, gives back those
    /// not finished rather than leave them to the lease.
    async fn enrich_all(&self, claimed: Vec<Claimed>, shutdown: &Shutdown) {
        let work = join_all(claimed.iter().map(|job| self.enrich(job)));
        tokio::select! {
            _ = work => {}
            _ = shutdown.wait() => {
                if let Err(e) = jobs::release(&self.pool, &claimed).await {
                    warn!(error = %e, "line items: could not give back claimed jobs; they wait for their lease");
                }
            }
        }
    }

    async fn enrich(&self, job: &Claimed) {
        let fetched = self.fetch(&job.session_id, job.account.as_deref()).await;
        let result = match judge(fetched) {
            Verdict::Fetched(items) => self.release(job, &items).await,
            Verdict::Retry(why) => self.retry(job, &why).await,
            Verdict::Hold(why) => self.hold(job, &why).await,
        };
        if let Err(e) = result {
            warn!(order_id = %job.order_id, error = %e, "line items: could not record the outcome; the job is tried again after its lease");
        }
    }

    async fn fetch(
        &self,
        session: &str,
        account: Option<&str>,
    ) -> Result<Vec<stripe_api::LineItem>, stripe_api::Error> {
        tokio::time::timeout(FETCH_TIMEOUT, self.stripe.list_line_items(session, account))
            .await
            .unwrap_or(Err(stripe_api::Error::Timeout(FETCH_TIMEOUT)))
    }

    async fn release(
        &self,
        job: &Claimed,
        items: &[(String, fulfillment_core::LineItem)],
    ) -> Result<(), sqlx::Error> {
        match jobs::close_fetched(&self.pool, job, items).await? {
            Closed::Released => {
                Outcome::Fetched.count();
                info!(order_id = %job.order_id, items = items.len(), attempts = job.attempts, "line items fetched; order.paid released");
            }
            Closed::ClaimLost => {
                debug!(order_id = %job.order_id, "line items: another claim closed the job");
            }
            Closed::Unreadable(e) => self.hold(job, &e.to_string()).await?,
        }
        Ok(())
    }

    async fn retry(&self, job: &Claimed, why: &str) -> Result<(), sqlx::Error> {
        let delay = retry_delay(job.attempts.unsigned_abs());
        if jobs::retry_later(&self.pool, job, delay, why).await? {
            Outcome::Retried.count();
            warn!(order_id = %job.order_id, session = %job.session_id, attempts = job.attempts, retry_in = ?delay, error = why, "line items: fetch failed; order.paid waits and is retried");
        }
        Ok(())
    }

    async fn hold(&self, job: &Claimed, why: &str) -> Result<(), sqlx::Error> {
        if jobs::hold(&self.pool, job, why).await? {
            Outcome::Held.count();
            error!(order_id = %job.order_id, session = %job.session_id, error = why, "line items: Stripe's answer is final; order.paid is kept for a person (see `fulfillment orders show`, then `orders retry-line-items`)");
        }
        Ok(())
    }
}

/// Jobs and their age, for the gauges (every worker process reports them,
/// key or not: without a key nothing fetches, and that must show).
pub async fn report_backlog(pool: &PgPool) -> Result<(), sqlx::Error> {
    let (pending, held, oldest) = jobs::backlog(pool).await?;
    metrics::gauge!(m::LINE_ITEMS_PENDING).set(pending as f64);
    metrics::gauge!(m::LINE_ITEMS_HELD).set(held as f64);
    metrics::gauge!(m::LINE_ITEMS_OLDEST_PENDING_SECONDS).set(oldest);
    Ok(())
}

/// Said once at start by a process without a key when messages wait for
/// line items (written while a key was set): they stay held back, visibly,
/// until a process with a key fetches them.
pub async fn warn_if_waiting(pool: &PgPool) {
    if let Ok((pending, held, _)) = jobs::backlog(pool).await
        && pending + held > 0
    {
        warn!(
            pending,
            held,
            "order.paid messages wait for line items, and STRIPE_API_KEY is not set here: they stay held back until a worker with a key fetches them"
        );
    }
}
