//! Reading the lifecycle members of `data.object`: a PaymentIntent's
//! `last_payment_error`, a Charge (`charge.refunded`) and a Dispute
//! (`charge.dispute.*`). Same rules as the rest of the parser
//! (`crate::event`): absent and `null` are alike, a present member of the
//! wrong type is an error naming its path.

use serde_json::value::RawValue;

use super::{DisputeFacts, DisputeStatus, PaymentError, RefundFacts, RefundStatus};
use crate::event::{
    EventKind, FieldError, Kind, ObjectMembers, expandable_id, expect_kind, int, invalid, object,
    object_livemode, owned, raw_str, required_str, str,
};
use crate::json::{self, Raw, members};

members! {
    struct ErrorMembers<'a> {
        code: Raw<'a> = "code",
        decline_code: Raw<'a> = "decline_code",
        message: Raw<'a> = "message",
    }
}

members! {
    struct EvidenceDetailsMembers<'a> {
        due_by: Raw<'a> = "due_by",
    }
}

/// `last_payment_error` of a failed PaymentIntent; every part may be missing.
pub(crate) fn payment_error(obj: ObjectMembers<'_>) -> Result<PaymentError, FieldError> {
    const PATH: &str = "data.object.last_payment_error";
    let Some(error) = object::<ErrorMembers>(obj.last_payment_error, PATH)? else {
        return Ok(PaymentError::default());
    };
    Ok(PaymentError {
        failure_code: owned(str(error.code, "data.object.last_payment_error.code")?),
        decline_code: owned(str(
            error.decline_code,
            "data.object.last_payment_error.decline_code",
        )?),
        failure_message: owned(str(
            error.message,
            "data.object.last_payment_error.message",
        )?),
    })
}

/// A charge without a PaymentIntent was made some other way (the legacy
/// Charges API, another integration on the account): no order of ours.
const CHARGE_WITHOUT_INTENT: &str =
    "the charge has no payment_intent: not made through a PaymentIntent, so no order can own it";
const DISPUTE_WITHOUT_INTENT: &str = "the dispute has no payment_intent: its charge was not made through a PaymentIntent, so no order can own it";

/// A `charge.refunded` event's Charge.
pub(crate) fn refund(obj: ObjectMembers<'_>, livemode: Option<bool>) -> Result<Kind, FieldError> {
    expect_kind(obj.object, "charge")?;
    let charge_id = required_str(obj.id, "data.object.id")?.into_owned();
    let amount_refunded =
        int(obj.amount_refunded, "data.object.amount_refunded")?.ok_or(FieldError::Missing {
            field: "data.object.amount_refunded",
        })?;
    if amount_refunded < 0 {
        return Err(invalid(
            "data.object.amount_refunded",
            "a non-negative integer",
        ));
    }
    // What could be refunded: what was captured, else the charge's amount.
    let refundable = int(obj.amount_captured, "data.object.amount_captured")?
        .or(int(obj.amount, "data.object.amount")?);
    let fully = json::boolean(obj.refunded)
        .map_err(|_| invalid("data.object.refunded", "a boolean or null"))?;
    let currency = owned(str(obj.currency, "data.object.currency")?);
    let livemode = object_livemode(obj.livemode, livemode)?;
    let Some(payment_intent_id) = payment_intent(obj.payment_intent)? else {
        return Ok(Kind::NotOurs(CHARGE_WITHOUT_INTENT));
    };
    // Stripe sets `refunded` once the whole charge went back; an older payload
    // without it is judged by the amounts.
    let full = fully.unwrap_or_else(|| refundable.is_some_and(|a| a > 0 && amount_refunded >= a));
    Ok(Kind::Event(EventKind::ChargeRefunded(RefundFacts {
        charge_id,
        payment_intent_id,
        amount_refunded,
        refund_status: if full {
            RefundStatus::Full
        } else {
            RefundStatus::Partial
        },
        currency,
        livemode,
    })))
}

/// A `charge.dispute.created` (`closed` false) or `charge.dispute.closed`
/// event's Dispute.
pub(crate) fn dispute(
    obj: ObjectMembers<'_>,
    livemode: Option<bool>,
    closed: bool,
) -> Result<Kind, FieldError> {
    expect_kind(obj.object, "dispute")?;
    let dispute_id = required_str(obj.id, "data.object.id")?.into_owned();
    let stripe_status = raw_str(obj.status, "data.object.status")?;
    let status = if closed {
        closed_status(stripe_status.as_deref())?
    } else {
        // Whatever Stripe calls it while it runs (`needs_response`,
        // `warning_needs_response`, ...), a new dispute is open.
        DisputeStatus::Open
    };
    let evidence_due_by = match object::<EvidenceDetailsMembers>(
        obj.evidence_details,
        "data.object.evidence_details",
    )? {
        Some(details) => int(details.due_by, "data.object.evidence_details.due_by")?,
        None => None,
    };
    let charge_id = expandable_id(obj.charge, "data.object.charge", "data.object.charge.id")?;
    let reason = owned(str(obj.reason, "data.object.reason")?);
    let amount = int(obj.amount, "data.object.amount")?;
    let currency = owned(str(obj.currency, "data.object.currency")?);
    let livemode = object_livemode(obj.livemode, livemode)?;
    let Some(payment_intent_id) = payment_intent(obj.payment_intent)? else {
        return Ok(Kind::NotOurs(DISPUTE_WITHOUT_INTENT));
    };
    let facts = DisputeFacts {
        dispute_id,
        payment_intent_id,
        charge_id,
        status,
        reason,
        amount,
        currency,
        evidence_due_by,
        livemode,
    };
    Ok(Kind::Event(if closed {
        EventKind::ChargeDisputeClosed(facts)
    } else {
        EventKind::ChargeDisputeCreated(facts)
    }))
}

/// How a closed dispute ended, from Stripe's status. `warning_closed` (an
/// inquiry that never became a chargeback) and `prevented` keep the money,
/// like `won`; `charge_refunded` (older API versions: closed by refunding)
/// does not, like `lost`.
fn closed_status(stripe: Option<&str>) -> Result<DisputeStatus, FieldError> {
    const FIELD: &str = "data.object.status";
    match stripe {
        Some("won" | "warning_closed" | "prevented") => Ok(DisputeStatus::Won),
        Some("lost" | "charge_refunded") => Ok(DisputeStatus::Lost),
        Some(_) => Err(invalid(
            FIELD,
            "a closed dispute's status: won, lost, warning_closed, prevented or charge_refunded",
        )),
        None => Err(FieldError::Missing { field: FIELD }),
    }
}

fn payment_intent(raw: Option<&RawValue>) -> Result<Option<String>, FieldError> {
    expandable_id(
        raw,
        "data.object.payment_intent",
        "data.object.payment_intent.id",
    )
}
