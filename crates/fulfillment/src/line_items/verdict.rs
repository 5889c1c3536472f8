//! What a fetch of line items came to (pure): the items, a retry, or a job
//! kept for a person. The rule, and why:
//!
//! - an answer: the items (an empty list too: it is what Stripe holds);
//! - anything waiting can fix is retried, with growing delays and never a
//!   last try (`fulfillment_core::line_items::retry_delay`): no answer, a
//!   timeout, 409, 429, 5xx (the client's own retries used up), and also a
//!   refused key (401) or a key without the permission (403): those are the
//!   process's configuration, not the order's, and once the key is replaced
//!   (and the process restarted) every waiting order goes out on its own;
//! - anything else is kept for a person (`held`): the session does not exist
//!   in the account we asked (404: another account or mode, a deleted
//!   session), a request Stripe calls invalid (400), an answer we cannot
//!   read. Asking again would get the same answer; the order's `order.paid`
//!   waits, visibly (`FulfillmentLineItemsHeld`, `orders show`), until a
//!   person has fixed the cause and runs `orders retry-line-items`.

use fulfillment_core::LineItem;

/// What to do with a job after one fetch.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Stripe's id of each line, and the line as `order.paid` carries it.
    Fetched(Vec<(String, LineItem)>),
    Retry(String),
    Hold(String),
}

pub fn judge(fetched: Result<Vec<stripe_api::LineItem>, stripe_api::Error>) -> Verdict {
    let error = match fetched {
        Ok(items) => return Verdict::Fetched(items.into_iter().map(line).collect()),
        Err(e) => e,
    };
    if let stripe_api::Error::Unauthorized { setting } = error {
        return Verdict::Retry(format!(
            "Stripe refused the API key ({setting}); retried until it is replaced and the process restarted"
        ));
    }
    match error.api().map(|api| api.status) {
        // Stripe's message for a 403 quotes the key's end: not repeated.
        Some(403) => Verdict::Retry(
            "403: the API key lacks a permission (Checkout Sessions: read); retried until the key is fixed".into(),
        ),
        Some(404) => Verdict::Hold(format!(
            "Stripe has no such Checkout Session in the account asked: {error}"
        )),
        _ if error.is_transient() => Verdict::Retry(error.to_string()),
        _ => Verdict::Hold(error.to_string()),
    }
}

/// A Stripe line item as `order.paid` carries it.
fn line(item: stripe_api::LineItem) -> (String, LineItem) {
    let (price_id, product_id) = match item.price {
        Some(price) => (Some(price.id), price.product),
        None => (None, None),
    };
    let line = LineItem {
        price_id,
        product_id,
        description: item.description,
        quantity: item.quantity,
        amount_total: item.amount_total,
        currency: item.currency,
    };
    (item.id, line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use stripe_api::{ApiError, Error};

    fn api(status: u16, should_retry: Option<bool>) -> Error {
        Error::Api(Box::new(ApiError {
            status,
            should_retry,
            message: Some("The provided key 'rk_test_****1234' lacks a permission".into()),
            ..ApiError::default()
        }))
    }

    fn is_retry(v: &Verdict) -> bool {
        matches!(v, Verdict::Retry(_))
    }

    fn is_hold(v: &Verdict) -> bool {
        matches!(v, Verdict::Hold(_))
    }

    #[test]
    fn what_waiting_can_fix_is_retried() {
        for e in [
            Error::Connection("refused".into()),
            Error::Timeout(Duration::from_secs(30)),
            api(500, None),
            api(503, None),
            api(429, None),
            api(409, None),
            api(400, Some(true)),
            Error::Unauthorized {
                setting: "STRIPE_API_KEY",
            },
            api(403, None),
        ] {
            assert!(is_retry(&judge(Err(e))));
        }
    }

    #[test]
    fn what_waiting_cannot_fix_is_held() {
        for e in [
            api(404, None),
            api(400, None),
            api(402, None),
            api(500, Some(false)),
            Error::Decode("not JSON".into()),
            Error::Invalid("id too long".into()),
        ] {
            assert!(is_hold(&judge(Err(e))));
        }
    }

    #[test]
    fn a_refused_key_is_never_quoted() {
        let Verdict::Retry(why) = judge(Err(api(403, None))) else {
            panic!("retried");
        };
        assert!(!why.contains("rk_test"), "{why}");
    }

    #[test]
    fn lines_keep_what_a_warehouse_needs() {
        let item: stripe_api::LineItem = serde_json::from_str(
            r#"{"id":"li_1","object":"item","description":"T-shirt","quantity":2,
                "amount_subtotal":4000,"amount_total":3600,"currency":"eur",
                "price":{"id":"price_1","product":{"id":"prod_1","object":"product"}}}"#,
        )
        .unwrap();
        let bare: stripe_api::LineItem = serde_json::from_str(
            r#"{"id":"li_2","amount_subtotal":0,"amount_total":0,"currency":"usd","price":null,
                "quantity":null,"description":null}"#,
        )
        .unwrap();
        let Verdict::Fetched(lines) = judge(Ok(vec![item, bare])) else {
            panic!("fetched");
        };
        assert_eq!(
            lines,
            vec![
                (
                    "li_1".into(),
                    LineItem {
                        price_id: Some("price_1".into()),
                        product_id: Some("prod_1".into()),
                        description: Some("T-shirt".into()),
                        quantity: Some(2),
                        amount_total: 3600,
                        currency: "eur".into(),
                    }
                ),
                (
                    "li_2".into(),
                    LineItem {
                        price_id: None,
                        product_id: None,
                        description: None,
                        quantity: None,
                        amount_total: 0,
                        currency: "usd".into(),
                    }
                ),
            ]
        );
    }
}
