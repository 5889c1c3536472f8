//! A throwaway RabbitMQ cluster on this machine, beside the host's own
//! broker (which keeps running untouched on 5672/25672 with its own cookie
//! and node name).
//!
//! Node `i` (0-based) is `fcluster{i+1}@localhost`, AMQP on `5681 + i` and
//! Erlang distribution on `25681 + i`, both on 127.0.0.1 only. Everything a
//! node writes (database, logs, plugins file, config) lives in one
//! temporary directory, which also holds the `HOME` with the cluster's own
//! Erlang cookie; the CLI tools are run with that `HOME` and `-n`. Nodes
//! 2.. `join_cluster` node 1.
//!
//! [`Cluster`] kills its nodes by node name and removes the directory when
//! dropped, also when the test panics; nodes left by a run that was killed
//! outright are killed when the next cluster starts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Every node name starts with this: the one marker cleanup looks for.
pub const NODE_PREFIX: &str = "fcluster";
const FIRST_AMQP_PORT: u16 = 5681;
const FIRST_DIST_PORT: u16 = 25681;
/// How long a node may take to boot (or to come back).
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// The CLI scripts themselves. Debian's `/usr/sbin/rabbitmqctl` is a wrapper
/// that switches to the `rabbitmq` user and its `HOME` (so its cookie),
/// which would talk to the host's node, not ours.
fn tool(name: &str) -> PathBuf {
    let debian = Path::new("/usr/lib/rabbitmq/bin").join(name);
    if debian.exists() {
        debian
    } else {
        PathBuf::from(name)
    }
}

/// One node of the cluster.
pub struct Node {
    pub name: String,
    pub amqp_port: u16,
    dist_port: u16,
    dir: PathBuf,
    /// The `rabbitmq-server` script (the Erlang VM is its child).
    script: Option<Child>,
}

impl Node {
    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("mnesia").join(format!("{}.pid", self.name))
    }
}

/// A running cluster; its nodes are killed and its files removed on drop.
pub struct Cluster {
    dir: PathBuf,
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// Starts `size` nodes and clusters them. Blocks (tens of seconds).
    pub fn start(size: usize) -> anyhow::Result<Cluster> {
        kill_nodes_named(NODE_PREFIX);
        let dir = std::env::temp_dir().join(format!("{NODE_PREFIX}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cluster = Cluster {
            dir: dir.clone(),
            nodes: Vec::new(),
        };
        cluster.write_shared_files()?;
        for i in 0..size {
            let node = Node {
                name: format!("{NODE_PREFIX}{}@localhost", i + 1),
                amqp_port: FIRST_AMQP_PORT + i as u16,
                dist_port: FIRST_DIST_PORT + i as u16,
                dir: dir.join(format!("node{}", i + 1)),
                script: None,
            };
            std::fs::create_dir_all(&node.dir)?;
            std::fs::write(
                node.dir.join("rabbitmq.conf"),
                format!("listeners.tcp.default = 127.0.0.1:{}\n", node.amqp_port),
            )?;
            cluster.nodes.push(node);
        }
        for i in 0..size {
            cluster.boot(i)?;
        }
        for i in 0..size {
            cluster.wait_booted(i)?;
        }
        let first = cluster.nodes[0].name.clone();
        for i in 1..size {
            cluster.ctl(i, &["stop_app"])?;
            cluster.ctl(i, &["join_cluster", &first])?;
            cluster.ctl(i, &["start_app"])?;
        }
        cluster.wait_running_nodes(size)?;
        Ok(cluster)
    }

    /// The cookie (random per run), the empty plugins list (no management
    /// listener to clash with the host's) and an empty env file (so
    /// `/etc/rabbitmq/rabbitmq-env.conf`, the host node's, is not read).
    fn write_shared_files(&self) -> anyhow::Result<()> {
        let home = self.home();
        std::fs::create_dir_all(&home)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        let cookie = home.join(".erlang.cookie");
        std::fs::write(&cookie, format!("FCLUSTER{nanos:X}{}", std::process::id()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400))?;
        std::fs::write(self.dir.join("enabled_plugins"), "[].\n")?;
        std::fs::write(self.dir.join("rabbitmq-env.conf"), "")?;
        Ok(())
    }

    fn home(&self) -> PathBuf {
        self.dir.join("home")
    }

    /// The environment every node process and CLI call shares.
    fn shared_env(&self, cmd: &mut Command) {
        cmd.env("HOME", self.home())
            .env("RABBITMQ_CONF_ENV_FILE", self.dir.join("rabbitmq-env.conf"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.dir.join("enabled_plugins"),
            )
            .env("ERL_EPMD_ADDRESS", "127.0.0.1");
    }

    /// Starts node `i`'s VM (its data directory decides whether it is new or
    /// coming back).
    fn boot(&mut self, i: usize) -> anyhow::Result<()> {
        let mut cmd = Command::new(tool("rabbitmq-server"));
        self.shared_env(&mut cmd);
        let node = &self.nodes[i];
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("server.out"))?;
        cmd.env("RABBITMQ_NODENAME", &node.name)
            .env("RABBITMQ_DIST_PORT", node.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", node.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", node.dir.join("log"))
            .env("RABBITMQ_CONFIG_FILE", node.dir.join("rabbitmq.conf"))
            // Distribution on loopback only, as the host's node has it.
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let script = cmd
            .spawn()
            .with_context(|| format!("starting {} (is RabbitMQ installed?)", node.name))?;
        self.nodes[i].script = Some(script);
        Ok(())
    }

    /// Waits until node `i`'s VM wrote its pid file and the app is running.
    fn wait_booted(&self, i: usize) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        let pid_file = node.pid_file();
        let timeout = BOOT_TIMEOUT.as_secs().to_string();
        let pid_file = pid_file.to_string_lossy();
        self.ctl(i, &["wait", &pid_file, "--timeout", &timeout])
            .with_context(|| format!("{} did not boot; see {}", node.name, node.dir.display()))?;
        Ok(())
    }

