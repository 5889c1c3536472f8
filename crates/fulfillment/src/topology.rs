//! RabbitMQ names and their declaration (contract section 4). Declaring is
//! idempotent, so `migrate`, every receiver and every worker do it on start
//! and a fresh vhost works whichever process comes up first.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};

use fulfillment_core::{CUSTOM_PAYMENT_TYPE, HANDLED_EVENT_TYPES};

use crate::retry;

/// Every verified Stripe event; routing key = event type.
pub const EVENTS_EXCHANGE: &str = "stripe.events";
/// The workers' queue, bound to the event types they handle and to
/// custom-payment reports ([`bound_routing_keys`]).
pub const WORK_QUEUE: &str = "stripe.fulfillment";
/// Messages that failed for good.
pub const DEAD_LETTER_QUEUE: &str = "stripe.fulfillment.dlq";
/// Messages for downstream services; routing key = message type.
pub const FULFILLMENT_EXCHANGE: &str = "fulfillment";
/// Where `fulfillment` sends what no downstream queue is bound for yet, so a
/// message published before its consumer exists is kept, not dropped.
pub const UNROUTED_EXCHANGE: &str = "fulfillment.unrouted";
pub const UNROUTED_QUEUE: &str = "fulfillment.unrouted";

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

/// No `x-quorum-initial-group-size`: RabbitMQ 3.10 then places a replica on
/// every node of the cluster when the queue is declared (4.x: up to three),
/// which on three nodes is "replicated on all three" (`make cluster` checks
/// it). Declaring the argument would make the declaration of queues that
/// exist without it fail (406 PRECONDITION_FAILED: RabbitMQ compares it), so
/// every running deployment would break on upgrade. Queues declared before
/// the cluster grew keep their replicas: `rabbitmq-queues grow` adds them
/// (docs/scaling.md).
fn quorum_queue_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString("quorum".into()),
    );
    args
}

/// A retry tier: messages expire after `delay` and are dead-lettered back to
/// the work queue. Quorum with at-least-once dead-lettering, so the hop back
/// is itself confirmed inside the broker.
fn retry_queue_args(delay: Duration) -> FieldTable {
    let mut args = quorum_queue_args();
    let text = |s: &str| AMQPValue::LongString(s.into());
    args.insert(
        ShortString::from("x-message-ttl"),
        AMQPValue::LongLongInt(delay.as_millis() as i64),
    );
    args.insert(ShortString::from("x-dead-letter-exchange"), text(""));
    args.insert(
        ShortString::from("x-dead-letter-routing-key"),
        text(WORK_QUEUE),
    );
    args.insert(
        ShortString::from("x-dead-letter-strategy"),
        text("at-least-once"),
    );
    args.insert(ShortString::from("x-overflow"), text("reject-publish"));
    args
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Declares exchanges, queues and bindings, and one retry queue per delay
/// in `retry_delays`. Safe to run concurrently from several processes:
/// RabbitMQ declarations with equal arguments are no-ops.
pub async fn declare(channel: &Channel, retry_delays: &[Duration]) -> lapin::Result<()> {
    channel
        .exchange_declare(
            EVENTS_EXCHANGE.into(),
            ExchangeKind::Topic,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            UNROUTED_EXCHANGE.into(),
            ExchangeKind::Fanout,
            durable_exchange(),
            FieldTable::default(),
        )
        .await?;
    let mut fulfillment_args = FieldTable::default();
    fulfillment_args.insert(
        ShortString::from("alternate-exchange"),
        AMQPValue::LongString(UNROUTED_EXCHANGE.into()),
    );
    channel
        .exchange_declare(
            FULFILLMENT_EXCHANGE.into(),
            ExchangeKind::Topic,
            durable_exchange(),
            fulfillment_args,
        )
        .await?;
    for delay in retry_delays {
        channel
            .queue_declare(
                retry::queue_name(*delay).as_str().into(),
                durable_queue(),
                retry_queue_args(*delay),
            )
            .await?;
    }
    channel
        .queue_declare(UNROUTED_QUEUE.into(), durable_queue(), quorum_queue_args())
        .await?;
    channel
        .queue_bind(
            UNROUTED_QUEUE.into(),
            UNROUTED_EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for queue in [WORK_QUEUE, DEAD_LETTER_QUEUE] {
        channel
            .queue_declare(queue.into(), durable_queue(), quorum_queue_args())
            .await?;
    }
    for routing_key in bound_routing_keys() {
        channel
            .queue_bind(
                WORK_QUEUE.into(),
                EVENTS_EXCHANGE.into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// What `stripe.fulfillment` is bound to: the Stripe event types the
/// workers handle, and `custom_payment.reported`, the routing key of
/// custom-payment reports (not a Stripe type, so not in
/// `HANDLED_EVENT_TYPES`, which is also what Stripe is asked about). Reports
/// share the queue so they get the same retries, DLQ and replay.
pub fn bound_routing_keys() -> impl Iterator<Item = &'static str> {
    HANDLED_EVENT_TYPES
        .iter()
        .copied()
        .chain(std::iter::once(CUSTOM_PAYMENT_TYPE))
}

/// Routing keys with a queue of ours bound: publishing them must route, so
/// the receiver publishes them `mandatory` and treats a return as failure.
pub fn is_handled(event_type: &str) -> bool {
    bound_routing_keys().any(|key| key == event_type)
}
