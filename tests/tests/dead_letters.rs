//! Issue 9, items 5 and 6: data PostgreSQL refuses is dead-lettered at once
//! (and again at once when replayed), and reading the DLQ changes nothing,
//! on the broker or in the table.

use std::time::{Duration, Instant};

use fulfillment_tests::amqp::publish_to_queue;
use fulfillment_tests::db::{connect, count, wait_count, wait_status};
use fulfillment_tests::events::session;
use fulfillment_tests::http::get;
use fulfillment_tests::{Service, TestEnv, cli, migrate, post_accepted as post};
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::AMQPValue;

const WAIT: Duration = Duration::from_secs(20);
const COMPLETED: &str = "checkout.session.completed";
const DLQ: &str = "stripe.fulfillment.dlq";

/// A session event whose JSON text has `from` replaced by `to`.
fn session_with(event_id: &str, order: &str, from: &str, to: &str) -> Vec<u8> {
    let body = String::from_utf8(session(event_id, COMPLETED, order, "paid", None)).unwrap();
    assert!(body.contains(from), "{from} not in the sample event");
    body.replace(from, to).into_bytes()
}

/// 5,000 characters that do not compress (PostgreSQL would squeeze a
/// repetitive id under the index row limit).
fn long_id() -> String {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut id = String::from("ord_");
    while id.len() < 5000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        id.push(alphabet[(x % 36) as usize] as char);
    }
    id
}

async fn metrics(svc: &Service) -> String {
    get(svc.metrics_port, "/metrics").await.unwrap().text()
}

async fn wait_for_metric(svc: &Service, needle: &str) {
    let deadline = Instant::now() + WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        last = metrics(svc).await;
        if last.contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("metric {needle:?} never appeared:\n{last}");
}

fn shown(env: &TestEnv, event_id: &str) -> String {
    let (ok, out) = cli(env, &["dlq", "show", event_id], &[]);
    assert!(ok, "dlq show {event_id}: {out}");
    out
}

#[tokio::test]
async fn unstorable_data_is_dead_lettered_at_once_and_again_when_replayed() {
    let env = TestEnv::new();
    migrate(&env, &[]);
    // The production tiers: a transient classification would take 6 minutes.
    let svc = Service::start(&env, "serve", &[]).await;
    svc.wait_ready(200, WAIT).await;
    let db = connect(&env.database_url()).await;

    let started = Instant::now();
    post(
        &svc,
        &session_with(
            "evt_nul_order",
            "ord_NULHERE",
            "ord_NULHERE",
            r"ord_\u0000nul",
        ),
    )
    .await;
    post(
        &svc,
        &session_with(
            "evt_nul_email",
            "ord_nul_email",
            "buyer@example.com",
            r"buyer\u0000@example.com",
        ),
    )
    .await;
    post(
        &svc,
        &session("evt_long_order", COMPLETED, &long_id(), "paid", None),
    )
    .await;
    post(
        &svc,
        &session("evt_fine", COMPLETED, "ord_fine", "paid", None),
    )
    .await;
    wait_status(&db, "ord_fine", "paid", WAIT).await;
    wait_for_metric(
        &svc,
        r#"fulfillment_events_processed_total{type="checkout.session.completed",outcome="dead_lettered"} 3"#,
    )
    .await;
    wait_count(&db, "SELECT count(*) FROM dead_letters", 3, WAIT).await;
    let took = started.elapsed();
    eprintln!("three unstorable events dead-lettered in {took:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");

    for (event, problem) in [
        ("evt_nul_order", "0x00"),
        ("evt_nul_email", "0x00"),
        ("evt_long_order", "index row"),
    ] {
        let out = shown(&env, event);
        assert!(out.contains("error kind:    permanent"), "{out}");
        assert!(out.contains("attempts:      1"), "{out}");
        assert!(out.contains(problem), "the reason names the problem: {out}");
        assert!(out.contains("SQLSTATE"), "{out}");
    }
    assert_eq!(count(&db, "SELECT count(*) FROM processed_events").await, 1);
    wait_for_metric(
        &svc,
        r#"fulfillment_dead_letters_total{kind="permanent"} 3"#,
    )
    .await;
    let text = metrics(&svc).await;
    assert!(
        !text.contains("fulfillment_retries_total{"),
        "no delay tier was used:\n{text}"
    );

    // Replayed, it fails the same way: straight back, attempts counted on.
    let replayed_at = Instant::now();
    let (ok, out) = cli(&env, &["dlq", "replay", "evt_nul_order"], &[]);
    assert!(ok && out.contains("1 message(s) replayed"), "{out}");
    wait_for_metric(
        &svc,
        r#"fulfillment_dead_letters_total{kind="permanent"} 4"#,
    )
    .await;
    wait_count(
        &db,
        "SELECT count(*) FROM dead_letters WHERE event_id = 'evt_nul_order'",
        1,
        WAIT,
    )
    .await;
    assert!(replayed_at.elapsed() < Duration::from_secs(10));
    let out = shown(&env, "evt_nul_order");
    assert!(
        out.contains("attempts:      2") && out.contains("error kind:    permanent"),
        "{out}"
    );
    assert!(
        !metrics(&svc).await.contains("fulfillment_retries_total{"),
        "the replay did not restart the tiers"
    );
    // Later events still flow.
    post(
        &svc,
        &session("evt_fine_2", COMPLETED, "ord_fine_2", "paid", None),
    )
    .await;
    wait_status(&db, "ord_fine_2", "paid", WAIT).await;
}

