//! One JSON contract, end to end: a signed body that is valid JSON gets 200 and the
//! worker reads it; when a member the worker reads is unusable, the event is
//! dead-lettered at once with a reason naming that member, never as "not valid JSON".
//! (Issue 9, item 1: these bodies got 200 and were then dead-lettered as not JSON.)

use std::time::{Duration, Instant};

use fulfillment_tests::db::{connect, order_status, wait_status};
use fulfillment_tests::events::session;
use fulfillment_tests::http::post_signed;
use fulfillment_tests::{Service, TEST_SECRET, TestEnv, migrate};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);
const COMPLETED: &str = "checkout.session.completed";

async fn post(svc: &Service, body: &str) {
    let reply = post_signed(svc.http_port, body.as_bytes(), TEST_SECRET).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

fn paid_session(event_id: &str, order_id: &str) -> String {
    String::from_utf8(session(event_id, COMPLETED, order_id, "paid", None)).unwrap()
}

/// Waits for the worker's dead-letter log line of `event_id` and returns it.
async fn dead_letter_line(svc: &Service, event_id: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let logs = svc.logs();
        let line = logs
            .lines()
            .find(|line| line.contains("event dead-lettered") && line.contains(event_id));
        if let Some(line) = line {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{event_id} not dead-lettered:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `body` with the JSON value at `pointer` replaced by the raw text `raw` (JSON a
/// `serde_json::Value` could not hold).
fn with_raw(body: &str, pointer: &str, raw: &str) -> String {
    const HOLE: &str = "\u{1}hole\u{1}";
    let mut value: Value = serde_json::from_str(body).unwrap();
    *value.pointer_mut(pointer).expect(pointer) = Value::from(HOLE);
    let hole = serde_json::to_string(HOLE).unwrap();
    value.to_string().replace(&hole, raw)
}

#[tokio::test]
async fn valid_json_the_old_parser_refused_is_accepted_and_read() {
    let env = TestEnv::new();
    migrate(&env, &[]);
    let svc = Service::start(&env, "serve", &[]).await;
    svc.wait_ready(200, WAIT).await;
    let db = connect(&env.database_url()).await;
    let deep = format!("{}{}", "[".repeat(500), "]".repeat(500));

    // Unusual JSON in members the worker skips: the order is fulfilled.
    let skipped = [
        (
            "evt_huge",
            "ord_huge",
            "/data/object/amount_subtotal",
            "1E99999000",
        ),
        (
            "evt_surrogate",
            "ord_surrogate",
            "/data/object/customer_details/name",
            r#""Sample \ud800""#,
        ),
        (
            "evt_deep",
            "ord_deep",
            "/data/object/payment_method_types",
            &deep,
        ),
    ];
    for (event_id, order_id, pointer, raw) in skipped {
        post(
            &svc,
            &with_raw(&paid_session(event_id, order_id), pointer, raw),
        )
        .await;
    }
    for (_, order_id, _, _) in skipped {
        wait_status(&db, order_id, "paid", WAIT).await;
    }

    // The same values in members the worker reads: accepted, then dead-lettered at
    // once as permanent, with a reason naming the member.
    let read = [
        ("evt_bad_1", "ord_bad_1", "/created", "1E99999000"),
        (
            "evt_bad_2",
            "ord_bad_2",
            "/data/object/customer_details/email",
            r#""buyer\ud800@example.com""#,
        ),
        (
            "evt_bad_3",
            "ord_bad_3",
            "/data/object/client_reference_id",
            &deep,
        ),
    ];
    for (event_id, order_id, pointer, raw) in read {
        post(
            &svc,
            &with_raw(&paid_session(event_id, order_id), pointer, raw),
        )
        .await;
    }
    for (event_id, order_id, pointer, _) in read {
        let line = dead_letter_line(&svc, event_id).await;
        let field = format!("`{}`", pointer[1..].replace('/', "."));
        assert!(line.contains(&field), "the reason names {field}: {line}");
        assert!(line.contains("permanent"), "{line}");
        assert!(!line.contains("not valid JSON"), "{line}");
        assert_eq!(order_status(&db, order_id).await, None);
    }
}
