//! `make bench`: every benchmark in one run, one table, one JSON file.
//!
//! 1. the generator against a trivial server (its own top rate);
//! 2. the broker ceiling and 3. `fulfillment receiver` alone (64
//!    connections, its queue drained by a consumer as in the ceiling run),
//!    repetitions alternating, medians reported; one more ceiling run with
//!    the receiver's window (one publish in flight per connection);
//! 4. `fulfillment serve`: throughput over `e2e_events` events, then an
//!    open-loop run at `open_rate` (default: half the throughput just
//!    measured) and one at `light_rate` (below capacity); peak RSS after all
//!    three; CPU milliseconds per event of every process in the throughput run;
//! 5. the naive baseline (`bench/baseline`, see `baseline.rs`): the same
//!    events, closed loop, against a database of its own; the ratio.
//!
//! Each stage has its own vhost and database, removed afterwards.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;

use crate::baseline::{self, BaselineRun};
use crate::ceiling;
use crate::cpu::{Cores, CpuMs, Snapshot};
use crate::e2e;
use crate::events::Events;
use crate::http_load::{self, Mode, unix_now};
use crate::report::{Latency, median};
use crate::under_test;
use fulfillment_testkit::TEST_SECRET;

#[derive(Debug, Clone)]
pub struct Settings {
    pub fulfillment_bin: PathBuf,
    /// Service logs go here.
    pub out_dir: PathBuf,
    pub connections: usize,
    pub repetitions: usize,
    pub rep_seconds: f64,
    pub warmup_seconds: f64,
    pub window: usize,
    pub e2e_events: u64,
    /// None: half the end-to-end throughput just measured.
    pub open_rate: Option<f64>,
    pub open_seconds: f64,
    /// A second open-loop run below capacity: the pipeline's own latency.
    pub light_rate: f64,
    pub light_seconds: f64,
    /// The naive baseline's directory; None leaves it out.
    pub baseline_dir: Option<PathBuf>,
}