async fn publish_dead_letter(url: &str, event_id: &str) {
    let body = session(
        event_id,
        COMPLETED,
        &format!("ord_{event_id}"),
        "paid",
        None,
    );
    publish_to_dlq(url, event_id, &body).await;
}

async fn publish_to_dlq(url: &str, event_id: &str, body: &[u8]) {
    publish_to_queue(url, DLQ, event_id, body).await;
}

/// Event ids of a `dlq list`, in the order listed.
fn listed_ids(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter(|l| l.starts_with("evt_"))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect()
}

const READS: usize = 25;

#[tokio::test]
async fn listing_and_showing_the_dlq_many_times_changes_nothing() {
    let env = TestEnv::new();
    migrate(&env, &[]);
    let db = connect(&env.database_url()).await;

    // On the broker: no worker runs, so the dead letters stay in the queue
    // while an operator lists and shows them again and again.
    let queued = ["evt_q0", "evt_q1", "evt_q2"];
    for id in queued {
        publish_dead_letter(&env.amqp_url(), id).await;
    }
    let mut listings = Vec::new();
    for _ in 0..READS {
        listings.push(cli(&env, &["dlq", "list"], &[]));
        cli(&env, &["dlq", "show", "evt_q1"], &[]);
    }
    let conn = lapin::Connection::connect(&env.amqp_url(), Default::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    for want in queued {
        let m = channel
            .basic_get(DLQ.into(), BasicGetOptions::default())
            .await
            .unwrap()
            .expect("still in the queue");
        let p = &m.delivery.properties;
        assert_eq!(
            p.message_id().as_ref().unwrap().as_str(),
            want,
            "same order"
        );
        assert!(!m.delivery.redelivered, "{want} was never delivered before");
        let delivery_count = p
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-delivery-count").cloned());
        assert!(
            matches!(delivery_count, None | Some(AMQPValue::LongLongInt(0))),
            "{want}: delivery count {delivery_count:?}"
        );
        m.delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    let _ = conn.close(200, "bye".into()).await;
    for (ok, listing) in listings {
        // Not yet moved, and said so: the operator knows to start a worker.
        assert!(
            ok && listing.contains(&format!("3 more in {DLQ}")),
            "{listing}"
        );
    }

    // In the table: a worker moves them there; reading changes no row.
    let stored = ["evt_t0", "evt_t1", "evt_t2", "evt_t3"];
    for id in stored {
        publish_dead_letter(&env.amqp_url(), id).await;
    }
    let _worker = Service::start(&env, "worker", &[]).await;
    wait_count(&db, "SELECT count(*) FROM dead_letters", 4, WAIT).await;
    let snapshot = "SELECT string_agg(d::text, '|' ORDER BY id) FROM dead_letters d";
    let before: String = sqlx::query_scalar(snapshot).fetch_one(&db).await.unwrap();
    for _ in 0..READS {
        let (ok, listing) = cli(&env, &["dlq", "list"], &[]);
        assert!(ok, "{listing}");
        assert_eq!(listed_ids(&listing), stored, "same rows, same order");
        assert!(!listing.contains("more in"), "{listing}");
        let out = shown(&env, "evt_t2");
        assert!(out.contains("event id:      evt_t2"), "{out}");
    }
    let after: String = sqlx::query_scalar(snapshot).fetch_one(&db).await.unwrap();
    assert_eq!(before, after, "not a byte of any row changed");
    wait_all_moved_and_acked(&env.name).await;
}

/// The broker's queue counts (rabbitmqctl) are statistics refreshed every few
/// seconds, not the queue's state: wait for them to say (0 ready, 0 unacked)
/// rather than read them once, which raced the refresh under load.
async fn wait_all_moved_and_acked(vhost: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let queues = fulfillment_tests::amqp::queue_counts(vhost);
        let counts = queues
            .iter()
            .find(|q| q.name == DLQ)
            .map(|q| (q.ready, q.unacked));
        if counts == Some((0, 0)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "all moved, all acked: DLQ counts {counts:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn a_dead_letter_redelivered_to_the_mover_is_stored_once() {
    let env = TestEnv::new();
    migrate(&env, &[]);
    let db = connect(&env.database_url()).await;
    // The same message twice, as after a crash between commit and ack.
    let body = session("evt_again", COMPLETED, "ord_again", "paid", None);
    publish_to_dlq(&env.amqp_url(), "evt_again", &body).await;
    publish_to_dlq(&env.amqp_url(), "evt_again", &body).await;
    publish_dead_letter(&env.amqp_url(), "evt_other").await;
    let _worker = Service::start(&env, "worker", &[]).await;
    wait_count(
        &db,
        "SELECT count(*) FROM dead_letters WHERE event_id = 'evt_other'",
        1,
        WAIT,
    )
    .await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM dead_letters WHERE event_id = 'evt_again'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_batch_with_one_unstorable_event_dead_letters_only_that_one() {
    let env = TestEnv::new();
    migrate(&env, &[]);
    let db = connect(&env.database_url()).await;
    // Queued before the worker starts, so they arrive in batches; the NUL
    // fails its batch's statement, and only its own retry alone fails.
    for i in 0..30 {
        let id = format!("evt_b{i}");
        let body = if i == 11 {
            session_with(&id, "ord_NULHERE", "ord_NULHERE", r"ord_\u0000b")
        } else {
            session(&id, COMPLETED, &format!("ord_b{i}"), "paid", None)
        };
        publish_to_queue(&env.amqp_url(), "stripe.fulfillment", &id, &body).await;
    }
    let worker = Service::start(&env, "worker", &[]).await;
    wait_count(
        &db,
        "SELECT count(*) FROM orders WHERE status = 'paid'",
        29,
        WAIT,
    )
    .await;
    wait_count(&db, "SELECT count(*) FROM dead_letters", 1, WAIT).await;
    let out = shown(&env, "evt_b11");
    assert!(
        out.contains("error kind:    permanent") && out.contains("attempts:      1"),
        "{out}"
    );
    let text = metrics(&worker).await;
    let batches = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse().unwrap()))
            .unwrap_or_else(|| panic!("{series} not in metrics"))
    };
    assert!(
        batches("fulfillment_worker_batch_size_count")
            > batches("fulfillment_worker_batch_size_bucket{le=\"1\"}"),
        "some batch held more than one delivery:\n{text}"
    );
    assert!(!text.contains("fulfillment_retries_total{"), "{text}");
}
