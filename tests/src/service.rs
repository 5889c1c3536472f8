//! The real binary as a child process.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::TestEnv;

/// `target/<profile>/fulfillment`, next to the test executable's `deps/`.
/// `make test` builds it first; a plain `cargo test` after `cargo build` works too.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("fulfillment");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p fulfillment`, or `make test`)",
        bin.display()
    );
    bin
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `fulfillment` command with the environment of `env` and the test secret.
pub fn command(env: &TestEnv, args: &[&str]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("DATABASE_URL", env.database_url())
        .env("AMQP_URL", env.amqp_url())
        .env("STRIPE_WEBHOOK_SECRET", crate::TEST_SECRET)
        // Every test stops its services with SIGTERM; a production-length
        // drain would add seconds to each. Tests of the drain set their own.
        .env("SHUTDOWN_DRAIN_SECS", "0");
    cmd
}

/// A running service; sent SIGTERM and reaped when dropped.
pub struct Service {
    child: Option<Child>,
    pub http_port: u16,
    pub metrics_port: u16,
    pub log: PathBuf,
}

impl Service {
    /// Starts `fulfillment <role>` with fresh ports and waits for `/healthz`.
    pub async fn start(env: &TestEnv, role: &str, extra: &[(&str, String)]) -> Service {
        let mut cmd = command(env, &[role]);
        Self::start_command(&mut cmd, env, extra).await
    }

    pub async fn start_command(
        cmd: &mut Command,
        env: &TestEnv,
        extra: &[(&str, String)],
    ) -> Service {
        let http_port = free_port();
        let metrics_port = free_port();
        let log = std::env::temp_dir().join(format!("{}-{http_port}.log", env.name));
        let log_file = std::fs::File::create(&log).expect("log file");
        cmd.env("HTTP_ADDR", format!("127.0.0.1:{http_port}"))
            .env("METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .stdout(Stdio::null())
            .stderr(log_file);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawning fulfillment");
        let service = Service {
            child: Some(child),
            http_port,
            metrics_port,
            log,
        };
        service.wait_healthy().await;
        service
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = crate::http::get(self.http_port, "/healthz").await
                && r.status == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("service never became healthy; log:\n{}", self.logs());
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
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("did not exit within {within:?}; log:\n{}", self.logs());
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
        let mut child = self.child.take().expect("running");
        signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("did not exit within 30 s of SIGTERM; log:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    let _ = std::fs::remove_file(&self.log);
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}
