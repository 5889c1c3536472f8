//! The `fulfillment` binary under test, as a child process: `migrate`, then
//! `serve` or `receiver` on free local ports; its peak memory and metrics.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::env::BenchEnv;
use crate::http_load;

/// The endpoint secret the benchmarks sign with. Not a real secret.
pub const BENCH_SECRET: &str = "whsec_bench_only_not_a_real_secret";

pub struct Service {
    child: Child,
    pub pid: u32,
    pub http_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
}

fn command(bin: &Path, env: &BenchEnv, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("DATABASE_URL", env.database_url())
        .env("AMQP_URL", env.amqp_url())
        .env("STRIPE_WEBHOOK_SECRET", BENCH_SECRET)
        // No load balancer to drain from: stop at once on SIGTERM.
        .env("SHUTDOWN_DRAIN_SECS", "0")
        .kill_on_drop(true);
    cmd
}

/// `fulfillment migrate`: database, migrations, AMQP topology.
pub async fn migrate(bin: &Path, env: &BenchEnv) -> anyhow::Result<()> {
    let out = command(bin, env, &["migrate"])
        .output()
        .await
        .with_context(|| format!("running {}", bin.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "fulfillment migrate failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl Service {
    /// Starts `fulfillment ROLE` (`serve` or `receiver`) with its defaults
    /// (WORKER_CONCURRENCY, DATABASE_MAX_CONNECTIONS, … as shipped), logs to
    /// `log`, and waits until `/readyz` answers 200.
    pub async fn start(bin: &Path, role: &str, env: &BenchEnv, log: &Path) -> anyhow::Result<Self> {
        let (http_addr, metrics_addr) = (free_port()?, free_port()?);
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = command(bin, env, &[role])
            .env("HTTP_ADDR", http_addr.to_string())
            .env("METRICS_ADDR", metrics_addr.to_string())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("the service exited at once")?;
        let mut service = Service {
            child,
            pid,
            http_addr,
            metrics_addr,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http_load::get(http_addr, "/readyz").await {
                return Ok(service);
            }
            if let Some(status) = service.child.try_wait()? {
                anyhow::bail!(
                    "fulfillment {role} exited with {status}; see {}",
                    log.display()
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "fulfillment {role} not ready after 30 s; see {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM in /proc/PID/status")?;
        Ok(kib * 1024)
    }

    /// The mean of a Prometheus histogram or summary (`_sum / _count`,
    /// over all label sets), in seconds; None if it has no samples.
    pub async fn metric_mean(&self, name: &str) -> anyhow::Result<Option<f64>> {
        let (_, text) = http_load::get(self.metrics_addr, "/metrics").await?;
        Ok(mean_of(&text, name))
    }

    /// SIGTERM, then SIGKILL if it has not stopped within 15 s.
    pub async fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn mean_of(metrics: &str, name: &str) -> Option<f64> {
    let total = |suffix: &str| -> f64 {
        let series = format!("{name}_{suffix}");
        metrics
            .lines()
            .filter(|l| {
                l.strip_prefix(&series)
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let count = total("count");
    (count > 0.0).then(|| total("sum") / count)
}

/// Where the release binaries are: beside this one.
pub fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_of_a_histogram_over_label_sets() {
        let text = "# TYPE x_seconds histogram\n\
                    x_seconds_bucket{le=\"0.1\"} 3\n\
                    x_seconds_sum{role=\"a\"} 0.5\n\
                    x_seconds_count{role=\"a\"} 2\n\
                    x_seconds_sum{role=\"b\"} 1.0\n\
                    x_seconds_count{role=\"b\"} 1\n\
                    x_seconds_other_count 99\n";
        assert_eq!(mean_of(text, "x_seconds"), Some(0.5));
        assert_eq!(mean_of(text, "y"), None);
    }
}
