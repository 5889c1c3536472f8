//! `make cluster`: scale-out on a real three-node RabbitMQ cluster, losing
//! the node that leads the work queue.
//!
//! Three RabbitMQ nodes are started beside the host's broker and clustered
//! (`fulfillment_testkit::cluster`); `fulfillment migrate` declares the
//! topology on them, and the work queue must have a replica on every node.
//! Two receivers and two workers (the real binary, separate processes, one
//! database) are given all three nodes in `AMQP_URL`: one receiver and one
//! worker list the work queue's leader first (so they are connected to it),
//! the others another node. While a few thousand signed events stream in the
//! way Stripe sends them (duplicates, out of order, 503s retried; custom
//! payment reports among them, as in `make chaos`), the leader
//! node is killed with SIGKILL, a new leader must be elected, and the node
//! is started again and rejoins. After the pipeline drains: nothing lost,
//! no effect doubled (the end state equals `fulfillment_core::Model`'s), one
//! distinct `order.paid` per paid order, and the processes that were on the
//! dead node moved to another one without a restart.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use fulfillment_tests::cluster::Cluster;
use fulfillment_tests::db::connect;
use fulfillment_tests::stripe_like::{self, Counters, Rng};
use fulfillment_tests::verdict::{self, declare_tap, wait_drained};
use fulfillment_tests::{CUSTOM_TEST_SECRET, Service, TestEnv, migrate};

