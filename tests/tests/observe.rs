//! What operators see: metric names the dashboard and alerts rely on, a real
//! Prometheus scraping a running `serve` and answering the dashboard's
//! queries, the alert rules under promtool, JSON logs, and `send-event`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fulfillment_tests::db::{connect, wait_status};
use fulfillment_tests::events::custom_payment;
use fulfillment_tests::http::{get, post_custom_payment, post_signed, post_webhook};
use fulfillment_tests::service::free_port;
use fulfillment_tests::{
    CUSTOM_TEST_SECRET, Service, TEST_SECRET, TestEnv, checkout_completed, cli, migrate,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `fulfillment_*` names in `text`, histogram suffixes removed.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("fulfillment_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(base.to_owned());
        rest = &tail[end..];
    }
    names
}

/// The names the binary exports: the constants of its metrics module.
fn exported() -> BTreeSet<String> {
    read("crates/fulfillment/src/metrics.rs")
        .lines()
        .filter(|l| l.trim_start().starts_with("pub const") && l.contains("\"fulfillment_"))
        .flat_map(metric_names)
        .collect()
}

fn dashboard_exprs() -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/fulfillment.json")).unwrap();
    let mut exprs = Vec::new();
    fn walk(panels: &serde_json::Value, out: &mut Vec<String>) {
        for panel in panels.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push(expr.to_owned());
                }
            }
            walk(&panel["panels"], out);
        }
    }
    walk(&dashboard["panels"], &mut exprs);
    exprs
}

#[test]
fn dashboard_and_alerts_query_only_exported_metrics() {
    let exported = exported();
    let contract = [
        "fulfillment_webhook_requests_total",
        "fulfillment_webhook_duration_seconds",
        "fulfillment_events_processed_total",
        "fulfillment_event_processing_seconds",
        "fulfillment_event_lag_seconds",
        "fulfillment_order_transitions_total",
        "fulfillment_outbox_pending",
        "fulfillment_dlq_depth",
        "fulfillment_broker_up",
        "fulfillment_database_up",
    ];
    for family in contract {
        assert!(
            exported.contains(family),
            "contract family {family} not exported"
        );
    }
    let dashboard = metric_names(&dashboard_exprs().join("\n"));
    let alerts = metric_names(&read("deploy/prometheus/alerts.yml"));
    for (source, names) in [("dashboard", &dashboard), ("alerts.yml", &alerts)] {
        let unknown: Vec<_> = names.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{source} queries metrics the binary does not export: {unknown:?}"
        );
    }
    for family in contract {
        assert!(
            dashboard.contains(family) || family.ends_with("_up"),
            "dashboard never shows {family}"
        );
    }
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo())
        .output()
        .expect("promtool is installed (apt-get install prometheus; make test does it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool() {
    promtool(&["check", "rules", "deploy/prometheus/alerts.yml"]);
    promtool(&["test", "rules", "deploy/prometheus/alerts_test.yml"]);
    promtool(&["check", "config", "deploy/prometheus/prometheus.yml"]);
}

