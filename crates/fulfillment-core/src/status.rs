use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Status of an order.
///
/// The derived `Ord` is the precedence of the state machine (see the crate docs):
/// `AwaitingPayment < Canceled < Expired < PaymentFailed < Paid`, the same order as
/// [`rank`].
///
/// [`rank`]: OrderStatus::rank
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    AwaitingPayment,
    /// The PaymentIntent was canceled (contract 8.6): above `awaiting_payment`, so a
    /// late `processing` cannot reopen it; below `expired`, the more specific end of
    /// a Checkout Session whose expiry canceled its PaymentIntent.
    Canceled,
    Expired,
    PaymentFailed,
    Paid,
}

impl OrderStatus {
    /// Every status, lowest rank first.
    pub const ALL: [OrderStatus; 5] = [
        OrderStatus::AwaitingPayment,
        OrderStatus::Canceled,
        OrderStatus::Expired,
        OrderStatus::PaymentFailed,
        OrderStatus::Paid,
    ];

    /// Precedence; an order not seen yet has rank 0.
    pub const fn rank(self) -> u8 {
        match self {
            OrderStatus::AwaitingPayment => 1,
            OrderStatus::Canceled => 2,
            OrderStatus::Expired => 3,
            OrderStatus::PaymentFailed => 4,
            OrderStatus::Paid => 5,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            OrderStatus::AwaitingPayment => "awaiting_payment",
            OrderStatus::Canceled => "canceled",
            OrderStatus::Expired => "expired",
            OrderStatus::PaymentFailed => "payment_failed",
            OrderStatus::Paid => "paid",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = ParseStatusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrderStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| ParseStatusError::new("order status", s))
    }
}

/// A Checkout Session's `payment_status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Paid,
    /// Delayed payment methods complete the session before the money arrives.
    Unpaid,
    /// Setup mode, or a total of zero.
    NoPaymentRequired,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 3] = [
        PaymentStatus::Paid,
        PaymentStatus::Unpaid,
        PaymentStatus::NoPaymentRequired,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Paid => "paid",
            PaymentStatus::Unpaid => "unpaid",
            PaymentStatus::NoPaymentRequired => "no_payment_required",
        }
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PaymentStatus {
    type Err = ParseStatusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PaymentStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| ParseStatusError::new("payment status", s))
    }
}

/// A string that names no known [`OrderStatus`] / [`PaymentStatus`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct ParseStatusError {
    pub kind: &'static str,
    pub value: String,
}

impl ParseStatusError {
    pub(crate) fn new(kind: &'static str, value: &str) -> Self {
        ParseStatusError {
            kind,
            value: value.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ord_is_rank() {
        for a in OrderStatus::ALL {
            for b in OrderStatus::ALL {
                assert_eq!(a.cmp(&b), a.rank().cmp(&b.rank()), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn order_status_strings_round_trip() {
        for status in OrderStatus::ALL {
            assert_eq!(status.as_str().parse::<OrderStatus>(), Ok(status));
            assert_eq!(status.to_string(), status.as_str());
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert_eq!(serde_json::from_str::<OrderStatus>(&json).unwrap(), status);
        }
        assert!("Paid".parse::<OrderStatus>().is_err());
        assert!("".parse::<OrderStatus>().is_err());
    }

    #[test]
    fn payment_status_strings_round_trip() {
        for status in PaymentStatus::ALL {
            assert_eq!(status.as_str().parse::<PaymentStatus>(), Ok(status));
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(
                serde_json::from_str::<PaymentStatus>(&json).unwrap(),
                status
            );
        }
        let err = "refunded".parse::<PaymentStatus>().unwrap_err();
        assert_eq!(err.to_string(), "unknown payment status \"refunded\"");
    }
}
