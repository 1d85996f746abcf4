//! `bench_scale`: what N deckhand agents cost a 3-member etcd, against the
//! Deis v1 model (a publisher per node refreshing a TTL key every 10 s),
//! on this machine (integration/bench-scale builds and runs it).
//!
//! One process, one tokio runtime per measured run, N tasks: each simulated
//! agent has its own etcd client connections (its key-value client and its
//! membership client, as the agent has: `localhost:2379` and the voters),
//! its own node id and its own lease. One process rather than N: 1,000
//! agent processes would cost this 2-core machine more in scheduling and
//! memory than etcd itself, and what is measured is etcd's side; the
//! connections, streams and requests etcd sees are the same. The agents'
//! key-value clients connect straight to a member (spread over the three),
//! not through a grpc-proxy on their node: no proxy coalesces their
//! watches (as when auth is on and agents talk to the voters directly).
//!
//! What a simulated deckhand agent runs, with deckhand's own code
//! (crates/deckhand, crates/deckhand-etcd), as a proxy node's agent at rest:
//! - its lease: [`deckhand_etcd::LeaseKeeper`] with the default TTL (20 s;
//!   keep-alive every TTL/3) — the agent's `NodeLease` without the fence;
//! - its watches: [`deckhand::agent::watches::Watches`] (role key, cluster
//!   config, plane configs, elections), each waking the loop, events fed to
//!   [`deckhand::agent::desired::Desired`];
//! - a pass every 5 s (the loop's idle tick) and on every watch event: the
//!   member list ([`Cluster::member_list`]), the leader lookup (one
//!   `Status` on its own endpoint, [`Cluster::endpoint_status`]), the
//!   proxies' voter-health view ([`VoterHealthView`]), the membership lock
//!   read ([`Store::membership_lock_holder`]), the election of each
//!   singleton of its planes read ([`election::leader`]) and entered once
//!   ([`election::campaign`]) on `--candidates` agents, its name key once,
//!   and its status document written on change
//!   ([`deckhand::agent::status::StatusWriter`]).
//!
//! Not simulated: D-Bus, the checks, the firewall, the backup taker and the
//! replacer (off while the cluster config sets no `voters`), the member
//! nodes' own agents (3 of N), and TLS.
//!
//! Printed per N and model: CPU (share of one core, from /proc/<pid>/stat
//! over the window) and RSS of the leader and of a follower; requests per
//! second by RPC on each (etcd's `grpc_server_started_total`); open
//! watches and watch streams; keep-alives per second
//! (`grpc_server_msg_received_total{grpc_method="LeaseKeepAlive"}`); and
//! the latency from a role key written to the agent's watch delivering it
//! and to its status written. A benchmark: it prints, never asserts.

#[path = "../../../crates/deckhand-etcd/tests/common/mod.rs"]
#[allow(clippy::all)]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use deckhand::agent::desired::Desired;
use deckhand::agent::status::StatusWriter;
use deckhand::agent::watches::{Source, Watches};
use deckhand::store::Store;
use deckhand_etcd::{Cluster, KeyEvent, LeaseKeeper, Member, election};
use deckhand_model::{EtcdMode, EtcdRole, EtcdStatus, Keyspace, NodeStatus, Role};
use etcd_client::{Client, ConnectOptions, PutOptions};
use tokio::sync::{mpsc, watch};

/// The agent's request timeout (`agent::context::REQUEST_TIMEOUT`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// The agent loop's idle tick (`agent::IDLE_TICK`).
const IDLE_TICK: Duration = Duration::from_secs(5);
/// `agent::observe::HEALTH_TIMEOUT`.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// The leader lookup's timeout (`agent::observe`).
const LEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// Deis v1's publisher: refresh every 10 s with a TTL of 20 s.
const DEIS_PERIOD: Duration = Duration::from_secs(10);
const DEIS_TTL: i64 = 20;
/// The singleton unit the `--candidates` agents stand for.
const SINGLETON: &str = "bench-singleton.service";

