//! `fulfillment migrate`: creates the database, applies migrations, declares
//! the topology; idempotent and safe from several replicas at once.

use std::time::Duration;

use fulfillment_tests::TestEnv;
use fulfillment_tests::amqp::queue_depth;
use fulfillment_tests::service::command;

#[tokio::test]
async fn migrate_is_idempotent_and_safe_concurrently() {
    let env = TestEnv::new();
    // Three replicas at once on an empty database and vhost, then once more.
    let runs: Vec<_> = (0..3)
        .map(|_| command(&env, &["migrate"]).spawn().expect("spawn migrate"))
        .collect();
    for mut child in runs {
        assert!(child.wait().unwrap().success(), "concurrent migrate failed");
    }
    let again = command(&env, &["migrate"]).output().unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let pool = sqlx::PgPool::connect(&env.database_url())
        .await
        .expect("database created");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sql")
        })
        .count();
    assert_eq!(
        applied as usize, files,
        "every migration applied exactly once"
    );
    pool.close().await;

    for queue in ["stripe.fulfillment", "stripe.fulfillment.dlq"] {
        assert_eq!(
            queue_depth(&env.amqp_url(), queue).await,
            0,
            "{queue} declared"
        );
    }
}

#[tokio::test]
async fn migrate_fails_clearly_when_the_database_is_unreachable() {
    let env = TestEnv::new();
    let started = std::time::Instant::now();
    let out = command(&env, &["migrate"])
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nowhere")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().last().unwrap().contains("database"),
        "{stderr}"
    );
    assert!(
        stderr.contains("database unavailable"),
        "retries are logged: {stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(120));
}