const WORK_QUEUE: &str = "stripe.fulfillment";
const TAP: &str = "cluster.tap";
const NODES: usize = 3;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Node indexes starting at `first`, then the others in ring order.
fn ring_from(first: usize) -> Vec<usize> {
    (0..NODES).map(|k| (first + k) % NODES).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts a three-node RabbitMQ cluster beside the host's broker; run with `make cluster`"]
async fn nothing_lost_when_the_work_queue_leader_dies() {
    let seed = setting("CLUSTER_SEED", 0xC1A5_7E25);
    let orders = setting("CLUSTER_ORDERS", 1200) as usize;
    let (unique, stream) = stripe_like::deliveries(&mut Rng::new(seed), "cluster", orders);
    eprintln!(
        "cluster: seed {seed}, {} unique events, {} deliveries",
        unique.len(),
        stream.len()
    );
    let started = Instant::now();
    // The cluster's set-up blocks on CLI tools: off the runtime's workers.
    let mut cluster = tokio::task::block_in_place(|| Cluster::start(NODES))
        .expect("a three-node RabbitMQ cluster");
    let cluster_up = started.elapsed();

    // A database of its own; nothing on the machine's broker.
    let env = TestEnv::database_only("cluster").expect("a database name");
    let all = cluster.amqp_urls(&ring_from(0));
    migrate(&env, &[("AMQP_URL", &all)]);
    let queue = cluster.quorum_queue(0, WORK_QUEUE).unwrap();
    let names: Vec<String> = {
        let mut n: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
        n.sort();
        n
    };
    assert_eq!(
        queue.members, names,
        "{WORK_QUEUE} is replicated on every node"
    );
    let leader = cluster
        .index_of(&queue.leader)
        .expect("a leader among the nodes");
    let survivor = (leader + 1) % NODES;
    let survivor_url = cluster.nodes[survivor].amqp_url();
    declare_tap(&survivor_url, TAP).await;

    let via_leader = cluster.amqp_urls(&ring_from(leader));
    let via_other = cluster.amqp_urls(&ring_from(survivor));
    // Receivers take the merchant's custom-payment reports too.
    let receiver = |urls: &str| {
        [
            ("AMQP_URL", urls.to_owned()),
            ("CUSTOM_PAYMENT_SECRET", CUSTOM_TEST_SECRET.to_owned()),
        ]
    };
    let receiver_a = Service::start(&env, "receiver", &receiver(&via_leader)).await;
    let receiver_b = Service::start(&env, "receiver", &receiver(&via_other)).await;
    let worker_1 = Service::start(&env, "worker", &[("AMQP_URL", via_leader)]).await;
    let worker_2 = Service::start(&env, "worker", &[("AMQP_URL", via_other)]).await;
    for s in [&receiver_a, &receiver_b, &worker_1, &worker_2] {
        s.wait_ready(200, Duration::from_secs(30)).await;
    }
    let on_leader_before = connections(&cluster, leader);
    assert!(
        on_leader_before >= 4,
        "receiver a and worker 1 are connected to the leader ({on_leader_before} connections)"
    );

    let ports = Arc::new(RwLock::new(vec![
        receiver_a.http_port,
        receiver_b.http_port,
    ]));
    let counters = Arc::new(Counters::default());
    let stream_started = Instant::now();
    // ~80 deliveries a second: the whole stream takes about 45 s.
    let sender = stripe_like::send(
        stream,
        Duration::from_millis(12),
        ports.clone(),
        counters.clone(),
    );

    tokio::time::sleep(Duration::from_secs(6)).await;
    // The leader may have moved meanwhile: ask again, then kill that node.
    let leader_name = cluster.quorum_queue(survivor, WORK_QUEUE).unwrap().leader;
    let killed = cluster.index_of(&leader_name).expect("a leader");
    let asked = (killed + 1) % NODES;
    let killed_at = stream_started.elapsed();
    tokio::task::block_in_place(|| cluster.kill(killed));
    let new_leader = wait_for_new_leader(&cluster, asked, &leader_name).await;
    let failover = stream_started.elapsed() - killed_at;

    // Two nodes carry the load for a while, then the third comes back.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let restart_began = Instant::now();
    tokio::task::block_in_place(|| cluster.restart(killed)).expect("the killed node starts again");
    let back = wait_all_online(&cluster, asked).await;
    let restart = restart_began.elapsed();

    tokio::time::timeout(Duration::from_secs(300), sender)
        .await
        .expect("every event accepted within 5 minutes")
        .unwrap();
    let sent_all = stream_started.elapsed();

    let db = connect(&env.database_url()).await;
    let pending = || queued_messages(&cluster, asked);
    wait_drained(&db, unique.len(), pending, Duration::from_secs(180)).await;
    let drained = stream_started.elapsed();
    let verdict = verdict::judge(&db, &survivor_url, TAP, &unique).await;

    let mut services = [
        ("receiver a", receiver_a),
        ("receiver b", receiver_b),
        ("worker 1", worker_1),
        ("worker 2", worker_2),
    ];
    for (name, svc) in &mut services {
        assert!(svc.is_alive(), "{name} died; log:\n{}", svc.logs());
        let log = svc.logs();
        assert!(!log.contains("guest:guest"), "{name} logged a password");
    }
    let lost_their_node: Vec<&str> = services
        .iter()
        .filter(|(_, svc)| svc.logs().contains("broker connection lost"))
        .map(|(name, _)| *name)
        .collect();
    let killed_name = &cluster.nodes[killed].name;
    if killed == leader {
        // The processes that listed the dead node first were on it: they
        // must have left it for another node, without a restart.
        for name in ["receiver a", "worker 1"] {
            assert!(
                lost_their_node.contains(&name),
                "{name} was connected to {killed_name} and never noticed it died"
            );
        }
    }

    let delivered = Counters::get(&counters.accepted);
    let summary = serde_json::json!({
        "seed": seed,
        "events": unique.len(),
        "deliveries": delivered,
        "attempts": Counters::get(&counters.attempts),
        "stripe_retries": Counters::get(&counters.retries),
        "answers_503": Counters::get(&counters.unavailable),
        "connection_errors": Counters::get(&counters.connection_errors),
        "duplicates_absorbed": delivered as usize - unique.len(),
        "cluster_start_seconds": cluster_up.as_secs_f64().round(),
        "connections_on_leader_before": on_leader_before,
        "killed": killed_name,
        "new_leader": new_leader,
        "killed_at_seconds": killed_at.as_secs_f64().round(),
        "new_leader_after_seconds": failover.as_secs_f64(),
        "node_back_after_seconds": restart.as_secs_f64().round(),
        "replicas_online_after": back,
        "processes_that_moved_node": lost_their_node,
        "stream_seconds": sent_all.as_secs_f64().round(),
        "time_to_drain_seconds": (drained - sent_all).as_secs_f64(),
        "downstream": verdict.to_json(),
    });
    println!("{summary}");
}

/// Client connections to node `i` (each process has one per role it
/// plays). `list_connections` lists the whole cluster's; a connection's
/// Erlang pid names the node it is on.
fn connections(cluster: &Cluster, i: usize) -> usize {
    let on_node = format!("<{}.", cluster.nodes[i].name);
    cluster
        .ctl(i, &["list_connections", "pid"])
        .map(|out| out.lines().filter(|l| l.contains(&on_node)).count())
        .unwrap_or(0)
}

/// Polls node `ask` until the work queue has a leader other than `old`.
async fn wait_for_new_leader(cluster: &Cluster, ask: usize, old: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(q) = cluster.quorum_queue(ask, WORK_QUEUE)
            && !q.leader.is_empty()
            && q.leader != old
            && cluster.index_of(&q.leader).is_some()
        {
            return q.leader;
        }
        assert!(
            Instant::now() < deadline,
            "no new leader for {WORK_QUEUE} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls node `ask` until every replica of the work queue is online again.
async fn wait_all_online(cluster: &Cluster, ask: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(q) = cluster.quorum_queue(ask, WORK_QUEUE)
            && q.online.len() == NODES
            && q.members.len() == NODES
        {
            return q.online;
        }
        assert!(
            Instant::now() < deadline,
            "{WORK_QUEUE}'s replicas not all online again within 90 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Ready + unacked messages in the pipeline's queues (not the tap, the DLQ
/// or the unrouted queue, which hold what is meant to stay). Counts that
/// cannot be read count as "not drained".
fn queued_messages(cluster: &Cluster, ask: usize) -> u64 {
    match cluster.queue_counts(ask) {
        Ok(queues) => queues
            .into_iter()
            .filter(|q| {
                q.name != TAP && !q.name.ends_with(".dlq") && !q.name.starts_with("fulfillment.")
            })
            .map(|q| q.ready + q.unacked)
            .sum(),
        Err(_) => 1,
    }
}
