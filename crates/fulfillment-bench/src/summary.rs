//! What `make bench` prints: the table of every stage, the CPU per event of
//! every process, and the issues' targets with what was measured.

use crate::cpu::{Cores, CpuMs};
use crate::report::{Latency, Table, ms, thousands};
use crate::suite::{EndToEnd, ReceiverAlone, Results, Target};

const MIB: f64 = 1024.0 * 1024.0;

/// The targets.
const MIN_RATIO_TO_CEILING: f64 = 0.65;
const MAX_RECEIVER_P99_MS: f64 = 25.0;
const MIN_E2E_EVENTS_PER_SEC: f64 = 3000.0;
const MAX_RSS_MIB: f64 = 64.0;
const MIN_RATIO_TO_BASELINE: f64 = 2.0;
const MAX_CPU_MS_PER_EVENT: f64 = 0.8;
const MAX_HALF_LOAD_P99_MS: f64 = 50.0;

pub fn targets(r: &ReceiverAlone, e: &EndToEnd, ceiling: f64) -> Vec<Target> {
    let rss = e.peak_rss_bytes as f64 / MIB;
    let mut targets = vec![
        Target {
            what: "receiver / broker ceiling".into(),
            target: ">= 0.65".into(),
            measured: format!(
                "{:.2} ({} / {})",
                r.ratio_to_ceiling,
                thousands(r.median_accepted_per_sec),
                thousands(ceiling)
            ),
            met: r.ratio_to_ceiling >= MIN_RATIO_TO_CEILING,
        },
        Target {
            what: format!("receiver p99 at {} connections", r.connections),
            target: "<= 25 ms".into(),
            measured: format!("{} ms", ms(r.median_latency.p99_ms)),
            met: r.median_latency.p99_ms <= MAX_RECEIVER_P99_MS,
        },
        Target {
            what: "end-to-end throughput".into(),
            target: ">= 3,000 events/s".into(),
            measured: format!("{} events/s", thousands(e.throughput.events_per_sec)),
            met: e.throughput.events_per_sec >= MIN_E2E_EVENTS_PER_SEC,
        },
        Target {
            what: "service peak RSS".into(),
            target: "<= 64 MiB".into(),
            measured: format!("{rss:.1} MiB"),
            met: rss <= MAX_RSS_MIB,
        },
    ];
    if let (Some(ratio), Some(b)) = (e.ratio_to_baseline, &e.baseline) {
        targets.push(Target {
            what: "end to end / naive baseline".into(),
            target: format!(">= {MIN_RATIO_TO_BASELINE:.1}x"),
            measured: format!(
                "{ratio:.2}x ({} / {} events/s)",
                thousands(e.throughput.events_per_sec),
                thousands(b.events_per_sec)
            ),
            met: ratio >= MIN_RATIO_TO_BASELINE,
        });
    }
    let cpu = e.cpu_ms_per_event;
    targets.push(Target {
        what: "CPU per event, end to end (broker + database + service)".into(),
        target: format!("<= {MAX_CPU_MS_PER_EVENT} ms"),
        measured: format!(
            "{:.2} ms (rmq {:.2}, pg {:.2}, svc {:.2})",
            cpu.system_under_test(),
            cpu.rabbitmq,
            cpu.postgres,
            cpu.service
        ),
        met: cpu.system_under_test() <= MAX_CPU_MS_PER_EVENT,
    });
    targets.push(Target {
        what: format!(
            "POST -> order.paid confirmed p99, open loop {}/s",
            thousands(e.open_loop.rate)
        ),
        target: format!("<= {MAX_HALF_LOAD_P99_MS} ms at half capacity"),
        measured: format!(
            "{} ms (capacity {} events/s)",
            ms(e.open_loop.to_order_paid.p99_ms),
            thousands(e.throughput.events_per_sec)
        ),
        met: e.open_loop.to_order_paid.p99_ms <= MAX_HALF_LOAD_P99_MS,
    });
    targets
}

