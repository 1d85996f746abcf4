//! A cluster of real `/usr/bin/etcd` processes on 127.0.0.1 for tests: free
//! ports, temporary data dirs, fast raft timings, killed on drop. With
//! [`EtcdCluster::start_tls`], every member serves mutual TLS on its peer
//! and client URLs (`https://`), with certificates from a CA of
//! `deckhand-pki` made for the test.
//!
//! Each test binary includes this module; not every test uses every helper.
#![allow(dead_code)]

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deckhand_etcd::{Cluster, EndpointStatus, Tls};
use deckhand_pki::Ca;
use tempfile::TempDir;

/// The etcd binary the tests run (Debian's `etcd-server`).
pub const ETCD: &str = "/usr/bin/etcd";
/// Raft heartbeat, milliseconds.
pub const HEARTBEAT_MS: u64 = 50;
/// Raft election timeout, milliseconds.
pub const ELECTION_MS: u64 = 500;
/// Request timeout of the clients the tests build.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Logs of this crate at debug level to the test's output (shown by nextest
/// for failing tests); `RUST_LOG` overrides the filter.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("deckhand_etcd=debug"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// One etcd member process (running or not).
pub struct Node {
    pub name: String,
    pub peer_url: String,
    pub client_url: String,
    data_dir: PathBuf,
    log: PathBuf,
    /// `new` for the initial members, `existing` for members added later.
    state: &'static str,
    /// The `--initial-cluster` it starts with (set at its first start).
    initial_cluster: String,
    /// It is part of the cluster's configuration (not removed).
    pub member: bool,
    child: Option<Child>,
}

impl Node {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// A cluster of etcd processes.
pub struct EtcdCluster {
    dir: TempDir,
    token: String,
    pub nodes: Vec<Node>,
    /// The test CA and a client identity issued by it, in TLS mode.
    pub pki: Option<TestPki>,
}

/// A TLS cluster's CA (its certificate in `ca.crt` of the cluster's dir)
/// and the client identity the helpers connect with (an operator
/// certificate, CN `root`).
pub struct TestPki {
    pub ca: Ca,
    pub ca_file: PathBuf,
    pub client: Tls,
}

impl TestPki {
    fn create(dir: &std::path::Path) -> TestPki {
        let ca = Ca::create("deckhand-test-ca", 30).expect("test CA");
        let ca_file = dir.join("ca.crt");
        std::fs::write(&ca_file, ca.cert_pem()).expect("write ca.crt");
        let op = ca.issue_operator("root", 30).expect("operator cert");
        let client = Tls::from_pem(ca.cert_pem(), op.cert_pem, op.key_pem);
        TestPki {
            ca,
            ca_file,
            client,
        }
    }

    /// Writes a node certificate for `name` on 127.0.0.1 as
    /// `<dir>/<name>.crt` and `.key`; returns their paths.
    pub fn node_files(&self, dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf) {
        let issued = self
            .ca
            .issue_node(name, "127.0.0.1".parse().unwrap(), 30)
            .expect("node cert");
        let (crt, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&crt, issued.cert_pem).expect("write node cert");
        std::fs::write(&key, issued.key_pem).expect("write node key");
        (crt, key)
    }
}

/// Picks `n` free loopback ports (all listeners held until all are picked).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

impl EtcdCluster {
    /// Starts an `n`-member cluster and waits until every member knows a leader.
    pub async fn start(n: usize) -> EtcdCluster {
        EtcdCluster::start_with(n, false).await
    }

    /// [`EtcdCluster::start`] with mutual TLS on every member's peer and
    /// client URL (`--client-cert-auth`, `--peer-client-cert-auth`).
    pub async fn start_tls(n: usize) -> EtcdCluster {
        EtcdCluster::start_with(n, true).await
    }

    /// The client identity of a TLS cluster (`None` in plaintext).
    pub fn tls(&self) -> Option<&Tls> {
        self.pki.as_ref().map(|p| &p.client)
    }

    async fn start_with(n: usize, tls: bool) -> EtcdCluster {
        init_tracing();
        let mut last = String::new();
        for _ in 0..3 {
            let mut cluster = EtcdCluster::configure(n, tls);
            for i in 0..n {
                cluster.start_node(i);
            }
            match cluster.wait_all_ready(Duration::from_secs(20)).await {
                Ok(()) => return cluster,
                Err(e) => {
                    last = format!("{e}\n{}", cluster.logs());
                    eprintln!("etcd cluster did not come up, retrying: {e}");
                }
            }
        }
        panic!("etcd cluster of {n} did not come up: {last}");
    }

    fn configure(n: usize, tls: bool) -> EtcdCluster {
        let dir = tempfile::Builder::new()
            .prefix("deckhand-etcd-test-")
            .tempdir()
            .expect("temp dir");
        let token = dir
            .path()
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "deckhand-test".to_owned());
        let pki = tls.then(|| TestPki::create(dir.path()));
        let mut cluster = EtcdCluster {
            dir,
            token,
            nodes: Vec::new(),
            pki,
        };
        for _ in 0..n {
            cluster.push_node("new");
        }
        let initial = cluster.initial_cluster(None);
        for node in &mut cluster.nodes {
            node.initial_cluster = initial.clone();
        }
        cluster
    }

    fn push_node(&mut self, state: &'static str) -> usize {
        let i = self.nodes.len();
        let ports = free_ports(2);
        let name = format!("m{i}");
        let scheme = if self.pki.is_some() { "https" } else { "http" };
        if let Some(pki) = &self.pki {
            pki.node_files(self.dir.path(), &name);
        }
        self.nodes.push(Node {
            peer_url: format!("{scheme}://127.0.0.1:{}", ports[0]),
            client_url: format!("{scheme}://127.0.0.1:{}", ports[1]),
            data_dir: self.dir.path().join(format!("{name}.etcd")),
            log: self.dir.path().join(format!("{name}.log")),
            state,
            initial_cluster: String::new(),
            member: state == "new",
            child: None,
            name,
        });
        i
    }