#[derive(Parser, Debug)]
#[command(about = "N simulated deckhand agents (and the Deis v1 model) against a 3-member etcd")]
struct Args {
    /// Numbers of agents, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,300,1000")]
    sizes: Vec<usize>,
    /// Length of the steady-state window measured, in seconds.
    #[arg(long, default_value_t = 30)]
    steady_seconds: u64,
    /// Settling time after the last agent is up, before the window.
    #[arg(long, default_value_t = 15)]
    warmup_seconds: u64,
    /// deckhand (merge19's agent), published (its voter-health view as
    /// the voterhealth branch designs it), deis, both (deckhand and deis)
    /// or all.
    #[arg(long, default_value = "both")]
    model: String,
    /// Role-key writes for the latency figures (spread over the agents).
    #[arg(long, default_value_t = 50)]
    writes: usize,
    /// Agents standing in the singleton election (the nodes of a plane
    /// with a singleton unit).
    #[arg(long, default_value_t = 3)]
    candidates: usize,
    /// Agents started per second.
    #[arg(long, default_value_t = 200)]
    ramp: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Model {
    /// merge19's agent: [`VoterHealthView::StatusEveryVoterEachPass`].
    Deckhand,
    /// The agent with [`VoterHealthView::PublishedByVoters`].
    DeckhandPublished,
    Deis,
}

impl Model {
    fn name(self) -> &'static str {
        match self {
            Model::Deckhand => "deckhand",
            Model::DeckhandPublished => "dh-published",
            Model::Deis => "deis-v1",
        }
    }
}

/// How a proxy's agent learns which voters are healthy.
///
/// On merge19 every proxy asks every voter for its `Status` on each pass
/// ([`Cluster::voter_health`], a new connection per call): its cost per
/// voter grows with N. A design where voters publish their health
/// (`health/voters/<id>`) and everyone reads it through a watch (branch
/// voterhealth) is [`VoterHealthView::PublishedByVoters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VoterHealthView {
    /// merge19: every pass, the leader looked up (one `Status`) and one
    /// `Status` to every voter; the member list and the lock read each pass.
    StatusEveryVoterEachPass,
    /// The voterhealth branch's design as its commits describe it (not its
    /// code): each voter's agent publishes `health/voters/<id>` on a 10 s
    /// lease of its own (written on change, read back every 60 s), every
    /// agent watches `health/voters/`; a steady proxy asks no voter for its
    /// `Status`, looks up no leader, and reuses its member list and lock
    /// view for 60 s while no report changed.
    PublishedByVoters,
}

/// How long a steady proxy reuses its member list and lock view under
/// [`VoterHealthView::PublishedByVoters`].
const PUBLISHED_REUSE: Duration = Duration::from_secs(60);

impl VoterHealthView {
    /// The view's work of one pass.
    async fn refresh(self, cluster: &Cluster, members: &[Member]) -> Vec<(u64, bool)> {
        match self {
            VoterHealthView::StatusEveryVoterEachPass => {
                cluster.voter_health(members, HEALTH_TIMEOUT).await
            }
            // Read from the watch of health/voters/: nothing to ask.
            VoterHealthView::PublishedByVoters => Vec::new(),
        }
    }

    /// The prefix voters publish under.
    fn prefix(ks: &Keyspace) -> String {
        format!("{}/health/voters/", ks.prefix())
    }
}

/// A voter's agent publishing its health (PublishedByVoters): its own 10 s
/// lease, the report written once (nothing changes at rest) and read back
/// every 60 s.
async fn voter_publisher(sh: Arc<Shared>, m: usize, url: String, mut stop: watch::Receiver<bool>) {
    let Ok(mut c) = kv_client(&url).await else {
        return;
    };
    let keeper = LeaseKeeper::spawn(c.clone(), 10);
    let mut lease = keeper.lease();
    let key = format!("{}m{m}", VoterHealthView::prefix(&sh.ks));
    while *lease.borrow_and_update() == 0 {
        if lease.changed().await.is_err() {
            return;
        }
    }
    let id = *lease.borrow();
    let _ = c
        .put(
            key.clone(),
            r#"{"healthy":true}"#,
            Some(PutOptions::new().with_lease(id)),
        )
        .await;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(PUBLISHED_REUSE) => { let _ = c.get(key.clone(), None).await; }
        }
    }
}

