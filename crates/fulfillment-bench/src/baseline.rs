//! The naive baseline (`bench/baseline/server.js`): Express under
//! `node:cluster`, stripe-node's `constructEvent`, one PostgreSQL
//! transaction per request, 200 after the commit. Run in the same suite as
//! the service, with the same generator and the same events, against a
//! database of its own, so "N times the baseline" compares like with like.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use sqlx::PgPool;

use crate::cpu::{Cores, CpuMs, Snapshot};
use crate::events::Events;
use crate::http_load::{self, Mode};
use crate::under_test;

/// Where `server.js` and its `package-lock.json` are, in this repository.
pub const DEFAULT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/baseline");

/// How long the baseline may take to answer `/healthz` after its start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Serialize)]
pub struct BaselineRun {
    /// Closed loop, every event sent once; the 200 comes after the commit,
    /// so the HTTP figures are end to end.
    pub http: http_load::Outcome,
    pub events_per_sec: f64,
    pub cores: Cores,
    pub cpu_ms_per_event: CpuMs,
    /// `node:cluster` workers (one per core, as deployed).
    pub workers: usize,
}

/// The `node server.js` process group; SIGTERM to all of it when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(dir: &Path, database_url: &str, secret: &str, log: &Path) -> anyhow::Result<Server> {
        anyhow::ensure!(
            dir.join("node_modules").is_dir(),
            "{}/node_modules is missing: run `npm ci` there (`make bench` does)",
            dir.display()
        );
        let port = fulfillment_testkit::service::free_port();
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new("node")
            .arg("server.js")
            .current_dir(dir)
            .env("PORT", port.to_string())
            .env("DATABASE_URL", database_url)
            .env("STRIPE_WEBHOOK_SECRET", secret)
            .env("BASELINE_WORKERS", WORKERS.to_string())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            // Its own process group: the workers go with the primary.
            .process_group(0)
            .spawn()
            .context("starting the baseline (is Node.js installed?)")?;
        Ok(Server { child, port })
    }

    async fn wait_healthy(&mut self, log: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(r) = fulfillment_testkit::http::get(self.port, "/healthz").await
                && r.status == 200
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("the baseline exited with {status}; see {}", log.display());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the baseline did not answer within {START_TIMEOUT:?}; see {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// One process per core, as the machine has two.
const WORKERS: usize = 2;

/// Sends `count` events (sequence numbers from 0, as the service's run) over
/// `connections` connections to a fresh baseline, then checks it did the
/// work: every order `paid`, one outbox row each.
pub async fn run(
    dir: &Path,
    out_dir: &Path,
    events: Arc<Events>,
    count: u64,
    connections: usize,
) -> anyhow::Result<BaselineRun> {
    let env = under_test::database_only("baseline")?;
    let pool = under_test::create_database(&env).await?;
    let log: PathBuf = out_dir.join("baseline.log");
    let secret = fulfillment_testkit::TEST_SECRET;
    let mut server = Server::start(dir, &env.database_url(), secret, &log)?;
    server.wait_healthy(&log).await?;
    under_test::checkpoint(&pool).await?;

    let before = Snapshot::take();
    let spec = http_load::Spec {
        addr: (std::net::Ipv4Addr::LOCALHOST, server.port).into(),
        connections,
        mode: Mode::Closed,
        count: Some(count),
        duration: None,
        warmup: Duration::ZERO,
        first_seq: 0,
    };
    let http = http_load::run(spec, events).await;
    let after = Snapshot::take();
    anyhow::ensure!(
        http.errors == 0,
        "baseline: {} of {count} POSTs failed; first: {:?}",
        http.errors,
        http.first_error
    );
    check_done(&pool, count).await?;
    drop(server);
    pool.close().await;
    Ok(BaselineRun {
        events_per_sec: http.ok_per_sec,
        cores: after.cores_since(&before),
        cpu_ms_per_event: after.cpu_ms_since(&before).per_event(http.ok),
        workers: WORKERS,
        http,
    })
}

/// A baseline that answered 200 without storing would win by cheating.
async fn check_done(pool: &PgPool, count: u64) -> anyhow::Result<()> {
    let paid: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'paid'")
        .fetch_one(pool)
        .await?;
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(pool)
        .await?;
    anyhow::ensure!(
        paid as u64 == count && outbox as u64 == count,
        "the baseline answered {count} events but has {paid} paid orders and {outbox} outbox rows"
    );
    Ok(())
}
