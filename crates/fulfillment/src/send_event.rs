//! `fulfillment send-event TYPE`: the `stripe trigger` of this project. Builds
//! a realistic event, signs it like Stripe does and POSTs it. And
//! `send-custom-payment`: the same for a custom-payment report, signed as a
//! merchant's backend signs it (`Fulfillment-Signature`).

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

use fulfillment_core::sample::{LifecycleSpec, SAMPLE_TYPES, SampleSpec, event_with};

use fulfillment_core::sample::custom_payment;
use fulfillment_core::{CustomOutcome, parse_custom_payment};

use crate::cli::{CustomOutcomeArg, SendCustomPaymentCmd, SendEventCmd};

pub async fn run(cmd: SendEventCmd) -> anyhow::Result<()> {
    let now = crate::clock::unix_now();
    let unique = crate::clock::unix_now_nanos() % 1_000_000_000_000;
    let order_id = cmd.order.clone().unwrap_or_else(|| format!("ord_{unique}"));
    let event_id = cmd
        .event_id
        .clone()
        .unwrap_or_else(|| format!("evt_{unique}"));
    let payment_intent = cmd
        .payment_intent
        .clone()
        .unwrap_or_else(|| format!("pi_{order_id}"));
    let spec = SampleSpec {
        event_id: &event_id,
        order_id: &order_id,
        payment_intent_id: Some(&payment_intent),
        payment_status: &cmd.payment_status,
        order_in_metadata: !cmd.no_order_metadata,
        created: now,
    };
    let lifecycle = LifecycleSpec {
        decline_code: &cmd.decline_code,
        amount_refunded: cmd.amount_refunded,
        dispute_status: &cmd.dispute_status,
        dispute_id: cmd.dispute_id.as_deref(),
    };
    let body = event_with(&cmd.event_type, &spec, &lifecycle).with_context(|| {
        format!(
            "TYPE: {:?} is not one of: {}",
            cmd.event_type,
            SAMPLE_TYPES.join(", ")
        )
    })?;
    if cmd.dry_run {
        println!("{}", String::from_utf8_lossy(&body));
        return Ok(());
    }
    let secret = first_secret(cmd.secret.as_ref(), "STRIPE_WEBHOOK_SECRET")?;
    let signature = stripe_webhook_signature::sign_header(secret, now, &body);
    let (status, answer) = post(&cmd.url, "stripe-signature", &signature, body).await?;
    println!(
        "{} {event_id} (order {order_id}) -> {status} {answer}",
        cmd.event_type
    );
    if !(200..300).contains(&status) {
        anyhow::bail!("the endpoint answered {status}");
    }
    Ok(())
}

pub async fn run_custom_payment(cmd: SendCustomPaymentCmd) -> anyhow::Result<()> {
    let now = crate::clock::unix_now();
    let unique = crate::clock::unix_now_nanos() % 1_000_000_000_000;
    let outcome = match cmd.outcome {
        CustomOutcomeArg::Guaranteed => CustomOutcome::Guaranteed,
        CustomOutcomeArg::Failed => CustomOutcome::Failed,
    };
    let id = cmd.id.clone().unwrap_or_else(|| format!("cpay_{unique}"));
    let mut report = custom_payment(&id, &cmd.order, outcome, now);
    report.amount = cmd.amount;
    report.currency.clone_from(&cmd.currency);
    report
        .custom_payment_method_type
        .clone_from(&cmd.method_type);
    if let Some(reference) = &cmd.reference {
        report.payment_reference.clone_from(reference);
    }
    report.customer_email = cmd.customer_email.clone().filter(|e| !e.is_empty());
    report.stripe_customer.clone_from(&cmd.stripe_customer);
    let body = report.to_json();
    // The receiver's own rule, so a bad option is named here, not by a 400.
    parse_custom_payment(&body).context("the report would be refused")?;
    if cmd.dry_run {
        println!("{}", String::from_utf8_lossy(&body));
        return Ok(());
    }
    let secret = first_secret(cmd.secret.as_ref(), "CUSTOM_PAYMENT_SECRET")?;
    let signature = stripe_webhook_signature::sign_header(secret, now, &body);
    let (status, answer) = post(&cmd.url, "fulfillment-signature", &signature, body).await?;
    println!(
        "custom payment {} {} (order {}) -> {status} {answer}",
        report.id, report.outcome, report.order_id
    );
    if !(200..300).contains(&status) {
        anyhow::bail!("the endpoint answered {status}");
    }
    Ok(())
}

/// The first secret of a comma-separated setting (`setting` names it).
fn first_secret<'a>(
    secrets: Option<&'a crate::config::Secret>,
    setting: &str,
) -> anyhow::Result<&'a str> {
    let secrets = secrets
        .map(crate::config::Secret::expose)
        .with_context(|| format!("{setting} (or --secret) is required to sign"))?;
    secrets
        .split(',')
        .map(str::trim)
        .find(|s| !s.is_empty())
        .with_context(|| format!("{setting}: empty"))
}

async fn post(
    url: &str,
    header: &str,
    signature: &str,
    body: Vec<u8>,
) -> anyhow::Result<(u16, String)> {
    let uri: hyper::Uri = url
        .parse()
        .with_context(|| format!("--url {url:?} is not a URL"))?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "--url: only http:// is supported (send-event is a local tool)"
    );
    let host = uri.host().context("--url has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let exchange = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .with_context(|| format!("connecting to {host}:{port}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let request = Request::post(uri.path())
            .header("host", format!("{host}:{port}"))
            .header("content-type", "application/json")
            .header("user-agent", "fulfillment-send-event")
            .header(header, signature)
            .body(Full::new(Bytes::from(body)))?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let text = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, String::from_utf8_lossy(&text).trim().to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .context("no answer within 10 s")?
}