/// What an agent tells the bench.
enum Report {
    /// Its lease is granted and its first pass done.
    Up,
    /// Its watch delivered a put of its role key.
    RoleDelivered(usize, Instant),
    /// Its status with the new desired role is written.
    StatusWritten(usize, Instant),
}

struct Shared {
    model: Model,
    ks: Keyspace,
    candidates: usize,
    health: VoterHealthView,
    reports: mpsc::UnboundedSender<Report>,
}

/// The agent's key-value client: as `connect::localhost` builds it (HTTP/2
/// keep-alive every 5 s), to `url`.
async fn kv_client(url: &str) -> Result<Client> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(5), REQUEST_TIMEOUT);
    Ok(Client::connect([url], Some(opts)).await?)
}

/// Agent `i`'s phase, in [0, 1): spread evenly (golden-ratio sequence), as
/// the agents of a real cluster, started at different times, are.
fn phase(i: usize) -> f64 {
    (i as f64 * 0.618_033_988_75).fract()
}

fn node_id(i: usize) -> String {
    format!("sim{i:05}")
}

/// A proxy node's status document.
fn status_doc(id: &str, desired: &Desired, leader: bool) -> NodeStatus {
    NodeStatus {
        id: id.into(),
        name: id.into(),
        address: "127.0.0.1".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        desired: desired.role().cloned(),
        desired_revision: desired.revision(),
        applied: None,
        converged: true,
        etcd: EtcdStatus {
            mode: EtcdMode::Proxy,
            member_id: None,
            leader,
        },
        step: None,
        blocked: None,
        error: None,
        failure_domain: None,
        replacer: None,
        events: vec![],
        planes: vec![],
        images: Default::default(),
        checks: Vec::new(),
        voter_problems: Vec::new(),
        certificate: None,
        tls_stage: None,
        firewall: Default::default(),
        metrics_listen: None,
    }
}

/// One simulated deckhand agent, until `stop`.
async fn deckhand_agent(
    sh: Arc<Shared>,
    i: usize,
    kv_url: String,
    voters: Vec<String>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let id = node_id(i);
    let store = Store::new(kv_client(&kv_url).await?, sh.ks.clone(), REQUEST_TIMEOUT);
    let cluster = Cluster::connect(&voters, REQUEST_TIMEOUT, None).await?;
    let mut watches = Watches::default();
    watches.start(&store.client(), &sh.ks, &id);
    let mut desired = Desired::default();
    let keeper = LeaseKeeper::spawn(store.client(), desired.config.lease_ttl_seconds as i64);
    let lease = keeper.lease();
    let mut status = StatusWriter::default();
    let mut name_written = false;
    let candidate = i < sh.candidates;
    let election_key = sh.ks.election(SINGLETON);
    let mut up = false;
    let mut role_pending: Option<()> = None;
    let published = sh.health == VoterHealthView::PublishedByVoters;
    // PublishedByVoters: the fifth watch, and the member list kept.
    let mut reports_rx = published
        .then(|| deckhand_etcd::watch_key(store.client(), VoterHealthView::prefix(&sh.ks), true));
    let mut kept: Option<(Vec<Member>, Instant)> = None;
    // Passes and reuse periods start at this agent's phase.
    let mut reuse_offset = PUBLISHED_REUSE.mul_f64(phase(i));
    tokio::time::sleep(IDLE_TICK.mul_f64(phase(i))).await;
    loop {
        // One pass of the loop (observe, planes, status), as agent::iterate.
        let members = match &kept {
            Some((m, at)) if published && at.elapsed() < PUBLISHED_REUSE => Some(m.clone()),
            _ => {
                let m = cluster.member_list().await.ok().filter(|m| !m.is_empty());
                if published && let Some(m) = &m {
                    let at = Instant::now()
                        .checked_sub(std::mem::take(&mut reuse_offset))
                        .unwrap_or_else(Instant::now);
                    kept = Some((m.clone(), at));
                    let _lock = store.membership_lock_holder().await;
                }
                m
            }
        };
        if let Some(members) = &members {
            let leader = if published {
                Some(())
            } else {
                Cluster::endpoint_status(&kv_url, LEADER_TIMEOUT, None)
                    .await
                    .ok()
                    .filter(|s| s.leader != 0)
                    .map(|_| ())
            };
            let _health = sh.health.refresh(&cluster, members).await;
            if !published {
                let _lock = store.membership_lock_holder().await;
            }
            let lease_id = *lease.borrow();
            let mut kv = store.client();
            let mut leads = false;
            if candidate && let Ok(view) = election::leader(&mut kv, &election_key).await {
                leads = view.leads(lease_id);
                if lease_id != 0 && !view.candidates.iter().any(|c| c.lease == lease_id) {
                    let _ = election::campaign(&mut kv, &election_key, lease_id, &id).await;
                }
            }
            if !name_written {
                name_written = store.put_name(&id, &id).await.is_ok();
            }
            status
                .write(&store, status_doc(&id, &desired, leads), lease_id)
                .await;
            if role_pending.take().is_some() {
                let _ = sh.reports.send(Report::StatusWritten(i, Instant::now()));
            }
            if !up && lease_id != 0 && leader.is_some() {
                up = true;
                let _ = sh.reports.send(Report::Up);
            }
        }
        let pause = if up {
            IDLE_TICK
        } else {
            Duration::from_secs(1)
        };
        let first = tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(pause) => None,
            ev = watches.events.recv() => ev,
            // A voter's report changed (a put or a delete; the watch's first
            // snapshot is no change): the member list is read again.
            Some(KeyEvent::Put { .. } | KeyEvent::Delete { .. }) = async {
                match reports_rx.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                kept = None;
                None
            }
        };
        for (src, ev) in first
            .into_iter()
            .chain(std::iter::from_fn(|| watches.events.try_recv().ok()))
        {
            match src {
                Source::Role => {
                    if matches!(ev, KeyEvent::Put { .. }) {
                        let _ = sh.reports.send(Report::RoleDelivered(i, Instant::now()));
                        role_pending = Some(());
                    }
                    desired.on_role_event(&sh.ks.role(&id), ev);
                }
                Source::Config => desired.on_config_event(&sh.ks.cluster_config(), ev),
                // The real Watches (since the voterhealth merge) also watch
                // health/voters/; the simulated view is chosen by --model.
                Source::Planes | Source::Elections | Source::VoterHealth => {}
            }
        }
    }
    drop(keeper);
    Ok(())
}

