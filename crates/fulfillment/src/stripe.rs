//! The process's one Stripe API client, built from `StripeArgs` at start:
//! every call in the process shares its rate budget (`STRIPE_API_RATE`) and
//! its knowledge of a refused key. Without `STRIPE_API_KEY` there is none,
//! and the process says once which features are off.

use std::sync::Arc;

use tracing::info;

use crate::cli::StripeArgs;
use crate::metrics as m;

/// What is off without a key, for the one line that says so.
const NEEDS_A_KEY: &str = "recovering missed events from Stripe's Events API (RECONCILE_INTERVAL), \
     line items on order.paid (published without them, as before), \
     and recording custom payments as Payment Records (their jobs wait)";

/// The client, or `None` (said once, here) when no key is set.
pub fn client(args: &StripeArgs) -> anyhow::Result<Option<stripe_api::Client>> {
    let Some(key) = args.stripe_api_key.clone() else {
        info!("STRIPE_API_KEY is not set: calls to Stripe are off, and with them {NEEDS_A_KEY}");
        return Ok(None);
    };
    let config = stripe_api::Config::new(
        key,
        args.stripe_api_base.clone(),
        args.stripe_api_version.clone(),
        args.stripe_api_rate,
    );
    let observer: stripe_api::Observer = Arc::new(|endpoint, status| {
        let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        metrics::counter!(m::STRIPE_API_REQUESTS_TOTAL, "endpoint" => endpoint.label(), "status" => status)
            .increment(1);
    });
    let client = stripe_api::Client::new(config, Some(observer))
        .map_err(|e| anyhow::anyhow!("STRIPE_API_KEY: cannot set up the Stripe client: {e}"))?;
    info!(
        base = args.stripe_api_base.as_str(),
        version = %args.stripe_api_version,
        rate_per_sec = args.stripe_api_rate,
        "Stripe API calls on"
    );
    Ok(Some(client))
}
