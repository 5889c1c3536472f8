//! Command line and environment: every flag has an environment variable, so
//! the same binary is configured the same way on a laptop and in Kubernetes.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "fulfillment",
    version,
    about = "Stripe webhook ingestion and order fulfillment"
)]
pub struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receiver, worker pool and outbox relay in one process (the default way to run).
    Serve(ServeArgs),
    /// Only the HTTP receiver (scale it behind a load balancer).
    Receiver(ReceiverCmd),
    /// Only the workers and the outbox relay (scale by running more).
    Worker(WorkerCmd),
    /// Creates the database if missing, applies migrations, declares the AMQP topology. Idempotent.
    Migrate(MigrateArgs),
    /// Inspect, replay and purge dead letters (kept in PostgreSQL; listing changes nothing).
    Dlq(DlqCmd),
    /// One order's story: status, events and their outcomes, transitions, messages (read-only, needs DATABASE_URL).
    Orders(OrdersCmd),
    /// One Stripe event: outcome, order, the body Stripe sent (read-only, needs DATABASE_URL).
    Events(EventsCmd),
    /// Signs and POSTs a realistic test event (like `stripe trigger`), for demos and smoke tests.
    SendEvent(SendEventCmd),
}

#[derive(Debug, Args)]
pub struct SendEventCmd {
    /// Event type, e.g. checkout.session.completed, payment_intent.succeeded, customer.created.
    #[arg(value_name = "TYPE")]
    pub event_type: String,

    /// Order id (the session's client_reference_id); default: a new one.
    #[arg(long)]
    pub order: Option<String>,

    /// Event id; default: a new one. Reuse one to see deduplication.
    #[arg(long)]
    pub event_id: Option<String>,

    /// PaymentIntent id; default: pi_<order>.
    #[arg(long)]
    pub payment_intent: Option<String>,

    /// For checkout.session.completed: paid, unpaid (delayed methods) or no_payment_required.
    #[arg(long, default_value = "paid", value_parser = ["paid", "unpaid", "no_payment_required"])]
    pub payment_status: String,

    /// For payment_intent.succeeded: leave metadata.order_id out (the order is then found through its session).
    #[arg(long)]
    pub no_order_metadata: bool,

    /// Webhook endpoint to POST to.
    #[arg(
        long,
        env = "SEND_EVENT_URL",
        default_value = "http://127.0.0.1:8080/webhooks/stripe"
    )]
    pub url: String,

    /// Endpoint secret to sign with (the first one, if several).
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// Print the event instead of sending it.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct WorkerCmd {
    /// Address of `/healthz` and `/readyz`.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    #[command(flatten)]
    pub worker: WorkerArgs,
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
    /// Batches of events handled at once by this process.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 32)]
    pub worker_concurrency: usize,

    /// Deliveries applied together in one database transaction, at most (1 = one transaction per event).
    #[arg(long, env = "WORKER_BATCH_SIZE", default_value_t = 50)]
    pub worker_batch_size: usize,

    /// Unacknowledged deliveries the broker may push to this process.
    #[arg(long, env = "WORKER_PREFETCH", default_value_t = 200)]
    pub worker_prefetch: u16,

    /// Delay tiers for failed events, shortest first (units ms, s, m, h); after the last, the DLQ.
    #[arg(long, env = "RETRY_DELAYS", default_value = "1s,10s,1m,5m")]
    pub retry_delays: String,

    /// PostgreSQL connections this process may open.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 20)]
    pub database_max_connections: u32,

    /// Outbox messages the relay publishes per transaction.
    #[arg(long, env = "OUTBOX_BATCH_SIZE", default_value_t = 200)]
    pub outbox_batch_size: i64,

    /// A parked PaymentIntent event no session claims within this is given up as unmatched_expired (units s, m, h, d).
    #[arg(long, env = "PARKED_TTL", default_value = "7d")]
    pub parked_ttl: String,

    /// Dedup records and stored event bodies are kept at least this many days.
    #[arg(long, env = "RETENTION_DAYS", default_value = "35")]
    pub retention_days: String,

    /// Published outbox rows are deleted after this many days (unpublished ones never).
    #[arg(long, env = "OUTBOX_RETENTION_DAYS", default_value = "7")]
    pub outbox_retention_days: String,

    /// How often a worker tries to run the expiry and retention job (one replica at a time).
    #[arg(long, env = "RETENTION_INTERVAL", default_value = "5m", hide = true)]
    pub retention_interval: String,
}