/// One Deis v1 publisher: every 10 s a lease of 20 s and a put on it.
async fn deis_agent(
    sh: Arc<Shared>,
    i: usize,
    kv_url: String,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut c = kv_client(&kv_url).await?;
    let key = format!("{}/deis/hosts/{}", sh.ks.prefix(), node_id(i));
    let mut up = false;
    tokio::time::sleep(DEIS_PERIOD.mul_f64(phase(i))).await;
    loop {
        let ok = async {
            let l = c.lease_grant(DEIS_TTL, None).await?;
            c.put(
                key.clone(),
                "127.0.0.1",
                Some(PutOptions::new().with_lease(l.id())),
            )
            .await?;
            Ok::<_, etcd_client::Error>(())
        }
        .await
        .is_ok();
        if ok && !up {
            up = true;
            let _ = sh.reports.send(Report::Up);
        }
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(if up { DEIS_PERIOD } else { Duration::from_secs(1) }) => {}
        }
    }
    Ok(())
}

/// One member's counters and gauges at one instant.
#[derive(Default, Clone)]
struct Sample {
    at: Option<Instant>,
    /// utime + stime, clock ticks.
    cpu_ticks: u64,
    rss_kib: u64,
    is_leader: bool,
    /// grpc_server_started_total by grpc_method.
    started: BTreeMap<String, f64>,
    keepalive_msgs: f64,
    /// Messages received on Watch streams (creates, progress requests).
    watch_msgs: f64,
    watchers: f64,
    watch_streams: f64,
}

/// The pid of the etcd process listening on `client_url`.
fn pid_of(client_url: &str) -> Result<u32> {
    for e in std::fs::read_dir("/proc")? {
        let e = e?;
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if args
            .windows(2)
            .any(|w| w[0] == b"--listen-client-urls" && w[1] == client_url.as_bytes())
        {
            return Ok(pid);
        }
    }
    bail!("no etcd process listens on {client_url}")
}

/// utime + stime (clock ticks) and VmRSS (KiB) of `pid`.
fn proc_usage(pid: u32) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("a /proc stat line")?.1;
    // After the name: state is field 3, utime 14, stime 15.
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Ok((ticks, rss))
}

