//! The kit's own promises, on the machine's real RabbitMQ and PostgreSQL:
//! what it creates it removes, and a service that dies at start is reported
//! at once, not after the start-up timeout.

use std::process::Command;
use std::time::{Duration, Instant};

use fulfillment_testkit::TestEnv;
use fulfillment_testkit::service::{self, Log, Probe, Service};

fn vhost_exists(name: &str) -> bool {
    let out = Command::new("rabbitmqctl")
        .args(["-q", "list_vhosts"])
        .output()
        .expect("rabbitmqctl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == name)
}

async fn database_exists(name: &str) -> bool {
    let pool = fulfillment_testkit::db::connect(&format!(
        "{}/postgres",
        fulfillment_testkit::env::PG_BASE
    ))
    .await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&pool)
        .await
        .expect("pg_database");
    n == 1
}

#[tokio::test]
async fn dropping_the_env_removes_its_vhost_and_database() {
    let env = TestEnv::try_new("kit").expect("a vhost");
    let name = env.name.clone();
    let admin = fulfillment_testkit::db::connect(&format!(
        "{}/postgres",
        fulfillment_testkit::env::PG_BASE
    ))
    .await;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&admin)
        .await
        .expect("create the env's database");
    // A session still open on the database must not keep it alive.
    let lingering = fulfillment_testkit::db::connect(&env.database_url()).await;
    assert!(vhost_exists(&name) && database_exists(&name).await);

    drop(env);

    assert!(!vhost_exists(&name), "vhost {name} left behind");
    assert!(!database_exists(&name).await, "database {name} left behind");
    drop(lingering);
}

#[tokio::test]
async fn a_service_that_exits_at_start_is_reported_at_once_with_its_log() {
    let env = TestEnv::new();
    // An empty secret: `serve` refuses to start (CONTRACT §2).
    let mut cmd = service::command(&env, &["serve"]);
    cmd.env("STRIPE_WEBHOOK_SECRET", "");
    let started = Instant::now();
    let error = match Service::launch(&mut cmd, &env, Log::Temp, Probe::Healthy).await {
        Ok(_) => panic!("serve started without a secret"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert!(error.contains("exited"), "{error}");
    assert!(
        error.contains("STRIPE_WEBHOOK_SECRET"),
        "the log names the setting: {error}"
    );
    let leftovers = std::fs::read_dir(std::env::temp_dir())
        .expect("temp dir")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{}-", env.name))
        })
        .count();
    assert_eq!(leftovers, 0, "its temporary log is removed");
}