    /// `name=peer_url,...` of every member, plus `extra` (a joining node).
    fn initial_cluster(&self, extra: Option<usize>) -> String {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| n.member || Some(*i) == extra)
            .map(|(_, n)| format!("{}={}", n.name, n.peer_url))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Reserves ports and a name for one more member, not started: add it
    /// with `add_learner(&node.peer_url)`, then `join(i)`.
    pub fn add_node(&mut self) -> usize {
        self.push_node("existing")
    }

    /// Starts node `i`, added to the cluster beforehand, with
    /// `--initial-cluster-state existing`.
    pub fn join(&mut self, i: usize) {
        let initial = self.initial_cluster(Some(i));
        let node = &mut self.nodes[i];
        node.initial_cluster = initial;
        node.member = true;
        self.start_node(i);
    }

    /// Marks node `i` as removed from the configuration (after `remove`).
    pub fn forget(&mut self, i: usize) {
        self.nodes[i].member = false;
    }

    /// Starts (or restarts, over its data dir) the process of node `i`.
    pub fn start_node(&mut self, i: usize) {
        let token = self.token.clone();
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "{} already runs", node.name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open etcd log");
        let mut cmd = Command::new(ETCD);
        if let Some(pki) = &self.pki {
            let crt = self.dir.path().join(format!("{}.crt", node.name));
            let key = self.dir.path().join(format!("{}.key", node.name));
            for (flag, path) in [
                ("--trusted-ca-file", &pki.ca_file),
                ("--cert-file", &crt),
                ("--key-file", &key),
                ("--peer-trusted-ca-file", &pki.ca_file),
                ("--peer-cert-file", &crt),
                ("--peer-key-file", &key),
            ] {
                cmd.arg(flag).arg(path);
            }
            cmd.args(["--client-cert-auth", "--peer-client-cert-auth"]);
        }
        let child = cmd
            .args(["--name", &node.name])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--listen-client-urls", &node.client_url])
            .args(["--advertise-client-urls", &node.client_url])
            .args(["--listen-peer-urls", &node.peer_url])
            .args(["--initial-advertise-peer-urls", &node.peer_url])
            .args(["--initial-cluster", &node.initial_cluster])
            .args(["--initial-cluster-state", node.state])
            .args(["--initial-cluster-token", &token])
            .args(["--heartbeat-interval", &HEARTBEAT_MS.to_string()])
            .args(["--election-timeout", &ELECTION_MS.to_string()])
            .args(["--logger", "zap", "--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        node.child = Some(child);
    }

    /// Kills the process of node `i` (SIGKILL) and reaps it.
    pub fn stop_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Client URLs of running members (voters and learners).
    pub fn client_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.member && n.is_running())
            .map(|n| n.client_url.clone())
            .collect()
    }

    /// A `Cluster` bound to every running member.
    pub async fn connect(&self) -> Cluster {
        Cluster::connect(&self.client_urls(), TIMEOUT, self.tls())
            .await
            .expect("connect")
    }

    /// An etcd-client `Client` bound to every running member.
    pub async fn client(&self) -> etcd_client::Client {
        self.connect().await.client()
    }

    /// Waits until node `i` answers `Status` and knows a leader.
    pub async fn wait_ready(
        &mut self,
        i: usize,
        timeout: Duration,
    ) -> Result<EndpointStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = self.nodes[i]
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.nodes[i].child = None;
                return Err(format!("{} exited: {status}", self.nodes[i].name));
            }
            let url = self.nodes[i].client_url.clone();
            match Cluster::endpoint_status(&url, Duration::from_millis(500), self.tls()).await {
                Ok(s) if s.leader != 0 => return Ok(s),
                other => {
                    if Instant::now() > deadline {
                        return Err(format!("{} not ready: {other:?}", self.nodes[i].name));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_all_ready(&mut self, timeout: Duration) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_running() {
                self.wait_ready(i, timeout).await?;
            }
        }
        Ok(())
    }

    /// The leader's member id, as node `i` sees it.
    pub async fn leader_seen_by(&self, i: usize) -> u64 {
        Cluster::endpoint_status(&self.nodes[i].client_url, TIMEOUT, self.tls())
            .await
            .map(|s| s.leader)
            .unwrap_or(0)
    }

    /// Compacts the key-value history up to `revision` (physically).
    pub async fn compact(&self, revision: i64) {
        let mut client = self.client().await;
        client
            .compact(
                revision,
                Some(etcd_client::CompactionOptions::new().with_physical()),
            )
            .await
            .expect("compact");
    }

    /// The last lines of every member's log.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let text = std::fs::read_to_string(&node.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            out.push_str(&format!(
                "--- {} ({}) ---\n{tail}\n",
                node.name, node.client_url
            ));
        }
        out
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop_node(i);
        }
        if std::thread::panicking() {
            eprintln!("etcd logs:\n{}", self.logs());
        }
    }
}

/// Retries `f` while etcd refuses a membership change as "unhealthy cluster"
/// (a voter connected less than 5 s ago, as right after start), up to 15 s.
pub async fn retry_unhealthy<T, F, Fut>(mut f: F) -> deckhand_etcd::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = deckhand_etcd::Result<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match f().await {
            Err(deckhand_etcd::Error::UnhealthyCluster { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