    /// Waits until `want` nodes are running in the cluster, as node 1 sees it.
    fn wait_running_nodes(&self, want: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            let status = self.ctl(0, &["cluster_status", "--formatter", "json"])?;
            let running = serde_json::from_str::<serde_json::Value>(&status)
                .ok()
                .and_then(|v| v["running_nodes"].as_array().map(Vec::len))
                .unwrap_or(0);
            if running == want {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {running} of {want} nodes running: {status}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Runs `rabbitmqctl -n NODE args…` against node `i`; its stdout.
    pub fn ctl(&self, i: usize, args: &[&str]) -> anyhow::Result<String> {
        self.cli("rabbitmqctl", i, args)
    }

    /// Runs a RabbitMQ CLI tool (`rabbitmqctl`, `rabbitmq-queues`, …) against node `i`.
    pub fn cli(&self, tool_name: &str, i: usize, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = Command::new(tool(tool_name));
        self.shared_env(&mut cmd);
        let out = cmd
            .arg("-q")
            .arg("-n")
            .arg(&self.nodes[i].name)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {tool_name}"))?;
        anyhow::ensure!(
            out.status.success(),
            "{tool_name} -n {} {args:?} failed: {}{}",
            self.nodes[i].name,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A quorum queue's replicas as node `ask` sees them (in the default vhost).
    pub fn quorum_queue(&self, ask: usize, queue: &str) -> anyhow::Result<QuorumQueue> {
        let json = self.ctl(
            ask,
            &[
                "list_queues",
                "name",
                "leader",
                "members",
                "online",
                "--formatter",
                "json",
            ],
        )?;
        let rows: Vec<serde_json::Value> =
            serde_json::from_str(&json).with_context(|| format!("list_queues said {json}"))?;
        let row = rows
            .iter()
            .find(|r| r["name"] == queue)
            .with_context(|| format!("no queue {queue}"))?;
        let names = |v: &serde_json::Value| -> Vec<String> {
            let mut names: Vec<String> = v
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|n| n.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            names
        };
        Ok(QuorumQueue {
            leader: row["leader"].as_str().unwrap_or_default().to_owned(),
            members: names(&row["members"]),
            online: names(&row["online"]),
        })
    }

    /// Every queue's ready and unacknowledged counts, as node `ask` sees them.
    pub fn queue_counts(&self, ask: usize) -> anyhow::Result<Vec<crate::amqp::QueueCounts>> {
        let json = self.ctl(
            ask,
            &[
                "list_queues",
                "name",
                "messages_ready",
                "messages_unacknowledged",
                "--formatter",
                "json",
            ],
        )?;
        let rows: Vec<serde_json::Value> =
            serde_json::from_str(&json).with_context(|| format!("list_queues said {json}"))?;
        // A queue whose leader is being elected has no counts: an error,
        // never a zero that would read as "empty".
        rows.iter()
            .map(|r| {
                let number = |field: &str| {
                    r[field]
                        .as_u64()
                        .with_context(|| format!("no {field} in {r}"))
                };
                Ok(crate::amqp::QueueCounts {
                    name: r["name"].as_str().unwrap_or_default().to_owned(),
                    ready: number("messages_ready")?,
                    unacked: number("messages_unacknowledged")?,
                })
            })
            .collect()
    }

    /// Index of the node called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The AMQP URLs of the nodes in `order`, comma-separated (an `AMQP_URL`).
    pub fn amqp_urls(&self, order: &[usize]) -> String {
        order
            .iter()
            .map(|&i| self.nodes[i].amqp_url())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills node `i`'s VM with SIGKILL: a crash, not a shutdown.
    pub fn kill(&mut self, i: usize) {
        kill_nodes_named(&self.nodes[i].name);
        if let Some(mut script) = self.nodes[i].script.take() {
            let _ = script.kill();
            let _ = script.wait();
        }
    }

    /// Starts node `i` again after [`Cluster::kill`] and waits until it runs
    /// and the cluster has all its nodes again.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        // A crashed node leaves its pid file; `wait` must see the new one.
        let _ = std::fs::remove_file(self.nodes[i].pid_file());
        self.boot(i)?;
        self.wait_booted(i)?;
        self.wait_running_nodes(self.nodes.len())
    }
}

/// A quorum queue's leader and replicas (node names, sorted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumQueue {
    pub leader: String,
    pub members: Vec<String>,
    pub online: Vec<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        kill_nodes_named(NODE_PREFIX);
        for node in &mut self.nodes {
            if let Some(mut script) = node.script.take() {
                let _ = script.kill();
                let _ = script.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SIGKILLs every Erlang VM whose `RABBITMQ_NODENAME` starts with
/// `prefix` (so `fcluster` finds them all, `fcluster2@localhost` one), and
/// waits until they are gone. Never touches another node: the host's broker
/// is `rabbit@…`.
pub fn kill_nodes_named(prefix: &str) {
    let pids = vms_named(prefix);
    for pid in &pids {
        crate::service::signal(*pid, "KILL");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !vms_named(prefix).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn vms_named(prefix: &str) -> Vec<u32> {
    let marker = format!("RABBITMQ_NODENAME={prefix}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            comm.trim() == "beam.smp"
                && environ
                    .split(|&b| b == 0)
                    .any(|var| var.starts_with(marker.as_bytes()))
        })
        .collect()
}
