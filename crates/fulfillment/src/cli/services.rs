//! Settings of the long-running roles: `serve`, `receiver`, `worker`.

use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroU64, NonZeroUsize};
use std::time::Duration;

use clap::Args;
use stripe_webhook_signature::Secrets;

use super::{AmqpArgs, DatabaseArgs, MetricsArgs, ReconcileArgs, ShutdownArgs, StripeArgs};
use crate::config::{self, Quiet};
use crate::retry::RetryPolicy;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub receiver: ReceiverArgs,
    #[command(flatten)]
    pub worker: WorkerArgs,
    #[command(flatten)]
    pub stripe: StripeArgs,
    #[command(flatten)]
    pub reconcile: ReconcileArgs,
    #[command(flatten)]
    pub amqp: AmqpArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub shutdown: ShutdownArgs,
}

#[derive(Debug, Args)]
pub struct ReceiverCmd {
    #[command(flatten)]
    pub receiver: ReceiverArgs,
    #[command(flatten)]
    pub amqp: AmqpArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub shutdown: ShutdownArgs,
}

#[derive(Debug, Args)]
pub struct WorkerCmd {
    /// Address of `/healthz` and `/readyz`.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    #[command(flatten)]
    pub worker: WorkerArgs,
    #[command(flatten)]
    pub stripe: StripeArgs,
    #[command(flatten)]
    pub reconcile: ReconcileArgs,
    #[command(flatten)]
    pub amqp: AmqpArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub shutdown: ShutdownArgs,
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Batches of events handled at once by this process. A batch forms when
    /// one of these is free and takes every delivery waiting (up to
    /// WORKER_BATCH_SIZE), so fewer, larger batches under load.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value = "8", value_parser = config::at_least_one::<NonZeroUsize>)]
    pub worker_concurrency: NonZeroUsize,

    /// Deliveries applied together in one database transaction, at most (1 = one transaction per event).
    #[arg(long, env = "WORKER_BATCH_SIZE", default_value = "50", value_parser = config::at_least_one::<NonZeroUsize>)]
    pub worker_batch_size: NonZeroUsize,

    /// Unacknowledged deliveries the broker may push to this process.
    #[arg(long, env = "WORKER_PREFETCH", default_value = "200", value_parser = config::prefetch)]
    pub worker_prefetch: NonZeroU16,

    /// Delay tiers for failed events, shortest first (units ms, s, m, h); after the last, the DLQ.
    #[arg(long, env = "RETRY_DELAYS", default_value = "1s,10s,1m,5m", value_parser = config::retry_policy)]
    pub retry_delays: RetryPolicy,

    /// PostgreSQL connections this process may open.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 20)]
    pub database_max_connections: u32,

    /// Outbox messages the relay publishes per transaction.
    #[arg(long, env = "OUTBOX_BATCH_SIZE", default_value = "200", value_parser = config::at_least_one::<std::num::NonZeroU32>)]
    pub outbox_batch_size: std::num::NonZeroU32,

    /// A parked PaymentIntent event no session claims within this is given up as unmatched_expired (units s, m, h, d).
    #[arg(long, env = "PARKED_TTL", default_value = "7d", value_parser = config::positive_duration)]
    pub parked_ttl: Duration,

    /// Dedup records and stored event bodies are kept at least this many days.
    #[arg(long, env = "RETENTION_DAYS", default_value = "35", value_parser = config::days)]
    pub retention_days: Duration,

    /// Published outbox rows are deleted after this many days (unpublished ones never).
    #[arg(long, env = "OUTBOX_RETENTION_DAYS", default_value = "7", value_parser = config::days)]
    pub outbox_retention_days: Duration,

