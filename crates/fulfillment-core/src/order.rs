use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::custom::CustomPaymentReport;
use crate::event::{EventKind, OrderEvent, PaymentIntentFacts, SessionFacts};
use crate::message::OrderMessage;
use crate::status::OrderStatus;

/// The order row as the state machine sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub status: OrderStatus,
    pub checkout_session_id: Option<String>,
    pub payment_intent_id: Option<String>,
    pub amount_total: Option<i64>,
    pub currency: Option<String>,
    pub customer_email: Option<String>,
    pub livemode: bool,
    /// The Connect account the order's Stripe events belong to; the first
    /// one known stays (one order's events all come from one account).
    pub account: Option<String>,
}

impl Order {
    /// An order with no details known yet.
    pub fn new(order_id: impl Into<String>, status: OrderStatus) -> Self {
        Order {
            order_id: order_id.into(),
            status,
            checkout_session_id: None,
            payment_intent_id: None,
            amount_total: None,
            currency: None,
            customer_email: None,
            livemode: false,
            account: None,
        }
    }
}

/// A status change; `from` is `None` when the order is new.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub from: Option<OrderStatus>,
    pub to: OrderStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Transition(Transition),
    /// The target does not outrank the current status: no status change (details may
    /// still be merged).
    Stale {
        current: OrderStatus,
        target: OrderStatus,
    },
}

impl Decision {
    pub fn transition(&self) -> Option<Transition> {
        match self {
            Decision::Transition(transition) => Some(*transition),
            Decision::Stale { .. } => None,
        }
    }

    /// The status once the decision is applied.
    pub fn status(&self) -> OrderStatus {
        match self {
            Decision::Transition(transition) => transition.to,
            Decision::Stale { current, .. } => *current,
        }
    }
}

/// The next state of an order in `current` (`None` = not seen yet) for an event that
/// targets `target`: a transition only if the target ranks strictly higher.
pub fn decide(current: Option<OrderStatus>, target: OrderStatus) -> Decision {
    match current {
        Some(current) if target <= current => Decision::Stale { current, target },
        from => Decision::Transition(Transition { from, to: target }),
    }
}

/// Result of [`apply`]; `message` is `Some` iff `decision` is a transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub order: Order,
    pub decision: Decision,
    pub message: Option<OrderMessage>,
}

/// Applies `event` to `order` (`None` = not seen yet; `order_id` then names the new
/// order, otherwise it is ignored in favour of the row's own id).
///
/// Details are merged even when the event is stale, by the rule in the crate docs.
/// `now` becomes the message's `occurred_at`.
pub fn apply(
    order: Option<Order>,
    order_id: &str,
    event: &OrderEvent,
    now: OffsetDateTime,
) -> Applied {
    let target = event.kind.target_status();
    let decision = decide(order.as_ref().map(|order| order.status), target);
    let mut order = order.unwrap_or_else(|| Order::new(order_id, target));
    merge_details(&mut order, &event.kind, decision.transition().is_some());
    fill(&mut order.account, event.account.as_ref());
    order.status = decision.status();
    let message = decision
        .transition()
        .map(|transition| OrderMessage::for_transition(&order, transition, event, now));
    Applied {
        order,
        decision,
        message,
    }
}

fn merge_details(order: &mut Order, kind: &EventKind, is_transition: bool) {
    match kind {
        EventKind::PaymentIntentSucceeded(intent) => merge_payment_intent(order, intent),
        EventKind::CustomPayment(report) => merge_custom_payment(order, report),
        _ => {
            if let Some(session) = kind.session() {
                merge_session(order, session, is_transition);
            }
        }
    }
}

fn merge_session(order: &mut Order, session: &SessionFacts, is_transition: bool) {
    order.livemode |= session.livemode;
    let same_session = order
        .checkout_session_id
        .as_deref()
        .is_none_or(|id| id == session.session_id);
    // A stale event of another (abandoned) session must not repaint the order.
    if !(same_session || is_transition) {
        return;
    }
    order.checkout_session_id = Some(session.session_id.clone());
    overwrite(&mut order.payment_intent_id, &session.payment_intent_id);
    overwrite(&mut order.amount_total, &session.amount_total);
    overwrite(&mut order.currency, &session.currency);
    overwrite(&mut order.customer_email, &session.customer_email);
}

fn merge_payment_intent(order: &mut Order, intent: &PaymentIntentFacts) {
    order.livemode |= intent.livemode;
    fill(
        &mut order.payment_intent_id,
        Some(&intent.payment_intent_id),
    );
    fill(&mut order.amount_total, intent.amount.as_ref());
    fill(&mut order.currency, intent.currency.as_ref());
    fill(&mut order.customer_email, intent.receipt_email.as_ref());
}

/// A report fills only what no Stripe object told us: a session is what the
/// customer saw, and an order paid only off Stripe has nothing else.
fn merge_custom_payment(order: &mut Order, report: &CustomPaymentReport) {
    fill(&mut order.amount_total, Some(&report.amount));
    fill(&mut order.currency, Some(&report.currency));
    fill(&mut order.customer_email, report.customer_email.as_ref());
}

/// A known value replaces; `None` means "not in this payload", never "erase".
fn overwrite<T: Clone>(field: &mut Option<T>, value: &Option<T>) {
    if value.is_some() {
        field.clone_from(value);
    }
}

fn fill<T: Clone>(field: &mut Option<T>, value: Option<&T>) {
    if field.is_none() {
        *field = value.cloned();
    }
}
