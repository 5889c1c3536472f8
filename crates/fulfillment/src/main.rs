//! `fulfillment`: one binary, several roles (contract section 2).

use fulfillment::{
    broker, budget, cli, db, dead_letters, dlq, health, http, metrics, ops, receiver, relay,
    send_event, shutdown, topology, upkeep, worker,
};

use std::io::Write;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing::{error, info};

use fulfillment::broker::{BrokerLink, Publisher, Setup};
use fulfillment::cli::{
    AmqpArgs, Cli, Command, DatabaseArgs, DlqAction, LogFormat, MetricsArgs, ReceiverArgs,
    ShutdownArgs, WorkerArgs,
};
use fulfillment::health::DbHealth;
use fulfillment::retry::RetryPolicy;
use fulfillment::shutdown::Shutdown;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // clap adds a usage hint on further lines; operators grep for one line.
            let rendered = e.to_string();
            eprintln!(
                "{}",
                rendered
                    .lines()
                    .next()
                    .unwrap_or("error: invalid arguments")
            );
            return ExitCode::from(2);
        }
    };
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, naming the setting or the step that failed.
            error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(a) => {
            let http_addr = a.receiver.http_addr;
            run_service(Roles {
                http_addr,
                receiver: Some(a.receiver),
                worker: Some((a.worker, a.database)),
                amqp: a.amqp,
                metrics: a.metrics,
                shutdown: a.shutdown,
            })
            .await
        }
        Command::Receiver(a) => {
            let http_addr = a.receiver.http_addr;
            run_service(Roles {
                http_addr,
                receiver: Some(a.receiver),
                worker: None,
                amqp: a.amqp,
                metrics: a.metrics,
                shutdown: a.shutdown,
            })
            .await
        }
        Command::Worker(a) => {
            run_service(Roles {
                http_addr: a.http_addr,
                receiver: None,
                worker: Some((a.worker, a.database)),
                amqp: a.amqp,
                metrics: a.metrics,
                shutdown: a.shutdown,
            })
            .await
        }
        Command::Migrate(args) => migrate(args).await,
        Command::Dlq(args) => dlq(args).await,
        Command::SendEvent(args) => send_event::run(args).await,
        Command::Orders(args) => orders(args).await,
        Command::Events(args) => events(args).await,
    }
}

