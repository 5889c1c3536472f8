//! The PostgreSQL edge: creating the database, migrations, the pool.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use backon::Retryable;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use tracing::{info, warn};

use crate::retry::Failure;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

pub fn options(url: &str) -> anyhow::Result<PgConnectOptions> {
    // The URL may hold a password: name the setting, never echo the value.
    PgConnectOptions::from_str(url)
        .map_err(|e| anyhow::anyhow!("DATABASE_URL: not a valid PostgreSQL URL: {e}"))
}

/// Creates the database named in `url` if it does not exist. Several replicas
/// may race here: losing the race (duplicate database) is success.
pub async fn create_database_if_missing(url: &str) -> anyhow::Result<()> {
    let target = options(url)?;
    let name = target
        .get_database()
        .context("DATABASE_URL names no database")?
        .to_owned();
    let admin_options = target.clone().database("postgres");
    let mut admin = retry_connect(|| {
        let options = admin_options.clone();
        async move { options.connect().await }
    })
    .await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&sql).execute(&mut admin).await {
            Ok(_) => info!(database = %name, "database created"),
            Err(e) if is_duplicate_database(&e) => {}
            Err(e) => return Err(e).context("creating the database"),
        }
    }
    admin.close().await.ok();
    Ok(())
}

fn is_duplicate_database(e: &sqlx::Error) -> bool {
    // 42P04 duplicate_database; 23505 when two CREATEs race on the catalog index.
    matches!(e.as_database_error().and_then(|d| d.code()), Some(c) if c == "42P04" || c == "23505")
}

/// Applies pending migrations. sqlx holds an advisory lock meanwhile, so
/// concurrent `migrate` runs wait for each other instead of colliding.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("applying migrations")?;
    Ok(())
}

/// A pool that connects lazily; the first use after start is retried with
/// backoff by the callers, so a database that is down at start is not fatal.
pub fn pool(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options = options(url)?.log_statements(tracing::log::LevelFilter::Debug);
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options))
}

/// Retries `connect` with backoff until it succeeds, logging each failure.
pub async fn retry_connect<T, F, Fut>(connect: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let backoff = crate::backoff::database_connect();
    connect
        .retry(backoff)
        .when(is_transient)
        .notify(|e, delay| warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "database unavailable"))
        .await
        .context("connecting to the database")
}

/// Errors worth retrying: the database is unreachable, restarting, or the
/// transaction lost a race.
pub fn is_transient(e: &sqlx::Error) -> bool {
    is_unavailable(e) || is_conflict(e)
}

/// The database is down, restarting or out of connections: waiting helps,
/// and the event itself is not at fault.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            // admin_shutdown, crash_shutdown, cannot_connect_now,
            // too_many_connections, and the connection_exception class.
            matches!(c.as_ref(), "57P01" | "57P02" | "57P03" | "53300") || c.starts_with("08")
        }),
        _ => false,
    }
}

/// Serialization failure or deadlock: retrying the transaction at once helps.
pub fn is_conflict(e: &sqlx::Error) -> bool {
    matches!(
        e.as_database_error().and_then(|d| d.code()).as_deref(),
        Some("40001" | "40P01")
    )
}

/// Whether an error that is neither an outage nor a conflict can be fixed by
/// retrying the event later. The one place that classifies database errors
/// for routing (`RetryPolicy::route` then decides tier or DLQ).
pub fn failure(e: &sqlx::Error) -> Failure {
    match e {
        // A value sqlx could not even encode: the event's data is at fault.
        sqlx::Error::Encode(_) => Failure::Permanent,
        sqlx::Error::Database(d) => d
            .code()
            .map_or(Failure::Transient, |c| failure_of_sqlstate(&c)),
        _ => Failure::Transient,
    }
}

/// SQLSTATE classes no retry can fix, because the data itself is refused:
/// 22 (data exception: a NUL byte in text is 22021, a number out of range
/// 22003) and 54 (program limit exceeded: an index row too large is 54000).
/// Everything else is worth the delay tiers: a constraint another event may
/// satisfy, a trigger, a lock timeout, a bug fixed by a deploy.
pub fn failure_of_sqlstate(code: &str) -> Failure {
    if code.starts_with("22") || code.starts_with("54") {
        Failure::Permanent
    } else {
        Failure::Transient
    }
}

/// An error for the `x-error` header: the database's own message (which
/// names the problem, e.g. `invalid byte sequence for encoding "UTF8":
/// 0x00`) and its SQLSTATE, so an operator can look it up.
pub fn describe(e: &sqlx::Error) -> String {
    match e.as_database_error() {
        Some(d) => match d.code() {
            Some(code) => format!("{} (SQLSTATE {code})", d.message()),
            None => d.message().to_owned(),
        },
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_the_database_refuses_is_permanent() {
        for code in ["22021", "22001", "22003", "22P02", "54000", "54001"] {
            assert_eq!(failure_of_sqlstate(code), Failure::Permanent, "{code}");
        }
    }

    #[test]
    fn everything_else_is_worth_retrying() {
        // P0001 raise_exception (a trigger), 23505 unique violation, 40001
        // serialization failure, 57014 query canceled, 55P03 lock not available.
        for code in [
            "P0001", "23505", "40001", "57014", "55P03", "08006", "42P01",
        ] {
            assert_eq!(failure_of_sqlstate(code), Failure::Transient, "{code}");
        }
    }

    #[test]
    fn an_unencodable_value_is_permanent_and_an_outage_is_not() {
        let encode = sqlx::Error::Encode("bad".into());
        assert_eq!(failure(&encode), Failure::Permanent);
        assert_eq!(failure(&sqlx::Error::PoolTimedOut), Failure::Transient);
    }
}
