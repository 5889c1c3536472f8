//! RabbitMQ names and their declaration (contract section 4). Declaring is
//! idempotent, so `migrate`, every receiver and every worker do it on start
//! and a fresh vhost works whichever process comes up first.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};

use fulfillment_core::HANDLED_EVENT_TYPES;

/// Every verified Stripe event; routing key = event type.
pub const EVENTS_EXCHANGE: &str = "stripe.events";
/// The workers' queue, bound to the event types they handle.
pub const WORK_QUEUE: &str = "stripe.fulfillment";
/// Messages that failed for good.
pub const DEAD_LETTER_QUEUE: &str = "stripe.fulfillment.dlq";
/// Messages for downstream services; routing key = message type.
pub const FULFILLMENT_EXCHANGE: &str = "fulfillment";

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

fn quorum_queue_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString("quorum".into()),
    );
    args
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Declares exchanges, queues and bindings. Safe to run concurrently from
/// several processes: RabbitMQ declarations with equal arguments are no-ops.
pub async fn declare(channel: &Channel) -> lapin::Result<()> {
    for exchange in [EVENTS_EXCHANGE, FULFILLMENT_EXCHANGE] {
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                durable_exchange(),
                FieldTable::default(),
            )
            .await?;
    }
    for queue in [WORK_QUEUE, DEAD_LETTER_QUEUE] {
        channel
            .queue_declare(queue.into(), durable_queue(), quorum_queue_args())
            .await?;
    }
    for event_type in HANDLED_EVENT_TYPES {
        channel
            .queue_bind(
                WORK_QUEUE.into(),
                EVENTS_EXCHANGE.into(),
                (*event_type).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Event types with a queue of ours bound: publishing them must route, so
/// the receiver publishes them `mandatory` and treats a return as failure.
pub fn is_handled(event_type: &str) -> bool {
    HANDLED_EVENT_TYPES.contains(&event_type)
}
