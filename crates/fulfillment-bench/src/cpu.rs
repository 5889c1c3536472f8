//! Where the two cores went during a run: CPU time per process group, read
//! from /proc (no perf needed).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

/// Clock ticks per second of /proc's times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// A figure per process group: average cores busy ([`Cores`]) or CPU
/// milliseconds ([`CpuMs`]), by the same grouping. `other` is the rest of
/// the machine's busy time (the kernel, processes that ended during the run).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ByProcess {
    pub rabbitmq: f64,
    pub postgres: f64,
    /// `fulfillment` processes.
    pub service: f64,
    /// The naive baseline's `node` processes (`bench/baseline`).
    pub baseline: f64,
    pub generator: f64,
    pub other: f64,
}

/// Cores busy on average over an interval.
pub type Cores = ByProcess;
/// CPU milliseconds spent over an interval (or per event, see [`ByProcess::per_event`]).
pub type CpuMs = ByProcess;

impl ByProcess {
    /// `1.10/0.20/0.50/0.00/0.15/0.05`: RabbitMQ, PostgreSQL, service,
    /// baseline, generator, other.
    pub fn short(&self) -> String {
        format!(
            "{:.2}/{:.2}/{:.2}/{:.2}/{:.2}/{:.2}",
            self.rabbitmq, self.postgres, self.service, self.baseline, self.generator, self.other
        )
    }

    /// Group by group, the mean of several runs.
    pub fn mean(runs: &[ByProcess]) -> ByProcess {
        let n = runs.len().max(1) as f64;
        let sum = runs
            .iter()
            .fold(ByProcess::default(), |a, b| a.zip(b, |x, y| x + y));
        sum.scaled(1.0 / n)
    }

    /// Every group, the machine's rest included.
    pub fn total(&self) -> f64 {
        self.system_under_test() + self.generator + self.other
    }

    /// What serving the events cost: the broker, the database, the service
    /// and the baseline; not the load generator nor the rest of the machine.
    pub fn system_under_test(&self) -> f64 {
        self.rabbitmq + self.postgres + self.service + self.baseline
    }

    /// Every group multiplied by `factor`.
    pub fn scaled(&self, factor: f64) -> ByProcess {
        self.zip(&ByProcess::default(), |x, _| x * factor)
    }

    /// CPU milliseconds divided among `events` (zero events: zeros).
    pub fn per_event(&self, events: u64) -> ByProcess {
        if events == 0 {
            return ByProcess::default();
        }
        self.scaled(1.0 / events as f64)
    }

    fn zip(&self, other: &ByProcess, f: impl Fn(f64, f64) -> f64) -> ByProcess {
        ByProcess {
            rabbitmq: f(self.rabbitmq, other.rabbitmq),
            postgres: f(self.postgres, other.postgres),
            service: f(self.service, other.service),
            baseline: f(self.baseline, other.baseline),
            generator: f(self.generator, other.generator),
            other: f(self.other, other.other),
        }
    }
}

pub struct Snapshot {
    at: Instant,
    by_group: BTreeMap<&'static str, u64>,
    machine_busy: u64,
}

impl Snapshot {
    pub fn take() -> Snapshot {
        let mut by_group = BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            // Numeric names only: /proc/self would count this process twice.
            let pids = dir.flatten().filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            });
            for entry in pids {
                let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                    continue;
                };
                if let Some((comm, ticks)) = process_ticks(&stat) {
                    *by_group.entry(group(comm)).or_insert(0) += ticks;
                }
            }
        }
        Snapshot {
            at: Instant::now(),
            by_group,
            machine_busy: machine_busy_ticks().unwrap_or(0),
        }
    }

    /// CPU milliseconds spent since `earlier`, by group.
    pub fn cpu_ms_since(&self, earlier: &Snapshot) -> CpuMs {
        let ms = |ticks: u64| ticks as f64 / TICKS_PER_SEC * 1000.0;
        let delta = |g: &str| {
            let now = self.by_group.get(g).copied().unwrap_or(0);
            let then = earlier.by_group.get(g).copied().unwrap_or(0);
            ms(now.saturating_sub(then))
        };
        let machine = ms(self.machine_busy.saturating_sub(earlier.machine_busy));
        let c = ByProcess {
            rabbitmq: delta("rabbitmq"),
            postgres: delta("postgres"),
            service: delta("service"),
            baseline: delta("baseline"),
            generator: delta("generator"),
            other: 0.0,
        };
        ByProcess {
            other: (machine - c.system_under_test() - c.generator).max(0.0),
            ..c
        }
    }

    /// Average cores used since `earlier`.
    pub fn cores_since(&self, earlier: &Snapshot) -> Cores {
        let secs = self.at.duration_since(earlier.at).as_secs_f64().max(1e-9);
        self.cpu_ms_since(earlier).scaled(1.0 / (secs * 1000.0))
    }
}

fn group(comm: &str) -> &'static str {
    match comm {
        "beam.smp" => "rabbitmq",
        "postgres" => "postgres",
        "fulfillment" => "service",
        // The naive baseline: Express under node:cluster (primary and workers).
        "node" => "baseline",
        // The kernel keeps 15 characters of a process name.
        "fulfillment-ben" => "generator",
        _ => "other",
    }
}

/// (process name, user + system ticks) from a /proc/PID/stat line.
fn process_ticks(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = &stat[open + 1..close];
    // Fields after the name start at field 3 (state); utime and stime are fields 14 and 15.
    let mut rest = stat[close + 1..].split_whitespace().skip(11);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some((comm, utime + stime))
}

/// Busy ticks of all CPUs: everything in /proc/stat's `cpu` line but idle and iowait.
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest times are inside user)
    let busy: u64 = fields.iter().take(8).sum::<u64>() - fields.get(3)? - fields.get(4)?;
    Some(busy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_event_and_totals() {
        let ms = ByProcess {
            rabbitmq: 250.0,
            postgres: 660.0,
            service: 270.0,
            baseline: 0.0,
            generator: 100.0,
            other: 20.0,
        };
        let each = ms.per_event(1000);
        assert!((each.system_under_test() - 1.18).abs() < 1e-9);
        assert!((each.total() - 1.30).abs() < 1e-9);
        assert_eq!(ms.per_event(0).total(), 0.0);
        let mean = ByProcess::mean(&[ms, ms.scaled(3.0)]);
        assert!((mean.postgres - 1320.0).abs() < 1e-9);
        assert_eq!(mean.short(), "500.00/1320.00/540.00/0.00/200.00/40.00");
    }

    #[test]
    fn parses_a_stat_line_with_spaces_in_the_name() {
        let stat = "42 (fulfillment-ben) S 1 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 3 0";
        assert_eq!(process_ticks(stat), Some(("fulfillment-ben", 280)));
        let odd = "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 5 6 0 0";
        assert_eq!(process_ticks(odd), Some(("a (b) c", 11)));
    }
}