    /// How often a worker tries to run the expiry and retention job (one replica at a time).
    #[arg(long, env = "RETENTION_INTERVAL", default_value = "5m", hide = true, value_parser = config::interval)]
    pub retention_interval: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct ReceiverArgs {
    /// Address of the webhook endpoint and health checks.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// One or more Stripe endpoint secrets (`whsec_...`), comma-separated while rotating.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true, value_parser = Quiet(config::webhook_secrets))]
    pub stripe_webhook_secret: Option<Secrets>,

    /// Enables `POST /payments/custom`: one or more secrets (comma-separated
    /// while rotating) the merchant's backend signs its custom-payment
    /// reports with (`Fulfillment-Signature`). Unset: that path is 404.
    #[arg(long, env = "CUSTOM_PAYMENT_SECRET", hide_env_values = true, value_parser = Quiet(config::custom_payment_secrets))]
    pub custom_payment_secret: Option<Secrets>,

    /// Allowed clock skew between a signature's timestamp and ours, both
    /// directions (Stripe-Signature and Fulfillment-Signature).
    #[arg(long, env = "SIGNATURE_TOLERANCE_SECS", default_value = "300", value_parser = config::tolerance)]
    pub signature_tolerance_secs: NonZeroU64,

    /// Larger bodies get 413 without being read whole.
    #[arg(long, env = "MAX_BODY_BYTES", default_value = "1048576", value_parser = config::at_least_one::<NonZeroUsize>)]
    pub max_body_bytes: NonZeroUsize,

    /// All request bodies being read before their signature is checked,
    /// together, at most (bytes); past it new requests get 503 with
    /// Retry-After, unread. At least MAX_BODY_BYTES.
    #[arg(long, env = "MAX_INFLIGHT_BODY_BYTES", default_value_t = 67_108_864)]
    pub max_inflight_body_bytes: usize,

    /// Connections served at once; further clients wait in the listen backlog.
    #[arg(long, env = "MAX_CONNECTIONS", default_value = "1024", value_parser = config::at_least_one::<NonZeroUsize>)]
    pub max_connections: NonZeroUsize,

    /// Time a client has to send the request headers.
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,

    /// Time a client has to send the request body.
    #[arg(long, env = "BODY_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub body_read_timeout_secs: u64,
}

impl ReceiverArgs {
    /// The checks that relate several settings (each single setting was
    /// checked by its value parser); run once before anything starts.
    pub fn validate(&self) -> anyhow::Result<stripe_webhook_signature::Verifier> {
        // Optional for clap: clap's own "required" error spans several
        // lines and does not lead with the setting's name.
        let secrets = self.stripe_webhook_secret.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "STRIPE_WEBHOOK_SECRET is required (one or more endpoint secrets, comma-separated)"
            )
        })?;
        if let Some(custom) = &self.custom_payment_secret
            && custom.overlaps(&secrets)
        {
            // Whoever holds the webhook secret (Stripe) could then report
            // payments, and the other way round.
            anyhow::bail!("CUSTOM_PAYMENT_SECRET: must differ from every STRIPE_WEBHOOK_SECRET");
        }
        if self.max_inflight_body_bytes < self.max_body_bytes.get() {
            anyhow::bail!(
                "MAX_INFLIGHT_BODY_BYTES: must be at least MAX_BODY_BYTES ({}), or no full-size body could ever be read",
                self.max_body_bytes
            );
        }
        Ok(stripe_webhook_signature::Verifier::new(
            secrets,
            self.signature_tolerance_secs.get(),
        ))
    }

    /// The verifier of `POST /payments/custom`, when `CUSTOM_PAYMENT_SECRET` is set.
    pub fn custom_payment_verifier(&self) -> Option<stripe_webhook_signature::Verifier> {
        let secrets = self.custom_payment_secret.clone()?;
        Some(stripe_webhook_signature::Verifier::new(
            secrets,
            self.signature_tolerance_secs.get(),
        ))
    }
}

impl WorkerArgs {
    /// Allowed (tests compress time), but worth a line at start.
    pub fn warn_about_short_retention(&self) {
        if self.retention_days < Duration::from_secs(30 * 86_400) {
            // Stripe can resend or list events for 30 days, and past the
            // window they are no longer recognised as duplicates.
            tracing::warn!(
                retention_days = self.retention_days.as_secs_f64() / 86_400.0,
                "RETENTION_DAYS is under 30: events Stripe still resends or lists may be applied again (statuses only move up, so mostly as stale)"
            );
        }
    }
}
