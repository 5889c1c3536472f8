//! Sans-IO core of the Stripe fulfillment worker.
//!
//! Verified Stripe events arrive in any order, duplicated, concurrently. The worker
//! deduplicates them by event id, loads the order row, calls [`apply`], writes the new
//! [`Order`] back, records the [`Transition`] and puts the [`OrderMessage`] into the
//! outbox, all in one transaction. This crate holds everything in that loop that is not
//! IO: [`parse_envelope`] / [`parse_event`], the state machine ([`decide`], [`apply`]),
//! the batch rules ([`Ledger`]: dedup, order resolution through PaymentIntent links,
//! parking and releasing, outcomes) with the plan of what a batch loads and locks
//! ([`BatchPlan`]), and a reference [`Model`] of the whole worker, an in-memory driver
//! of the same [`Ledger`] that tests use as an oracle. The store in the `fulfillment`
//! crate is the other driver: it loads, calls [`Ledger::apply`], and writes.
//!
//! # Why a precedence instead of a transition table
//!
//! Stripe guarantees neither order nor exactly-once delivery, so the end state must be a
//! function of the *set* of events received, not of their sequence. Each status has a
//! rank and an event only moves an order *up*:
//!
//! | status             | rank |
//! |--------------------|------|
//! | (order not seen)   | 0    |
//! | `awaiting_payment` | 1    |
//! | `canceled`         | 2    |
//! | `expired`          | 3    |
//! | `payment_failed`   | 4    |
//! | `paid`             | 5    |
//!
//! The status is the maximum of the events' target statuses, which is commutative,
//! associative and idempotent: any permutation with any duplication ends in the same
//! state. The ranks encode the business rules:
//!
//! - `paid` is highest, so it is terminal: nothing (a late `expired`, a stray failure)
//!   takes a paid order away from fulfillment, and `expired` never overrides `paid`.
//! - `awaiting_payment` is lowest: a `checkout.session.completed` with `unpaid` that is
//!   delivered late (after the failure or expiry it preceded) must not resurrect the
//!   order as awaiting payment.
//! - `payment_failed` outranks `expired`: a failed delayed payment is the more
//!   specific outcome to report.
//! - `canceled` (a PaymentIntent canceled, contract 8.6) sits just above
//!   `awaiting_payment`, so a late `payment_intent.processing` cannot reopen it,
//!   and below `expired`: a Checkout Session's expiry cancels its PaymentIntent,
//!   and "expired" is what the customer saw.
//!
//! A declined attempt (`payment_intent.payment_failed`) is not an end: the
//! PaymentIntent can still succeed, so it targets only `awaiting_payment`.
//! Refunds and disputes target no status at all: they are facts recorded beside
//! it (see [`Lifecycle`]), with the same order-independence, and their own
//! messages.
//!
//! Because the rank strictly increases on every transition, each status is entered at
//! most once per order. So `"{order_id}/{status}"` is a stable, unique message id
//! ([`OrderMessage::message_id`]; an order id over 200 bytes is replaced by a prefix
//! and its SHA-256, never cut); a `UNIQUE` constraint on it doubles as a guard, and
//! there is exactly one `order.paid` per paid order, ever.
//!
//! One consequence, by design: *intermediate* messages depend on arrival order. If the
//! `paid` event arrives first, no `order.awaiting_payment` is sent afterwards — telling
//! downstream "awaiting payment" after "paid" would be wrong. The message for the end
//! status and `order.paid` are order-independent.
//!
//! # Merging order details
//!
//! Details (amount, currency, email, ids) are merged into the order on every event,
//! stale or not, by a rule that needs no bookkeeping beyond the order row:
//!
//! - A Checkout Session event overwrites each detail for which it carries a value
//!   (`null` never erases): the session is what the customer saw at checkout.
//! - A PaymentIntent event only fills details that are still unknown (e.g. when it
//!   arrives before its session); so does a custom-payment report (its amount,
//!   currency and customer email), which has no session to defer to.
//! - `livemode` is sticky: true once any event says so.
//! - When an order has several Checkout Sessions (a retried checkout), a *stale* event
//!   of a session other than the recorded one changes nothing, so an abandoned session
//!   cannot repaint an order paid through another one.
//!
//! Since all events of one Stripe object agree on a non-null field, the merged details
//! of an order with one Checkout Session and one PaymentIntent are order-independent too
//! (the property tests check this). With several sessions per order they follow the
//! rule above, which may depend on arrival order; statuses and messages never do.
//! The same holds for an order paid both through Stripe and by a custom payment (an
//! anomaly, see below) when the two disagree on a detail: the first to arrive fills it.
//!
//! # Custom payments and paying twice
//!
//! A custom-payment report ([`custom`]) is one more event: `guaranteed` targets
//! `paid` and `failed` targets `payment_failed`, under the same precedence and the
//! same dedup (its event id is `custom_payment:{report id}`). The ledger also keeps,
//! per order, the set of distinct payments that reached it ([`PaymentSource`]: Stripe,
//! or one custom report). A payment joining a non-empty set is an [`Anomaly`]
//! (`paid_twice`): the order stays paid, no second `order.paid` is sent, and a person
//! is told the customer may need a refund. The set is a union, so the number of
//! anomalies of an order (its payments minus one) does not depend on arrival order.

mod json;

pub mod custom;
mod envelope;
mod event;
mod ledger;
mod lifecycle;
pub mod line_items;
mod message;
mod model;
mod order;
mod payment;
mod plan;
pub mod reconcile;
pub mod record;
pub mod sample;
#[cfg(feature = "scenarios")]
pub mod scenario;
mod status;
pub mod upkeep;

pub use custom::{
    CUSTOM_PAYMENT_TYPE, CustomOutcome, CustomPaymentReport, ReportError, parse_custom_payment,
};
pub use envelope::{Envelope, EnvelopeError, parse_envelope};
pub use event::{
    EventKind, HANDLED_EVENT_TYPES, OrderEvent, ParseError, Parsed, PaymentIntentFacts,
    SessionFacts, parse_event,
};
pub use ledger::{Effects, Ledger, Outcome, ParkedEvent, Recorded, Report};
pub use lifecycle::{
    Dispute, DisputeFacts, DisputeStatus, FailedAttempt, LastFailure, Lifecycle, Note,
    PaymentError, Refund, RefundFacts, RefundStatus,
};
pub use line_items::LineItem;
pub use message::{
    AttemptDetail, Detail, DisputeDetail, MAX_MESSAGE_ID_BYTES, MessageType, OrderMessage,
    RefundDetail, VERBATIM_ORDER_ID_MAX,
};
pub use model::Model;
pub use order::{Applied, Decision, Order, Transition, apply, decide};
pub use payment::{
    Anomaly, AnomalyKind, NewPayment, ParseSourceError, PaymentMethod, PaymentSource,
};
pub use plan::{BatchPlan, LockKey, fresh};
pub use status::{OrderStatus, ParseStatusError, PaymentStatus};
