//! The rules for recording lifecycle facts on an order (see the module docs
//! of [`crate::lifecycle`] for why each is order-independent).

use super::{
    Dispute, DisputeFacts, FailedAttempt, LastFailure, Lifecycle, PaymentError, Refund, RefundFacts,
};
use crate::event::{EventKind, OrderEvent};

/// What an event newly recorded beside the status; each one is announced by
/// one downstream message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// One more failed attempt (one per event).
    AttemptFailed {
        payment_intent_id: String,
        error: PaymentError,
    },
    /// The refunded amount grew to this.
    Refunded(Refund),
    /// A dispute is new, or moved up to `dispute.status`.
    Dispute {
        dispute_id: String,
        dispute: Dispute,
    },
}

/// Records what `event` says beside the status, if anything; `Some` only when
/// something new was learnt (a stale refund or dispute event may still fill
/// details, but says nothing new).
pub fn record(lifecycle: &mut Lifecycle, event: &OrderEvent) -> Option<Note> {
    match &event.kind {
        EventKind::PaymentIntentPaymentFailed(attempt) => Some(failed(lifecycle, event, attempt)),
        EventKind::ChargeRefunded(refund) => refunded(lifecycle, refund),
        EventKind::ChargeDisputeCreated(dispute) | EventKind::ChargeDisputeClosed(dispute) => {
            disputed(lifecycle, dispute)
        }
        _ => None,
    }
}

fn failed(lifecycle: &mut Lifecycle, event: &OrderEvent, attempt: &FailedAttempt) -> Note {
    lifecycle.failed_attempts = lifecycle.failed_attempts.saturating_add(1);
    let candidate = LastFailure {
        event_id: event.id.clone(),
        created: event.created,
        payment_intent_id: attempt.intent.payment_intent_id.clone(),
        error: attempt.error.clone(),
    };
    // The latest by (created, id): `created` has one-second resolution, so
    // the id breaks ties, and the choice does not depend on arrival order.
    let later =
        |old: &LastFailure| (candidate.created, &candidate.event_id) > (old.created, &old.event_id);
    if lifecycle.last_failure.as_ref().is_none_or(later) {
        lifecycle.last_failure = Some(candidate);
    }
    Note::AttemptFailed {
        payment_intent_id: attempt.intent.payment_intent_id.clone(),
        error: attempt.error.clone(),
    }
}

fn refunded(lifecycle: &mut Lifecycle, facts: &RefundFacts) -> Option<Note> {
    // A charge.refunded with nothing refunded says nothing about money.
    if facts.amount_refunded <= 0 {
        return None;
    }
    let refund = Refund {
        amount_refunded: facts.amount_refunded,
        status: facts.refund_status,
    };
    let key = |r: &Refund| (r.amount_refunded, r.status);
    let grows = lifecycle
        .refund
        .as_ref()
        .is_none_or(|old| key(&refund) > key(old));
    grows.then(|| {
        lifecycle.refund = Some(refund);
        Note::Refunded(refund)
    })
}

fn disputed(lifecycle: &mut Lifecycle, facts: &DisputeFacts) -> Option<Note> {
    let recorded = match lifecycle.disputes.get_mut(&facts.dispute_id) {
        None => {
            let dispute = Dispute {
                status: facts.status,
                charge_id: facts.charge_id.clone(),
                reason: facts.reason.clone(),
                amount: facts.amount,
                currency: facts.currency.clone(),
                evidence_due_by: facts.evidence_due_by,
            };
            lifecycle
                .disputes
                .insert(facts.dispute_id.clone(), dispute.clone());
            dispute
        }
        Some(dispute) if facts.status > dispute.status => {
            // The event that moves the dispute up speaks for it; what it
            // leaves out is kept.
            dispute.status = facts.status;
            overwrite(&mut dispute.charge_id, &facts.charge_id);
            overwrite(&mut dispute.reason, &facts.reason);
            overwrite(&mut dispute.amount, &facts.amount);
            overwrite(&mut dispute.currency, &facts.currency);
            overwrite(&mut dispute.evidence_due_by, &facts.evidence_due_by);
            dispute.clone()
        }
        Some(dispute) => {
            // Stale (a `created` after its `closed`, say): reopens nothing,
            // only fills what is still unknown.
            fill(&mut dispute.charge_id, &facts.charge_id);
            fill(&mut dispute.reason, &facts.reason);
            fill(&mut dispute.amount, &facts.amount);
            fill(&mut dispute.currency, &facts.currency);
            fill(&mut dispute.evidence_due_by, &facts.evidence_due_by);
            return None;
        }
    };
    Some(Note::Dispute {
        dispute_id: facts.dispute_id.clone(),
        dispute: recorded,
    })
}

fn overwrite<T: Clone>(field: &mut Option<T>, value: &Option<T>) {
    if value.is_some() {
        field.clone_from(value);
    }
}

fn fill<T: Clone>(field: &mut Option<T>, value: &Option<T>) {
    if field.is_none() {
        field.clone_from(value);
    }
}
