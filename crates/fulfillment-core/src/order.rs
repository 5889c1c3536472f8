use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::custom::CustomPaymentReport;
use crate::event::{EventKind, OrderEvent, PaymentIntentFacts, SessionFacts};
use crate::lifecycle::{self, Lifecycle, Note};
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
    /// Failed attempts, refunds and disputes: facts beside the status (contract 8.6).
    pub lifecycle: Lifecycle,
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
            lifecycle: Lifecycle::default(),
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

/// Result of [`apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub order: Order,
    /// `None` for an event that moves no status (a refund, a dispute).
    pub decision: Option<Decision>,
    /// The status message: `Some` iff `decision` is a transition.
    pub message: Option<OrderMessage>,
    /// What the event newly recorded beside the status, with its message.
    pub note: Option<(Note, OrderMessage)>,
}

impl Applied {
    pub fn transition(&self) -> Option<Transition> {
        self.decision.as_ref().and_then(Decision::transition)
    }

    /// Every message the event caused: the status one first.
    pub fn messages(&self) -> impl Iterator<Item = &OrderMessage> {
        self.message.iter().chain(self.note.iter().map(|(_, m)| m))
    }
}

/// Applies `event` to `order` (`None` = not seen yet; `order_id` then names the new
/// order, otherwise it is ignored in favour of the row's own id).
///
/// Details are merged even when the event is stale, by the rule in the crate docs;
/// lifecycle facts are recorded by [`lifecycle::record`]. `now` becomes the messages'
/// `occurred_at`. `None` when the event moves no status and the order is unknown: a
/// refund or a dispute cannot create an order (the ledger parks it instead).
pub fn apply(
    order: Option<Order>,
    order_id: &str,
    event: &OrderEvent,
    now: OffsetDateTime,
) -> Option<Applied> {
    let before = order.as_ref().map(|order| order.status);
    let (mut order, decision) = match (order, event.kind.target_status()) {
        (None, None) => return None,
        (Some(order), None) => (order, None),
        (order, Some(target)) => {
            let decision = decide(before, target);
            (
                order.unwrap_or_else(|| Order::new(order_id, target)),
                Some(decision),
            )
        }
    };
    let transition = decision.as_ref().and_then(Decision::transition);
    merge_details(&mut order, &event.kind, transition.is_some());
    fill(&mut order.account, event.account.as_ref());
    if let Some(decision) = &decision {
        order.status = decision.status();
    }
    let message =
        transition.map(|transition| OrderMessage::for_transition(&order, transition, event, now));
    let note = lifecycle::record(&mut order.lifecycle, event).map(|note| {
        let message = OrderMessage::for_note(&order, before, &note, event, now);
        (note, message)
    });
    Some(Applied {
        order,
        decision,
        message,
        note,
    })
}

fn merge_details(order: &mut Order, kind: &EventKind, is_transition: bool) {
    if let Some(intent) = kind.payment_intent() {
        merge_payment_intent(order, intent);
    } else if let Some(session) = kind.session() {
        merge_session(order, session, is_transition);
    } else if let Some(report) = kind.custom_payment() {
        merge_custom_payment(order, report);
    }
    // Charges and disputes are about money moving back, not the order's details.
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
