//! Settings of the one-shot commands: `migrate`, `dlq`, `orders`,
//! `events`, `send-event`, `send-custom-payment`, `reconcile`.

use clap::{Args, Subcommand};

use std::time::Duration;

use fulfillment_core::reconcile::Bound;

use super::{AmqpArgs, DatabaseArgs, LookbackArgs, StripeArgs};
use crate::config::{self, Quiet, Secret};
use crate::retry::RetryPolicy;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Retry tiers to declare (the workers' RETRY_DELAYS).
    #[arg(long, env = "RETRY_DELAYS", default_value = "1s,10s,1m,5m", value_parser = config::retry_policy)]
    pub retry_delays: RetryPolicy,
    #[command(flatten)]
    pub amqp: AmqpArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
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
    /// Status and details, every event with its outcome, transitions, outbox messages, parked events, payments and their Payment Records, anomalies.
    Show {
        order_id: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Fetches line items again for order.paid messages held for a person (after fixing what Stripe refused); prints the orders.
    RetryLineItems {
        /// Every held order.
        #[arg(long, conflicts_with = "order_ids")]
        all: bool,
        /// Orders to retry.
        #[arg(required_unless_present = "all")]
        order_ids: Vec<String>,
    },
    /// Sends the order's Payment Records that Stripe refused again (after the cause is fixed), with a new idempotency key.
    RetryRecord { order_id: String },
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
pub struct SendEventCmd {
    /// Event type, e.g. checkout.session.completed, payment_intent.succeeded,
    /// payment_intent.payment_failed, charge.refunded, charge.dispute.created, customer.created.
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

    /// For payment_intent.*: leave metadata.order_id out (the order is then found through its session).
    #[arg(long)]
    pub no_order_metadata: bool,

    /// For payment_intent.payment_failed: last_payment_error.decline_code (e.g. insufficient_funds, lost_card).
    #[arg(long, default_value = "generic_decline", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub decline_code: String,

    /// For charge.refunded: the charge's amount_refunded so far, in cents of the 4200 sample charge (4200 = full).
    #[arg(long, default_value_t = fulfillment_core::sample::AMOUNT, value_parser = clap::value_parser!(i64).range(0..))]
    pub amount_refunded: i64,

    /// For charge.dispute.closed: how Stripe closed it.
    #[arg(long, default_value = "lost", value_parser = ["won", "lost", "warning_closed", "prevented", "charge_refunded"])]
    pub dispute_status: String,

    /// For charge.dispute.*: the dispute id; default du_<PaymentIntent id without pi_>.
    #[arg(long)]
    pub dispute_id: Option<String>,

    /// Webhook endpoint to POST to.
    #[arg(
        long,
        env = "SEND_EVENT_URL",
        default_value = "http://127.0.0.1:8080/webhooks/stripe"
    )]
    pub url: String,

    /// Endpoint secret to sign with (the first one, if several).
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true, value_parser = Quiet(config::secret))]
    pub secret: Option<Secret>,

    /// Print the event instead of sending it.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ReconcileCmd {
    /// Look this far back (units s, m, h, d); default RECONCILE_LOOKBACK. Stripe keeps events 30 days.
    #[arg(long, conflicts_with = "from", value_parser = config::positive_duration)]
    pub since: Option<Duration>,
    /// Start of the window instead, RFC 3339 (e.g. 2026-11-20T00:00:00Z).
    #[arg(long, value_parser = config::moment)]
    pub from: Option<i64>,
    /// End of the window: RFC 3339, or a duration ago (e.g. 1h); default now.
    #[arg(long, value_parser = config::bound)]
    pub until: Option<Bound>,
    /// Every event of the handled types, not only those Stripe has not delivered (delivery_success=false).
    #[arg(long)]
    pub all_events: bool,
    /// Print the ids it would publish and those already known; publish nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub lookback: LookbackArgs,
    #[command(flatten)]
    pub stripe: StripeArgs,
    #[command(flatten)]
    pub amqp: AmqpArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Args)]
pub struct SendCustomPaymentCmd {
    /// The order the payment is for (the merchant's order id).
    #[arg(long)]
    pub order: String,

    /// What the other processor said.
    #[arg(long, value_enum, default_value_t = CustomOutcomeArg::Guaranteed)]
    pub outcome: CustomOutcomeArg,

    /// The report's id (the dedup key); default: a new one. Reuse one to see deduplication.
    #[arg(long)]
    pub id: Option<String>,

    /// Amount in the currency's minor unit (4200 = 42.00 EUR).
    #[arg(long, default_value_t = 4200)]
    pub amount: i64,

    /// Three-letter ISO currency code, lowercase.
    #[arg(long, default_value = "eur")]
    pub currency: String,

    /// The custom payment method type from Stripe's Dashboard (`cpmt_...`).
    #[arg(long = "type", default_value = "cpmt_sample")]
    pub method_type: String,

    /// The other processor's id of the payment; default: a new one.
    #[arg(long)]
    pub reference: Option<String>,

    /// The customer's email.
    #[arg(long, default_value = "buyer@example.com")]
    pub customer_email: Option<String>,

    /// The customer's Stripe id (`cus_...`), when known.
    #[arg(long)]
    pub stripe_customer: Option<String>,

    /// Endpoint to POST to.
    #[arg(
        long,
        env = "SEND_CUSTOM_PAYMENT_URL",
        default_value = "http://127.0.0.1:8080/payments/custom"
    )]
    pub url: String,

    /// Secret to sign with (the first one, if several).
    #[arg(long, env = "CUSTOM_PAYMENT_SECRET", hide_env_values = true, value_parser = Quiet(config::secret))]
    pub secret: Option<Secret>,

    /// Print the report instead of sending it.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CustomOutcomeArg {
    Guaranteed,
    Failed,
}
