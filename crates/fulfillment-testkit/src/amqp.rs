//! Looking at what reached the broker: a private queue bound to an exchange.

use std::time::{Duration, Instant};

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};

pub use lapin::message::BasicGetMessage;

/// An exclusive, auto-deleted queue bound to `exchange` with `binding`.
pub struct Tap {
    _conn: Connection,
    channel: Channel,
    queue: String,
}

impl Tap {
    /// Binds after the exchange exists: pass a URL whose vhost a service has
    /// already declared its topology in (or declare it yourself first).
    pub async fn bind(amqp_url: &str, exchange: &str, binding: &str) -> Tap {
        let conn = Connection::connect(amqp_url, ConnectionProperties::default())
            .await
            .expect("test connection to RabbitMQ");
        let channel = conn.create_channel().await.expect("channel");
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("tap queue")
            .name()
            .to_string();
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.into(),
                binding.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("tap binding");
        Tap {
            _conn: conn,
            channel,
            queue,
        }
    }

    /// The next message, or None after `within`.
    pub async fn next(&self, within: Duration) -> Option<BasicGetMessage> {
        next_from(&self.channel, &self.queue, within).await
    }

    /// Asserts that the next message (within 5 s) carries exactly `body`; returns it.
    pub async fn expect_body(&self, body: &[u8]) -> BasicGetMessage {
        let message = self
            .next(Duration::from_secs(5))
            .await
            .expect("a published message");
        assert_eq!(
            message.delivery.data, body,
            "the bus carries the body received, byte for byte"
        );
        message
    }

    /// Every message that arrives until `quiet` passes without one.
    pub async fn drain(&self, quiet: Duration) -> Vec<BasicGetMessage> {
        let mut all = Vec::new();
        while let Some(m) = self.next(quiet).await {
            all.push(m);
        }
        all
    }

    /// Every downstream message (a tap on the `fulfillment` exchange) that
    /// arrives until `quiet` passes without one, as JSON. Each is checked
    /// against what every downstream message carries (contract 6):
    /// persistent, an AMQP `message_id` within the short-string limit that
    /// equals the body's, and the body's `type` as the routing key.
    pub async fn drain_messages(&self, quiet: Duration) -> Vec<serde_json::Value> {
        self.drain(quiet)
            .await
            .into_iter()
            .map(|m| {
                let body: serde_json::Value =
                    serde_json::from_slice(&m.delivery.data).expect("a JSON message");
                let properties = &m.delivery.properties;
                let id = properties.message_id().as_ref().expect("message_id");
                assert_eq!(
                    body["message_id"],
                    id.as_str(),
                    "AMQP message_id matches the body"
                );
                assert!(id.as_str().len() <= 255);
                assert_eq!(
                    body["type"],
                    m.delivery.routing_key.as_str(),
                    "routing key = type"
                );
                assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
                body
            })
            .collect()
    }
}

/// Gets (and acks) the next message of any queue, polling until `within`.
pub async fn next_from(
    channel: &Channel,
    queue: &str,
    within: Duration,
) -> Option<BasicGetMessage> {
    let deadline = Instant::now() + within;
    loop {
        let got = channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .expect("basic.get");
        if let Some(message) = got {
            message
                .delivery
                .ack(BasicAckOptions::default())
                .await
                .expect("ack");
            return Some(message);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Messages ready in `queue` (passive declare), without consuming them.
pub async fn queue_depth(amqp_url: &str, queue: &str) -> u32 {
    let conn = Connection::connect(amqp_url, ConnectionProperties::default())
        .await
        .expect("test connection");
    let channel = conn.create_channel().await.expect("channel");
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue exists");
    let _ = conn.close(200, "bye".into()).await;
    q.message_count()
}

/// One queue's counts as `rabbitmqctl list_queues` reports them (ready and
/// unacknowledged, which AMQP's passive declare does not show).
pub struct QueueCounts {
    pub name: String,
    pub ready: u64,
    pub unacked: u64,
}

pub fn queue_counts(vhost: &str) -> Vec<QueueCounts> {
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "-q",
            "list_queues",
            "-p",
            vhost,
            "name",
            "messages",
            "messages_unacknowledged",
        ])
        .output()
        .expect("rabbitmqctl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            Some(QueueCounts {
                name: cols.first()?.to_string(),
                ready: cols.get(1)?.parse().ok()?,
                unacked: cols.get(2)?.parse().ok()?,
            })
        })
        .collect()
}

/// Publishes `body` straight to `queue` (default exchange) with a publisher
/// confirm, as a checkout.session.completed with `message_id`: what a
/// redelivery, a retry tier or a dead letter looks like to a consumer.
pub async fn publish_to_queue(url: &str, queue: &str, message_id: &str, body: &[u8]) {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("test connection to RabbitMQ");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let props = lapin::BasicProperties::default()
        .with_message_id(message_id.into())
        .with_type("checkout.session.completed".into());
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body,
        props,
    )
    .await
    .expect("publish")
    .await
    .expect("confirm");
    let _ = conn.close(200, "bye".into()).await;
}
