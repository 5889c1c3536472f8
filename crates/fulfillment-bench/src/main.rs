//! `fulfillment-bench`: benchmarks for the fulfillment service.
//!
//! - `suite`: everything `make bench` runs; one table, one JSON file.
//! - `http`: the load generator against a running receiver (closed or open loop).
//! - `ceiling`: RabbitMQ's confirmed-publish ceiling into a quorum queue.
//! - `e2e`: end to end against a `fulfillment serve` it starts.
//! - `sink`: a trivial HTTP server, to measure the generator itself.

mod baseline;
mod ceiling;
mod cpu;
mod e2e;
mod events;
mod http_load;
mod report;
mod sink;
mod suite;
mod summary;
mod under_test;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::events::Events;
use crate::http_load::{Mode, unix_now};

#[derive(Parser)]
#[command(version, about = "Benchmarks for the fulfillment service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every benchmark (`make bench`): prints one table and writes the JSON.
    Suite {
        #[command(flatten)]
        common: Common,
        /// Where the results go.
        #[arg(long, default_value = "target/bench/results.json")]
        json: PathBuf,
        /// Seconds measured per repetition of the ceiling and receiver runs.
        #[arg(long, default_value_t = 5.0)]
        rep_seconds: f64,
        /// Repetitions of the ceiling and receiver runs (medians are reported).
        #[arg(long, default_value_t = 5)]
        repetitions: usize,
        /// Unconfirmed publishes in flight in the ceiling run.
        #[arg(long, default_value_t = 512)]
        window: usize,
    },
    /// POST signed 2 KiB events to a running receiver; prints throughput and latency.
    Http {
        /// The service's HTTP_ADDR.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// The endpoint secret to sign with.
        #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Open loop at this many requests per second (default: closed loop).
        #[arg(long)]
        rate: Option<f64>,
        /// Run this many seconds (after the warm-up).
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Send this many requests instead of running for --seconds.
        #[arg(long)]
        count: Option<u64>,
        /// Seconds sent but not measured at the start.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Persistent 2 KiB publishes with confirms into a quorum queue, consumed
    /// and acked meanwhile; prints confirmed msgs/s.
    Ceiling {
        /// A vhost to use (default: a fresh one, removed afterwards).
        #[arg(long)]
        amqp_url: Option<String>,
        #[arg(long, default_value_t = 512)]
        window: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// End to end against `fulfillment serve` (started here, in a fresh vhost and database).
    E2e {
        #[command(flatten)]
        common: Common,
    },
    /// A trivial HTTP server answering 200 to everything.
    Sink {
        #[arg(long, default_value = "127.0.0.1:8081")]
        addr: SocketAddr,
    },
}

#[derive(clap::Args)]
struct Common {
    /// The `fulfillment` binary (default: beside this one).
    #[arg(long)]
    fulfillment_bin: Option<PathBuf>,
    /// Service logs go here.
    #[arg(long, default_value = "target/bench")]
    out_dir: PathBuf,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Events in the end-to-end throughput run (the naive baseline's too).
    #[arg(long, env = "BENCH_EVENTS", default_value_t = 50_000)]
    events: u64,
    /// Events per second of the end-to-end open-loop run (default: half the
    /// end-to-end throughput just measured).
    #[arg(long, env = "BENCH_OPEN_RATE")]
    open_rate: Option<f64>,
    #[arg(long, default_value_t = 20.0)]
    open_seconds: f64,
    /// Events per second of a second, lighter open-loop run (0: none).
    #[arg(long, default_value_t = 250.0)]
    light_rate: f64,
    #[arg(long, default_value_t = 10.0)]
    light_seconds: f64,
    /// The naive baseline (`bench/baseline`, after `npm ci` there).
    #[arg(long, default_value = baseline::DEFAULT_DIR)]
    baseline_dir: PathBuf,
    /// Leave the naive baseline out.
    #[arg(long, env = "BENCH_NO_BASELINE")]
    no_baseline: bool,
}

impl Common {
    fn settings(&self, repetitions: usize, rep_seconds: f64, window: usize) -> suite::Settings {
        suite::Settings {
            fulfillment_bin: self
                .fulfillment_bin
                .clone()
                .unwrap_or_else(|| fulfillment_testkit::service::sibling_binary("fulfillment")),
            out_dir: self.out_dir.clone(),
            connections: self.connections,
            repetitions,
            rep_seconds,
            warmup_seconds: 1.0,
            window,
            e2e_events: self.events,
            open_rate: self.open_rate,
            open_seconds: self.open_seconds,
            light_rate: self.light_rate,
            light_seconds: self.light_seconds,
            baseline_dir: (!self.no_baseline).then(|| self.baseline_dir.clone()),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Suite {
            common,
            json,
            rep_seconds,
            repetitions,
            window,
        } => {
            let settings = common.settings(repetitions, rep_seconds, window);
            let results = suite::run(&settings).await?;
            suite::write_json(&results, &json)?;
            println!("{}", summary::table(&results));
            if results.background_cores >= 0.3 {
                println!(
                    "WARNING: {:.2} cores were busy with other work at the start",
                    results.background_cores
                );
            }
            println!(
                "{} s in all; JSON: {}",
                results.seconds.round(),
                json.display()
            );
        }
        Command::Http {
            addr,
            secret,
            connections,
            rate,
            seconds,
            count,
            warmup,
            json,
        } => {
            let tag = format!("{:x}", unix_now() % 0xff_ffff);
            let events = Arc::new(Events::new(&tag, &secret, unix_now()));
            let spec = http_load::Spec {
                addr,
                connections,
                mode: rate.map_or(Mode::Closed, |rate| Mode::Open { rate }),
                count,
                duration: match count {
                    Some(_) => None,
                    None => Some(Duration::from_secs_f64(seconds)),
                },
                warmup: Duration::from_secs_f64(warmup),
                first_seq: 0,
            };
            let outcome = http_load::run(spec, events).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&outcome)?);
            } else {
                let l = &outcome.latency;
                println!(
                    "{} ok, {} errors in {:.1} s: {} req/s; latency ms p50 {} p90 {} p99 {} max {}",
                    outcome.ok,
                    outcome.errors,
                    outcome.seconds,
                    report::thousands(outcome.ok_per_sec),
                    report::ms(l.p50_ms),
                    report::ms(l.p90_ms),
                    report::ms(l.p99_ms),
                    report::ms(l.max_ms),
                );
                if let Some(e) = outcome.first_error {
                    println!("first error: {e}");
                }
            }
        }
        Command::Ceiling {
            amqp_url,
            window,
            seconds,
        } => {
            let fresh = match amqp_url {
                Some(_) => None,
                None => Some(under_test::env("ceiling")?),
            };
            let spec = ceiling::Spec {
                amqp_url: amqp_url.unwrap_or_else(|| fresh.as_ref().expect("made").amqp_url()),
                window,
                warmup: Duration::from_secs(1),
                duration: Duration::from_secs_f64(seconds),
                body: Events::new("ceiling", "unused", unix_now()).body(0),
            };
            let outcome = ceiling::run(&spec).await?;
            println!("{}", serde_json::to_string_pretty(&outcome)?);
        }
        Command::E2e { common } => {
            let settings = common.settings(1, 0.0, 0);
            let tag = format!("{:x}", unix_now() % 0xff_ffff);
            let events = Arc::new(Events::new(
                &tag,
                fulfillment_testkit::TEST_SECRET,
                unix_now(),
            ));
            let outcome = suite::end_to_end(&settings, events).await?;
            println!("{}", serde_json::to_string_pretty(&outcome)?);
        }
        Command::Sink { addr } => {
            let bound = sink::start(addr).await?;
            eprintln!("answering 200 on http://{bound}/ (Ctrl-C stops)");
            tokio::signal::ctrl_c().await?;
        }
    }
    Ok(())
}