impl Settings {
    fn rep(&self) -> (Duration, Duration) {
        (
            Duration::from_secs_f64(self.warmup_seconds),
            Duration::from_secs_f64(self.rep_seconds),
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub postgresql: String,
    pub rabbitmq: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Generator {
    pub against_trivial_server: http_load::Outcome,
    pub cores: Cores,
}

#[derive(Debug, Clone, Serialize)]
pub struct BrokerCeiling {
    pub runs: Vec<ceiling::Outcome>,
    pub median_confirmed_per_sec: f64,
    pub cores: Cores,
    /// One run with the window the receiver has at `connections` connections.
    pub at_receiver_window: ceiling::Outcome,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReceiverAlone {
    pub connections: usize,
    pub runs: Vec<http_load::Outcome>,
    pub median_accepted_per_sec: f64,
    /// Figure by figure, the median of the runs.
    pub median_latency: Latency,
    pub ratio_to_ceiling: f64,
    pub peak_rss_bytes: u64,
    pub mean_publish_confirm_ms: Option<f64>,
    pub cores: Cores,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndToEnd {
    pub throughput: e2e::Throughput,
    pub throughput_cores: Cores,
    /// Every process's CPU over the throughput run, divided by its events.
    pub cpu_ms_per_event: CpuMs,
    pub open_loop: e2e::OpenLoop,
    pub open_loop_cores: Cores,
    pub light_open_loop: Option<e2e::OpenLoop>,
    pub peak_rss_bytes: u64,
    /// Means over the whole run, from the service's own metrics.
    pub mean_event_processing_ms: Option<f64>,
    pub mean_publish_confirm_ms: Option<f64>,
    /// Deliveries per worker transaction (`fulfillment_worker_batch_size`).
    pub mean_worker_batch_size: Option<f64>,
    /// The naive baseline on the same events, and our throughput over its.
    pub baseline: Option<BaselineRun>,
    pub ratio_to_baseline: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub what: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub machine: Machine,
    /// Cores busy just before the run started (other sessions' builds, …):
    /// anything well above 0 means the figures are low.
    pub background_cores: f64,
    pub settings: serde_json::Value,
    pub generator: Generator,
    pub broker_ceiling: BrokerCeiling,
    pub receiver: ReceiverAlone,
    pub end_to_end: EndToEnd,
    pub targets: Vec<Target>,
    pub seconds: f64,
}

pub async fn run(s: &Settings) -> anyhow::Result<Results> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(&s.out_dir)?;
    let background_cores = background_cores().await;
    let tag = format!("{:x}", unix_now() % 0xff_ffff);
    let events = Arc::new(Events::new(&tag, TEST_SECRET, unix_now()));
    eprintln!("[bench] generator against a trivial server");
    let generator = generator(s, events.clone()).await?;
    eprintln!("[bench] broker ceiling and receiver alone, alternating");
    let (broker_ceiling, receiver) = ceiling_and_receiver(s, events.clone()).await?;
    eprintln!("[bench] end to end (serve)");
    let end_to_end = end_to_end(s, events).await?;
    let targets = crate::summary::targets(
        &receiver,
        &end_to_end,
        broker_ceiling.median_confirmed_per_sec,
    );
    Ok(Results {
        machine: machine(),
        background_cores,
        settings: serde_json::json!({
            "connections": s.connections,
            "repetitions": s.repetitions,
            "rep_seconds": s.rep_seconds,
            "warmup_seconds": s.warmup_seconds,
            "window": s.window,
            "e2e_events": s.e2e_events,
            "baseline": s.baseline_dir.is_some(),
            "open_rate": s.open_rate,
            "open_seconds": s.open_seconds,
            "light_rate": s.light_rate,
            "light_seconds": s.light_seconds,
            "body_bytes": crate::events::BODY_BYTES,
        }),
        generator,
        broker_ceiling,
        receiver,
        end_to_end,
        targets,
        seconds: started.elapsed().as_secs_f64(),
    })
}

async fn generator(s: &Settings, events: Arc<Events>) -> anyhow::Result<Generator> {
    let addr = crate::sink::start("127.0.0.1:0".parse()?).await?;
    let (warmup, duration) = s.rep();
    let before = Snapshot::take();
    let outcome = http_load::run(closed(addr, s.connections, warmup, duration, 0), events).await;
    Ok(Generator {
        against_trivial_server: outcome,
        cores: Snapshot::take().cores_since(&before),
    })
}

/// The broker ceiling and the receiver alone, their repetitions alternating
/// (ceiling, receiver, ceiling, …) so that drift on the machine touches both
/// alike. The receiver's queue is drained by a consumer, as in the ceiling.
async fn ceiling_and_receiver(
    s: &Settings,
    events: Arc<Events>,
) -> anyhow::Result<(BrokerCeiling, ReceiverAlone)> {
    let ceiling_env = under_test::env("ceiling")?;
    let receiver_env = under_test::env("receiver")?;
    under_test::migrate(&s.fulfillment_bin, &receiver_env)?;
    let log = s.out_dir.join("receiver.log");
    let service = under_test::start(&s.fulfillment_bin, "receiver", &receiver_env, &log).await?;
    let consumer =
        Connection::connect(&receiver_env.amqp_url(), ConnectionProperties::default()).await?;
    let draining = ceiling::drain(&consumer, "stripe.fulfillment", || {}).await?;

    let (warmup, duration) = s.rep();
    let ceiling_spec = |window| ceiling::Spec {
        amqp_url: ceiling_env.amqp_url(),
        window,
        warmup,
        duration,
        body: events.body(0),
    };
    let (mut ceilings, mut ceiling_cores) = (Vec::new(), Vec::new());
    let (mut receivers, mut receiver_cores) = (Vec::new(), Vec::new());
    for rep in 0..s.repetitions {
        let before = Snapshot::take();
        ceilings.push(ceiling::run(&ceiling_spec(s.window)).await?);
        ceiling_cores.push(Snapshot::take().cores_since(&before));

        let before = Snapshot::take();
        let first_seq = 1_000_000_000 * (rep as u64 + 1);
        let spec = closed(
            service.http_addr(),
            s.connections,
            warmup,
            duration,
            first_seq,
        );
        let outcome = http_load::run(spec, events.clone()).await;
        receiver_cores.push(Snapshot::take().cores_since(&before));
        anyhow::ensure!(
            outcome.errors == 0,
            "receiver: {} requests failed; first: {:?}",
            outcome.errors,
            outcome.first_error
        );
        receivers.push(outcome);
    }
    let at_receiver_window = ceiling::run(&ceiling_spec(s.connections)).await?;

    let peak_rss_bytes = under_test::peak_rss_bytes(&service);
    let mean_publish_confirm_ms =
        under_test::metric_mean(&service, "fulfillment_publish_confirm_seconds")
            .await?
            .map(|v| v * 1e3);
    service.stop().await;
    let _ = consumer.close(200, "done".into()).await;
    draining.abort();

    let ceiling_rate = median(
        &ceilings
            .iter()
            .map(|r| r.confirmed_per_sec)
            .collect::<Vec<_>>(),
    );
    let rate = median(&receivers.iter().map(|r| r.ok_per_sec).collect::<Vec<_>>());
    let latencies: Vec<Latency> = receivers.iter().map(|r| r.latency).collect();
    let ceiling = BrokerCeiling {
        median_confirmed_per_sec: ceiling_rate,
        runs: ceilings,
        cores: Cores::mean(&ceiling_cores),
        at_receiver_window,
    };
    let receiver = ReceiverAlone {
        connections: s.connections,
        median_accepted_per_sec: rate,
        median_latency: Latency::median_of(&latencies),
        ratio_to_ceiling: if ceiling_rate > 0.0 {
            rate / ceiling_rate
        } else {
            0.0
        },
        peak_rss_bytes,
        mean_publish_confirm_ms,
        cores: Cores::mean(&receiver_cores),
        runs: receivers,
    };
    Ok((ceiling, receiver))
}

pub async fn end_to_end(s: &Settings, events: Arc<Events>) -> anyhow::Result<EndToEnd> {
    let env = under_test::env("e2e")?;
    under_test::migrate(&s.fulfillment_bin, &env)?;
    let log = s.out_dir.join("serve.log");
    let service = under_test::start(&s.fulfillment_bin, "serve", &env, &log).await?;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&env.database_url())
        .await?;
    under_test::checkpoint(&pool).await?;

    let before = Snapshot::take();
    let throughput = e2e::throughput(
        service.http_addr(),
        &pool,
        events.clone(),
        s.e2e_events,
        s.connections,
        0,
    )
    .await?;
    let middle = Snapshot::take();
    let open_rate = s
        .open_rate
        .unwrap_or(throughput.events_per_sec / 2.0)
        .max(1.0);
    let open_loop = e2e::open_loop(
        service.http_addr(),
        &pool,
        events.clone(),
        open_rate,
        Duration::from_secs_f64(s.open_seconds),
        s.connections,
        s.e2e_events,
    )
    .await?;
    let after = Snapshot::take();
    let light_open_loop = if s.light_rate > 0.0 {
        let light = e2e::open_loop(
            service.http_addr(),
            &pool,
            events.clone(),
            s.light_rate,
            Duration::from_secs_f64(s.light_seconds),
            s.connections,
            s.e2e_events + 10_000_000,
        );
        Some(light.await?)
    } else {
        None
    };

    let peak_rss_bytes = under_test::peak_rss_bytes(&service);
    let mean_ms = |v: Option<f64>| v.map(|v| v * 1e3);
    let mean_event_processing_ms =
        mean_ms(under_test::metric_mean(&service, "fulfillment_event_processing_seconds").await?);
    let mean_publish_confirm_ms =
        mean_ms(under_test::metric_mean(&service, "fulfillment_publish_confirm_seconds").await?);
    let mean_worker_batch_size =
        under_test::metric_mean(&service, "fulfillment_worker_batch_size").await?;
    service.stop().await;
    pool.close().await;
    drop(env);

    let baseline = match &s.baseline_dir {
        Some(dir) => {
            eprintln!("[bench] the naive baseline (Express + stripe-node + pg)");
            let run = baseline::run(dir, &s.out_dir, events, s.e2e_events, s.connections);
            Some(run.await?)
        }
        None => None,
    };
    let ratio_to_baseline = baseline
        .as_ref()
        .filter(|b| b.events_per_sec > 0.0)
        .map(|b| throughput.events_per_sec / b.events_per_sec);
    Ok(EndToEnd {
        cpu_ms_per_event: middle.cpu_ms_since(&before).per_event(throughput.events),
        throughput,
        throughput_cores: middle.cores_since(&before),
        open_loop,
        open_loop_cores: after.cores_since(&middle),
        light_open_loop,
        peak_rss_bytes,
        mean_event_processing_ms,
        mean_publish_confirm_ms,
        mean_worker_batch_size,
        baseline,
        ratio_to_baseline,
    })
}

/// Waits up to a minute for the machine to be quiet (under 0.3 cores busy
/// over 2 s) and returns how busy it was when the wait ended.
async fn background_cores() -> f64 {
    let mut busy = 0.0;
    for attempt in 0..30 {
        let before = Snapshot::take();
        tokio::time::sleep(Duration::from_secs(2)).await;
        busy = Snapshot::take().cores_since(&before).total();
        if busy < 0.3 {
            break;
        }
        if attempt == 0 {
            eprintln!(
                "[bench] {busy:.2} cores busy before the start; waiting up to a minute for quiet"
            );
        }
    }
    if busy >= 0.3 {
        eprintln!("[bench] WARNING: {busy:.2} cores busy with other work; the figures will be low");
    }
    busy
}

fn closed(
    addr: SocketAddr,
    connections: usize,
    warmup: Duration,
    duration: Duration,
    first_seq: u64,
) -> http_load::Spec {
    http_load::Spec {
        addr,
        connections,
        mode: Mode::Closed,
        count: None,
        duration: Some(duration),
        warmup,
        first_seq,
    }
}

fn machine() -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu_model = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let memory_kib: f64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    let output = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model,
        memory_gib: memory_kib / 1024.0 / 1024.0,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        postgresql: output(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-Atc",
                "SHOW server_version",
            ],
        ),
        rabbitmq: output("rabbitmqctl", &["-q", "version"]),
    }
}

/// Writes the results as pretty JSON.
pub fn write_json(r: &Results, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(r)? + "\n")?;
    Ok(())
}