/// One line of the table; empty cells print as blanks or dashes.
#[derive(Default)]
struct Line {
    name: String,
    rate: String,
    latency: Option<Latency>,
    cores: Option<Cores>,
    target: &'static str,
    met: Option<bool>,
}

impl Line {
    fn new(name: impl Into<String>, rate: impl Into<String>) -> Line {
        Line {
            name: name.into(),
            rate: rate.into(),
            ..Line::default()
        }
    }

    fn cells(self) -> Vec<String> {
        let mut cells = vec![self.name, self.rate];
        match self.latency {
            Some(l) => cells.extend([l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms].map(ms)),
            None => cells.extend(["-".to_string(), "-".into(), "-".into(), "-".into()]),
        }
        cells.push(self.cores.map_or(String::new(), |c| c.short()));
        cells.push(self.target.to_string());
        cells.push(match self.met {
            Some(true) => "yes".into(),
            Some(false) => "NO".into(),
            None => String::new(),
        });
        cells
    }
}

/// The one table `make bench` prints.
pub fn table(r: &Results) -> String {
    let (g, b, rc, e) = (&r.generator, &r.broker_ceiling, &r.receiver, &r.end_to_end);
    let n = rc.connections;
    let rss = |bytes: u64| bytes as f64 / MIB;
    let mean = |v: Option<f64>, unit: &str| v.map_or("-".into(), |v| format!("{} {unit}", ms(v)));
    let mut lines = vec![
        Line {
            latency: Some(g.against_trivial_server.latency),
            cores: Some(g.cores),
            ..Line::new(
                format!("generator vs trivial server, {n} conns"),
                format!("{} req/s", thousands(g.against_trivial_server.ok_per_sec)),
            )
        },
        Line {
            cores: Some(b.cores),
            target: "reference",
            ..Line::new(
                format!(
                    "broker ceiling, window {} (median of {})",
                    r.settings["window"],
                    b.runs.len()
                ),
                format!("{} msg/s", thousands(b.median_confirmed_per_sec)),
            )
        },
        Line::new(
            format!("broker ceiling, window {}", b.at_receiver_window.window),
            format!(
                "{} msg/s",
                thousands(b.at_receiver_window.confirmed_per_sec)
            ),
        ),
        Line {
            latency: Some(rc.median_latency),
            cores: Some(rc.cores),
            target: "p99 <= 25 ms",
            met: Some(rc.median_latency.p99_ms <= MAX_RECEIVER_P99_MS),
            ..Line::new(
                format!("receiver alone, {n} conns (median of {})", rc.runs.len()),
                format!("{} req/s", thousands(rc.median_accepted_per_sec)),
            )
        },
        Line {
            target: ">= 0.65",
            met: Some(rc.ratio_to_ceiling >= MIN_RATIO_TO_CEILING),
            ..Line::new(
                "  receiver / broker ceiling",
                format!("{:.2}", rc.ratio_to_ceiling),
            )
        },
        Line {
            cores: Some(e.throughput_cores),
            target: ">= 3,000 ev/s",
            met: Some(e.throughput.events_per_sec >= MIN_E2E_EVENTS_PER_SEC),
            ..Line::new(
                format!(
                    "end to end, {} events, {n} conns",
                    thousands(e.throughput.events as f64)
                ),
                format!("{} ev/s", thousands(e.throughput.events_per_sec)),
            )
        },
        Line {
            latency: Some(e.throughput.http.latency),
            ..Line::new(
                "  of which HTTP accepted (POST -> 200)",
                format!("{} req/s", thousands(e.throughput.http.ok_per_sec)),
            )
        },
    ];
    if let Some(b) = &e.baseline {
        lines.push(Line {
            latency: Some(b.http.latency),
            cores: Some(b.cores),
            target: "reference",
            ..Line::new(
                format!(
                    "naive baseline (Express, {} workers), same events",
                    b.workers
                ),
                format!("{} ev/s", thousands(b.events_per_sec)),
            )
        });
    }
    if let Some(ratio) = e.ratio_to_baseline {
        lines.push(Line {
            target: ">= 2.0x",
            met: Some(ratio >= MIN_RATIO_TO_BASELINE),
            ..Line::new("  end to end / naive baseline", format!("{ratio:.2}x"))
        });
    }
    let runs = [(&e.open_loop, Some(e.open_loop_cores))]
        .into_iter()
        .chain(e.light_open_loop.iter().map(|l| (l, None)));
    for (ol, cores) in runs {
        lines.push(Line {
            latency: Some(ol.http.latency),
            cores,
            ..Line::new(
                format!(
                    "open loop {}/s x {:.0} s: POST -> 200",
                    thousands(ol.rate),
                    ol.seconds
                ),
                format!("{} req/s", thousands(ol.http.ok_per_sec)),
            )
        });
        lines.push(Line {
            latency: Some(ol.to_commit),
            ..Line::new("  POST -> order written paid (created_at)", "")
        });
        lines.push(Line {
            latency: Some(ol.to_order_paid),
            ..Line::new("  POST -> order.paid confirmed (published_at)", "")
        });
    }
    lines.extend([
        Line {
            target: "<= 64 MiB",
            met: Some(rss(e.peak_rss_bytes) <= MAX_RSS_MIB),
            ..Line::new(
                "serve peak RSS (VmHWM)",
                format!("{:.1} MiB", rss(e.peak_rss_bytes)),
            )
        },
        Line::new(
            "receiver peak RSS (VmHWM)",
            format!("{:.1} MiB", rss(rc.peak_rss_bytes)),
        ),
        Line::new(
            "serve: events per worker transaction",
            e.mean_worker_batch_size
                .map_or("-".into(), |v| format!("{v:.1} mean")),
        ),
        Line::new(
            "serve: event processing (worker)",
            mean(e.mean_event_processing_ms, "ms mean"),
        ),
        Line::new(
            "serve: publish -> confirm",
            mean(e.mean_publish_confirm_ms, "ms mean"),
        ),
        Line::new(
            "receiver alone: publish -> confirm",
            mean(rc.mean_publish_confirm_ms, "ms mean"),
        ),
    ]);
    let mut t = Table::new(&[
        "benchmark",
        "rate",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "cores: rmq/pg/svc/node/gen/other",
        "target",
        "met",
    ]);
    for line in lines {
        t.row(line.cells());
    }
    t.render() + "\n" + &cpu_table(e) + "\n" + &targets_table(&r.targets)
}

