//! Isolation: a RabbitMQ vhost and a PostgreSQL database name of its own for
//! every test or benchmark run, both removed when the [`TestEnv`] is dropped.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432";
pub const AMQP_BASE: &str = "amqp://guest:guest@127.0.0.1:5672";

/// One vhost and one database, both called `name`.
pub struct TestEnv {
    pub name: String,
    /// False for [`TestEnv::database_only`]: nothing to delete on the broker.
    has_vhost: bool,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestEnv {
    /// A fresh environment for a test (names `ft_…`); panics if the broker
    /// will not make the vhost.
    pub fn new() -> TestEnv {
        Self::try_new("ft").expect("a fresh RabbitMQ vhost")
    }

    /// Creates the vhost now, named `{prefix}_{pid}_{n}_{nanos}`; the database
    /// is created by `migrate` (which is part of what is under test) or lazily
    /// by whoever needs it. Process id, counter and clock together keep names
    /// unique across parallel test binaries and reruns.
    pub fn try_new(prefix: &str) -> anyhow::Result<TestEnv> {
        let name = unique_name(prefix)?;
        rabbitmqctl(&["add_vhost", &name])?;
        // Owned from here on: should granting permissions fail, dropping
        // `env` still deletes the vhost just made.
        let env = TestEnv {
            name,
            has_vhost: true,
        };
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &env.name,
            "guest",
            ".*",
            ".*",
            ".*",
        ])?;
        Ok(env)
    }

    /// A database name of its own and no vhost on the machine's broker: for
    /// a run that brings its own broker (`make cluster`), so it does not
    /// depend on the shared one.
    pub fn database_only(prefix: &str) -> anyhow::Result<TestEnv> {
        Ok(TestEnv {
            name: unique_name(prefix)?,
            has_vhost: false,
        })
    }

    pub fn amqp_url(&self) -> String {
        format!("{AMQP_BASE}/{}", self.name)
    }

    pub fn database_url(&self) -> String {
        format!("{PG_BASE}/{}", self.name)
    }

    /// The broker URL with another host:port (e.g. a proxy in front of the broker).
    pub fn amqp_url_via(&self, port: u16) -> String {
        format!("amqp://guest:guest@127.0.0.1:{port}/{}", self.name)
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestEnv {
    /// Best effort, never panics (it also runs while unwinding): the vhost
    /// goes with its queues, the database with `FORCE`, which ends sessions
    /// still connected to it (a pool the test forgot, a service killed late).
    fn drop(&mut self) {
        if self.has_vhost {
            let _ = rabbitmqctl(&["delete_vhost", &self.name]);
        }
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-q", "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

/// `{prefix}_{pid}_{n}_{nanos}`: process id, counter and clock together keep
/// names unique across parallel test binaries and reruns.
fn unique_name(prefix: &str) -> anyhow::Result<String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos();
    Ok(format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos % 100_000
    ))
}

fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("running rabbitmqctl (is it installed?): {e}"))?;
    anyhow::ensure!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}
