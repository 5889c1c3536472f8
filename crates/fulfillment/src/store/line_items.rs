//! The worker's half of line items on `order.paid`: in the event's own
//! transaction, the message is written held back (`outbox.awaiting_line_items`)
//! and a job is opened for it. Nothing here calls Stripe: the enrichment job
//! (`crate::line_items`) does, later, outside every transaction and lock.

use fulfillment_core::OrderMessage;

use super::Writes;

/// The channel the enrichment job listens on for new jobs.
pub const CHANNEL: &str = "line_items";

/// Whether `order.paid` of a Checkout order waits for its line items before
/// it is published: on exactly when the process has a Stripe client
/// (`STRIPE_API_KEY`), off otherwise, so without a key every message is
/// published as before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineItems {
    Fetch,
    Off,
}

impl LineItems {
    /// The Checkout Session whose line items `message` waits for, if it
    /// waits (the rule is `OrderMessage::line_items_session`).
    pub fn session_of(self, message: &OrderMessage) -> Option<&str> {
        match self {
            LineItems::Fetch => message.line_items_session(),
            LineItems::Off => None,
        }
    }

    pub fn waits(self, message: &OrderMessage) -> bool {
        self.session_of(message).is_some()
    }
}

/// Opens a job for every message of the batch that waits, and wakes the
/// enrichment job once the transaction commits. An order is paid once, so a
/// job that exists already (a redelivered batch) is left alone.
pub(super) fn write_jobs(w: &mut Writes, messages: &[OrderMessage], line_items: LineItems) {
    let (mut orders, mut message_ids, mut sessions) = (Vec::new(), Vec::new(), Vec::new());
    for message in messages {
        if let Some(session) = line_items.session_of(message) {
            orders.push(message.order_id.as_str());
            message_ids.push(message.message_id.as_str());
            sessions.push(session);
        }
    }
    if orders.is_empty() {
        return;
    }
    w.part(
        "INSERT INTO line_item_jobs (order_id, message_id, checkout_session_id) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING",
    )
    .bind(orders)
    .bind(message_ids)
    .bind(sessions);
    w.notify(CHANNEL);
}