/// Every target of the issues, what was measured and whether it is met.
fn targets_table(targets: &[Target]) -> String {
    let mut t = Table::new(&["target", "wanted", "measured", "met"]);
    for target in targets {
        t.row(vec![
            target.what.clone(),
            target.target.clone(),
            target.measured.clone(),
            if target.met { "yes" } else { "NO" }.into(),
        ]);
    }
    t.render()
}

/// CPU milliseconds per event of every process, over the closed-loop
/// end-to-end runs (the service's and the baseline's).
fn cpu_table(e: &EndToEnd) -> String {
    let mut t = Table::new(&[
        "CPU ms per event, end to end",
        "rabbitmq",
        "postgres",
        "service",
        "baseline",
        "sum",
        "generator",
        "other",
    ]);
    let row = |name: String, c: &CpuMs| {
        let f = |v: f64| format!("{v:.3}");
        vec![
            name,
            f(c.rabbitmq),
            f(c.postgres),
            f(c.service),
            f(c.baseline),
            f(c.system_under_test()),
            f(c.generator),
            f(c.other),
        ]
    };
    let events = thousands(e.throughput.events as f64);
    t.row(row(
        format!("fulfillment serve, {events} events"),
        &e.cpu_ms_per_event,
    ));
    if let Some(b) = &e.baseline {
        t.row(row(
            format!("naive baseline, {events} events"),
            &b.cpu_ms_per_event,
        ));
    }
    t.render()
}
