//! Reading the test database.

use std::time::{Duration, Instant};

use sqlx::PgPool;

pub async fn connect(url: &str) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .expect("test database (run migrate first)")
}

pub async fn order_status(pool: &PgPool, order_id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM orders WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(pool)
        .await
        .expect("query orders")
}

/// Waits until the order has `status`; panics with what it has after `within`.
pub async fn wait_status(pool: &PgPool, order_id: &str, status: &str, within: Duration) {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        last = order_status(pool, order_id).await;
        if last.as_deref() == Some(status) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("order {order_id} is {last:?}, expected {status}");
}

/// Waits until `sql` (a scalar count) returns `want`.
pub async fn wait_count(pool: &PgPool, sql: &str, want: i64, within: Duration) {
    let deadline = Instant::now() + within;
    let mut last = -1;
    while Instant::now() < deadline {
        last = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap_or(-1);
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{sql} = {last}, expected {want}");
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}