/// GET /metrics of an etcd client URL (`http://127.0.0.1:port`).
async fn metrics_text(client_url: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = client_url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(host).await?;
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

/// The value of a label in a Prometheus series' label set.
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let pat = format!("{name}=\"");
    let start = labels.find(&pat)? + pat.len();
    let end = labels[start..].find('"')?;
    Some(&labels[start..start + end])
}

async fn sample(client_url: &str, pid: u32) -> Result<Sample> {
    let text = metrics_text(client_url).await?;
    let (cpu_ticks, rss_kib) = proc_usage(pid)?;
    let mut s = Sample {
        at: Some(Instant::now()),
        cpu_ticks,
        rss_kib,
        ..Sample::default()
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        match name {
            "grpc_server_started_total" => {
                if let Some(m) = label(labels, "grpc_method") {
                    *s.started.entry(m.to_string()).or_default() += v;
                }
            }
            "grpc_server_msg_received_total"
                if label(labels, "grpc_method") == Some("LeaseKeepAlive") =>
            {
                s.keepalive_msgs += v
            }
            "grpc_server_msg_received_total" if label(labels, "grpc_method") == Some("Watch") => {
                s.watch_msgs += v
            }
            "etcd_debugging_mvcc_watcher_total" => s.watchers = v,
            "etcd_debugging_mvcc_watch_stream_total" => s.watch_streams = v,
            "etcd_server_is_leader" => s.is_leader = v == 1.0,
            _ => {}
        }
    }
    Ok(s)
}

/// One member over the window.
#[derive(Default, Clone)]
struct MemberFigures {
    cpu_pct: f64,
    rss_mib: f64,
    rps: BTreeMap<String, f64>,
    keepalives: f64,
    watch_msgs: f64,
    watchers: f64,
    watch_streams: f64,
}

fn figures(a: &Sample, b: &Sample) -> MemberFigures {
    // Linux's USER_HZ is 100 on every architecture etcd runs on.
    let secs =
        b.at.zip(a.at)
            .map(|(b, a)| (b - a).as_secs_f64())
            .unwrap_or(1.0);
    let rps = b
        .started
        .iter()
        .map(|(m, v)| {
            (
                m.clone(),
                (v - a.started.get(m).copied().unwrap_or(0.0)) / secs,
            )
        })
        .collect();
    MemberFigures {
        cpu_pct: (b.cpu_ticks - a.cpu_ticks) as f64 / 100.0 / secs * 100.0,
        rss_mib: b.rss_kib as f64 / 1024.0,
        rps,
        keepalives: (b.keepalive_msgs - a.keepalive_msgs) / secs,
        watch_msgs: (b.watch_msgs - a.watch_msgs) / secs,
        watchers: b.watchers,
        watch_streams: b.watch_streams,
    }
}

/// One run's figures.
struct Run {
    model: Model,
    n: usize,
    leader: MemberFigures,
    follower: MemberFigures,
    /// Summed over the three members.
    keepalives_total: f64,
    watch_msgs_total: f64,
    watchers_total: f64,
    streams_total: f64,
    /// Role key → watch delivered, → status written (ms), sorted.
    delivered_ms: Vec<f64>,
    status_ms: Vec<f64>,
}

fn pct(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied()
}

