//! Payment Records: what `POST /v1/payment_records/report_payment`
//! requires (the API reference, seeds `001_…` and `002_…`) and the
//! `payment_record` it answers with, shaped on stripe/openapi's fixture.

use serde_json::{Value, json};

use super::objects::{Pairs, check_known, param};
use super::reply::ApiFailure;

pub const REPORT_PAYMENT_PARAMS: &[&str] = &[
    "amount_requested",
    "customer_details",
    "customer_presence",
    "description",
    "expand",
    "failed",
    "guaranteed",
    "initiated_at",
    "metadata",
    "outcome",
    "payment_method_details",
    "processor_details",
    "shipping_details",
];

/// The `payment_record` `report_payment` creates, or why it refuses: the
/// required parameters of the API reference (seeds `001_…`, `002_…`).
pub fn payment_record(id: &str, params: &Pairs, now: i64) -> Result<Value, ApiFailure> {
    check_known(params, REPORT_PAYMENT_PARAMS)?;
    let required = |key: &str| param(params, key).ok_or_else(|| ApiFailure::missing_param(key));
    let integer = |key: &str| -> Result<i64, ApiFailure> {
        required(key)?.parse().map_err(|_| {
            ApiFailure::invalid(
                key,
                &format!("Invalid integer: {}", param(params, key).unwrap_or("")),
            )
        })
    };
    let value = integer("amount_requested[value]")?;
    if value <= 0 {
        return Err(ApiFailure::invalid(
            "amount_requested[value]",
            "Must be a positive integer.",
        ));
    }
    let currency = required("amount_requested[currency]")?.to_owned();
    integer("initiated_at")?;
    let method = param(params, "payment_method_details[payment_method]");
    let method_type = param(params, "payment_method_details[type]");
    if method.is_none() && method_type.is_none() {
        return Err(ApiFailure::missing_param("payment_method_details[type]"));
    }
    if param(params, "processor_details[type]") == Some("custom") {
        required("processor_details[custom][payment_reference]")?;
    }
    let outcome = param(params, "outcome");
    match outcome {
        None => {}
        Some("guaranteed") => {
            integer("guaranteed[guaranteed_at]")?;
        }
        Some("failed") => {
            integer("failed[failed_at]")?;
        }
        Some(other) => {
            return Err(ApiFailure::invalid(
                "outcome",
                &format!("Invalid outcome: {other}"),
            ));
        }
    }
    let amount = |v: i64| json!({"currency": currency, "value": v});
    let when = |wanted: &str| if outcome == Some(wanted) { value } else { 0 };
    let metadata: serde_json::Map<String, Value> = params
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("metadata[")?.strip_suffix(']')?;
            Some((name.to_owned(), Value::String(v.clone())))
        })
        .collect();
    let custom = match (
        param(params, "payment_method_details[custom][type]"),
        method_type,
    ) {
        (Some(cpmt), _) => json!({
            "display_name": param(params, "payment_method_details[custom][display_name]"),
            "type": cpmt,
        }),
        _ => Value::Null,
    };
    Ok(json!({
        "id": id,
        "object": "payment_record",
        "amount": amount(value),
        "amount_authorized": amount(when("guaranteed")),
        "amount_canceled": amount(0),
        "amount_failed": amount(when("failed")),
        "amount_guaranteed": amount(when("guaranteed")),
        "amount_refunded": amount(0),
        "amount_requested": amount(value),
        "application": null,
        "created": now,
        "customer_details": {
            "customer": param(params, "customer_details[customer]"),
            "email": param(params, "customer_details[email]"),
            "name": param(params, "customer_details[name]"),
            "phone": param(params, "customer_details[phone]")
        },
        "customer_presence": param(params, "customer_presence"),
        "description": param(params, "description"),
        "latest_payment_attempt_record": format!("par_{}", id.trim_start_matches("pr_")),
        "livemode": false,
        "metadata": metadata,
        "payment_method_details": {
            "billing_details": null,
            "custom": custom,
            "payment_method": method,
            "type": method_type.unwrap_or("custom")
        },
        "processor_details": {
            "type": param(params, "processor_details[type]").unwrap_or("custom"),
            "custom": {
                "payment_reference": param(params, "processor_details[custom][payment_reference]")
            }
        },
        "shipping_details": null,
        "reported_by": "user"
    }))
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
    fn report_payment_requires_what_the_reference_requires() {
        let full = pairs(&[
            ("amount_requested[value]", "4200"),
            ("amount_requested[currency]", "eur"),
            ("initiated_at", "1795460000"),
            ("payment_method_details[type]", "custom"),
            ("payment_method_details[custom][type]", "cpmt_abc"),
            ("processor_details[type]", "custom"),
            ("processor_details[custom][payment_reference]", "psp_987"),
            ("outcome", "guaranteed"),
            ("guaranteed[guaranteed_at]", "1795460100"),
            ("metadata[order_id]", "ord_42"),
        ]);
        let record = payment_record("pr_1", &full, 1).unwrap();
        assert_eq!(record["amount_guaranteed"]["value"], 4200);
        assert_eq!(record["metadata"]["order_id"], "ord_42");
        for missing in [
            "amount_requested[value]",
            "initiated_at",
            "guaranteed[guaranteed_at]",
        ] {
            let without: Vec<_> = full.iter().filter(|(k, _)| k != missing).cloned().collect();
            let err = payment_record("pr_1", &without, 1).unwrap_err();
            assert_eq!(
                (err.status, err.error["param"].as_str()),
                (400, Some(missing))
            );
        }
    }
}
