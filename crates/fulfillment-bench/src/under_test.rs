//! The `fulfillment` binary under test, through `fulfillment-testkit` (the
//! same set-up the end-to-end tests use): `serve` or `receiver` started on
//! free local ports with its shipped defaults, and the metrics the suite
//! reads from it.

use std::path::Path;

use anyhow::Context;
use fulfillment_testkit::TestEnv;
use fulfillment_testkit::service::{self, Log, Probe, Service};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// A fresh vhost and database for one benchmark stage, named `bench_{what}_…`,
/// removed when dropped (also on error).
pub fn env(what: &str) -> anyhow::Result<TestEnv> {
    TestEnv::try_new(&format!("bench_{what}"))
}

/// A database of its own for a stage that uses no broker (the baseline),
/// named `bench_{what}_…`, dropped when the env is.
pub fn database_only(what: &str) -> anyhow::Result<TestEnv> {
    TestEnv::database_only(&format!("bench_{what}"))
}

/// `fulfillment migrate`: database, migrations, AMQP topology.
pub fn migrate(bin: &Path, env: &TestEnv) -> anyhow::Result<()> {
    service::try_migrate(bin, env).context("fulfillment migrate failed")
}

/// Starts `fulfillment ROLE` (`serve` or `receiver`) with its defaults
/// (WORKER_CONCURRENCY, DATABASE_MAX_CONNECTIONS, … as shipped), logs to
/// `log` (kept), and waits until `/readyz` answers 200.
pub async fn start(bin: &Path, role: &str, env: &TestEnv, log: &Path) -> anyhow::Result<Service> {
    let mut cmd = service::command_for(bin, env, &[role]);
    Service::launch(&mut cmd, env, Log::Keep(log.to_owned()), Probe::Ready)
        .await
        .with_context(|| format!("starting fulfillment {role}"))
}

/// Creates `env`'s database (for a stage `fulfillment migrate` does not
/// set up) and connects to it.
pub async fn create_database(env: &TestEnv) -> anyhow::Result<PgPool> {
    let admin_url = format!("{}/postgres", fulfillment_testkit::env::PG_BASE);
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url)
        .await
        .context("connecting to PostgreSQL")?;
    sqlx::query(&format!("CREATE DATABASE \"{}\"", env.name))
        .execute(&admin)
        .await
        .with_context(|| format!("creating database {}", env.name))?;
    admin.close().await;
    Ok(PgPoolOptions::new()
        .max_connections(2)
        .connect(&env.database_url())
        .await?)
}

/// Flushes PostgreSQL's dirty pages now, so that a checkpoint the previous
/// stage caused does not land in the middle of the next measurement (each
/// throughput run starts from the same footing).
pub async fn checkpoint(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("CHECKPOINT")
        .execute(pool)
        .await
        .context("CHECKPOINT")?;
    Ok(())
}

/// Peak resident memory so far (`VmHWM`), in bytes.
pub fn peak_rss_bytes(service: &Service) -> u64 {
    service.peak_rss_kib() * 1024
}

/// The mean of a Prometheus histogram or summary (`_sum / _count`,
/// over all label sets), in seconds; None if it has no samples.
pub async fn metric_mean(service: &Service, name: &str) -> anyhow::Result<Option<f64>> {
    let metrics = fulfillment_testkit::http::get(service.metrics_port, "/metrics").await?;
    Ok(mean_of(&metrics.text(), name))
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
