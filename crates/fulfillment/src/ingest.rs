//! Putting a Stripe event on the bus: the one way an event enters the
//! pipeline, whether a webhook brought it (the receiver) or Stripe's Events
//! API did (`reconcile`). Exchange `stripe.events`, routing key = event
//! type, AMQP `message_id` = event id, persistent, JSON, `mandatory` for the
//! types we handle, confirmed by the broker. The worker's dedup by event id
//! then decides, whichever way the event came and however often.

use lapin::BasicProperties;
use lapin::types::ShortString;

use crate::broker::{Outgoing, PublishError, Publisher};
use crate::clock::unix_now;
use crate::topology::{EVENTS_EXCHANGE, is_handled};

/// AMQP short strings (message id, routing key) hold at most 255 bytes.
pub const MAX_AMQP_SHORT_STRING: usize = 255;

/// Publishes one event's body, byte for byte, and waits for the confirm.
/// An id or type too long for AMQP is refused before the broker is asked.
pub async fn publish_event(
    publisher: &Publisher,
    id: &str,
    event_type: &str,
    body: &[u8],
) -> Result<(), PublishError> {
    if id.len() > MAX_AMQP_SHORT_STRING || event_type.len() > MAX_AMQP_SHORT_STRING {
        return Err(PublishError::NameTooLong);
    }
    let properties = BasicProperties::default()
        .with_message_id(ShortString::from(id))
        .with_type(ShortString::from(event_type))
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(2)
        .with_timestamp(unix_now().max(0) as u64);
    let outgoing = Outgoing {
        exchange: EVENTS_EXCHANGE,
        routing_key: event_type,
        body,
        properties,
        // Types we handle must reach our queue; others are published for
        // whoever binds them, and may legitimately route nowhere.
        mandatory: is_handled(event_type),
    };
    publisher.publish(outgoing).await
}
