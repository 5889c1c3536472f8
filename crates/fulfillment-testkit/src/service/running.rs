//! A started service: the child process, its ports and log, waiting for it
//! to come up, looking at it, and stopping it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, signal};
use crate::TestEnv;

/// How long a service may take to answer its start-up probe.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Which probe says a service has started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `/healthz`: the process serves HTTP (tests that start a service with
    /// its broker down need no more).
    Healthy,
    /// `/readyz`: broker (and database) connected; a benchmark measures from here.
    Ready,
}

impl Probe {
    fn path(self) -> &'static str {
        match self {
            Probe::Healthy => "/healthz",
            Probe::Ready => "/readyz",
        }
    }
}

/// Where a service's stderr goes.
pub enum Log {
    /// A file in the temporary directory, named after `env`, removed with the service.
    Temp,
    /// This file, kept afterwards (benchmark logs).
    Keep(PathBuf),
}

/// A running service; sent SIGTERM and reaped when dropped.
pub struct Service {
    child: Option<Child>,
    pub http_port: u16,
    pub metrics_port: u16,
    pub log: PathBuf,
    keep_log: bool,
}

impl Service {
    /// Starts `fulfillment <role>` with fresh ports and waits for `/healthz`.
    pub async fn start(env: &TestEnv, role: &str, extra: &[(&str, String)]) -> Service {
        let mut cmd = super::command(env, &[role]);
        Self::start_command(&mut cmd, env, extra).await
    }

    /// Starts `cmd` with fresh ports and `extra` settings, logging to a
    /// temporary file, and waits for `/healthz`; panics with the log if it
    /// does not come up.
    pub async fn start_command(
        cmd: &mut Command,
        env: &TestEnv,
        extra: &[(&str, String)],
    ) -> Service {
        for (k, v) in extra {
            cmd.env(k, v);
        }
        match Self::launch(cmd, env, Log::Temp, Probe::Healthy).await {
            Ok(service) => service,
            Err(e) => panic!("{e:#}"),
        }
    }

    /// Starts `cmd` on fresh ports (`HTTP_ADDR`, `METRICS_ADDR`), stderr to
    /// `log`, and waits until `probe` answers 200. Fails at once, with the
    /// log, if the process exits meanwhile; after 30 s otherwise.
    pub async fn launch(
        cmd: &mut Command,
        env: &TestEnv,
        log: Log,
        probe: Probe,
    ) -> anyhow::Result<Service> {
        let http_port = free_port();
        let metrics_port = free_port();
        let (log, keep_log) = match log {
            Log::Temp => (
                std::env::temp_dir().join(format!("{}-{http_port}.log", env.name)),
                false,
            ),
            Log::Keep(path) => (path, true),
        };
        let log_file = std::fs::File::create(&log)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", log.display()))?;
        cmd.env("HTTP_ADDR", format!("127.0.0.1:{http_port}"))
            .env("METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                // No Service owns the log yet to remove it on drop.
                if !keep_log {
                    let _ = std::fs::remove_file(&log);
                }
                anyhow::bail!("spawning {:?}: {e}", cmd.get_program());
            }
        };
        let mut service = Service {
            child: Some(child),
            http_port,
            metrics_port,
            log,
            keep_log,
        };
        service.wait_started(probe).await?;
        Ok(service)
    }

    async fn wait_started(&mut self, probe: Probe) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(r) = crate::http::get(self.http_port, probe.path()).await
                && r.status == 200
            {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok())
                .flatten()
            {
                anyhow::bail!(
                    "service exited with {status} before {}; {}",
                    probe.path(),
                    self.log_for_error()
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "service never answered 200 on {} within {START_TIMEOUT:?}; {}",
                probe.path(),
                self.log_for_error()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The log itself when it is a temporary file (it goes with the
    /// service), else where it is kept.
    fn log_for_error(&self) -> String {
        if self.keep_log {
            format!("see {}", self.log.display())
        } else {
            format!("log:\n{}", self.logs())
        }
    }

    /// Polls `/readyz` until it answers `want`.
    pub async fn wait_ready(&self, want: u16, within: Duration) {
        let deadline = Instant::now() + within;
        let mut last = 0;
        while Instant::now() < deadline {
            if let Ok(r) = crate::http::get(self.http_port, "/readyz").await {
                last = r.status;
                if r.status == want {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "/readyz stayed {last}, wanted {want}; log:\n{}",
            self.logs()
        );
    }

    pub fn http_addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.http_port).into()
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.metrics_port).into()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Resident memory now (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS:")
    }

    /// Peak resident memory since start (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.proc_status_kib("VmHWM:")
    }

    fn proc_status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/<pid>/status of a running service");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} missing from /proc/<pid>/status"))
    }

    /// Waits for the process to exit on its own (after a signal sent with
    /// [`signal`]) and returns its status.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let child = self.child.take().expect("running");
        self.reap(child, within, &format!("within {within:?}"))
    }

    /// Polls `child` until it exits; SIGKILL and a panic with the log after `within`.
    fn reap(&self, mut child: Child, within: Duration, what: &str) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("did not exit {what}; log:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, no goodbye: what a crash or an OOM kill looks like.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// True while the process runs (false once it exited or was killed).
    pub fn is_alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let child = self.child.take().expect("running");
        signal(child.id(), "TERM");
        self.reap(child, Duration::from_secs(30), "within 30 s of SIGTERM")
    }

    /// SIGTERM, then SIGKILL if it has not stopped within 15 s; waits
    /// without blocking the runtime (for callers with other tasks running).
    pub async fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut exited = false;
            while !exited && Instant::now() < deadline {
                exited = matches!(child.try_wait(), Ok(Some(_)));
                if !exited {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            if !exited {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if !self.keep_log {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}
