//! The rest of the payment lifecycle (contract 8.6): failed payment attempts,
//! refunds and disputes. These are *facts recorded beside* an order's status,
//! never a status of their own: `paid` is never left, a refunded or disputed
//! order stays `paid`, and downstream learns about them from their own
//! messages (`order.payment_attempt_failed`, `order.refunded`,
//! `order.disputed`, `order.dispute_closed`).
//!
//! Like the status precedence, every rule here is a function of the *set* of
//! events received, so delivery order and duplication cannot change the end
//! state (the property tests check it):
//!
//! - a failed attempt is counted once per event (dedup by event id does the
//!   rest); the one shown as the last is the latest by (`created`, event id);
//! - a refund only grows: the order keeps the largest `amount_refunded`
//!   (then `full` over `partial`), and an `order.refunded` is sent each time
//!   it grows, so at most once per distinct amount, never for an amount
//!   smaller than one already announced;
//! - a dispute only moves up `open < won < lost` (Stripe closes a dispute
//!   once; the order between `won` and `lost` only makes the rule total), so
//!   a `created` arriving after its `closed` reopens nothing; details a later
//!   event lacks are filled from an earlier one.
//!
//! Parsing of the new event types is in [`parse`]; the rules in [`record`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::event::PaymentIntentFacts;
use crate::status::ParseStatusError;

pub(crate) mod parse;
mod record;

pub use record::{Note, record};

/// Why a payment attempt failed: `last_payment_error` of the PaymentIntent.
/// Every member may be null (Stripe leaves them out for some failures).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentError {
    /// `last_payment_error.code`, e.g. `card_declined`.
    pub failure_code: Option<String>,
    /// `last_payment_error.decline_code`, e.g. `insufficient_funds`.
    pub decline_code: Option<String>,
    /// `last_payment_error.message`, meant for the customer.
    pub failure_message: Option<String>,
}

/// A `payment_intent.payment_failed` event: the PaymentIntent and why this
/// attempt failed. The PaymentIntent can still succeed with another attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedAttempt {
    pub intent: PaymentIntentFacts,
    pub error: PaymentError,
}

/// The latest failed attempt of an order, by (event `created`, event id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastFailure {
    pub event_id: String,
    pub created: i64,
    pub payment_intent_id: String,
    pub error: PaymentError,
}

/// How much of the charge went back: `full` once `amount_refunded` covers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Partial,
    Full,
}

/// What a `charge.refunded` event says: `amount_refunded` is the charge's
/// running total, not this one refund.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundFacts {
    pub charge_id: String,
    pub payment_intent_id: String,
    pub amount_refunded: i64,
    pub refund_status: RefundStatus,
    pub currency: Option<String>,
    pub livemode: bool,
}

/// An order's refund so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub amount_refunded: i64,
    pub status: RefundStatus,
}

/// Where a dispute stands. Stripe's own statuses are more detailed; what an
/// order needs is whether a person has to act (`open`) and how it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisputeStatus {
    Open,
    Won,
    Lost,
}

/// What a `charge.dispute.*` event says about one dispute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisputeFacts {
    pub dispute_id: String,
    pub payment_intent_id: String,
    pub charge_id: Option<String>,
    pub status: DisputeStatus,
    /// Stripe's `reason`, e.g. `fraudulent`, `product_not_received`.
    pub reason: Option<String>,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    /// `evidence_details.due_by` (Unix seconds): Stripe's deadline for evidence.
    pub evidence_due_by: Option<i64>,
    pub livemode: bool,
}

/// One dispute of an order, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispute {
    pub status: DisputeStatus,
    pub charge_id: Option<String>,
    pub reason: Option<String>,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub evidence_due_by: Option<i64>,
}

/// The facts an order keeps beside its status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// `payment_intent.payment_failed` events applied to the order.
    pub failed_attempts: u32,
    pub last_failure: Option<LastFailure>,
    pub refund: Option<Refund>,
    /// By dispute id.
    pub disputes: BTreeMap<String, Dispute>,
}

macro_rules! string_enum {
    ($ty:ident, $kind:literal, { $($variant:ident => $text:literal),* $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text,)*
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = ParseStatusError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $ty::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| ParseStatusError::new($kind, s))
            }
        }
    };
}

string_enum!(RefundStatus, "refund status", { Partial => "partial", Full => "full" });
string_enum!(DisputeStatus, "dispute status", { Open => "open", Won => "won", Lost => "lost" });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_like_serde() {
        for status in RefundStatus::ALL {
            assert_eq!(status.as_str().parse::<RefundStatus>(), Ok(*status));
            let json = serde_json::to_string(status).unwrap();
            assert_eq!(json, format!("\"{status}\""));
        }
        for status in DisputeStatus::ALL {
            assert_eq!(status.as_str().parse::<DisputeStatus>(), Ok(*status));
            let json = serde_json::to_string(status).unwrap();
            assert_eq!(json, format!("\"{status}\""));
        }
        assert!("needs_response".parse::<DisputeStatus>().is_err());
    }

    #[test]
    fn precedence() {
        assert!(RefundStatus::Partial < RefundStatus::Full);
        assert!(DisputeStatus::Open < DisputeStatus::Won);
        assert!(DisputeStatus::Won < DisputeStatus::Lost);
    }
}
