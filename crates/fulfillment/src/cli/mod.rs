//! Command line and environment: every flag has an environment variable, so
//! the same binary is configured the same way on a laptop and in Kubernetes.

//!
//! Each setting is checked once, by its value parser (`config`); the
//! submodules hold the settings of each group of commands.

mod services;
mod tools;

pub use services::{ReceiverArgs, ReceiverCmd, ServeArgs, WorkerArgs, WorkerCmd};
pub use tools::{
    CustomOutcomeArg, DlqAction, DlqCmd, EventsAction, EventsCmd, MigrateArgs, OrdersAction,
    OrdersCmd, ReconcileCmd, SendCustomPaymentCmd, SendEventCmd,
};

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::broker::BrokerUrls;
use crate::config::{self, Quiet, Secret};

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

impl Cli {
    /// Parses the command line and environment. On a bad setting, prints
    /// clap's first line only (it adds a usage hint on further lines;
    /// operators grep for one line) and hands back the exit code.
    pub fn parse_or_exit_code() -> Result<Cli, ExitCode> {
        match Cli::try_parse() {
            Ok(cli) => Ok(cli),
            Err(e) if !e.use_stderr() => e.exit(), // --help, --version
            Err(e) => {
                let rendered = e.to_string();
                let first = rendered.lines().next();
                eprintln!("{}", first.unwrap_or("error: invalid arguments"));
                Err(ExitCode::from(2))
            }
        }
    }
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
    /// Lists events from Stripe's Events API (by default the handled types Stripe has not delivered) and publishes those never processed, oldest first.
    Reconcile(ReconcileCmd),
    /// Signs and POSTs a realistic custom-payment report to /payments/custom, for demos and smoke tests.
    SendCustomPayment(SendCustomPaymentCmd),
}

#[derive(Debug, Clone, Args)]
pub struct AmqpArgs {
    /// RabbitMQ URL; its vhost is honoured (`%2f` is the default vhost). Several
    /// comma-separated URLs name the nodes of one cluster: a process connects to
    /// the first that answers and moves to the next when its node goes down.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true,
        value_parser = Quiet(config::amqp_url)
    )]
    pub amqp_url: BrokerUrls,

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
        hide_env_values = true,
        value_parser = Quiet(config::database_url)
    )]
    pub database_url: Secret,
}

/// Talking to Stripe's API (contract 8.1). Without a key every feature that
/// calls Stripe is off, and the process says so once at start.
#[derive(Debug, Clone, Args)]
pub struct StripeArgs {
    /// Secret or restricted API key (`sk_…`/`rk_…`); unset = no calls to Stripe.
    #[arg(long, env = "STRIPE_API_KEY", hide_env_values = true, value_parser = Quiet(config::stripe_api_key))]
    pub stripe_api_key: Option<stripe_api::ApiKey>,

    /// Where Stripe's API is: https, or plain http to a loopback address (a test stand-in).
    #[arg(long, env = "STRIPE_API_BASE", default_value = stripe_api::DEFAULT_API_BASE, value_parser = Quiet(config::stripe_api_base))]
    pub stripe_api_base: stripe_api::ApiBase,

    /// Sent as `Stripe-Version`: the API version the calls were written for.
    #[arg(long, env = "STRIPE_API_VERSION", default_value = stripe_api::DEFAULT_API_VERSION, value_parser = Quiet(config::stripe_api_version))]
    pub stripe_api_version: String,

    /// Stripe API requests per second this process sends, at most (all calls together).
    #[arg(long, env = "STRIPE_API_RATE", default_value = "20", value_parser = Quiet(config::stripe_api_rate))]
    pub stripe_api_rate: f64,
}

/// How far back a reconcile run looks by default.
#[derive(Debug, Clone, Args)]
pub struct LookbackArgs {
    /// How far back the periodic reconcile (and `reconcile` without --since/--from) lists events (Stripe retries for 3 days).
    #[arg(long, env = "RECONCILE_LOOKBACK", default_value = "74h", value_parser = config::positive_duration)]
    pub reconcile_lookback: Duration,
}

/// The periodic recovery of missed events in `serve` and `worker`.
#[derive(Debug, Clone, Args)]
pub struct ReconcileArgs {
    /// How often one replica lists recent events from Stripe and publishes those never processed (0 = off; needs STRIPE_API_KEY).
    #[arg(long, env = "RECONCILE_INTERVAL", default_value = "10m", value_parser = config::schedule)]
    pub reconcile_interval: config::Schedule,
    #[command(flatten)]
    pub lookback: LookbackArgs,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_default_passes_its_own_validation() {
        // Defaults go through the value parsers too: a default that fails
        // its own check would make the bare command unusable.
        let cli = Cli::try_parse_from(["fulfillment", "serve"]).expect("defaults parse");
        let Command::Serve(args) = cli.command else {
            panic!("serve");
        };
        // (The environment may override a default; these hold either way.)
        assert!(!args.worker.parked_ttl.is_zero());
        assert!(args.receiver.max_inflight_body_bytes > 0);
        assert!(args.stripe.stripe_api_rate > 0.0);
        assert!(args.reconcile.lookback.reconcile_lookback > Duration::ZERO);
        let shown = format!("{:?}", args.amqp);
        assert!(
            !shown.contains(args.amqp.amqp_url.get(0).expose()),
            "{shown}"
        );
    }

    #[test]
    fn the_custom_payment_secret_must_not_be_a_webhook_secret() {
        let parse = |custom: &str| {
            let cli = Cli::try_parse_from([
                "fulfillment",
                "receiver",
                "--stripe-webhook-secret",
                "whsec_a,whsec_b",
                "--custom-payment-secret",
                custom,
            ])
            .expect("parses");
            let Command::Receiver(cmd) = cli.command else {
                panic!("receiver");
            };
            cmd.receiver
        };
        let shared = parse("cps_x,whsec_b").validate().unwrap_err().to_string();
        assert!(shared.starts_with("CUSTOM_PAYMENT_SECRET:"), "{shared}");
        assert!(
            !shared.contains("whsec_b"),
            "never echoes a secret: {shared}"
        );
        let own = parse("cps_x");
        assert!(own.validate().is_ok());
        assert!(own.custom_payment_verifier().is_some());
    }
}
