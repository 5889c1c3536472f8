//! Who paid an order: Stripe or a custom payment method, and what counts as
//! paying twice. The rule that records payments and raises anomalies is the
//! ledger's (`Ledger::apply`); these are its words.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One distinct payment of an order, as far as double payments go.
///
/// Every Stripe event that pays an order (a paid Checkout Session, an async
/// success, a `payment_intent.succeeded`) is the same source, [`Stripe`]: a
/// session and the `payment_intent.succeeded` of its PaymentIntent are one
/// payment, and Stripe's own events cannot always tell two PaymentIntents of
/// one order apart from one (a session payload may omit its PaymentIntent).
/// Each guaranteed custom report is a source of its own, named by its id
/// (duplicates of a report share the id and are deduplicated before this).
///
/// [`Stripe`]: PaymentSource::Stripe
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PaymentSource {
    Stripe,
    Custom { report_id: String },
}

impl PaymentSource {
    /// `stripe` or `custom:{report id}`: the `order_payments.source` column.
    pub fn key(&self) -> String {
        match self {
            PaymentSource::Stripe => "stripe".to_owned(),
            PaymentSource::Custom { report_id } => format!("custom:{report_id}"),
        }
    }
}

impl fmt::Display for PaymentSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// A string that is not a [`PaymentSource::key`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown payment source {0:?}")]
pub struct ParseSourceError(pub String);

impl FromStr for PaymentSource {
    type Err = ParseSourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("custom:") {
            _ if s == "stripe" => Ok(PaymentSource::Stripe),
            Some(id) if !id.is_empty() => Ok(PaymentSource::Custom {
                report_id: id.to_owned(),
            }),
            _ => Err(ParseSourceError(s.to_owned())),
        }
    }
}

/// How the payment behind a message was made, as downstream sees it
/// (contract 8.3): `{"kind":"stripe"}` or `{"kind":"custom","type":"cpmt_…",
/// "payment_reference":"…"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PaymentMethod {
    Stripe,
    Custom {
        #[serde(rename = "type")]
        method_type: String,
        payment_reference: String,
    },
}

/// What is wrong with an order beyond its status, for a person to look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnomalyKind {
    /// A second distinct payment reached a paid order: the customer may
    /// have paid twice and may need a refund.
    PaidTwice,
}

impl AnomalyKind {
    pub const ALL: [AnomalyKind; 1] = [AnomalyKind::PaidTwice];

    /// The metric's `kind` label and the `order_anomalies.kind` column.
    pub const fn label(self) -> &'static str {
        match self {
            AnomalyKind::PaidTwice => "paid_twice",
        }
    }
}

/// One anomaly, with the event that revealed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anomaly {
    pub order_id: String,
    pub kind: AnomalyKind,
    pub event_id: String,
    /// The payment that arrived.
    pub payment: PaymentSource,
    /// The payments the order had before it, in source order.
    pub earlier: Vec<PaymentSource>,
}

/// A payment recorded for an order, with the first event that showed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPayment {
    pub order_id: String,
    pub source: PaymentSource,
    pub event_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_keys_round_trip() {
        for source in [
            PaymentSource::Stripe,
            PaymentSource::Custom {
                report_id: "cpay_1".into(),
            },
            PaymentSource::Custom {
                report_id: "a:b/c".into(),
            },
        ] {
            assert_eq!(source.key().parse::<PaymentSource>(), Ok(source));
        }
        assert!("custom:".parse::<PaymentSource>().is_err());
        assert!("paypal".parse::<PaymentSource>().is_err());
    }

    #[test]
    fn payment_methods_serialise_as_the_contract_says() {
        assert_eq!(
            serde_json::to_string(&PaymentMethod::Stripe).unwrap(),
            r#"{"kind":"stripe"}"#
        );
        let custom = PaymentMethod::Custom {
            method_type: "cpmt_abc".into(),
            payment_reference: "psp_1".into(),
        };
        assert_eq!(
            serde_json::to_string(&custom).unwrap(),
            r#"{"kind":"custom","type":"cpmt_abc","payment_reference":"psp_1"}"#
        );
    }
}
