//! The receiver against clients that mean harm or just never go away:
//! unauthenticated memory exhaustion, connection starvation of the probes,
//! and a SIGTERM that must not drop what is in flight (issue 9, items 3, 4).

use std::time::{Duration, Instant};

use fulfillment_tests::amqp::Tap;
use fulfillment_tests::http::{get, post_signed};
use fulfillment_tests::service::signal;
use fulfillment_tests::{Service, TEST_SECRET, TestEnv, unix_now};
use stripe_webhook_signature::sign_header;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: usize = 1024 * 1024;

async fn receiver(env: &TestEnv, extra: &[(&str, String)]) -> Service {
    let service = Service::start(env, "receiver", extra).await;
    service.wait_ready(200, Duration::from_secs(20)).await;
    service
}

/// A POST head with a declared length and a `Stripe-Signature` value.
fn post_head(len: usize, signature: &str) -> String {
    format!(
        "POST /webhooks/stripe HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {len}\r\nstripe-signature: {signature}\r\n\r\n"
    )
}

/// The status line and headers of whatever the server answered, or the
/// error the connection ended with.
async fn read_answer(stream: &mut tokio::net::tcp::OwnedReadHalf, within: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                if answer_complete(&out) {
                    break;
                }
            }
            Ok(Err(e)) if out.is_empty() => return format!("error: {e}"),
            Ok(Err(_)) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Head and `content-length` bytes of body received (the connection may
/// stay open for the next request).
fn answer_complete(out: &[u8]) -> bool {
    let Some(head_end) = out.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&out[..head_end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    out.len() >= head_end + 4 + len
}

/// One stranger: a well-formed header with a current timestamp and a junk
/// `v1` (anyone can write that), then a 1 MiB body but its last byte, a
/// pause that keeps it in memory, then the last byte.
async fn hostile_post(port: u16, hold: Duration) -> String {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return "error: connect".into();
    };
    let (mut rd, mut wr) = stream.into_split();
    let signature = format!("t={},v1={}", unix_now(), "ab".repeat(32));
    let writer = tokio::spawn(async move {
        wr.write_all(post_head(MIB, &signature).as_bytes()).await?;
        let body = vec![b'x'; MIB];
        wr.write_all(&body[..MIB - 1]).await?;
        tokio::time::sleep(hold).await;
        wr.write_all(&body[MIB - 1..]).await?;
        Ok::<_, std::io::Error>(wr)
    });
    let answer = read_answer(&mut rd, Duration::from_secs(30)).await;
    writer.abort();
    answer
}

fn metric_value(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_bodies_cannot_exhaust_memory_before_the_signature() {
    let env = TestEnv::new();
    // The defaults on purpose: MAX_BODY_BYTES 1 MiB, MAX_INFLIGHT_BODY_BYTES 64 MiB.
    let svc = receiver(&env, &[]).await;
    let port = svc.http_port;
    let before = svc.rss_kib();

    let attackers: Vec<_> = (0..240)
        .map(|_| tokio::spawn(hostile_post(port, Duration::from_secs(2))))
        .collect();
    let mut answers = Vec::new();
    for a in attackers {
        answers.push(a.await.unwrap());
    }
    let peak = svc.peak_rss_kib();
    let growth_mib = (peak.saturating_sub(before)) as f64 / 1024.0;
    eprintln!(
        "RSS before {:.1} MiB, peak {:.1} MiB, growth {growth_mib:.1} MiB under 240 hostile 1 MiB bodies",
        before as f64 / 1024.0,
        peak as f64 / 1024.0
    );

    let shed = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 503"))
        .collect::<Vec<_>>();
    let refused = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 400"))
        .count();
    assert!(
        !shed.is_empty(),
        "no request was shed; answers: {:?}",
        &answers[..5]
    );
    assert!(
        shed.iter()
            .all(|a| a.to_ascii_lowercase().contains("retry-after: 5")),
        "{}",
        shed[0]
    );
    assert!(
        refused > 0,
        "those admitted are read, then refused with 400"
    );
    assert!(
        growth_mib < 100.0,
        "RSS grew by {growth_mib:.1} MiB (before {before} KiB, peak {peak} KiB)"
    );

    // The budget is whole again and Stripe still gets through.
    let tap = Tap::bind(&env.amqp_url(), "stripe.events", "#").await;
    let body = br#"{"id":"evt_after_attack","type":"customer.created"}"#;
    let reply = post_signed(port, body, TEST_SECRET).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    tap.expect_body(body).await;
    let metrics = get(svc.metrics_port, "/metrics").await.unwrap().text();
    assert_eq!(
        metric_value(&metrics, "fulfillment_webhook_inflight_body_bytes"),
        0.0
    );
    assert_eq!(
        metric_value(&metrics, "fulfillment_webhook_inflight_body_limit_bytes"),
        67_108_864.0
    );
    let shed_total = metric_value(&metrics, "fulfillment_webhook_body_budget_shed_total");
    assert!(shed_total >= shed.len() as f64, "{shed_total}");
    // Counted per request, logged in aggregate.
    let lines = svc.logs().matches("body budget exhausted").count();
    assert!(
        (1..=5).contains(&lines),
        "{lines} log lines for {shed_total} shed requests"
    );
}

#[tokio::test]
async fn chunked_and_declared_bodies_share_the_budget_and_give_it_back() {
    let env = TestEnv::new();
    let limit = 4096;
    let svc = receiver(
        &env,
        &[
            ("MAX_BODY_BYTES", limit.to_string()),
            ("MAX_INFLIGHT_BODY_BYTES", limit.to_string()),
        ],
    )
    .await;
    let port = svc.http_port;
    let body = format!(
        r#"{{"id":"evt_budget","type":"customer.created","pad":"{}"}}"#,
        "x".repeat(limit - 100)
    )
    .into_bytes();
    let signature = sign_header(TEST_SECRET, unix_now(), &body);

    // One slow client holds the whole budget with its declared length...
    let holder = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut holder_rd, mut holder_wr) = holder.into_split();
    holder_wr
        .write_all(post_head(limit, &signature).as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // ...so a declared body is shed at once, and so is a chunked one at its first frame.
    let declared = post_signed(port, &body, TEST_SECRET).await;
    assert_eq!(declared.status, 503, "{}", declared.text());
    assert_eq!(declared.headers["retry-after"], "5");
    let chunked = chunked_post(port, &signature, &body).await;
    assert!(chunked.starts_with("HTTP/1.1 503"), "{chunked}");
    assert!(chunked.to_ascii_lowercase().contains("retry-after: 5"));

    // The holder's body turns out to be junk (wrong length for its
    // signature): refused, and its bytes are returned.
    holder_wr.write_all(&vec![b' '; limit]).await.unwrap();
    let answer = read_answer(&mut holder_rd, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let chunked = chunked_post(port, &signature, &body).await;
    assert!(chunked.starts_with("HTTP/1.1 200"), "{chunked}");

    // A client that vanishes mid-body gives its bytes back too.
    let mut quitter = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    quitter
        .write_all(post_head(limit, &signature).as_bytes())
        .await
        .unwrap();
    quitter.write_all(&body[..100]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(quitter);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let metrics = get(svc.metrics_port, "/metrics").await.unwrap().text();
    assert_eq!(
        metric_value(&metrics, "fulfillment_webhook_inflight_body_bytes"),
        0.0
    );
    assert_eq!(
        metric_value(&metrics, "fulfillment_webhook_body_budget_shed_total"),
        2.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            "fulfillment_webhook_requests_total{outcome=\"unavailable\"}"
        ),
        2.0
    );
}

async fn chunked_post(port: u16, signature: &str, body: &[u8]) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "POST /webhooks/stripe HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nstripe-signature: {signature}\r\n\r\n"
    );
    let mut raw = head.into_bytes();
    for chunk in body.chunks(1000) {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let _ = wr.write_all(&raw).await;
    read_answer(&mut rd, Duration::from_secs(5)).await
}

#[tokio::test]
async fn a_junk_or_stale_signature_is_refused_before_the_body_is_read() {
    let env = TestEnv::new();
    let svc = receiver(&env, &[]).await;
    let stale = sign_header(TEST_SECRET, unix_now() - 3600, b"{}");
    for signature in ["t=1,v1=00", "garbage", stale.as_str()] {
        // The head promises 1 MiB that never comes: only an answer that does
        // not wait for the body (BODY_READ_TIMEOUT_SECS is 10) arrives in time.
        let stream = TcpStream::connect(("127.0.0.1", svc.http_port))
            .await
            .unwrap();
        let (mut rd, mut wr) = stream.into_split();
        wr.write_all(post_head(MIB, signature).as_bytes())
            .await
            .unwrap();
        let started = Instant::now();
        let answer = read_answer(&mut rd, Duration::from_secs(3)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{signature}: {answer}");
        assert!(answer.contains("bad_signature"), "{answer}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{signature}: answered after {:?}",
            started.elapsed()
        );
    }
}

/// Sockets that connect, say nothing and reconnect as soon as they are
/// dropped: each holds a webhook connection slot until the header timeout.
fn hog(port: u16) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await {
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf).await;
            } else {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    })
}