async fn run_one(args: &Args, model: Model, n: usize) -> Result<Run> {
    eprintln!(
        "[bench-scale] {} N={n}: starting a 3-member etcd",
        model.name()
    );
    let etcd = common::EtcdCluster::start(3).await;
    let urls = etcd.client_urls();
    let pids = urls.iter().map(|u| pid_of(u)).collect::<Result<Vec<_>>>()?;
    let (tx, mut reports) = mpsc::unbounded_channel();
    let sh = Arc::new(Shared {
        model,
        ks: Keyspace::new("/bench"),
        candidates: args.candidates,
        health: if model == Model::DeckhandPublished {
            VoterHealthView::PublishedByVoters
        } else {
            VoterHealthView::StatusEveryVoterEachPass
        },
        reports: tx,
    });
    let (stop_tx, stop) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    if sh.health == VoterHealthView::PublishedByVoters {
        for (m, url) in urls.iter().enumerate() {
            tasks.spawn(voter_publisher(sh.clone(), m, url.clone(), stop.clone()));
        }
    }
    let started = Instant::now();
    let pace = Duration::from_secs_f64(1.0 / args.ramp.max(1) as f64);
    for i in 0..n {
        let kv_url = urls[i % urls.len()].clone();
        // The membership client's endpoints, rotated: the agents' first
        // voter is spread over the three.
        let mut voters = urls.clone();
        voters.rotate_left(i % urls.len());
        let (sh, stop) = (sh.clone(), stop.clone());
        tasks.spawn(async move {
            let r = match sh.model {
                Model::Deckhand | Model::DeckhandPublished => {
                    deckhand_agent(sh.clone(), i, kv_url, voters, stop).await
                }
                Model::Deis => deis_agent(sh.clone(), i, kv_url, stop).await,
            };
            if let Err(e) = r {
                eprintln!("[bench-scale] agent {i}: {e:#}");
            }
        });
        tokio::time::sleep(pace).await;
    }
    let mut up = 0;
    let deadline = Instant::now() + Duration::from_secs(120 + n as u64 / 5);
    while up < n {
        match tokio::time::timeout_at(deadline.into(), reports.recv()).await {
            Ok(Some(Report::Up)) => up += 1,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => bail!("only {up} of {n} agents came up"),
        }
    }
    eprintln!(
        "[bench-scale] {} N={n}: all up after {:.1} s; settling {} s, then a {} s window",
        model.name(),
        started.elapsed().as_secs_f64(),
        args.warmup_seconds,
        args.steady_seconds
    );
    tokio::time::sleep(Duration::from_secs(args.warmup_seconds)).await;
    let mut before = Vec::new();
    for (u, p) in urls.iter().zip(&pids) {
        before.push(sample(u, *p).await?);
    }
    tokio::time::sleep(Duration::from_secs(args.steady_seconds)).await;
    let mut after = Vec::new();
    for (u, p) in urls.iter().zip(&pids) {
        after.push(sample(u, *p).await?);
    }
    let figs: Vec<MemberFigures> = before
        .iter()
        .zip(&after)
        .map(|(a, b)| figures(a, b))
        .collect();
    let li = after.iter().position(|s| s.is_leader).unwrap_or(0);
    let fi = (li + 1) % figs.len();

    // Latency: role keys written one at a time, spread over the agents.
    let (mut delivered_ms, mut status_ms) = (Vec::new(), Vec::new());
    if model != Model::Deis && args.writes > 0 {
        let writer = Store::new(
            Cluster::connect(&urls, REQUEST_TIMEOUT, None)
                .await?
                .client(),
            sh.ks.clone(),
            REQUEST_TIMEOUT,
        );
        for k in 0..args.writes {
            let i = k * n / args.writes;
            while reports.try_recv().is_ok() {}
            let etcd_role = if k % 2 == 0 {
                EtcdRole::Proxy
            } else {
                EtcdRole::Member
            };
            let at = Instant::now();
            writer.put_role(&node_id(i), &Role::new(etcd_role)).await?;
            let until = Instant::now() + Duration::from_secs(10);
            let (mut got_d, mut got_s) = (false, false);
            while !(got_d && got_s) {
                match tokio::time::timeout_at(until.into(), reports.recv()).await {
                    Ok(Some(Report::RoleDelivered(j, t))) if j == i => {
                        delivered_ms.push((t - at).as_secs_f64() * 1000.0);
                        got_d = true;
                    }
                    Ok(Some(Report::StatusWritten(j, t))) if j == i => {
                        status_ms.push((t - at).as_secs_f64() * 1000.0);
                        got_s = true;
                    }
                    Ok(Some(_)) => {}
                    _ => {
                        eprintln!("[bench-scale] agent {i}: no delivery within 10 s");
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    delivered_ms.sort_by(f64::total_cmp);
    status_ms.sort_by(f64::total_cmp);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    drop(etcd);
    Ok(Run {
        model,
        n,
        keepalives_total: figs.iter().map(|f| f.keepalives).sum(),
        watch_msgs_total: figs.iter().map(|f| f.watch_msgs).sum(),
        watchers_total: figs.iter().map(|f| f.watchers).sum(),
        streams_total: figs.iter().map(|f| f.watch_streams).sum(),
        leader: figs[li].clone(),
        follower: figs[fi].clone(),
        delivered_ms,
        status_ms,
    })
}

fn print_table(runs: &[Run], args: &Args) {
    let w = 21;
    let mut head = format!("{:<34}", "");
    for r in runs {
        head.push_str(&format!("{:>w$}", format!("{} N={}", r.model.name(), r.n)));
    }
    println!(
        "\nbench-scale: 3-member etcd ({}) on loopback, window {} s after {} s settling;\n\
         cells with two figures are leader / follower.\n",
        etcd_version(),
        args.steady_seconds,
        args.warmup_seconds
    );
    println!("{head}");
    let row = |name: &str, f: &dyn Fn(&Run) -> String| {
        let mut line = format!("{name:<34}");
        for r in runs {
            line.push_str(&format!("{:>w$}", f(r)));
        }
        println!("{line}");
    };
    row("CPU, % of one core", &|r| {
        format!("{:.1} / {:.1}", r.leader.cpu_pct, r.follower.cpu_pct)
    });
    row("RSS, MiB", &|r| {
        format!("{:.0} / {:.0}", r.leader.rss_mib, r.follower.rss_mib)
    });
    row("requests/s, all RPCs", &|r| {
        format!(
            "{:.1} / {:.1}",
            r.leader.rps.values().sum::<f64>(),
            r.follower.rps.values().sum::<f64>()
        )
    });
    let mut methods: Vec<String> = runs
        .iter()
        .flat_map(|r| r.leader.rps.iter().chain(r.follower.rps.iter()))
        .filter(|(_, v)| **v >= 0.05)
        .map(|(m, _)| m.clone())
        .collect();
    methods.sort();
    methods.dedup();
    for m in &methods {
        row(&format!("  {m}/s"), &|r| {
            let g = |f: &MemberFigures| f.rps.get(m).copied().unwrap_or(0.0);
            format!("{:.1} / {:.1}", g(&r.leader), g(&r.follower))
        });
    }
    row("keep-alives/s, all members", &|r| {
        format!("{:.1}", r.keepalives_total)
    });
    row("watch stream msgs/s, all members", &|r| {
        format!("{:.1}", r.watch_msgs_total)
    });
    row("watchers, all members", &|r| {
        format!("{:.0}", r.watchers_total)
    });
    row("watch streams, all members", &|r| {
        format!("{:.0}", r.streams_total)
    });
    let lat = |v: &[f64]| match (pct(v, 0.5), pct(v, 0.99)) {
        (Some(a), Some(b)) => format!("{a:.1} / {b:.1}"),
        _ => "n/a".to_string(),
    };
    row("role key -> watch, ms p50 / p99", &|r| lat(&r.delivered_ms));
    row("role key -> status, ms p50 / p99", &|r| lat(&r.status_ms));
    row("latency samples", &|r| r.delivered_ms.len().to_string());
}

fn etcd_version() -> String {
    std::process::Command::new(common::ETCD)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "etcd".into())
}

fn main() -> Result<()> {
    let args = Args::parse();
    // Warnings only, on stderr (the test helper's own subscriber, at debug
    // level, then stays off).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let models = match args.model.as_str() {
        "deckhand" => vec![Model::Deckhand],
        "deis" => vec![Model::Deis],
        "published" => vec![Model::DeckhandPublished],
        "both" => vec![Model::Deckhand, Model::Deis],
        "all" => vec![Model::Deckhand, Model::DeckhandPublished, Model::Deis],
        other => bail!("--model takes deckhand, published, deis, both or all, not {other:?}"),
    };
    if args.sizes.is_empty() || args.sizes.contains(&0) {
        bail!("--sizes takes positive numbers");
    }
    let mut runs = Vec::new();
    for &n in &args.sizes {
        for &model in &models {
            // A runtime per run: whatever an agent left behind ends with it.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let run = rt.block_on(run_one(&args, model, n));
            rt.shutdown_timeout(Duration::from_secs(2));
            runs.push(run?);
        }
    }
    print_table(&runs, &args);
    Ok(())
}
