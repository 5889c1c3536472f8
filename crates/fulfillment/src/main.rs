//! `fulfillment`: one binary, several roles (contract section 2).

mod broker;
mod cli;
mod db;
mod http;
mod metrics;
mod receiver;
mod shutdown;
mod topology;

use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing::{error, info};

use crate::broker::{BrokerLink, Publisher, Setup};
use crate::cli::{AmqpArgs, Cli, Command, LogFormat, MetricsArgs, ReceiverArgs, ShutdownArgs};
use crate::shutdown::Shutdown;

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
        Command::Serve(args) => {
            // The worker pool joins `serve` with the fulfil issue; until
            // then serve is the receiver, with the database checked at start.
            db::options(&args.database.database_url)?;
            run_receiver(args.receiver, args.amqp, args.metrics, args.shutdown).await
        }
        Command::Receiver(args) => {
            run_receiver(args.receiver, args.amqp, args.metrics, args.shutdown).await
        }
        Command::Migrate(args) => migrate(args).await,
    }
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

fn start_signal_listener() -> Shutdown {
    let (trigger, shutdown) = shutdown::channel();
    tokio::spawn(async move {
        shutdown::os_signal().await;
        trigger.trigger();
    });
    shutdown
}

fn publisher_setup() -> Setup {
    Arc::new(|channel| {
        Box::pin(async move {
            broker::enable_confirms(&channel).await?;
            topology::declare(&channel).await
        })
    })
}

async fn run_receiver(
    args: ReceiverArgs,
    amqp: AmqpArgs,
    metrics_args: MetricsArgs,
    shutdown_args: ShutdownArgs,
) -> anyhow::Result<()> {
    let verifier = verifier(&args)?;
    check_amqp_url(&amqp)?;
    let prometheus = metrics::install()?;
    // Bind both listeners before connecting anywhere: an address in use is a
    // configuration error and must fail at once.
    let http_listener = http::bind(args.http_addr, "HTTP_ADDR").await?;
    let metrics_listener = http::bind(metrics_args.metrics_addr, "METRICS_ADDR").await?;

    let shutdown = start_signal_listener();
    let link = BrokerLink::start(
        amqp.amqp_url.clone(),
        "receiver",
        publisher_setup(),
        shutdown.clone(),
    );
    let publisher = Publisher::new(link.clone(), amqp.confirm_timeout());
    let receiver = Arc::new(receiver::Receiver {
        verifier,
        max_body_bytes: args.max_body_bytes,
        body_read_timeout: Duration::from_secs(args.body_read_timeout_secs),
        publisher,
        ready: Box::new(move || link.is_up()),
    });
    let limits = http::Limits {
        max_connections: args.max_connections,
        header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
        shutdown_grace: Duration::from_secs(shutdown_args.shutdown_grace_secs),
    };
    let metrics_server = tokio::spawn(serve_metrics(
        metrics_listener,
        prometheus,
        shutdown.clone(),
    ));
    http::serve(
        http_listener,
        "webhook",
        move |req| receiver.clone().handle(req),
        limits,
        shutdown,
    )
    .await;
    metrics_server.await.ok();
    info!("stopped");
    Ok(())
}

async fn serve_metrics(
    listener: tokio::net::TcpListener,
    handle: metrics_exporter_prometheus::PrometheusHandle,
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
            async move {
                if req.uri().path() == "/metrics" {
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
    db::options(&args.database.database_url)?;
    db::create_database_if_missing(&args.database.database_url).await?;
    let pool = db::pool(&args.database.database_url, 2)?;
    db::migrate(&pool).await?;
    info!("database migrated");
    declare_topology(&args.amqp.amqp_url).await?;
    info!("broker topology declared");
    Ok(())
}

/// One-shot declaration for `migrate`: retried for a while, then a clear error.
async fn declare_topology(url: &str) -> anyhow::Result<()> {
    use backon::{ExponentialBuilder, Retryable};
    let attempt = || async {
        let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
        let channel = conn.create_channel().await?;
        topology::declare(&channel).await?;
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
