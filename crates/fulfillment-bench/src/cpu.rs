//! Where the two cores went during a run: CPU time per process group, read
//! from /proc (no perf needed).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

/// Clock ticks per second of /proc's times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// Cores busy on average, by process group; `other` is the rest of the
/// machine's busy time (the kernel, processes that ended during the run).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Cores {
    pub rabbitmq: f64,
    pub postgres: f64,
    pub service: f64,
    pub generator: f64,
    pub other: f64,
}

impl Cores {
    /// `1.10/0.20/0.50/0.15/0.05`: RabbitMQ, PostgreSQL, service, generator, other.
    pub fn short(&self) -> String {
        format!(
            "{:.2}/{:.2}/{:.2}/{:.2}/{:.2}",
            self.rabbitmq, self.postgres, self.service, self.generator, self.other
        )
    }

    /// Group by group, the mean of several runs.
    pub fn mean(runs: &[Cores]) -> Cores {
        let n = runs.len().max(1) as f64;
        let m = |f: fn(&Cores) -> f64| runs.iter().map(f).sum::<f64>() / n;
        Cores {
            rabbitmq: m(|c| c.rabbitmq),
            postgres: m(|c| c.postgres),
            service: m(|c| c.service),
            generator: m(|c| c.generator),
            other: m(|c| c.other),
        }
    }

    pub fn total(&self) -> f64 {
        self.rabbitmq + self.postgres + self.service + self.generator + self.other
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

    /// Average cores used since `earlier`.
    pub fn cores_since(&self, earlier: &Snapshot) -> Cores {
        let secs = self.at.duration_since(earlier.at).as_secs_f64().max(1e-9);
        let delta = |g: &str| {
            let now = self.by_group.get(g).copied().unwrap_or(0);
            let then = earlier.by_group.get(g).copied().unwrap_or(0);
            now.saturating_sub(then) as f64 / TICKS_PER_SEC / secs
        };
        let machine =
            self.machine_busy.saturating_sub(earlier.machine_busy) as f64 / TICKS_PER_SEC / secs;
        let c = Cores {
            rabbitmq: delta("rabbitmq"),
            postgres: delta("postgres"),
            service: delta("service"),
            generator: delta("generator"),
            other: 0.0,
        };
        Cores {
            other: (machine - c.rabbitmq - c.postgres - c.service - c.generator).max(0.0),
            ..c
        }
    }
}

fn group(comm: &str) -> &'static str {
    match comm {
        "beam.smp" => "rabbitmq",
        "postgres" => "postgres",
        "fulfillment" => "service",
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
    fn parses_a_stat_line_with_spaces_in_the_name() {
        let stat = "42 (fulfillment-ben) S 1 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 3 0";
        assert_eq!(process_ticks(stat), Some(("fulfillment-ben", 280)));
        let odd = "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 5 6 0 0";
        assert_eq!(process_ticks(odd), Some(("a (b) c", 11)));
    }
}
