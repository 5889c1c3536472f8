//! Per-test isolation: a fresh RabbitMQ vhost and a database name of its own.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432";
pub const AMQP_BASE: &str = "amqp://guest:guest@127.0.0.1:5672";

pub struct TestEnv {
    pub name: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestEnv {
    /// Creates the vhost now; the database is created by `migrate` (which is
    /// part of what is under test) or lazily by whoever needs it.
    pub fn new() -> TestEnv {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "ft_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            nanos % 100_000
        );
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        TestEnv { name }
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
    fn drop(&mut self) {
        rabbitmqctl(&["delete_vhost", &self.name]);
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-q", "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(["-q"])
        .args(args)
        .output()
        .expect("rabbitmqctl is installed");
    assert!(
        out.status.success() || args[0] == "delete_vhost",
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
