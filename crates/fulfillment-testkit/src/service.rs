//! The real binary as a child process: found beside the running executable,
//! configured only through its environment, started on free ports, waited
//! for, and stopped with SIGTERM (SIGKILL if it will not go).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::TestEnv;

mod running;

pub use running::{Log, Probe, Service};

/// `fulfillment`, beside the running executable: `target/<profile>/` holds
/// the binaries, `target/<profile>/deps/` the test executables. `make test`
/// builds it first; a plain `cargo test` after `cargo build` works too.
pub fn binary() -> PathBuf {
    let bin = sibling_binary("fulfillment");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p fulfillment`, or `make test`)",
        bin.display()
    );
    bin
}

/// The binary `name` of the same build as the running executable: in its
/// directory or, for a test executable in `deps/`, the one above. When it is
/// in neither, the path beside the executable (so the error names it).
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable's path");
    let dir = exe.parent().expect("an executable lives in a directory");
    let beside = dir.join(name);
    let above = dir.parent().map(|up| up.join(name));
    match above {
        Some(above) if !beside.exists() && above.exists() => above,
        _ => beside,
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `fulfillment` command (the one [`binary`] finds) for `env`.
pub fn command(env: &TestEnv, args: &[&str]) -> Command {
    command_for(&binary(), env, args)
}

/// A command running `bin` for `env`, signing with [`crate::TEST_SECRET`].
/// The environment is cleared first, so nothing from the caller's shell (a
/// `DATABASE_URL`, a `WORKER_CONCURRENCY`) leaks in: the service runs with
/// its shipped defaults plus what the caller sets.
pub fn command_for(bin: &Path, env: &TestEnv, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("DATABASE_URL", env.database_url())
        .env("AMQP_URL", env.amqp_url())
        .env("STRIPE_WEBHOOK_SECRET", crate::TEST_SECRET)
        // Every run stops its services with SIGTERM and has no load balancer
        // to drain from; a production-length drain would add seconds to each.
        // Tests of the drain set their own.
        .env("SHUTDOWN_DRAIN_SECS", "0");
    cmd
}

/// Runs `fulfillment migrate` for `env` (with `extra` settings) and asserts it succeeded.
pub fn migrate(env: &TestEnv, extra: &[(&str, &str)]) {
    let mut cmd = command(env, &["migrate"]);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    if let Err(e) = run_to_success(cmd) {
        panic!("migrate failed: {e:#}");
    }
}

/// `bin migrate` for `env`: database, migrations, AMQP topology.
pub fn try_migrate(bin: &Path, env: &TestEnv) -> anyhow::Result<()> {
    run_to_success(command_for(bin, env, &["migrate"]))
}

/// Runs `cmd` to its end; an error carrying its stderr unless it succeeded.
fn run_to_success(mut cmd: Command) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .map_err(|e| anyhow::anyhow!("running {:?}: {e}", cmd.get_program()))?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Runs a `fulfillment` CLI command for `env`; returns (success, stdout).
pub fn cli(env: &TestEnv, args: &[&str], extra: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = command(env, args);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run fulfillment");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}
