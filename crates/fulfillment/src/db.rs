//! The PostgreSQL edge: creating the database, migrations, the pool.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use backon::Retryable;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tracing::{info, warn};

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
///
/// Every statement is planned for the values it runs with
/// (`plan_cache_mode=force_custom_plan`). Our statements are key lookups
/// (`= ANY($1)`) on tables that start empty and grow fast. PostgreSQL
/// switches a prepared statement to its generic plan after five calls; if
/// that happens while a table is still tiny, the generic plan is a sequential
/// scan. It stays cached until an ANALYZE invalidates it, which never comes
/// when autovacuum is off or behind. Measured (docs/benchmarks.md): 12 ms per
/// lookup at 20,000 orders, the pipeline at half its speed. Planning each
/// call costs less than that one scan.
pub fn pool(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options = options(url)?
        .options([("plan_cache_mode", "force_custom_plan")])
        .log_statements(tracing::log::LevelFilter::Debug);
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

/// Runs `job` on a connection of its own while holding the session-level
/// advisory lock named `name`, so only one replica runs it at a time;
/// `Ok(None)` when another replica holds the lock. The connection is closed
/// afterwards instead of going back to the pool: closing is what releases
/// the lock for sure, even when `job` fails or is cancelled half-way (a
/// pooled connection would keep holding it).
pub async fn exclusively<T, E>(
    pool: &PgPool,
    name: &str,
    job: impl AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
) -> Result<Option<T>, E>
where
    E: From<sqlx::Error>,
{
    let mut conn = pool.acquire().await?;
    conn.close_on_drop();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(name)
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        return Ok(None);
    }
    job(&mut conn).await.map(Some)
}
