//! The mover: consumes `stripe.fulfillment.dlq` into the dead-letter table,
//! acking each message only after its row is committed.

use backon::BackoffBuilder;
use futures_util::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use sqlx::PgPool;
use tracing::{debug, info, warn};

use super::{DeadLetter, insert};
use crate::broker::BrokerLink;
use crate::metrics as m;
use crate::shutdown::Shutdown;
use crate::topology::DEAD_LETTER_QUEUE;

/// Moves dead letters from the queue into the table, for as long as the
/// worker role runs. Every replica runs one; the broker gives each message
/// to one of them.
pub struct Mover {
    pub pool: PgPool,
    pub link: BrokerLink,
}

impl Mover {
    pub async fn run(self, shutdown: Shutdown) {
        self.link
            .consume_while_up("dead-letter mover", &shutdown, |channel| {
                let (mover, shutdown) = (&self, &shutdown);
                async move { mover.consume(&channel, shutdown).await }
            })
            .await;
    }

    async fn consume(&self, channel: &Channel, shutdown: &Shutdown) -> lapin::Result<()> {
        channel.basic_qos(20, BasicQosOptions::default()).await?;
        let mut consumer = channel
            .basic_consume(
                DEAD_LETTER_QUEUE.into(),
                ShortString::from(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        info!(
            queue = DEAD_LETTER_QUEUE,
            "moving dead letters into the dead_letters table"
        );
        loop {
            let delivery = tokio::select! {
                next = consumer.next() => match next {
                    Some(Ok(d)) => d,
                    Some(Err(e)) => return Err(e),
                    None => return Ok(()),
                },
                _ = shutdown.wait() => return Ok(()),
            };
            // Unacked on shutdown: the broker keeps it for the next worker.
            if self.store(&delivery, shutdown).await {
                if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                    // Redelivered later; its fingerprint makes that a no-op.
                    warn!(error = %e, "dead letter stored but not acked");
                }
            } else {
                return Ok(());
            }
        }
    }

    /// Stores the delivery, waiting out database failures; false only on
    /// shutdown. The message is held meanwhile (never requeued, which on
    /// RabbitMQ 4.x would spend its delivery limit).
    async fn store(&self, delivery: &Delivery, shutdown: &Shutdown) -> bool {
        let letter = DeadLetter::from_message(&delivery.properties, &delivery.data);
        let mut pauses = crate::backoff::holding().build();
        loop {
            let pause = pauses.next().unwrap_or(crate::backoff::HOLD_MAX_DELAY);
            match insert(&self.pool, &letter).await {
                Ok(fresh) => {
                    if fresh {
                        metrics::counter!(m::DEAD_LETTERS_STORED_TOTAL).increment(1);
                    }
                    debug!(event_id = %letter.event_id, fresh, "dead letter stored");
                    return true;
                }
                Err(e) => {
                    warn!(event_id = %letter.event_id, error = %e, retry_in_ms = pause.as_millis() as u64, "could not store a dead letter; holding it");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.wait() => return false,
            }
        }
    }
}
