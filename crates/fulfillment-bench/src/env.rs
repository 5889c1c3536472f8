//! Isolation: every benchmark run gets a RabbitMQ vhost and a PostgreSQL
//! database of its own, removed when the run is over (also on error).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432";
pub const AMQP_BASE: &str = "amqp://guest:guest@127.0.0.1:5672";

pub struct BenchEnv {
    pub name: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl BenchEnv {
    /// Creates the vhost; the database is created by `fulfillment migrate`.
    pub fn new(what: &str) -> anyhow::Result<BenchEnv> {
        let name = format!(
            "bench_{what}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        rabbitmqctl(&["add_vhost", &name])?;
        let env = BenchEnv { name };
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

    pub fn amqp_url(&self) -> String {
        format!("{AMQP_BASE}/{}", self.name)
    }

    pub fn database_url(&self) -> String {
        format!("{PG_BASE}/{}", self.name)
    }
}

impl Drop for BenchEnv {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["delete_vhost", &self.name]);
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-q", "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("rabbitmqctl").arg("-q").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}
