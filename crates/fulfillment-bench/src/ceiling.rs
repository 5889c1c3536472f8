//! The broker ceiling: how many persistent 2 KiB messages per second
//! RabbitMQ confirms into a quorum queue on this machine, while a consumer
//! takes and acks them. The receiver does the same publish per request, so
//! this is the most it could accept.
//!
//! Shaped like the receiver's publishes: one channel in confirm mode, a topic
//! exchange with the queue bound to the event type, `mandatory`, persistent,
//! the same properties. Up to `window` publishes are unconfirmed at once (the
//! receiver has at most one per open HTTP request).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use serde::Serialize;
use tokio::sync::Semaphore;

const EXCHANGE: &str = "bench.events";
const QUEUE: &str = "bench.ceiling";
const ROUTING_KEY: &str = "checkout.session.completed";

#[derive(Debug, Clone)]
pub struct Spec {
    pub amqp_url: String,
    /// Unconfirmed publishes in flight at most.
    pub window: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub window: usize,
    pub seconds: f64,
    /// Publishes acked by the broker per second.
    pub confirmed_per_sec: f64,
    /// Deliveries consumed and acked per second.
    pub consumed_per_sec: f64,
    pub nacked: u64,
}

pub async fn run(spec: &Spec) -> anyhow::Result<Outcome> {
    // The consumer has a connection of its own, as a worker process would.
    let publisher = Connection::connect(&spec.amqp_url, ConnectionProperties::default()).await?;
    let consumer = Connection::connect(&spec.amqp_url, ConnectionProperties::default()).await?;
    let channel = publisher.create_channel().await?;
    declare(&channel).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;

    let count_from = Instant::now() + spec.warmup;
    let end = count_from + spec.duration;
    let counting = move || {
        let now = Instant::now();
        now >= count_from && now < end
    };

    let consumed = Arc::new(AtomicU64::new(0));
    let consuming = drain(&consumer, QUEUE, {
        let consumed = consumed.clone();
        move || {
            if counting() {
                consumed.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
    .await?;

    let in_flight = Arc::new(Semaphore::new(spec.window));
    let confirmed = Arc::new(AtomicU64::new(0));
    let nacked = Arc::new(AtomicU64::new(0));
    let mut n: u64 = 0;
    while Instant::now() < end {
        let permit = in_flight.clone().acquire_owned().await?;
        n += 1;
        let properties = BasicProperties::default()
            .with_message_id(ShortString::from(format!("evt_ceiling_{n}")))
            .with_type(ShortString::from(ROUTING_KEY))
            .with_content_type(ShortString::from("application/json"))
            .with_delivery_mode(2);
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let confirm = channel
            .basic_publish(
                EXCHANGE.into(),
                ROUTING_KEY.into(),
                options,
                &spec.body,
                properties,
            )
            .await?;
        let (confirmed, nacked) = (confirmed.clone(), nacked.clone());
        tokio::spawn(async move {
            match confirm.await {
                Ok(Confirmation::Ack(None)) if counting() => {
                    confirmed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Confirmation::Ack(None)) => {}
                _ => {
                    nacked.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(permit);
        });
    }
    // Let the last confirms arrive before closing.
    let all = u32::try_from(spec.window)?;
    let _ = tokio::time::timeout(Duration::from_secs(10), in_flight.acquire_many(all)).await;
    let _ = publisher.close(200, "done".into()).await;
    let _ = consumer.close(200, "done".into()).await;
    consuming.abort();

    let seconds = spec.duration.as_secs_f64();
    Ok(Outcome {
        window: spec.window,
        seconds,
        confirmed_per_sec: confirmed.load(Ordering::Relaxed) as f64 / seconds,
        consumed_per_sec: consumed.load(Ordering::Relaxed) as f64 / seconds,
        nacked: nacked.load(Ordering::Relaxed),
    })
}

/// Consumes `queue` on `connection` and acks every delivery (prefetch 200,
/// like a worker), calling `on_ack` after each, until the connection closes.
pub async fn drain(
    connection: &Connection,
    queue: &str,
    on_ack: impl Fn() + Send + 'static,
) -> lapin::Result<tokio::task::JoinHandle<()>> {
    let channel = connection.create_channel().await?;
    channel.basic_qos(200, BasicQosOptions::default()).await?;
    let mut deliveries = channel
        .basic_consume(
            queue.into(),
            ShortString::from("bench-drain"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(tokio::spawn(async move {
        while let Some(Ok(delivery)) = deliveries.next().await {
            if delivery.ack(BasicAckOptions::default()).await.is_err() {
                break;
            }
            on_ack();
        }
    }))
}

async fn declare(channel: &lapin::Channel) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
    let mut quorum = FieldTable::default();
    quorum.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString("quorum".into()),
    );
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel.queue_declare(QUEUE.into(), options, quorum).await?;
    channel
        .queue_bind(
            QUEUE.into(),
            EXCHANGE.into(),
            ROUTING_KEY.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}