/// A throwaway Prometheus scraping one target every second.
struct Prometheus {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Prometheus {
    async fn start(target_port: u16, name: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("prom-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
                 scrape_configs:\n  - job_name: fulfillment\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (apt-get install prometheus; make test does it)");
        let p = Prometheus { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(p.port, "/-/ready").await.map(|r| r.status).ok() != Some(200) {
            assert!(Instant::now() < deadline, "prometheus not ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        p
    }

    async fn query(&self, expr: &str) -> serde_json::Value {
        let reply = get(
            self.port,
            &format!("/api/v1/query?query={}", percent_encode(expr)),
        )
        .await
        .unwrap();
        serde_json::from_slice(&reply.body).unwrap()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn a_real_prometheus_scrapes_serve_and_answers_every_dashboard_query() {
    let env = TestEnv::new();
    migrate(&env, &[("RETRY_DELAYS", "200ms")]);
    let db = connect(&env.database_url()).await;
    // One event fails once, so the retry panel has data too.
    sqlx::raw_sql(
        "CREATE SEQUENCE flaky; CREATE FUNCTION flaky() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.event_id = 'evt_obs_flaky' AND nextval('flaky') = 1 THEN RAISE EXCEPTION 'injected'; END IF;
         RETURN NEW; END $$;
         CREATE TRIGGER flaky BEFORE INSERT ON processed_events FOR EACH ROW EXECUTE FUNCTION flaky();",
    )
    .execute(&db)
    .await
    .unwrap();
    // Custom payments, recorded to a Stripe stand-in, for their panels.
    let stripe = fulfillment_tests::stripe::StandIn::start();
    let mut extra = vec![
        ("RETRY_DELAYS", "200ms".into()),
        ("CUSTOM_PAYMENT_SECRET", CUSTOM_TEST_SECRET.into()),
    ];
    extra.extend(stripe.settings());
    let svc = Service::start(&env, "serve", &extra).await;
    svc.wait_ready(200, Duration::from_secs(20)).await;
    let prometheus = Prometheus::start(svc.metrics_port, &env.name).await;

    post_signed(
        svc.http_port,
        &checkout_completed("evt_obs_flaky", "ord_obs_flaky", "paid"),
        TEST_SECRET,
    )
    .await;
    for i in 0..30 {
        let body = checkout_completed(&format!("evt_obs_{i}"), &format!("ord_obs_{i}"), "paid");
        assert_eq!(
            post_signed(svc.http_port, &body, TEST_SECRET).await.status,
            200
        );
        post_webhook(svc.http_port, &body, Some("t=1,v1=00")).await;
        let report = custom_payment(&format!("cpay_obs_{i}"), &format!("ord_obs_c{i}"), true);
        let reply = post_custom_payment(svc.http_port, &report, Some(CUSTOM_TEST_SECRET)).await;
        assert_eq!(reply.status, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_status(&db, "ord_obs_flaky", "paid", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut empty = Vec::new();
    for expr in dashboard_exprs() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*");
        let answer = prometheus.query(&expr).await;
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
        if answer["data"]["result"]
            .as_array()
            .is_none_or(|r| r.is_empty())
        {
            empty.push(expr);
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data: {empty:#?}"
    );
}

#[tokio::test]
async fn send_event_turns_an_order_paid() {
    let env = TestEnv::new();
    migrate(&env, &[]);
    let svc = Service::start(&env, "serve", &[]).await;
    svc.wait_ready(200, Duration::from_secs(20)).await;
    let db = connect(&env.database_url()).await;
    let url = format!("http://127.0.0.1:{}/webhooks/stripe", svc.http_port);
    let (ok, out) = cli(
        &env,
        &[
            "send-event",
            "checkout.session.completed",
            "--order",
            "ord_cli",
            "--url",
            &url,
        ],
        &[],
    );
    assert!(ok, "{out}");
    assert!(out.contains("-> 200"), "{out}");
    wait_status(&db, "ord_cli", "paid", Duration::from_secs(20)).await;
    // Unhandled types are accepted too; wrong secrets are refused and say so.
    let (ok, out) = cli(&env, &["send-event", "invoice.paid", "--url", &url], &[]);
    assert!(ok && out.contains("-> 200"), "{out}");
    let (ok, out) = cli(
        &env,
        &[
            "send-event",
            "payment_intent.succeeded",
            "--url",
            &url,
            "--secret",
            "whsec_wrong",
        ],
        &[],
    );
    assert!(!ok && out.contains("-> 400"), "{out}");
    let (ok, _) = cli(&env, &["send-event", "no.such.type", "--url", &url], &[]);
    assert!(!ok);
    let (ok, json) = cli(
        &env,
        &["send-event", "checkout.session.expired", "--dry-run"],
        &[],
    );
    assert!(ok);
    let event: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(event["type"], "checkout.session.expired");
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_facts() {
    let env = TestEnv::new();
    let svc = Service::start(&env, "receiver", &[("LOG_FORMAT", "json".into())]).await;
    svc.wait_ready(200, Duration::from_secs(20)).await;
    let body = checkout_completed("evt_log", "ord_log", "paid");
    post_webhook(svc.http_port, &body, Some("t=1,v1=abc")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = svc.logs();
    let mut rejected = None;
    for line in logs.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["message"] == "webhook rejected" {
            rejected = Some(v);
        }
    }
    let rejected = rejected.expect("a log line for the rejected request");
    assert_eq!(rejected["outcome"], "bad_signature");
    assert_eq!(rejected["status"], 400);
    assert!(rejected["reason"].as_str().is_some());
    assert!(!logs.contains("v1=abc"), "signature header logged");
}
