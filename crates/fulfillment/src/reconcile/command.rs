//! `fulfillment reconcile`: one run now, printed for the operator.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use fulfillment_core::reconcile::{Bound, Window};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::warn;

use super::{Reconciler, Report, Scope};
use crate::broker::{BrokerLink, Publisher};
use crate::cli::ReconcileCmd;
use crate::clock::unix_now;
use crate::{db, startup};

/// How long the command waits for the broker before giving up.
const BROKER_WAIT: Duration = Duration::from_secs(30);

pub async fn run(args: ReconcileCmd) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.stripe.stripe_api_key.is_some(),
        "STRIPE_API_KEY: required by reconcile (a key that may read events)"
    );
    let client = crate::stripe::client(&args.stripe)?.context("STRIPE_API_KEY is not set")?;
    let now = unix_now();
    let window = window(&args, now)?;
    if window.reaches_past_retention(now) {
        warn!(
            "the window starts more than 30 days ago: Stripe keeps events 30 days, older ones cannot come back"
        );
    }
    let pool = db::pool(args.database.database_url.expose(), 2)?;
    let link = match args.dry_run {
        true => None,
        false => Some(broker(&args).await?),
    };
    let reconciler = Reconciler {
        client,
        pool,
        publisher: link
            .clone()
            .map(|l| Publisher::new(l, args.amqp.confirm_timeout())),
    };
    let scope = Scope {
        window,
        all_events: args.all_events,
    };
    let outcome = reconciler.run_exclusively(scope).await;
    if let Some(link) = &link {
        link.close().await;
    }
    let report = outcome?.context(
        "another replica is reconciling right now (advisory lock fulfillment:reconcile); try again in a moment",
    )?;
    print(&report, scope, args.dry_run, &mut std::io::stdout().lock())?;
    Ok(())
}

fn window(args: &ReconcileCmd, now: i64) -> anyhow::Result<Window> {
    let from = match (args.from, args.since) {
        (Some(at), _) => Bound::At(at),
        (None, Some(ago)) => Bound::Ago(ago),
        (None, None) => Bound::Ago(args.lookback.reconcile_lookback),
    };
    Window::new(now, from, args.until).context("--since/--from and --until")
}

async fn broker(args: &ReconcileCmd) -> anyhow::Result<BrokerLink> {
    let link = BrokerLink::start(
        args.amqp.amqp_url.clone(),
        "reconcile",
        startup::publisher_setup(&[]),
    );
    match tokio::time::timeout(BROKER_WAIT, link.wait_up()).await {
        Ok(_) => Ok(link),
        Err(_) => {
            link.close().await;
            anyhow::bail!("AMQP_URL: the broker did not answer within {BROKER_WAIT:?}")
        }
    }
}

/// What the operator reads: the window, each recovered event, with
/// `--dry-run` the known ids too, then the counts.
pub fn print(
    report: &Report,
    scope: Scope,
    dry_run: bool,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let until = scope.window.until.map_or_else(|| "now".to_owned(), moment);
    let which = if scope.all_events {
        "all"
    } else {
        "undelivered"
    };
    writeln!(
        out,
        "window {} .. {until}, {which} events of the handled types",
        moment(scope.window.from)
    )?;
    let verb = if dry_run {
        "would recover"
    } else {
        "recovered"
    };
    for e in &report.recovered {
        writeln!(
            out,
            "{verb}  {}  {}  {}",
            e.id,
            e.event_type,
            moment(e.created)
        )?;
    }
    if dry_run {
        for id in &report.known {
            writeln!(out, "known  {id}")?;
        }
    }
    if report.stopped_early {
        writeln!(
            out,
            "stopped at the per-run limit: run again to reach further back"
        )?;
    }
    writeln!(
        out,
        "{verb} {}, already known {}{}",
        report.recovered.len(),
        report.known.len(),
        if dry_run {
            " (dry run: nothing published)"
        } else {
            ""
        }
    )
}

fn moment(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| t.to_string())
}