async fn orders(args: cli::OrdersCmd) -> anyhow::Result<()> {
    let cli::OrdersAction::Show { order_id, json } = args.action;
    let story = ops::order_story(&args.database.database_url, &order_id)
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

async fn events(args: cli::EventsCmd) -> anyhow::Result<()> {
    let cli::EventsAction::Show { event_id, json } = args.action;
    let story = ops::event_story(&args.database.database_url, &event_id)
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

/// Which parts of the pipeline this process runs.
struct Roles {
    http_addr: std::net::SocketAddr,
    receiver: Option<ReceiverArgs>,
    worker: Option<(WorkerArgs, DatabaseArgs)>,
    amqp: AmqpArgs,
    metrics: MetricsArgs,
    shutdown: ShutdownArgs,
}

/// Validated worker configuration.
struct WorkerConfig {
    args: WorkerArgs,
    database_url: String,
    policy: RetryPolicy,
    bounds: Bounds,
}

/// How long state is kept, and how often that is enforced.
struct Bounds {
    parked_ttl: Duration,
    retention: Duration,
    outbox_retention: Duration,
    interval: Duration,
}

fn bounds(args: &WorkerArgs) -> anyhow::Result<Bounds> {
    use fulfillment_core::upkeep::{parse_days, parse_duration};
    let parked_ttl =
        parse_duration(&args.parked_ttl).map_err(|e| anyhow::anyhow!("PARKED_TTL: {e}"))?;
    if parked_ttl.is_zero() {
        anyhow::bail!("PARKED_TTL: must be positive");
    }
    let interval = parse_duration(&args.retention_interval)
        .map_err(|e| anyhow::anyhow!("RETENTION_INTERVAL: {e}"))?;
    if interval < Duration::from_millis(10) {
        anyhow::bail!("RETENTION_INTERVAL: must be at least 10ms");
    }
    let retention =
        parse_days(&args.retention_days).map_err(|e| anyhow::anyhow!("RETENTION_DAYS: {e}"))?;
    if retention < Duration::from_secs(30 * 86_400) {
        // Allowed (tests compress time), but worth a line: Stripe can
        // resend or list events for 30 days, and past the window they are
        // no longer recognised as duplicates.
        tracing::warn!(
            retention_days = %args.retention_days,
            "RETENTION_DAYS is under 30: events Stripe still resends or lists may be applied again (statuses only move up, so mostly as stale)"
        );
    }
    Ok(Bounds {
        parked_ttl,
        retention,
        outbox_retention: parse_days(&args.outbox_retention_days)
            .map_err(|e| anyhow::anyhow!("OUTBOX_RETENTION_DAYS: {e}"))?,
        interval,
    })
}

fn worker_config(args: WorkerArgs, database: DatabaseArgs) -> anyhow::Result<WorkerConfig> {
    db::options(&database.database_url)?;
    let policy =
        RetryPolicy::parse(&args.retry_delays).map_err(|e| anyhow::anyhow!("RETRY_DELAYS: {e}"))?;
    if args.worker_concurrency == 0 {
        anyhow::bail!("WORKER_CONCURRENCY: must be at least 1");
    }
    if args.worker_batch_size == 0 {
        anyhow::bail!("WORKER_BATCH_SIZE: must be at least 1");
    }
    if args.worker_prefetch == 0 {
        anyhow::bail!("WORKER_PREFETCH: must be at least 1 (0 would mean unlimited)");
    }
    if args.outbox_batch_size < 1 {
        anyhow::bail!("OUTBOX_BATCH_SIZE: must be at least 1");
    }
    let bounds = bounds(&args)?;
    Ok(WorkerConfig {
        args,
        database_url: database.database_url,
        policy,
        bounds,
    })
}

async fn run_service(roles: Roles) -> anyhow::Result<()> {
    // Every setting is checked before anything starts.
    let verifier = roles.receiver.as_ref().map(verifier).transpose()?;
    check_amqp_url(&roles.amqp)?;
    let worker_cfg = roles.worker.map(|(w, d)| worker_config(w, d)).transpose()?;
    let prometheus = metrics::install()?;
    // Bind both listeners before connecting anywhere: an address in use is a
    // configuration error and must fail at once.
    let http_listener = http::bind(roles.http_addr, "HTTP_ADDR").await?;
    let metrics_listener = http::bind(roles.metrics.metrics_addr, "METRICS_ADDR").await?;
    let grace = Duration::from_secs(roles.shutdown.shutdown_grace_secs);

    let (draining, shutdown) =
        start_signal_listener(Duration::from_secs(roles.shutdown.shutdown_drain_secs));
    let url = roles.amqp.amqp_url.clone();
    let mut links: Vec<BrokerLink> = Vec::new();
    let mut tasks = Vec::new();
    let mut db_health = None;

    let receiver = match (verifier, &roles.receiver) {
        (Some(verifier), Some(args)) => {
            let link = BrokerLink::start(url.clone(), "receiver", publisher_setup(&[]));
            links.push(link.clone());
            Some(receiver::Receiver {
                verifier,
                max_body_bytes: args.max_body_bytes,
                body_read_timeout: Duration::from_secs(args.body_read_timeout_secs),
                publisher: Publisher::new(link, roles.amqp.confirm_timeout()),
                body_budget: budget::BodyBudget::new(args.max_inflight_body_bytes),
                shed_log: receiver::ThrottledLog::new(Duration::from_secs(10)),
            })
        }
        _ => None,
    };

    if let Some(cfg) = worker_cfg {
        let pool = db::pool(&cfg.database_url, cfg.args.database_max_connections)?;
        let health = DbHealth::new();
        db_health = Some(health.clone());
        tasks.push(tokio::spawn(health::watch_database(
            pool.clone(),
            health.clone(),
            shutdown.clone(),
        )));

        let worker_link =
            BrokerLink::start(url.clone(), "worker", publisher_setup(cfg.policy.delays()));
        let relay_link = BrokerLink::start(url.clone(), "relay", publisher_setup(&[]));
        // Its own connection: a consumer of the DLQ beside the work consumer
        // and the relay's publishes would share their flow control.
        let dead_letter_link = BrokerLink::start(url.clone(), "dead-letters", publisher_setup(&[]));
        links.push(worker_link.clone());
        links.push(relay_link.clone());
        links.push(dead_letter_link.clone());
        let mover = dead_letters::Mover {
            pool: pool.clone(),
            link: dead_letter_link,
        };
        tasks.push(tokio::spawn(mover.run(shutdown.clone())));
        let worker = Arc::new(worker::Worker {
            pool: pool.clone(),
            link: worker_link.clone(),
            publisher: Publisher::new(worker_link, roles.amqp.confirm_timeout()),
            policy: cfg.policy,
            concurrency: cfg.args.worker_concurrency,
            batch_size: cfg.args.worker_batch_size,
            prefetch: cfg.args.worker_prefetch,
            db: health,
            shutdown_grace: grace,
        });
        tasks.push(tokio::spawn(worker.run(shutdown.clone())));
        let upkeep = upkeep::Upkeep {
            pool: pool.clone(),
            parked_ttl: cfg.bounds.parked_ttl,
            retention: cfg.bounds.retention,
            outbox_retention: cfg.bounds.outbox_retention,
            interval: cfg.bounds.interval,
        };
        tasks.push(tokio::spawn(upkeep.run(shutdown.clone())));
        let relay = relay::Relay {
            pool,
            publisher: Publisher::new(relay_link.clone(), roles.amqp.confirm_timeout()),
            batch_size: cfg.args.outbox_batch_size,
        };
        let watched = relay.pool.clone();
        tasks.push(tokio::spawn(relay.run(shutdown.clone())));
        tasks.push(tokio::spawn(health::watch_queues(
            relay_link,
            watched,
            shutdown.clone(),
        )));
    }

    let ready_links = links.clone();
    // One readiness for both listeners; false from the first signal on, so
    // load balancers stop routing here while we still serve.
    let ready: receiver::Readiness = Arc::new(move || {
        !draining.is_triggered()
            && ready_links.iter().all(BrokerLink::is_up)
            && db_health.as_ref().is_none_or(DbHealth::is_up)
    });
    let endpoints = Arc::new(receiver::Endpoints {
        receiver,
        ready: ready.clone(),
    });
    let limits = match &roles.receiver {
        Some(args) => http::Limits {
            max_connections: args.max_connections,
            header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
            shutdown_grace: grace,
        },
        None => http::Limits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(5),
            shutdown_grace: grace,
        },
    };
    let metrics_server = tokio::spawn(serve_metrics(
        metrics_listener,
        prometheus,
        ready,
        shutdown.clone(),
    ));
    http::serve(
        http_listener,
        "http",
        move |req| endpoints.clone().handle(req),
        limits,
        shutdown,
    )
    .await;
    for task in tasks {
        let _ = task.await;
    }
    for link in &links {
        link.close().await;
    }
    metrics_server.await.ok();
    info!("stopped");
    Ok(())
}

/// Validated receiver configuration: every check that can fail on bad
/// settings runs before anything is started.
fn verifier(args: &ReceiverArgs) -> anyhow::Result<stripe_webhook_signature::Verifier> {
    let raw = args.stripe_webhook_secret.as_deref().context(
        "STRIPE_WEBHOOK_SECRET is required (one or more endpoint secrets, comma-separated)",
    )?;
    let secrets = stripe_webhook_signature::Secrets::parse_list(raw)
        .map_err(|e| anyhow::anyhow!("STRIPE_WEBHOOK_SECRET: {e}"))?;
    if args.signature_tolerance_secs == 0 {
        anyhow::bail!(
            "SIGNATURE_TOLERANCE_SECS: must be at least 1 (0 would disable replay protection)"
        );
    }
    if args.max_body_bytes == 0 {
        anyhow::bail!("MAX_BODY_BYTES: must be at least 1");
    }
    if args.max_inflight_body_bytes < args.max_body_bytes {
        anyhow::bail!(
            "MAX_INFLIGHT_BODY_BYTES: must be at least MAX_BODY_BYTES ({}), or no full-size body could ever be read",
            args.max_body_bytes
        );
    }
    if args.max_connections == 0 {
        anyhow::bail!("MAX_CONNECTIONS: must be at least 1");
    }
    Ok(stripe_webhook_signature::Verifier::new(
        secrets,
        args.signature_tolerance_secs,
    ))
}

fn check_amqp_url(amqp: &AmqpArgs) -> anyhow::Result<()> {
    // The URL may hold a password: name the setting, never echo the value.
    lapin::uri::AMQPUri::from_str(&amqp.amqp_url)
        .map_err(|e| anyhow::anyhow!("AMQP_URL: not a valid AMQP URL: {e}"))?;
    Ok(())
}

/// Returns (draining, stopping). On the first SIGTERM/SIGINT readiness
/// fails at once while both listeners keep serving for `drain`; then the
/// listeners stop accepting and in-flight work gets `SHUTDOWN_GRACE_SECS`.
fn start_signal_listener(drain: Duration) -> (Shutdown, Shutdown) {
    let (drain_trigger, draining) = shutdown::channel();
    let (stop_trigger, stopping) = shutdown::channel();
    let mut signals = shutdown::Signals::install();
    tokio::spawn(async move {
        signals.next().await;
        drain_trigger.trigger();
        if !drain.is_zero() {
            info!(
                drain_secs = drain.as_secs(),
                "draining: /readyz answers 503, still serving"
            );
            tokio::select! {
                _ = tokio::time::sleep(drain) => {}
                _ = signals.next() => info!("second signal: drain cut short"),
            }
        }
        stop_trigger.trigger();
        // Dropping a trigger also wakes its waiters; keep both until exit.
        std::future::pending::<()>().await;
        drop((drain_trigger, stop_trigger));
    });
    (draining, stopping)
}

/// Every link publishes with confirms and declares the topology it relies on
/// (with `retry_delays`, the retry tiers too).
fn publisher_setup(retry_delays: &[Duration]) -> Setup {
    let delays: Arc<[Duration]> = retry_delays.into();
    Arc::new(move |channel| {
        let delays = delays.clone();
        Box::pin(async move {
            broker::enable_confirms(&channel).await?;
            topology::declare(&channel, &delays).await
        })
    })
}

/// `/metrics`, `/healthz` and `/readyz` on `METRICS_ADDR`: a listener with
/// connection slots of its own, so webhook traffic holding every
/// `MAX_CONNECTIONS` slot cannot make the probes fail.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    handle: metrics_exporter_prometheus::PrometheusHandle,
    ready: receiver::Readiness,
    shutdown: Shutdown,
) {
    let limits = http::Limits {
        max_connections: 64,
        header_read_timeout: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(1),
    };
    let handle = Arc::new(handle);
    http::serve(
        listener,
        "metrics",
        move |req| {
            let handle = handle.clone();
            let ready = ready.clone();
            async move {
                if let Some(response) = receiver::health(&req, &ready) {
                    response
                } else if req.uri().path() == "/metrics" {
                    let mut response = http::text(200, "");
                    *response.body_mut() = http_body_util::Full::new(handle.render().into());
                    response.headers_mut().insert(
                        "content-type",
                        hyper::header::HeaderValue::from_static(
                            "text/plain; version=0.0.4; charset=utf-8",
                        ),
                    );
                    response
                } else {
                    http::text(404, "not found\n")
                }
            }
        },
        limits,
        shutdown,
    )
    .await;
}

