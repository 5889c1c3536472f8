//! Events of Connect accounts (issue 11, contract 8.3): the event's
//! top-level `account` is stored with the order and put on every downstream
//! message as `account`, `null` for the platform's own orders.

use std::time::Duration;

use fulfillment_tests::db::{connect, wait_status};
use fulfillment_tests::events::session;
use fulfillment_tests::{checkout_completed, pipeline, post_accepted};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn of_account(body: &[u8], account: &str) -> Vec<u8> {
    let mut event: Value = serde_json::from_slice(body).unwrap();
    event["account"] = account.into();
    serde_json::to_vec(&event).unwrap()
}

#[tokio::test]
async fn the_account_is_stored_with_the_order_and_on_every_message() {
    let (env, svc, downstream) = pipeline(&[]).await;
    let db = connect(&env.database_url()).await;
    // A Connect account's order, in two steps (awaiting payment, then paid).
    let unpaid = session(
        "evt_c_1",
        "checkout.session.completed",
        "ord_c",
        "unpaid",
        Some("pi_c"),
    );
    post_accepted(&svc, &of_account(&unpaid, "acct_1Connect")).await;
    wait_status(&db, "ord_c", "awaiting_payment", WAIT).await;
    let paid = session(
        "evt_c_2",
        "checkout.session.async_payment_succeeded",
        "ord_c",
        "paid",
        Some("pi_c"),
    );
    post_accepted(&svc, &of_account(&paid, "acct_1Connect")).await;
    wait_status(&db, "ord_c", "paid", WAIT).await;
    // And one of the platform's own.
    post_accepted(&svc, &checkout_completed("evt_p_1", "ord_p", "paid")).await;
    wait_status(&db, "ord_p", "paid", WAIT).await;

    let stored: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT order_id, account FROM orders ORDER BY order_id")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(
        stored,
        [
            ("ord_c".into(), Some("acct_1Connect".into())),
            ("ord_p".into(), None)
        ]
    );
    let messages: Vec<Value> = downstream
        .drain(Duration::from_millis(1500))
        .await
        .iter()
        .map(|m| serde_json::from_slice(&m.delivery.data).unwrap())
        .collect();
    assert_eq!(messages.len(), 3);
    for m in &messages {
        let expected = if m["order_id"] == "ord_c" {
            Value::from("acct_1Connect")
        } else {
            Value::Null
        };
        assert_eq!(m["account"], expected, "{m}");
        assert!(
            m.as_object().unwrap().contains_key("account"),
            "present even when null"
        );
    }
    let (ok, story) = fulfillment_tests::cli(&env, &["orders", "show", "ord_c"], &[]);
    assert!(
        ok && story.contains("connect account:   acct_1Connect"),
        "{story}"
    );
}