#[tokio::test]
async fn probes_on_the_metrics_port_survive_a_starved_webhook_port() {
    let env = TestEnv::new();
    let svc = receiver(&env, &[("MAX_CONNECTIONS", "50".into())]).await;
    let hogs: Vec<_> = (0..300).map(|_| hog(svc.http_port)).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The webhook port is full: its own probe would time out (what made
    // Kubernetes restart healthy pods).
    let starved =
        tokio::time::timeout(Duration::from_secs(2), get(svc.http_port, "/healthz")).await;
    assert!(
        !matches!(starved, Ok(Ok(ref r)) if r.status == 200),
        "the webhook port still answered; the test does not hold its slots"
    );

    // The metrics port answers both probes within the probes' timeout (2 s
    // in deploy/k8s), every time.
    for _ in 0..5 {
        for (path, want) in [("/healthz", "ok\n"), ("/readyz", "ready\n")] {
            let reply = tokio::time::timeout(Duration::from_secs(2), get(svc.metrics_port, path))
                .await
                .unwrap_or_else(|_| panic!("{path} on the metrics port timed out"))
                .unwrap();
            assert_eq!(reply.status, 200, "{path}");
            assert_eq!(reply.text(), want);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for h in hogs {
        h.abort();
    }
}

#[tokio::test]
async fn sigterm_fails_readiness_first_then_drains_and_finishes_in_flight() {
    let env = TestEnv::new();
    let mut svc = receiver(
        &env,
        &[
            ("SHUTDOWN_DRAIN_SECS", "2".into()),
            ("SHUTDOWN_GRACE_SECS", "10".into()),
        ],
    )
    .await;
    let tap = Tap::bind(&env.amqp_url(), "stripe.events", "#").await;
    assert_eq!(get(svc.http_port, "/readyz").await.unwrap().status, 200);

    // A slow client: head and half its body before the signal, the rest after.
    let body = br#"{"id":"evt_in_flight","type":"customer.created"}"#;
    let signature = sign_header(TEST_SECRET, unix_now(), body);
    let stream = TcpStream::connect(("127.0.0.1", svc.http_port))
        .await
        .unwrap();
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(post_head(body.len(), &signature).as_bytes())
        .await
        .unwrap();
    wr.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let signalled = Instant::now();
    signal(svc.pid(), "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Not ready on both ports at once, while still alive and serving.
    assert_eq!(get(svc.http_port, "/readyz").await.unwrap().status, 503);
    assert_eq!(get(svc.metrics_port, "/readyz").await.unwrap().status, 503);
    assert_eq!(get(svc.http_port, "/healthz").await.unwrap().status, 200);
    assert!(svc.is_alive());

    // After the drain the listener stops accepting...
    tokio::time::sleep(Duration::from_millis(2500).saturating_sub(signalled.elapsed())).await;
    assert!(
        TcpStream::connect(("127.0.0.1", svc.http_port))
            .await
            .is_err(),
        "still accepting after the drain"
    );
    assert!(svc.is_alive(), "exited with a request in flight");

    // ...and the request in flight still gets its answer, and is published.
    wr.write_all(&body[10..]).await.unwrap();
    let answer = read_answer(&mut rd, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    tap.expect_body(body).await;

    let status = svc.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}; log:\n{}", svc.logs());
}