async fn migrate(args: cli::MigrateArgs) -> anyhow::Result<()> {
    check_amqp_url(&args.amqp)?;
    let policy =
        RetryPolicy::parse(&args.retry_delays).map_err(|e| anyhow::anyhow!("RETRY_DELAYS: {e}"))?;
    db::options(&args.database.database_url)?;
    db::create_database_if_missing(&args.database.database_url).await?;
    let pool = db::pool(&args.database.database_url, 2)?;
    db::migrate(&pool).await?;
    info!("database migrated");
    declare_topology(&args.amqp.amqp_url, policy.delays()).await?;
    info!("broker topology declared");
    Ok(())
}

/// One-shot declaration for `migrate`: retried for a while, then a clear error.
async fn declare_topology(url: &str, retry_delays: &[Duration]) -> anyhow::Result<()> {
    use backon::{ExponentialBuilder, Retryable};
    let attempt = || async {
        let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
        let channel = conn.create_channel().await?;
        topology::declare(&channel, retry_delays).await?;
        conn.close(200, "done".into()).await?;
        Ok::<_, lapin::Error>(())
    };
    attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(5))
                .with_max_times(10),
        )
        .notify(|e, d| tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "broker unavailable"))
        .await
        .context("declaring the RabbitMQ topology (AMQP_URL)")
}

async fn dlq(args: cli::DlqCmd) -> anyhow::Result<()> {
    check_amqp_url(&args.amqp)?;
    db::options(&args.database.database_url)?;
    let url = &args.amqp.amqp_url;
    let pool = db::pool(&args.database.database_url, 2)?;
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
