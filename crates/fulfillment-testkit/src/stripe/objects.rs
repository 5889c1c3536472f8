//! The objects the stand-in serves, shaped on Stripe's own fixtures
//! (`../shared/fixtures/stripe/`: events, `checkout.session`,
//! `payment_record` from stripe/openapi's `fixtures3.json`), and the rules
//! of the endpoints that read them: the Events API's filters, the
//! parameters each endpoint accepts, `report_payment`'s required ones.

use serde_json::{Value, json};

use super::reply::ApiFailure;

/// The parameters of a request, decoded, in order.
pub type Pairs = [(String, String)];

pub fn param<'a>(params: &'a Pairs, key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Stripe refuses parameters an endpoint does not know (a misspelt filter
/// would otherwise be silently ignored): the stand-in does too.
pub fn check_known(params: &Pairs, known: &[&str]) -> Result<(), ApiFailure> {
    for (key, _) in params {
        let top = key.split('[').next().unwrap_or(key);
        if !known.contains(&top) {
            return Err(ApiFailure::invalid(
                top,
                &format!("Received unknown parameter: {top}"),
            ));
        }
    }
    Ok(())
}

/// An event as the Events API holds it.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub id: String,
    pub event_type: String,
    pub created: i64,
    pub account: Option<String>,
    /// False while some webhook endpoint has not acknowledged it
    /// (`delivery_success=false` lists these).
    pub delivered: bool,
    pub body: Value,
}

impl StoredEvent {
    /// Reads `id`, `type`, `created` and `account` of a full event object.
    pub fn new(body: Value, delivered: bool) -> StoredEvent {
        let text = |k: &str| body[k].as_str().map(str::to_owned);
        StoredEvent {
            id: text("id").expect("an event has an id"),
            event_type: text("type").expect("an event has a type"),
            created: body["created"].as_i64().expect("an event has created"),
            account: text("account"),
            delivered,
            body,
        }
    }
}

/// The filters of `GET /v1/events`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventQuery {
    pub types: Vec<String>,
    pub gt: Option<i64>,
    pub gte: Option<i64>,
    pub lt: Option<i64>,
    pub lte: Option<i64>,
    pub delivery_success: Option<bool>,
}

pub const EVENT_LIST_PARAMS: &[&str] = &[
    "created",
    "delivery_success",
    "ending_before",
    "expand",
    "limit",
    "starting_after",
    "type",
    "types",
];

/// Stripe's limit on `types[]`.
pub const MAX_TYPES: usize = 20;

impl EventQuery {
    pub fn parse(params: &Pairs) -> Result<EventQuery, ApiFailure> {
        check_known(params, EVENT_LIST_PARAMS)?;
        let mut query = EventQuery::default();
        let single = param(params, "type");
        let many: Vec<String> = params
            .iter()
            .filter(|(k, _)| k == "types[]" || (k.starts_with("types[") && k.ends_with(']')))
            .map(|(_, v)| v.clone())
            .collect();
        match (single, many.is_empty()) {
            (Some(_), false) => {
                return Err(ApiFailure::invalid(
                    "types",
                    "You may only specify one of these parameters: type, types.",
                ));
            }
            (Some(one), true) => query.types = vec![one.to_owned()],
            (None, _) if many.len() > MAX_TYPES => {
                return Err(ApiFailure::invalid(
                    "types",
                    &format!("Invalid array: types must have at most {MAX_TYPES} elements."),
                ));
            }
            (None, _) => query.types = many,
        }
        for (key, value) in params.iter().filter(|(k, _)| k.starts_with("created")) {
            let n: i64 = value
                .parse()
                .map_err(|_| ApiFailure::invalid(key, &format!("Invalid integer: {value}")))?;
            match key.as_str() {
                "created" => (query.gte, query.lte) = (Some(n), Some(n)),
                "created[gt]" => query.gt = Some(n),
                "created[gte]" => query.gte = Some(n),
                "created[lt]" => query.lt = Some(n),
                "created[lte]" => query.lte = Some(n),
                other => {
                    return Err(ApiFailure::invalid(
                        other,
                        &format!("Received unknown parameter: {other}"),
                    ));
                }
            }
        }
        query.delivery_success = match param(params, "delivery_success") {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => {
                return Err(ApiFailure::invalid(
                    "delivery_success",
                    &format!("Invalid boolean: {other}"),
                ));
            }
        };
        Ok(query)
    }