#[derive(Debug, Args)]
pub struct OrdersCmd {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(subcommand)]
    pub action: OrdersAction,
}

#[derive(Debug, Subcommand)]
pub enum OrdersAction {
    /// Status and details, every event with its outcome, transitions, outbox messages, parked events.
    Show {
        order_id: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct EventsCmd {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(subcommand)]
    pub action: EventsAction,
}

#[derive(Debug, Subcommand)]
pub enum EventsAction {
    /// Outcome, order, and the stored body (pretty-printed JSON).
    Show {
        event_id: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct DlqCmd {
    #[command(flatten)]
    pub amqp: AmqpArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(subcommand)]
    pub action: DlqAction,
}

#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// Lists dead letters, oldest first: event id, type, attempts, age, kind, error. Read-only.
    List {
        /// Show at most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Shows one event's dead letter(s) in full, body included. Read-only.
    Show { id: String },
    /// Puts dead letters back on the work queue, then deletes them here (dedup makes replaying a success harmless). A permanent failure keeps its attempts and goes straight back if it fails again.
    Replay {
        /// Replay every dead letter.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Event ids to replay.
        #[arg(required_unless_present = "all")]
        ids: Vec<String>,
    },
    /// Deletes every dead letter for good. Asks on a terminal; scripts must pass --yes.
    Purge {
        /// Delete without asking (required when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub receiver: ReceiverArgs,
    #[command(flatten)]
    pub worker: WorkerArgs,
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
pub struct MigrateArgs {
    /// Retry tiers to declare (the workers' RETRY_DELAYS).
    #[arg(long, env = "RETRY_DELAYS", default_value = "1s,10s,1m,5m")]
    pub retry_delays: String,
    #[command(flatten)]
    pub amqp: AmqpArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Clone, Args)]
pub struct AmqpArgs {
    /// RabbitMQ URL; its vhost is honoured (`%2f` is the default vhost).
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub amqp_url: String,

    /// How long the receiver waits for the broker's publisher confirm before answering 503.
    #[arg(long, env = "PUBLISH_CONFIRM_TIMEOUT_MS", default_value_t = 5000)]
    pub publish_confirm_timeout_ms: u64,
}

impl AmqpArgs {
    pub fn confirm_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_confirm_timeout_ms)
    }
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL. `migrate` creates the database if it is missing.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/fulfillment",
        hide_env_values = true
    )]
    pub database_url: String,
}

#[derive(Debug, Clone, Args)]
pub struct ReceiverArgs {
    /// Address of the webhook endpoint and health checks.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// One or more Stripe endpoint secrets (`whsec_...`), comma-separated while rotating.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub stripe_webhook_secret: Option<String>,

    /// Allowed clock skew between Stripe's timestamp and ours, both directions.
    #[arg(long, env = "SIGNATURE_TOLERANCE_SECS", default_value_t = 300)]
    pub signature_tolerance_secs: u64,

    /// Larger bodies get 413 without being read whole.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1_048_576)]
    pub max_body_bytes: usize,

    /// All request bodies being read before their signature is checked,
    /// together, at most (bytes); past it new requests get 503 with
    /// Retry-After, unread. At least MAX_BODY_BYTES.
    #[arg(long, env = "MAX_INFLIGHT_BODY_BYTES", default_value_t = 67_108_864)]
    pub max_inflight_body_bytes: usize,

    /// Connections served at once; further clients wait in the listen backlog.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Time a client has to send the request headers.
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,

    /// Time a client has to send the request body.
    #[arg(long, env = "BODY_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub body_read_timeout_secs: u64,
}

#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// Prometheus `/metrics` listener, separate from the webhook endpoint.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,
}

#[derive(Debug, Clone, Args)]
pub struct ShutdownArgs {
    /// On SIGTERM/SIGINT, how long `/readyz` answers 503 while both listeners
    /// keep serving, so load balancers stop routing here before the listener
    /// closes. A second signal ends the drain early.
    #[arg(long, env = "SHUTDOWN_DRAIN_SECS", default_value_t = 5)]
    pub shutdown_drain_secs: u64,

    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
}
