//! What each command does, in one table ([`run`]); the long-running roles
//! are started by `startup`, the one-shot tools run here.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use tracing::info;

use crate::broker::{self, BrokerUrls};
use crate::cli::{
    Command, DlqAction, DlqCmd, EventsAction, EventsCmd, MigrateArgs, OrdersAction, OrdersCmd,
};
use crate::startup::{Application, Roles};
use crate::{backoff, db, dlq, line_items, ops, send_event, topology};

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(Roles::serve(args)).await,
        Command::Receiver(args) => serve(Roles::receiver(args)).await,
        Command::Worker(args) => serve(Roles::worker(args)).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Dlq(args) => dead_letters(args).await,
        Command::SendEvent(args) => send_event::run(args).await,
        Command::SendCustomPayment(args) => send_event::run_custom_payment(args).await,
        Command::Orders(args) => orders(args).await,
        Command::Events(args) => events(args).await,
        Command::Reconcile(args) => crate::reconcile::command::run(args).await,
    }
}

async fn serve(roles: Roles) -> anyhow::Result<()> {
    Application::build(roles).await?.run_until_stopped().await
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let database_url = args.database.database_url.expose();
    db::create_database_if_missing(database_url).await?;
    let pool = db::pool(database_url, 2)?;
    db::migrate(&pool).await?;
    info!("database migrated");
    declare_topology(&args.amqp.amqp_url, args.retry_delays.delays()).await?;
    info!("broker topology declared");
    Ok(())
}

/// One-shot declaration for `migrate`: retried for a while, then a clear error.
/// With several URLs, each attempt tries every node once.
async fn declare_topology(urls: &BrokerUrls, retry_delays: &[Duration]) -> anyhow::Result<()> {
    use backon::Retryable;
    let attempt = || async {
        let (conn, channel) = broker::connect_once(urls, "fulfillment-migrate").await?;
        topology::declare(&channel, retry_delays).await?;
        conn.close(200, "done".into()).await?;
        Ok::<_, anyhow::Error>(())
    };
    attempt
        .retry(backoff::at_start())
        .notify(|e, d| tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "broker unavailable"))
        .await
        .context("declaring the RabbitMQ topology (AMQP_URL)")
}

async fn dead_letters(args: DlqCmd) -> anyhow::Result<()> {
    let url = &args.amqp.amqp_url;
    let pool = db::pool(args.database.database_url.expose(), 2)?;
    let mut out = std::io::stdout().lock();
    match args.action {
        DlqAction::List { limit } => dlq::list(&pool, url, limit, &mut out).await,
        DlqAction::Show { id } => match dlq::show(&pool, &id, &mut out).await? {
            true => Ok(()),
            false => anyhow::bail!("no dead letter with event id {id}"),
        },
        DlqAction::Replay { all, ids } => {
            let mut chosen = ids;
            chosen.sort();
            chosen.dedup();
            dlq::replay(&pool, url, (!all).then_some(chosen.as_slice()), &mut out)
                .await
                .map(|_| ())
        }
        DlqAction::Purge { yes } => {
            let terminal = dlq::stdin_is_terminal();
            let mut input = std::io::stdin().lock();
            dlq::purge(&pool, yes, &mut input, terminal, &mut out)
                .await
                .map(|_| ())
        }
    }
}

async fn orders(args: OrdersCmd) -> anyhow::Result<()> {
    let database_url = args.database.database_url.expose();
    let (order_id, json) = match args.action {
        OrdersAction::Show { order_id, json } => (order_id, json),
        OrdersAction::RetryLineItems { all, order_ids } => {
            return retry_line_items(database_url, all, &order_ids).await;
        }
        OrdersAction::RetryRecord { order_id } => {
            return retry_record(database_url, &order_id).await;
        }
    };
    let story = ops::order_story(database_url, &order_id)
        .await?
        .with_context(|| format!("no order {order_id:?}"))?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &story)?;
        writeln!(out)?;
    } else {
        ops::print_order(&story, &mut out)?;
    }
    Ok(())
}

/// Held line-item jobs back to pending, due now; says which, and which of
/// the named orders had none held.
async fn retry_line_items(
    database_url: &str,
    all: bool,
    order_ids: &[String],
) -> anyhow::Result<()> {
    let pool = db::pool(database_url, 1)?;
    let retried = line_items::retry_held(&pool, (!all).then_some(order_ids)).await?;
    let mut out = std::io::stdout().lock();
    for order_id in &retried {
        writeln!(out, "retrying line items of {order_id}")?;
    }
    let not_held: Vec<&String> = order_ids
        .iter()
        .filter(|id| !retried.contains(id))
        .collect();
    writeln!(
        out,
        "{} order(s) retried; a worker with STRIPE_API_KEY fetches them now",
        retried.len()
    )?;
    if !not_held.is_empty() {
        anyhow::bail!("no held line items for {not_held:?} (see `fulfillment orders show`)");
    }
    Ok(())
}

/// `orders retry-record`: refused Payment Record jobs of the order go back
/// to the reporter (a worker with STRIPE_API_KEY) with a new key.
async fn retry_record(database_url: &str, order_id: &str) -> anyhow::Result<()> {
    let pool = db::pool(database_url, 1)?;
    let sent = crate::records::retry_refused(&pool, order_id).await?;
    if sent.is_empty() {
        anyhow::bail!(
            "order {order_id:?} has no Payment Record that Stripe refused (see fulfillment orders show {order_id})"
        );
    }
    for report_id in &sent {
        println!("{report_id}: queued again for Stripe (new idempotency key)");
    }
    Ok(())
}

async fn events(args: EventsCmd) -> anyhow::Result<()> {
    let EventsAction::Show { event_id, json } = args.action;
    let story = ops::event_story(args.database.database_url.expose(), &event_id)
        .await?
        .with_context(|| {
            format!("no event {event_id:?} (never received, or older than RETENTION_DAYS)")
        })?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &story)?;
        writeln!(out)?;
    } else {
        ops::print_event(&story, &mut out)?;
    }
    Ok(())
}