    pub fn matches(&self, event: &StoredEvent) -> bool {
        let c = event.created;
        (self.types.is_empty() || self.types.iter().any(|t| glob(t, &event.event_type)))
            && self.gt.is_none_or(|b| c > b)
            && self.gte.is_none_or(|b| c >= b)
            && self.lt.is_none_or(|b| c < b)
            && self.lte.is_none_or(|b| c <= b)
            && self.delivery_success.is_none_or(|d| d == event.delivered)
    }
}

/// `type` may use `*` as a wildcard ("checkout.session.*").
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// A Checkout Session line item (`object: "item"`), shaped like Stripe's:
/// number `n` of `session_id`, `quantity` × `unit_amount`.
pub fn line_item(
    session_id: &str,
    n: usize,
    quantity: u64,
    unit_amount: i64,
    currency: &str,
) -> Value {
    let total = unit_amount * quantity as i64;
    json!({
        "id": format!("li_{session_id}_{n}"),
        "object": "item",
        "adjustable_quantity": null,
        "amount_discount": 0,
        "amount_subtotal": total,
        "amount_tax": 0,
        "amount_total": total,
        "currency": currency,
        "description": format!("Item {n}"),
        "discounts": [],
        "metadata": {},
        "price": {
            "id": format!("price_{n}"),
            "object": "price",
            "active": true,
            "billing_scheme": "per_unit",
            "created": 1_700_000_000,
            "currency": currency,
            "custom_unit_amount": null,
            "livemode": false,
            "lookup_key": null,
            "metadata": {},
            "nickname": null,
            "product": format!("prod_{n}"),
            "recurring": null,
            "tax_behavior": "unspecified",
            "tiers_mode": null,
            "transform_quantity": null,
            "type": "one_time",
            "unit_amount": unit_amount,
            "unit_amount_decimal": unit_amount.to_string()
        },
        "quantity": quantity,
        "taxes": []
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn type_wildcards() {
        assert!(glob("checkout.session.*", "checkout.session.completed"));
        assert!(glob("*", "anything"));
        assert!(glob("*.succeeded", "payment_intent.succeeded"));
        assert!(glob("payment_intent.succeeded", "payment_intent.succeeded"));
        assert!(!glob(
            "payment_intent.succeeded",
            "payment_intent.succeeded.x"
        ));
        assert!(!glob("checkout.*", "payment_intent.succeeded"));
        assert!(glob("a*b*c", "a-x-b-y-c"));
        assert!(!glob("a*b*c", "a-x-c-y-b"));
    }

    #[test]
    fn event_filters_refuse_what_stripe_refuses() {
        assert!(EventQuery::parse(&pairs(&[("type", "a"), ("types[]", "b")])).is_err());
        let many: Vec<(String, String)> = (0..21)
            .map(|i| ("types[]".into(), format!("t{i}")))
            .collect();
        assert!(EventQuery::parse(&many).is_err());
        assert!(EventQuery::parse(&pairs(&[("delivery_success", "maybe")])).is_err());
        assert!(EventQuery::parse(&pairs(&[("created[after]", "1")])).is_err());
        assert!(EventQuery::parse(&pairs(&[("typo", "1")])).is_err());
        let ok = EventQuery::parse(&pairs(&[
            ("types[]", "a"),
            ("types[]", "b"),
            ("created[gte]", "10"),
            ("delivery_success", "false"),
        ]))
        .unwrap();
        assert_eq!(ok.types, ["a", "b"]);
        assert_eq!((ok.gte, ok.delivery_success), (Some(10), Some(false)));
    }
}
