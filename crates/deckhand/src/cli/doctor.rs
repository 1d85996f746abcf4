//! `deckhand doctor`: holds a live cluster against the production checklist
//! (planes isolated, etcd isolated, preseeded, alarms, disk, Docker, clock,
//! security, firewall, backups, monitoring) and prints one line per check.
//!
//! Two halves: [`gather`] reads the cluster once into a plain [`Snapshot`]
//! (node keys and statuses, the member list from a real member with each
//! voter's health, the leader, etcd's alarm list, plane and cluster
//! configs); [`checks`] turns a snapshot into [`Finding`]s without I/O, so
//! every check is unit-tested on synthetic snapshots, including clusters
//! larger than the harness (more than five nodes, more than seven voters).
//! One function per check: the issues that build TLS, the firewall,
//! backups and metrics replace theirs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use clap::Args;
use deckhand_etcd::Cluster;
use deckhand_model::{
    CheckState, ClusterConfig, EtcdMode, NodeStatus, Plane, PlaneConfig, Role, VoterTrouble,
};
use deckhand_plan::{FaultTolerance, MemberView, voter_troubles, wanted_images};
use serde::Serialize;

use super::session::Session;
use super::table::columns;
use crate::connect::Target;
use crate::exit::{self, Failure};
use crate::store::{Alarm, AlarmKind, NodeKeys, PlaneConfigs, Store};

/// Exit status of `deckhand doctor` when some check warned and none failed.
/// It is the number of a usage error ([`exit::USAGE`]) as the issue asks;
/// a usage error also prints the usage, a doctor's warning prints the
/// findings.
pub const WARNINGS: u8 = exit::USAGE;

/// How long each voter may take to answer a status request.
const VOTER_TIMEOUT: Duration = Duration::from_secs(2);

/// `deckhand doctor` arguments.
#[derive(Args)]
#[command(
    about = "Check a live cluster against the production checklist: one line per check (pass, warn, fail), what it saw, what to do",
    long_about = "Check a live cluster against the production checklist. Runs from any node (or anywhere \
that reaches an etcd endpoint), reads the cluster once, and prints one line per check: its level \
(pass, warn, fail), what it saw and what to do. A check that cannot run (etcd does not answer, a node \
has no status) fails; it never passes.\n\n\
The checks and what each looks at:\n\
- planes-isolated  the role keys' planes: above five nodes, no node serves both the control and the \
data plane and the control plane stays on a few nodes; on three to five nodes sharing is fine\n\
- etcd-isolated    the member list (from a real member) and each voter's status: an odd number of \
voters (3 or 5, never more than 7), voters on control-plane nodes, every other node a proxy serving \
localhost:2379 (its status), fault tolerance at least one more voter failure\n\
- preseeded        each node's image counts in its status against its planes' images and the \
cluster config's `upcoming` list\n\
- alarms           etcd's alarm list (NOSPACE, CORRUPT), by member and node\n\
- disk, docker     the `disk-docker`/`disk-etcd` and `docker` checks every node reports in its status; \
a node without a status fails\n\
- clock            spread between nodes' clocks, read from each agent's metrics endpoint (fails above etcd's 1 s, warns above 250 ms)\n\
- security         the URL schemes of every etcd hop between hosts (CLI endpoints, client and peer \
URLs; loopback stays plaintext by design)\n\
- certificates     each node's TLS certificate expiry, from its status: expired fails, under 30 days \
warns\n\
- firewall         each live node's status: its rule set (table inet deckhand) applied and matching \
its role; warns while the cluster config leaves the firewall off\n\
- backups          with backup.enabled: a good snapshot younger than twice backup.interval_seconds \
(on the taking agent's clock), someone standing to take them; warns while the schedule is off\n\
- monitoring       every node's agent serves /metrics and answered the clock read (warns naming those that do not)\n\n\
Exit status: 0 every check passed; 1 a check failed; 2 warnings only (2 is also a usage error, \
which prints the usage instead of findings); 78 the agent config cannot be used."
)]
pub struct DoctorArgs {
    /// Print JSON: `{"findings":[{"name","level","saw","todo"}...],"summary":{...}}`.
    #[arg(long)]
    pub json: bool,
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The check's stable name (`etcd-isolated`, ...).
    pub name: &'static str,
    /// Pass, warn or fail.
    pub level: CheckState,
    /// What it saw, in words.
    pub saw: String,
    /// What to do; empty when nothing is to be done.
    pub todo: String,
}

impl Finding {
    /// A finding; line breaks in `saw` (a multi-line error) become spaces,
    /// so each finding stays one line.
    pub(crate) fn new(
        name: &'static str,
        level: CheckState,
        saw: String,
        todo: impl Into<String>,
    ) -> Self {
        Finding {
            name,
            level,
            saw: saw
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
            todo: todo.into(),
        }
    }

    pub(crate) fn cannot_run(name: &'static str, why: &str) -> Self {
        Finding::new(
            name,
            CheckState::Fail,
            format!("cannot run: {why}"),
            "make etcd answer (deckhand status; journalctl -u deckhand -u 'deckhand-etcd-*'), then run doctor again",
        )
    }
}

/// Everything the checks look at, read once from the live cluster. Each
/// part that could not be read holds why, in words.
#[derive(Debug)]
pub struct Snapshot {
    /// The key prefix read.
    pub prefix: String,
    /// The endpoints the CLI was pointed at (its `--endpoints`, or
    /// localhost:2379 and the agent config's).
    pub endpoints: Vec<String>,
    /// Every node's keys, by node id.
    pub nodes: Result<BTreeMap<String, NodeKeys>, String>,
    /// The member list from a real member, each voter with its health
    /// (`healthy`: it answered a status request and knows a leader).
    pub members: Result<Vec<MemberView>, String>,
    /// The raft leader's member id, as a voter reported it.
    pub leader: Option<u64>,
    /// etcd's active alarms.
    pub alarms: Result<Vec<Alarm>, String>,
    /// The plane configs.
    pub planes: Result<PlaneConfigs, String>,
    /// The cluster config (the defaults when the key is absent).
    pub cluster: Result<ClusterConfig, String>,
    /// When it was taken, seconds since the epoch (certificate expiry).
    pub now_unix: u64,
    /// The backup keys (the taker's status, the election).
    pub backup: Result<super::doctor_backup::BackupView, String>,
    /// Every node's clock against the CLI's, read from its metrics
    /// endpoint (`doctor_metrics`), by node name.
    pub clocks: Vec<super::doctor_metrics::Reading>,
}

impl Snapshot {
    /// A snapshot of a cluster that could not be reached: every part holds `why`.
    pub fn unreachable(prefix: &str, endpoints: Vec<String>, why: &str) -> Snapshot {
        let e = why.to_string();
        Snapshot {
            prefix: prefix.to_string(),
            endpoints,
            nodes: Err(e.clone()),
            members: Err(e.clone()),
            leader: None,
            alarms: Err(e.clone()),
            planes: Err(e.clone()),
            cluster: Err(e),
            now_unix: crate::agent::observe::unix_now(),
            backup: Err(why.to_string()),
            clocks: Vec::new(),
        }
    }
}

/// `deckhand doctor`: gather, check, print; the exit status says the worst
/// level.
///
/// # Errors
/// A failed check (status 1) or warnings only ([`WARNINGS`]), after the
/// findings were printed; printing JSON failed.
pub async fn doctor(target: Target, args: DoctorArgs) -> Result<(), Failure> {
    let t = Instant::now();
    let snapshot = gather(&target).await;
    let findings = checks(&snapshot);
    let summary = Summary::of(&findings, t.elapsed());
    if args.json {
        let out = serde_json::json!({ "findings": findings, "summary": summary });
        outln!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(Failure::failed)?
        );
    } else {
        out!("{}", table(&findings));
        outln!(
            "\n{} pass, {} warn, {} fail ({:.2} s)",
            summary.pass,
            summary.warn,
            summary.fail,
            summary.seconds
        );
    }
    match summary.exit {
        exit::OK => Ok(()),
        code => Err(Failure {
            code,
            error: anyhow!(
                "doctor: {}",
                if summary.fail > 0 {
                    format!("{} check(s) failed", summary.fail)
                } else {
                    format!("{} warning(s), no failure", summary.warn)
                }
            ),
        }),
    }
}

/// The counts of each level, the exit status they give, and how long the
/// run took.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Checks that passed.
    pub pass: usize,
    /// Checks that warned.
    pub warn: usize,
    /// Checks that failed.
    pub fail: usize,
    /// The exit status: 0, 1, or [`WARNINGS`].
    pub exit: u8,
    /// How long gathering and checking took, in seconds. Shown for the
    /// operator only; nothing is written.
    pub seconds: f64,
}

impl Summary {
    fn of(findings: &[Finding], took: Duration) -> Summary {
        let n = |l| findings.iter().filter(|f| f.level == l).count();
        let (pass, warn, fail) = (
            n(CheckState::Pass),
            n(CheckState::Warn),
            n(CheckState::Fail),
        );
        Summary {
            pass,
            warn,
            fail,
            exit: exit_status(findings),
            seconds: (took.as_secs_f64() * 100.0).round() / 100.0,
        }
    }
}

/// 0 when every finding passed, 1 when any failed, [`WARNINGS`] otherwise.
pub fn exit_status(findings: &[Finding]) -> u8 {
    match findings.iter().map(|f| f.level).max() {
        Some(CheckState::Fail) => exit::FAILED,
        Some(CheckState::Warn) => WARNINGS,
        _ => exit::OK,
    }
}

/// The findings as aligned lines: level, check, then what it saw and,
/// after ` → `, what to do (the last column is not padded, so a long
/// finding does not widen the others).
pub fn table(findings: &[Finding]) -> String {
    let rows: Vec<[String; 3]> = findings
        .iter()
        .map(|f| {
            let mut text = f.saw.clone();
            if !f.todo.is_empty() {
                text.push_str(" → ");
                text.push_str(&f.todo);
            }
            [f.level.to_string().to_uppercase(), f.name.to_string(), text]
        })
        .collect();
    columns(&["LEVEL", "CHECK", "SAW → TO DO"], &rows)
}

/// Reads the cluster once. Never fails: a part that cannot be read holds
/// why, and its checks fail.
///
/// The member list comes from a real member, never a grpc-proxy (etcd 3.4's
/// proxy answers `MemberList` with itself): the members nodes report, then
/// the agent config's endpoints, then `--endpoints`. Each voter is asked
/// for its status at once, within [`VOTER_TIMEOUT`]; alarms are read
/// through a member when one answered.
pub async fn gather(target: &Target) -> Snapshot {
    let prefix = target.keyspace.prefix().to_string();
    let endpoints = target.endpoints.clone();
    let session = match Session::connect(target.clone()).await {
        Ok(s) => s,
        Err(e) => return Snapshot::unreachable(&prefix, endpoints, &format!("{e:#}")),
    };
    let store = &session.store;
    let text = |e: anyhow::Error| format!("{e:#}");
    let nodes = store.nodes().await.map_err(text);
    let planes = store.plane_configs().await.map_err(text);
    let cluster = store.cluster_config().await.map(|(c, _)| c).map_err(text);
    let no_nodes = BTreeMap::new();
    let member_client = session
        .member_list(nodes.as_ref().unwrap_or(&no_nodes))
        .await;
    let (members, leader, alarms) = match member_client {
        Ok((c, list)) => {
            let health: BTreeMap<u64, bool> = c
                .voter_health(&list, VOTER_TIMEOUT)
                .await
                .into_iter()
                .collect();
            let mut leader = None;
            for m in list.iter().filter(|m| health.get(&m.id) == Some(&true)) {
                if let Some(ep) = m.client_urls.first()
                    && let Ok(st) = Cluster::endpoint_status(ep, VOTER_TIMEOUT, c.tls()).await
                    && st.leader != 0
                {
                    leader = Some(st.leader);
                    break;
                }
            }
            let views = list
                .into_iter()
                .map(|m| MemberView {
                    healthy: (!m.is_learner).then(|| health.get(&m.id) == Some(&true)),
                    id: m.id,
                    name: m.name,
                    peer_urls: m.peer_urls,
                    client_urls: m.client_urls,
                    is_learner: m.is_learner,
                })
                .collect();
            let member_store = Store::new(
                c.client(),
                target.keyspace.clone(),
                crate::connect::CLI_REQUEST_TIMEOUT,
            );
            (Ok(views), leader, member_store.alarms().await.map_err(text))
        }
        Err(e) => (
            Err(format!("{e:#}")),
            None,
            store.alarms().await.map_err(text),
        ),
    };
    Snapshot {
        prefix,
        endpoints,
        members,
        leader,
        alarms,
        planes,
        cluster,
        now_unix: crate::agent::observe::unix_now(),
        backup: super::doctor_backup::gather(store).await,
        clocks: match &nodes {
            Ok(n) => super::doctor_metrics::read_all(n).await,
            Err(_) => Vec::new(),
        },
        nodes,
    }
}

/// Every check of the checklist on `s`, in a fixed order (pure).
pub fn checks(s: &Snapshot) -> Vec<Finding> {
    vec![
        planes_isolated(s),
        etcd_isolated(s),
        preseeded(s),
        alarms(s),
        disk(s),
        docker(s),
        clock(s),
        security(s),
        certificates(s),
        firewall(s),
        backups(s),
        monitoring(s),
    ]
}

/// One node as the checks see it.
struct Node<'a> {
    id: &'a str,
    name: String,
    role: Option<Role>,
    status: Option<&'a NodeStatus>,
}

impl Node<'_> {
    /// The planes the operator gave it (role key), else those it applied.
    fn planes(&self) -> BTreeSet<Plane> {
        self.role
            .as_ref()
            .or(self.status.and_then(|s| s.applied.as_ref()))
            .map(|r| r.planes.clone())
            .unwrap_or_default()
    }

    fn serves(&self, p: Plane) -> bool {
        self.planes().contains(&p)
    }
}

/// The nodes sorted by name, then id; a node without a name shows its id.
fn node_list(nodes: &BTreeMap<String, NodeKeys>) -> Vec<Node<'_>> {
    let mut out: Vec<Node<'_>> = nodes
        .iter()
        .map(|(id, k)| {
            let name = k.display_name();
            Node {
                id,
                name: if name.is_empty() { id.clone() } else { name },
                role: k.role(),
                status: k.status.as_ref(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(b.id)));
    out
}

fn join(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// The host of a URL (`http://10.0.0.1:2380` → `10.0.0.1`).
fn host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or(rest);
    match hostport.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => hostport,
    }
}

/// The node behind member `m`: by the member id its status reports, else
/// by its address in the member's peer URL, else by name.
fn node_of<'a, 'b>(m: &MemberView, nodes: &'b [Node<'a>]) -> Option<&'b Node<'a>> {
    let hex = format!("{:x}", m.id);
    nodes
        .iter()
        .find(|n| n.status.and_then(|s| s.etcd.member_id.as_deref()) == Some(hex.as_str()))
        .or_else(|| {
            nodes.iter().find(|n| {
                n.status
                    .is_some_and(|s| m.peer_urls.iter().any(|u| host(u) == s.address))
            })
        })
        .or_else(|| {
            nodes
                .iter()
                .find(|n| !m.name.is_empty() && n.name == m.name)
        })
}

/// A member in words: its node's name, else its name, else its peer URL.
fn member_label(m: &MemberView, nodes: &[Node<'_>]) -> String {
    node_of(m, nodes)
        .map(|n| n.name.clone())
        .unwrap_or_else(|| {
            let peer = m.peer_urls.first().map(String::as_str).unwrap_or("?");
            if m.name.is_empty() {
                format!("{:x} ({peer})", m.id)
            } else {
                format!("{} ({peer})", m.name)
            }
        })
}

/// Why a node has no status, in words, given etcd's alarms.
fn no_status(alarms: &Result<Vec<Alarm>, String>) -> &'static str {
    match alarms {
        Ok(a) if a.iter().any(|a| a.kind == AlarmKind::NoSpace) => {
            "no status: etcd has a NOSPACE alarm and refuses lease grants and puts, so the node may be unable to write it"
        }
        _ => "no status: its lease expired or was revoked (agent stopped, or node down)",
    }
}

/// The level of a list of problems: fail if any failure, warn if any warning.
fn level(fails: &[String], warns: &[String]) -> CheckState {
    if !fails.is_empty() {
        CheckState::Fail
    } else if !warns.is_empty() {
        CheckState::Warn
    } else {
        CheckState::Pass
    }
}

/// The things to do, each once, in order.
fn uniq(todo: &[&str]) -> String {
    let mut out: Vec<&str> = Vec::new();
    for t in todo {
        if !out.contains(t) {
            out.push(t);
        }
    }
    out.join("; ")
}

/// The saw text: the problems first (failures, then warnings), then the
/// summary of what is fine.
fn saw(fails: &[String], warns: &[String], fine: String) -> String {
    let mut parts: Vec<String> = fails.iter().chain(warns).cloned().collect();
    if !fine.is_empty() {
        parts.push(fine);
    }
    parts.join("; ")
}

/// **planes isolated**: above five nodes the control plane runs on a small
/// fixed set of nodes (at most five) and the data plane elsewhere; on three
/// to five nodes sharing is fine.
pub fn planes_isolated(s: &Snapshot) -> Finding {
    const NAME: &str = "planes-isolated";
    let nodes = match &s.nodes {
        Ok(n) => node_list(n),
        Err(e) => return Finding::cannot_run(NAME, e),
    };
    if nodes.is_empty() {
        return Finding::new(
            NAME,
            CheckState::Fail,
            format!("no node keys under {}", s.prefix),
            "point doctor at the cluster's prefix (--prefix), or start the agents",
        );
    }
    let on = |p: Plane| -> Vec<String> {
        nodes
            .iter()
            .filter(|n| n.serves(p))
            .map(|n| n.name.clone())
            .collect()
    };
    let (control, data) = (on(Plane::Control), on(Plane::Data));
    let both: Vec<String> = nodes
        .iter()
        .filter(|n| n.serves(Plane::Control) && n.serves(Plane::Data))
        .map(|n| n.name.clone())
        .collect();
    let n = nodes.len();
    let layout = format!("control on {}; data on {}", join(&control), join(&data));
    if n <= 5 {
        return Finding::new(
            NAME,
            CheckState::Pass,
            format!("{n} node(s): sharing planes is fine at this size; {layout}"),
            "",
        );
    }
    let mut warns = Vec::new();
    if !both.is_empty() {
        warns.push(format!(
            "{} serve both the control and the data plane",
            join(&both)
        ));
    }
    if control.len() > 5 {
        warns.push(format!(
            "the control plane runs on {} nodes, not a small fixed set",
            control.len()
        ));
    }
    let todo = if warns.is_empty() {
        ""
    } else {
        "above five nodes keep the control plane on 3 or 5 nodes and the data plane on others: deckhand role set NODE --etcd ... --planes ..."
    };
    Finding::new(
        NAME,
        level(&[], &warns),
        saw(&[], &warns, format!("{n} nodes: {layout}")),
        todo,
    )
}

/// **etcd isolated**: an odd number of voters (3 or 5, never more than 7),
/// voters on control-plane nodes, every other node a proxy serving
/// `localhost:2379`, and fault tolerance of at least one more voter failure.
pub fn etcd_isolated(s: &Snapshot) -> Finding {
    const NAME: &str = "etcd-isolated";
    let members = match &s.members {
        Ok(m) => m,
        Err(e) => return Finding::cannot_run(NAME, e),
    };
    let nodes = match &s.nodes {
        Ok(n) => node_list(n),
        Err(e) => return Finding::cannot_run(NAME, e),
    };
    let (mut fails, mut warns, mut todo) = (Vec::new(), Vec::new(), Vec::<&str>::new());
    let voters: Vec<&MemberView> = members.iter().filter(|m| !m.is_learner).collect();
    let v = voters.len();
    if v == 0 {
        fails.push("no voter in the member list".into());
    } else if v > 7 {
        fails.push(format!(
            "{v} voters, more than 7: every write waits for {} of them",
            v / 2 + 1
        ));
        todo.push(
            "demote voters to proxies until 5 are left (deckhand role set NODE --etcd proxy)",
        );
    } else if v.is_multiple_of(2) {
        fails.push(format!(
            "{v} voters, an even number: they tolerate no more failures than {} would, with a larger quorum",
            v - 1
        ));
        todo.push("make the number of voters odd (3 or 5): `deckhand role set NODE --etcd member` or `--etcd proxy` (a voter that never started must go first: `deckhand member remove ID`)");
    } else if v == 7 {
        warns
            .push("7 voters: writes wait for 4; 5 tolerate two failures with faster writes".into());
        todo.push("consider demoting two voters to proxies");
    }
    let ft = FaultTolerance::of(members);
    let ft_ok = ft.spare().is_some_and(|n| n >= 1);
    if !ft_ok {
        fails.push(format!("fault tolerance: {ft}"));
        if ft.up < ft.voters {
            todo.push("bring the voters that do not answer back, or replace them, until one more failure keeps quorum");
        } else {
            todo.push("run at least 3 voters (`deckhand role set NODE --etcd member`): with fewer, any voter's failure loses quorum");
        }
    }
    // The voters in trouble, as the agents judge them (one place for the
    // rule: deckhand_plan::voter_troubles).
    let peer_urls: Vec<String> = nodes
        .iter()
        .filter_map(|n| n.status)
        .filter_map(|s| s.address.parse().ok())
        // A status records the address, not the scheme: both match.
        .flat_map(|a| {
            [
                crate::identity::peer_url_of(a, false),
                crate::identity::peer_url_of(a, true),
            ]
        })
        .collect();
    for (id, peer, trouble) in voter_troubles(members, &peer_urls) {
        // A node is also known by its name key (the member's name), as
        // `deckhand status` and the agents match it: a node that cannot
        // write its status (NOSPACE) still has one behind its voter.
        if trouble == VoterTrouble::NoNode
            && members
                .iter()
                .any(|m| m.id == id && !m.name.is_empty() && nodes.iter().any(|n| n.name == m.name))
        {
            continue;
        }
        let label = members
            .iter()
            .find(|m| m.id == id)
            .map(|m| member_label(m, &nodes))
            .unwrap_or_else(|| format!("{id:x} ({peer})"));
        match trouble {
            VoterTrouble::NotStarted => {
                fails.push(format!("voter {label} was added but never started"));
                todo.push("start the member on that host, or remove it (`deckhand member remove ID`, which checks that the started voters keep quorum)");
            }
            VoterTrouble::NotAnswering => {
                fails.push(format!("voter {label} does not answer"));
            }
            VoterTrouble::NoNode => {
                warns.push(format!("voter {label} has no deckhand node behind it"));
                todo.push("run deckhand on that host, or remove the member if it is not part of the cluster");
            }
        }
    }
    if !control_free(&nodes) {
        for n in voters.iter().filter_map(|m| node_of(m, &nodes)) {
            if !n.serves(Plane::Control) {
                warns.push(format!("voter {} is not on a control-plane node", n.name));
                todo.push("put the voters on control-plane nodes (deckhand role set NODE --etcd member --planes control,...)");
            }
        }
    }
    for m in members.iter().filter(|m| m.is_learner) {
        warns.push(format!("learner {} is joining", member_label(m, &nodes)));
    }
    let voter_nodes: BTreeSet<&str> = voters
        .iter()
        .filter_map(|m| node_of(m, &nodes))
        .map(|n| n.id)
        .collect();
    let learner_nodes: BTreeSet<&str> = members
        .iter()
        .filter(|m| m.is_learner)
        .filter_map(|m| node_of(m, &nodes))
        .map(|n| n.id)
        .collect();
    let mut proxies = Vec::new();
    for n in nodes.iter().filter(|n| !voter_nodes.contains(n.id)) {
        let Some(st) = n.status else {
            fails.push(format!(
                "{}: {}, cannot tell whether it serves localhost:2379",
                n.name,
                no_status(&s.alarms)
            ));
            todo.push("start its agent (systemctl start deckhand) or its host");
            continue;
        };
        match st.etcd.mode {
            EtcdMode::Proxy => proxies.push(n.name.clone()),
            EtcdMode::Learner => {
                if !learner_nodes.contains(n.id) {
                    warns.push(format!("{} runs a learner", n.name));
                }
            }
            EtcdMode::Member => warns.push(format!(
                "{} reports a member that is not a voter in the member list",
                n.name
            )),
            EtcdMode::None => {
                fails.push(format!("{}: nothing serves localhost:2379", n.name));
                todo.push(
                    "see its status error and journalctl -u deckhand -u 'deckhand-etcd-*' on it",
                );
            }
        }
        if let Some(c) = st
            .checks
            .iter()
            .find(|c| c.name == "local-etcd" && c.state == CheckState::Fail)
        {
            fails.push(format!("{}: local etcd: {}", n.name, c.detail));
        }
    }
    let mut voter_names: Vec<String> = voters.iter().map(|m| member_label(m, &nodes)).collect();
    voter_names.sort();
    let leader = s
        .leader
        .and_then(|id| members.iter().find(|m| m.id == id))
        .map(|m| member_label(m, &nodes))
        .unwrap_or_else(|| "none".into());
    let fine = format!(
        "{v} voters ({}), leader {leader}{}; proxies: {}",
        join(&voter_names),
        if ft_ok {
            format!(", {ft}")
        } else {
            String::new()
        },
        join(&proxies)
    );
    Finding::new(
        NAME,
        level(&fails, &warns),
        saw(&fails, &warns, fine),
        uniq(&todo),
    )
}

/// Whether no node serves the control plane (then "voters on control-plane
/// nodes" cannot apply).
fn control_free(nodes: &[Node<'_>]) -> bool {
    !nodes.iter().any(|n| n.serves(Plane::Control))
}

/// **preseeded**: every node has the images of its planes (of every plane
/// with `preseed_all_planes`) and the `upcoming` list, as its status counts
/// them.
pub fn preseeded(s: &Snapshot) -> Finding {
    const NAME: &str = "preseeded";
    let (nodes, planes, cluster) = match (&s.nodes, &s.planes, &s.cluster) {
        (Ok(n), Ok(p), Ok(c)) => (node_list(n), p, c),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Finding::cannot_run(NAME, e),
    };
    let configs: &BTreeMap<Plane, PlaneConfig> = &planes.valid;
    let (mut fails, mut warns, mut fine) = (Vec::new(), Vec::new(), Vec::new());
    let mut todo = Vec::<&str>::new();
    if !planes.rejected.is_empty() {
        warns.push(format!(
            "rejected plane config(s): {} (the agents keep the last valid one)",
            planes.rejected.join("; ")
        ));
        todo.push("fix the plane config (deckhand plane set)");
    }
    for n in &nodes {
        let want = wanted_images(&n.planes(), configs, cluster);
        if want.is_empty() {
            continue;
        }
        let Some(st) = n.status else {
            fails.push(format!(
                "{}: {}, cannot tell its images",
                n.name,
                no_status(&s.alarms)
            ));
            todo.push("start its agent (systemctl start deckhand) or its host");
            continue;
        };
        let i = &st.images;
        if i.wanted != want.len() {
            warns.push(format!(
                "{} keeps {} image(s), its planes and `upcoming` list {}: its agent has not caught up with the config",
                n.name,
                i.wanted,
                want.len()
            ));
        }
        if !i.failed.is_empty() {
            let what: Vec<String> = i
                .failed
                .iter()
                .map(|f| format!("{} ({})", f.image, f.reason))
                .collect();
            fails.push(format!("{}: not present: {}", n.name, what.join(", ")));
            todo.push("make the image pullable (push it to the registry, fix the reference with deckhand plane set), then the agent retries within a minute");
        } else if i.present < i.wanted && !i.pulling.is_empty() {
            warns.push(format!(
                "{}: {}/{} present, pulling {}",
                n.name,
                i.present,
                i.wanted,
                i.pulling.join(", ")
            ));
        } else if i.present < i.wanted {
            fails.push(format!(
                "{}: {}/{} images present",
                n.name, i.present, i.wanted
            ));
            todo.push("see the node's status and journalctl -u deckhand on it");
        } else {
            fine.push(format!("{} {}/{}", n.name, i.present, i.wanted));
        }
    }
    let mut summary = if fine.is_empty() && fails.is_empty() && warns.is_empty() {
        "no plane config lists images for a node".to_string()
    } else if fine.is_empty() {
        String::new()
    } else {
        format!("all present on {}", fine.join(", "))
    };
    let upcoming = if cluster.upcoming.is_empty() {
        "no `upcoming` images set (set them before an upgrade, so every node has the next release first)".to_string()
    } else {
        format!(
            "`upcoming`: {} (kept on every node)",
            cluster
                .upcoming
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    if !summary.is_empty() {
        summary.push_str("; ");
    }
    summary.push_str(&upcoming);
    Finding::new(
        NAME,
        level(&fails, &warns),
        saw(&fails, &warns, summary),
        uniq(&todo),
    )
}

/// **alarms**: etcd's alarm list, by member and node, with what to do.
pub fn alarms(s: &Snapshot) -> Finding {
    const NAME: &str = "alarms";
    let alarms = match &s.alarms {
        Ok(a) => a,
        Err(e) => return Finding::cannot_run(NAME, e),
    };
    if alarms.is_empty() {
        return Finding::new(NAME, CheckState::Pass, "no alarm".into(), "");
    }
    let nodes = s.nodes.as_ref().map(node_list).unwrap_or_default();
    let members = s.members.as_deref().unwrap_or_default();
    let mut seen = Vec::new();
    let mut todo = Vec::new();
    for a in alarms {
        let who = members
            .iter()
            .find(|m| m.id == a.member_id)
            .map(|m| format!("member {:x} ({})", a.member_id, member_label(m, &nodes)))
            .unwrap_or_else(|| format!("member {:x}", a.member_id));
        seen.push(format!("{} on {who}", a.kind));
        let t = match a.kind {
            AlarmKind::NoSpace => {
                "NOSPACE: etcd refuses puts and lease grants; compact (etcdctl compact REV), defragment every member (etcdctl defrag), then etcdctl alarm disarm; raise --quota-backend-bytes if the data needs it (https://etcd.io/docs/v3.4/op-guide/maintenance/#space-quota)"
            }
            AlarmKind::Corrupt => {
                "CORRUPT: that member's data differs from the others'; make it a proxy (deckhand role set NODE --etcd proxy: its data dir is moved aside), then a member again to rejoin from the healthy voters"
            }
        };
        if !todo.contains(&t) {
            todo.push(t);
        }
    }
    Finding::new(NAME, CheckState::Fail, seen.join("; "), todo.join("; "))
}

/// The nodes' own checks named `names`, cluster-wide: a failed check
/// fails, a warning warns, a node without a status fails (its name said),
/// nodes whose agent reports none of these checks warn.
fn node_checks(s: &Snapshot, name: &'static str, names: &[&str], what: &str) -> Finding {
    let nodes = match &s.nodes {
        Ok(n) => node_list(n),
        Err(e) => return Finding::cannot_run(name, e),
    };
    if nodes.is_empty() {
        return Finding::new(
            name,
            CheckState::Fail,
            format!("no node keys under {}", s.prefix),
            "point doctor at the cluster's prefix (--prefix), or start the agents",
        );
    }
    let (mut fails, mut warns, mut ok, mut silent) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut todo = Vec::<String>::new();
    for n in &nodes {
        let Some(st) = n.status else {
            fails.push(format!("{}: {}", n.name, no_status(&s.alarms)));
            todo.push("start its agent (systemctl start deckhand) or its host".into());
            continue;
        };
        let mine: Vec<_> = st
            .checks
            .iter()
            .filter(|c| names.contains(&c.name.as_str()))
            .collect();
        if mine.is_empty() {
            silent.push(n.name.clone());
            continue;
        }
        let mut good = true;
        for c in mine {
            match c.state {
                CheckState::Fail => fails.push(format!("{}: {}: {}", n.name, c.name, c.detail)),
                CheckState::Warn => warns.push(format!("{}: {}: {}", n.name, c.name, c.detail)),
                CheckState::Pass => continue,
            }
            good = false;
        }
        if good {
            ok.push(n.name.clone());
        }
    }
    if !fails.is_empty() || !warns.is_empty() {
        todo.push(format!("on each node named: {what}"));
    }
    if !silent.is_empty() {
        let alive = nodes.iter().filter(|n| n.status.is_some()).count();
        warns.push(if silent.len() == alive {
            format!(
                "no node reports its {name} checks yet (agent older than the status `checks` field)"
            )
        } else {
            format!(
                "{} report(s) no {name} check (agent older than the status `checks` field)",
                join(&silent)
            )
        });
        todo.push("upgrade deckhand on those nodes".into());
    }
    let fine = if ok.is_empty() {
        String::new()
    } else {
        format!("fine on {}", join(&ok))
    };
    let todo: Vec<&str> = todo.iter().map(String::as_str).collect();
    Finding::new(
        name,
        level(&fails, &warns),
        saw(&fails, &warns, fine),
        uniq(&todo),
    )
}

/// **disk**: free space on each node's Docker root and etcd data dir file
/// system, against the floors, from the nodes' `disk-docker` and
/// `disk-etcd` checks.
pub fn disk(s: &Snapshot) -> Finding {
    node_checks(
        s,
        "disk",
        &["disk-docker", "disk-etcd"],
        "free space (docker system prune; move or grow the file system; for etcd: compact and defragment)",
    )
}

/// **docker**: each node's Docker daemon answers, from the nodes' `docker`
/// checks.
pub fn docker(s: &Snapshot) -> Finding {
    node_checks(
        s,
        "docker",
        &["docker"],
        "systemctl status docker; journalctl -u docker",
    )
}

/// **clock**: the spread between the nodes' clocks, each read from its
/// agent's `deckhand_node_time_seconds` (`doctor_metrics::judge`): fails
/// above etcd's 1 s, warns above 250 ms or while a node cannot be read.
pub fn clock(s: &Snapshot) -> Finding {
    super::doctor_metrics::judge(&s.clocks)
}

/// Whether a URL's host is loopback (`127.0.0.0/8`, `::1`, `localhost`).
fn on_loopback(url: &str) -> bool {
    let h = host(url);
    h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// What the security finding says while etcd auth is off: with auth off etcd
/// checks no user, so any client certificate of the CA may read and write
/// every key (<https://etcd.io/docs/v3.4/op-guide/authentication/>).
const NO_AUTH: &str = "etcd auth is off (per-node rights are not built yet): every certificate of this CA, each node's included, may read and write every key";

/// **security**: TLS on every etcd hop between hosts, from the URL schemes
/// of the CLI's endpoints and every member's client and peer URLs, and
/// etcd auth. Loopback URLs (`localhost:2379`) are plaintext by design and
/// not counted (`docs/tls.md`). Never passes yet: with TLS on every hop it
/// warns that auth is off ([`NO_AUTH`]); with a plain URL it warns naming
/// it; unreadable member URLs fail.
pub fn security(s: &Snapshot) -> Finding {
    let mut urls: BTreeSet<&str> = s.endpoints.iter().map(String::as_str).collect();
    if let Ok(m) = &s.members {
        for m in m {
            urls.extend(m.client_urls.iter().map(String::as_str));
            urls.extend(m.peer_urls.iter().map(String::as_str));
        }
    }
    urls.retain(|u| !on_loopback(u));
    let plain: Vec<&str> = urls
        .iter()
        .copied()
        .filter(|u| !u.starts_with("https://"))
        .collect();
    if plain.is_empty() {
        if let Err(e) = &s.members {
            return Finding::cannot_run("security", e);
        }
        let mut saw = format!(
            "every etcd URL between hosts is https ({}); localhost:2379 stays plaintext on loopback",
            urls.len()
        );
        // Per-node rights need etcd auth, which deckhand does not turn on
        // yet: until then every certificate the CA issued has the rights of
        // etcd's root (etcd without auth checks no user).
        saw.push_str(&format!("; {NO_AUTH}"));
        return Finding::new(
            "security",
            CheckState::Warn,
            saw,
            "keep the CA key off the hosts and issue certificates only to hosts of this cluster; per-node rights (etcd auth) are not built yet",
        );
    }
    Finding::new(
        "security",
        CheckState::Warn,
        format!(
            "not configured: {} of {} etcd URLs are plain http (e.g. {})",
            plain.len(),
            urls.len(),
            plain.iter().take(2).copied().collect::<Vec<_>>().join(", ")
        ),
        "turn on mutual TLS: certificates from `deckhand pki`, a [tls] section in every agent config and https:// URLs (docs/tls.md); for a running plaintext cluster, install every node's certificates in /etc/deckhand/pki and run `deckhand tls enable`, which switches it node by node keeping quorum",
    )
}

/// **certificates**: each node's TLS certificate, from the `certificate`
/// its status carries: fail when one expired, warn when one has fewer
/// than [`crate::tls::WARN_DAYS`] days left; every node's days left said.
/// Warns when no node reports one (TLS off, or agents older than it); a
/// node without a status fails, as in the other node checks.
pub fn certificates(s: &Snapshot) -> Finding {
    let name = "certificates";
    let nodes = match &s.nodes {
        Ok(n) => node_list(n),
        Err(e) => return Finding::cannot_run(name, e),
    };
    let renew = "renew with `deckhand pki issue --renew --node NAME --address ADDR DIR`, replace the node's files in /etc/deckhand/pki and restart its etcd unit and deckhand (docs/tls.md)";
    let (mut fails, mut warns, mut ok, mut none) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for n in &nodes {
        let Some(st) = n.status else {
            fails.push(format!("{}: {}", n.name, no_status(&s.alarms)));
            continue;
        };
        let Some(c) = &st.certificate else {
            none.push(n.name.clone());
            continue;
        };
        let days = c.days_left(s.now_unix);
        if s.now_unix > c.not_after_unix {
            fails.push(format!(
                "{}: expired {} ({})",
                n.name,
                crate::tls::utc(c.not_after_unix),
                c.common_name
            ));
        } else if days < crate::tls::WARN_DAYS {
            warns.push(format!("{}: {days} d left", n.name));
        } else {
            ok.push(format!("{} {days} d", n.name));
        }
        // The agent's renewal through etcd (docs/pki.md): a refusal or a
        // failure needs an operator; one under way is fine.
        if let Some(r) = &c.renewal
            && (r.contains("refused") || r.contains("failed"))
        {
            warns.push(format!("{}: {r}", n.name));
        }
    }
    if ok.is_empty() && fails.is_empty() && warns.is_empty() {
        return Finding::new(
            name,
            CheckState::Warn,
            "not configured: no node reports a TLS certificate".into(),
            "turn on TLS (docs/tls.md); agents report their certificate's expiry once [tls] is on",
        );
    }
    if !none.is_empty() {
        warns.push(format!(
            "{} report(s) no certificate (TLS off there, or an older agent)",
            join(&none)
        ));
    }
    let todo = if fails.is_empty() && warns.is_empty() {
        ""
    } else {
        renew
    };
    let fine = if ok.is_empty() {
        String::new()
    } else {
        format!("days left: {}", ok.join(", "))
    };
    Finding::new(name, level(&fails, &warns), saw(&fails, &warns, fine), todo)
}

/// **firewall**: the host firewall (nftables table `inet deckhand`,
/// `docs/firewall.md`) on every live node. Warns while the cluster config
/// leaves it off; fails when a live node's agent does not run it, refused
/// its rule set (the previous rules stay: its status says why), could not
/// apply it, or holds the rules of the other role; passes when every live
/// node's current rule set is applied and matches its role.
pub fn firewall(s: &Snapshot) -> Finding {
    const NAME: &str = "firewall";
    let cfg = match &s.cluster {
        Ok(c) => &c.firewall,
        Err(e) => return Finding::cannot_run(NAME, e),
    };
    if !cfg.enabled {
        return Finding::new(
            NAME,
            CheckState::Warn,
            "not configured: the host firewall is off (cluster config firewall.enabled is false, \
             the default: an existing cluster keeps its behaviour until an operator turns it on)"
                .into(),
            "deckhand cluster set 'firewall={\"enabled\":true,\"default\":\"drop\"}' \
             (docs/firewall.md): 2379 and 2380 then follow each node's role",
        );
    }
    let nodes = match &s.nodes {
        Ok(n) => n,
        Err(e) => return Finding::cannot_run(NAME, e),
    };
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for k in nodes.values() {
        let Some(st) = &k.status else { continue };
        let fw = &st.firewall;
        let name = &st.name;
        if !fw.enabled {
            bad.push(format!(
                "{name}: its agent reports no firewall (an agent older than the firewall, or it has not read the config yet)"
            ));
        } else if !fw.applied {
            let kept = match &fw.role {
                Some(r) => format!("its previous {r} rules stay"),
                None => "it has no rules in place".into(),
            };
            bad.push(format!(
                "{name}: {} ({kept})",
                fw.reason
                    .as_deref()
                    .unwrap_or("the current rule set is not applied")
            ));
        } else if !fw.matches_role {
            bad.push(format!(
                "{name}: the rules in place are for {}, not its role",
                fw.role.as_deref().unwrap_or("?")
            ));
        } else {
            good.push(format!("{name} {}", fw.role.as_deref().unwrap_or("?")));
        }
    }
    if good.is_empty() && bad.is_empty() {
        return Finding::cannot_run(NAME, "no node has a status");
    }
    if !bad.is_empty() {
        return Finding::new(
            NAME,
            CheckState::Fail,
            bad.join("; "),
            "see the node's status (deckhand status --json: firewall.reason) and its journal \
             (journalctl -u deckhand | grep -i firewall); refused rule sets keep the previous rules \
             until the member list is known again",
        );
    }
    Finding::new(
        NAME,
        CheckState::Pass,
        format!(
            "{} live node(s) apply their role's rules, default {}: {}",
            good.len(),
            cfg.default,
            good.join(", ")
        ),
        "",
    )
}

/// **backups**: a recent verified snapshot of etcd
/// ([`super::doctor_backup::check`]).
pub fn backups(s: &Snapshot) -> Finding {
    super::doctor_backup::check(s, &s.backup)
}

/// **monitoring**: every node's agent serves `/metrics`
/// ([`super::doctor_metrics::monitoring`]).
pub fn monitoring(s: &Snapshot) -> Finding {
    super::doctor_metrics::monitoring(&s.clocks)
}

#[cfg(test)]
mod tests {
    use deckhand_model::{Check, EtcdRole, ImageFailure, ImageRef, ImagesStatus};

    use super::*;
    use crate::testing::node_status;

    fn id(k: usize) -> String {
        format!("{k:032x}")
    }

    fn checks_ok() -> Vec<Check> {
        ["local-etcd", "docker", "disk-docker", "disk-etcd"]
            .iter()
            .map(|n| Check {
                name: n.to_string(),
                state: CheckState::Pass,
                detail: "ok".into(),
            })
            .collect()
    }

    /// A live node `nodek` at 10.0.0.k: a member (member id k) or a proxy,
    /// serving `planes`, reporting passing checks.
    fn node(k: usize, member: bool, planes: &[Plane]) -> NodeKeys {
        let name = format!("node{k}");
        let mode = if member {
            EtcdMode::Member
        } else {
            EtcdMode::Proxy
        };
        let mut s = node_status(&name, mode);
        s.id = id(k);
        s.address = format!("10.0.0.{k}");
        let role = Role {
            etcd: if member {
                EtcdRole::Member
            } else {
                EtcdRole::Proxy
            },
            planes: planes.iter().copied().collect(),
        };
        s.desired = Some(role.clone());
        s.applied = Some(role.clone());
        if member {
            s.etcd.member_id = Some(format!("{k:x}"));
        }
        s.checks = checks_ok();
        NodeKeys {
            name: Some(name),
            role: Some((role.to_json().into_bytes(), 5)),
            status: Some(s),
        }
    }

    fn voter(k: usize) -> MemberView {
        MemberView {
            id: k as u64,
            name: format!("node{k}"),
            peer_urls: vec![format!("http://10.0.0.{k}:2380")],
            client_urls: vec![format!("http://10.0.0.{k}:2379")],
            is_learner: false,
            healthy: Some(true),
        }
    }

    /// `n` nodes, the first `voters` of them members (and voters), each
    /// serving the planes `planes(k)` gives.
    fn snap(n: usize, voters: usize, planes: impl Fn(usize) -> Vec<Plane>) -> Snapshot {
        Snapshot {
            prefix: "/deckhand".into(),
            endpoints: vec!["http://127.0.0.1:2379".into()],
            nodes: Ok((1..=n)
                .map(|k| (id(k), node(k, k <= voters, &planes(k))))
                .collect()),
            members: Ok((1..=voters).map(voter).collect()),
            leader: Some(1),
            alarms: Ok(vec![]),
            planes: Ok(PlaneConfigs::default()),
            cluster: Ok(ClusterConfig::default()),
            now_unix: 1000 * 86_400,
            backup: Ok(Default::default()),
            clocks: Vec::new(),
        }
    }

    fn boot() -> Snapshot {
        snap(5, 3, |_| vec![])
    }

    fn status_mut(s: &mut Snapshot, k: usize) -> &mut NodeStatus {
        s.nodes
            .as_mut()
            .unwrap()
            .get_mut(&id(k))
            .unwrap()
            .status
            .as_mut()
            .unwrap()
    }

    fn kill(s: &mut Snapshot, k: usize) {
        s.nodes.as_mut().unwrap().get_mut(&id(k)).unwrap().status = None;
    }

    #[track_caller]
    fn expect(f: &Finding, level: CheckState, words: &[&str]) {
        assert_eq!(f.level, level, "{f:?}");
        for w in words {
            assert!(
                f.saw.contains(w) || f.todo.contains(w),
                "{w:?} not in {f:?}"
            );
        }
    }

    #[test]
    fn firewall_passes_only_when_every_live_node_applies_its_role() {
        use deckhand_model::FirewallStatus;
        let mut s = boot();
        expect(
            &firewall(&s),
            CheckState::Warn,
            &["not configured", "firewall.enabled"],
        );
        s.cluster.as_mut().unwrap().firewall.enabled = true;
        let ok = |role: &str| FirewallStatus {
            enabled: true,
            applied: true,
            matches_role: true,
            role: Some(role.into()),
            hash: Some("0123".into()),
            peers: vec![],
            reason: None,
        };
        for k in 1..=5 {
            status_mut(&mut s, k).firewall = ok(if k <= 3 { "member" } else { "proxy" });
        }
        expect(
            &firewall(&s),
            CheckState::Pass,
            &["5 live node(s)", "node4 proxy"],
        );
        // A dead node is not judged.
        kill(&mut s, 5);
        expect(&firewall(&s), CheckState::Pass, &["4 live node(s)"]);
        // Refused: fail, with the reason and what stays.
        let mut refused = ok("member");
        refused.applied = false;
        refused.reason = Some("not applied: the member list is unknown".into());
        status_mut(&mut s, 2).firewall = refused;
        expect(
            &firewall(&s),
            CheckState::Fail,
            &[
                "node2: not applied: the member list is unknown",
                "previous member rules stay",
            ],
        );
        // Stale role, and an agent without a firewall.
        status_mut(&mut s, 2).firewall = ok("member");
        status_mut(&mut s, 4).firewall.matches_role = false;
        expect(
            &firewall(&s),
            CheckState::Fail,
            &["node4: the rules in place are for proxy"],
        );
        status_mut(&mut s, 4).firewall = FirewallStatus::default();
        expect(
            &firewall(&s),
            CheckState::Fail,
            &["node4: its agent reports no firewall"],
        );
    }

    #[test]
    fn the_boot_layout_warns_only_for_what_is_not_built() {
        let s = boot();
        let f = checks(&s);
        let levels: Vec<(&str, CheckState)> = f.iter().map(|f| (f.name, f.level)).collect();
        use CheckState::*;
        assert_eq!(
            levels,
            [
                ("planes-isolated", Pass),
                ("etcd-isolated", Pass),
                ("preseeded", Pass),
                ("alarms", Pass),
                ("disk", Pass),
                ("docker", Pass),
                ("clock", Warn),
                ("security", Warn),
                ("certificates", Warn),
                ("firewall", Warn),
                ("backups", Warn),
                ("monitoring", Warn),
            ]
        );
        assert_eq!(exit_status(&f), WARNINGS);
        expect(&f[0], Pass, &["5 node(s): sharing planes is fine"]);
        expect(
            &f[1],
            Pass,
            &[
                "3 voters (node1, node2, node3), leader node1",
                "survives one more failure",
                "proxies: node4, node5",
            ],
        );
        expect(&f[6], Warn, &["fewer than two nodes report their time"]);
        expect(&f[7], Warn, &["not configured", "plain http"]);
        for f in &f[8..] {
            assert!(f.saw.starts_with("not configured"), "{f:?}");
        }
        let t = table(&f);
        assert!(t.starts_with("LEVEL"), "{t}");
        assert!(
            t.lines()
                .nth(2)
                .unwrap()
                .starts_with("PASS   etcd-isolated    3 voters"),
            "{t}"
        );
        assert!(
            t.lines().nth(7).unwrap().starts_with(
                "WARN   clock            fewer than two nodes report their time → keep NTP"
            ),
            "{t}"
        );
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json[6]["level"], "warn");
        assert_eq!(json[0]["name"], "planes-isolated");
    }

    #[test]
    fn exit_status_is_the_worst_level() {
        let mut f = checks(&boot());
        f.retain(|f| f.level == CheckState::Pass);
        assert_eq!(exit_status(&f), exit::OK);
        f[0].level = CheckState::Fail;
        assert_eq!(exit_status(&f), exit::FAILED);
        let s = Summary::of(&f, Duration::from_millis(1234));
        assert_eq!((s.fail, s.pass, s.exit, s.seconds), (1, 5, 1, 1.23));
    }

    #[test]
    fn planes_isolated_above_five_nodes() {
        use Plane::*;
        // 7 nodes, every one serving control and data: shared planes warn.
        let s = snap(7, 3, |_| vec![Control, Data]);
        expect(
            &planes_isolated(&s),
            CheckState::Warn,
            &[
                "node1, node2, node3, node4, node5, node6, node7 serve both",
                "runs on 7 nodes",
                "3 or 5 nodes",
            ],
        );
        // Only node2 shares: named alone.
        let s = snap(7, 3, |k| match k {
            1 | 3 => vec![Control],
            2 => vec![Control, Data],
            _ => vec![Data, Router],
        });
        let f = planes_isolated(&s);
        expect(&f, CheckState::Warn, &["node2 serve both"]);
        assert!(!f.saw.contains("node1 serve"), "{f:?}");
        // Isolated: pass, with the layout.
        let s = snap(7, 3, |k| if k <= 3 { vec![Control] } else { vec![Data] });
        expect(
            &planes_isolated(&s),
            CheckState::Pass,
            &["7 nodes: control on node1, node2, node3; data on node4"],
        );
        // Three to five nodes: sharing is fine, said so.
        let s = snap(4, 3, |_| vec![Control, Data]);
        expect(
            &planes_isolated(&s),
            CheckState::Pass,
            &["4 node(s): sharing planes is fine"],
        );
    }

    #[test]
    fn planes_isolated_cannot_run_without_nodes() {
        let mut s = boot();
        s.nodes = Ok(BTreeMap::new());
        expect(
            &planes_isolated(&s),
            CheckState::Fail,
            &["no node keys under /deckhand"],
        );
        s.nodes = Err("reading node keys: no answer within 5 s".into());
        expect(
            &planes_isolated(&s),
            CheckState::Fail,
            &["cannot run: reading node keys"],
        );
    }

    #[test]
    fn etcd_isolated_voter_counts() {
        // 9 voters: more than 7 fails.
        let s = snap(9, 9, |_| vec![]);
        expect(
            &etcd_isolated(&s),
            CheckState::Fail,
            &["9 voters, more than 7"],
        );
        // 4 voters: even fails, though fault tolerance is one.
        let s = snap(5, 4, |_| vec![]);
        let f = etcd_isolated(&s);
        expect(
            &f,
            CheckState::Fail,
            &["4 voters, an even number", "make the number of voters odd"],
        );
        assert!(
            f.saw
                .contains("quorum 3 of 4, 4 up: survives one more failure"),
            "{f:?}"
        );
        // 7 voters: allowed, with a warning.
        let s = snap(9, 7, |_| vec![]);
        expect(
            &etcd_isolated(&s),
            CheckState::Warn,
            &["7 voters: writes wait for 4"],
        );
        // 5: pass.
        let s = snap(7, 5, |_| vec![]);
        expect(
            &etcd_isolated(&s),
            CheckState::Pass,
            &["5 voters", "survives 2 more failures"],
        );
        // 1 voter: no fault tolerance.
        let s = snap(3, 1, |_| vec![]);
        expect(
            &etcd_isolated(&s),
            CheckState::Fail,
            &["fault tolerance: quorum 1 of 1"],
        );
    }

    #[test]
    fn etcd_isolated_voters_in_trouble() {
        // One voter of three does not answer: one more failure loses quorum.
        let mut s = boot();
        s.members.as_mut().unwrap()[2].healthy = Some(false);
        expect(
            &etcd_isolated(&s),
            CheckState::Fail,
            &[
                "voter node3 does not answer",
                "one more failure loses quorum",
            ],
        );
        // A fourth voter added but never started, with no node behind it.
        let mut s = boot();
        s.members.as_mut().unwrap().push(MemberView {
            id: 0xabc,
            name: String::new(),
            peer_urls: vec!["http://10.0.0.9:2380".into()],
            client_urls: vec![],
            is_learner: false,
            healthy: Some(false),
        });
        expect(
            &etcd_isolated(&s),
            CheckState::Fail,
            &[
                "voter abc (http://10.0.0.9:2380) was added but never started",
                "fault tolerance: quorum 3 of 4, 3 up: one more failure loses quorum",
            ],
        );
        // A started voter that no deckhand node stands behind.
        let mut s = boot();
        let mut stray = voter(9);
        stray.name = "stray".into();
        s.members.as_mut().unwrap().extend([stray, voter(4)]);
        status_mut(&mut s, 4).etcd.member_id = Some("4".into());
        let f = etcd_isolated(&s);
        expect(
            &f,
            CheckState::Warn,
            &[
                "voter stray (http://10.0.0.9:2380) has no deckhand node behind it",
                "5 voters",
                "survives 2 more failures",
            ],
        );
        // A learner joining: a warning.
        let mut s = boot();
        let mut l = voter(4);
        l.is_learner = true;
        l.healthy = None;
        s.members.as_mut().unwrap().push(l);
        status_mut(&mut s, 4).etcd.mode = EtcdMode::Learner;
        expect(
            &etcd_isolated(&s),
            CheckState::Warn,
            &["learner node4 is joining"],
        );
    }

    #[test]
    fn etcd_isolated_placement_and_proxies() {
        use Plane::*;
        // The control plane is used, and node3 (a voter) is not on it.
        let s = snap(5, 3, |k| if k <= 2 { vec![Control] } else { vec![Data] });
        expect(
            &etcd_isolated(&s),
            CheckState::Warn,
            &["voter node3 is not on a control-plane node"],
        );
        let s = snap(5, 3, |k| if k <= 3 { vec![Control] } else { vec![Data] });
        expect(&etcd_isolated(&s), CheckState::Pass, &[]);
        // A non-voter that serves nothing on localhost:2379, one without a
        // status, one whose local etcd check fails.
        let mut s = boot();
        status_mut(&mut s, 4).etcd.mode = EtcdMode::None;
        kill(&mut s, 5);
        let f = etcd_isolated(&s);
        expect(
            &f,
            CheckState::Fail,
            &[
                "node4: nothing serves localhost:2379",
                "node5: no status: its lease expired",
                "systemctl start deckhand",
            ],
        );
        let mut s = boot();
        status_mut(&mut s, 5).checks[0] = Check {
            name: "local-etcd".into(),
            state: CheckState::Fail,
            detail: "localhost:2379 refused the connection".into(),
        };
        expect(
            &etcd_isolated(&s),
            CheckState::Fail,
            &["node5: local etcd: localhost:2379 refused"],
        );
        // A member list that cannot be read.
        let mut s = boot();
        s.members = Err("no member answered a member list".into());
        expect(
            &etcd_isolated(&s),
            CheckState::Fail,
            &["cannot run: no member answered"],
        );
    }

    fn with_router(images: &[&str]) -> Snapshot {
        let mut s = snap(5, 3, |k| if k >= 4 { vec![Plane::Router] } else { vec![] });
        let mut configs = PlaneConfigs::default();
        configs.valid.insert(
            Plane::Router,
            PlaneConfig {
                units: vec![],
                images: images.iter().map(|i| ImageRef::parse(i).unwrap()).collect(),
                ports: vec![],
            },
        );
        s.planes = Ok(configs);
        for k in [4, 5] {
            status_mut(&mut s, k).images = ImagesStatus {
                wanted: images.len(),
                present: images.len(),
                pulling: vec![],
                failed: vec![],
            };
        }
        s
    }

    #[test]
    fn preseeded_pass_warn_fail() {
        let s = boot();
        expect(
            &preseeded(&s),
            CheckState::Pass,
            &["no plane config lists images", "no `upcoming` images set"],
        );
        let s = with_router(&["r/router:1", "r/side:1"]);
        expect(
            &preseeded(&s),
            CheckState::Pass,
            &["all present on node4 2/2, node5 2/2"],
        );
        // node5 could not pull one image.
        let mut s = with_router(&["r/router:1", "r/side:1"]);
        let i = &mut status_mut(&mut s, 5).images;
        i.present = 1;
        i.failed = vec![ImageFailure {
            image: "docker.io/r/side:1".into(),
            reason: "manifest unknown".into(),
        }];
        expect(
            &preseeded(&s),
            CheckState::Fail,
            &[
                "node5: not present: docker.io/r/side:1 (manifest unknown)",
                "node4 2/2",
            ],
        );
        // node5 still pulling: a warning.
        let mut s = with_router(&["r/router:1"]);
        let i = &mut status_mut(&mut s, 5).images;
        i.present = 0;
        i.pulling = vec!["docker.io/r/router:1".into()];
        expect(
            &preseeded(&s),
            CheckState::Warn,
            &["node5: 0/1 present, pulling"],
        );
        // node4 has no status.
        let mut s = with_router(&["r/router:1"]);
        kill(&mut s, 4);
        expect(
            &preseeded(&s),
            CheckState::Fail,
            &["node4: no status", "cannot tell its images"],
        );
        // A rejected plane config warns.
        let mut s = with_router(&["r/router:1"]);
        s.planes
            .as_mut()
            .unwrap()
            .rejected
            .push("/deckhand/config/planes/data: bad".into());
        expect(
            &preseeded(&s),
            CheckState::Warn,
            &["rejected plane config(s)"],
        );
        s.cluster = Err("the cluster config /deckhand/config/cluster is invalid".into());
        expect(
            &preseeded(&s),
            CheckState::Fail,
            &["cannot run: the cluster config"],
        );
    }

    #[test]
    fn preseeded_before_an_upgrade_wants_upcoming_everywhere() {
        let mut s = with_router(&["r/router:1"]);
        s.cluster.as_mut().unwrap().upcoming = vec![ImageRef::parse("r/router:2").unwrap()];
        // Nodes that have not taken the upcoming image in yet.
        let f = preseeded(&s);
        expect(
            &f,
            CheckState::Warn,
            &[
                "node1 keeps 0 image(s), its planes and `upcoming` list 1",
                "`upcoming`: docker.io/r/router:2",
            ],
        );
        for k in 1..=5 {
            let i = &mut status_mut(&mut s, k).images;
            i.wanted += 1;
            i.present += 1;
        }
        expect(
            &preseeded(&s),
            CheckState::Pass,
            &["node1 1/1", "node5 2/2"],
        );
    }

    #[test]
    fn alarms_name_the_member_and_what_to_do() {
        let mut s = boot();
        expect(&alarms(&s), CheckState::Pass, &["no alarm"]);
        s.alarms = Ok(vec![
            Alarm {
                member_id: 2,
                kind: AlarmKind::NoSpace,
            },
            Alarm {
                member_id: 0x77,
                kind: AlarmKind::Corrupt,
            },
        ]);
        expect(
            &alarms(&s),
            CheckState::Fail,
            &[
                "NOSPACE on member 2 (node2)",
                "CORRUPT on member 77",
                "etcdctl alarm disarm",
                "deckhand role set NODE --etcd proxy",
            ],
        );
        // Under NOSPACE a node without status may be unable to write it.
        kill(&mut s, 5);
        expect(
            &docker(&s),
            CheckState::Fail,
            &["node5: no status: etcd has a NOSPACE alarm"],
        );
        s.alarms = Err("reading etcd's alarm list: no answer within 5 s".into());
        expect(
            &alarms(&s),
            CheckState::Fail,
            &["cannot run: reading etcd's alarm list"],
        );
    }

    #[test]
    fn disk_and_docker_come_from_the_nodes_checks() {
        let mut s = boot();
        expect(
            &docker(&s),
            CheckState::Pass,
            &["fine on node1, node2, node3, node4, node5"],
        );
        {
            let c = &mut status_mut(&mut s, 3).checks;
            c[1].state = CheckState::Fail;
            c[1].detail = "the Docker daemon does not answer on /var/run/docker.sock".into();
            c[3].state = CheckState::Warn;
            c[3].detail = "2.1 GB free, under the 4 GB floor".into();
        }
        expect(
            &docker(&s),
            CheckState::Fail,
            &[
                "node3: docker: the Docker daemon does not answer",
                "systemctl status docker",
            ],
        );
        expect(
            &disk(&s),
            CheckState::Warn,
            &[
                "node3: disk-etcd: 2.1 GB free",
                "fine on node1, node2, node4, node5",
            ],
        );
        // A node without a status fails, named.
        let mut s = boot();
        kill(&mut s, 4);
        expect(
            &disk(&s),
            CheckState::Fail,
            &["node4: no status: its lease expired"],
        );
        // Agents that report no checks: said, not passed.
        let mut s = boot();
        for k in 1..=5 {
            status_mut(&mut s, k).checks.clear();
        }
        expect(
            &docker(&s),
            CheckState::Warn,
            &["no node reports its docker checks yet"],
        );
        status_mut(&mut s, 1).checks = checks_ok();
        expect(
            &disk(&s),
            CheckState::Warn,
            &["node2, node3, node4, node5 report(s) no disk check"],
        );
        s.nodes = Err("reading node keys: no answer".into());
        expect(&docker(&s), CheckState::Fail, &["cannot run"]);
    }

    #[test]
    fn certificates_say_days_left_and_fail_expired() {
        use deckhand_model::CertificateStatus;
        let mut s = boot();
        expect(
            &certificates(&s),
            CheckState::Warn,
            &["not configured: no node reports a TLS certificate"],
        );
        let day = 86_400;
        let now = s.now_unix;
        for k in 1..=5 {
            status_mut(&mut s, k).certificate = Some(CertificateStatus {
                not_after_unix: now + 200 * day + 5,
                common_name: format!("node:node{k}"),
                renewal: None,
            });
        }
        expect(
            &certificates(&s),
            CheckState::Pass,
            &["days left: node1 200 d, node2 200 d"],
        );
        status_mut(&mut s, 2)
            .certificate
            .as_mut()
            .unwrap()
            .not_after_unix = now + 10 * day;
        expect(
            &certificates(&s),
            CheckState::Warn,
            &["node2: 10 d left", "--renew"],
        );
        status_mut(&mut s, 3)
            .certificate
            .as_mut()
            .unwrap()
            .not_after_unix = now - 1;
        expect(
            &certificates(&s),
            CheckState::Fail,
            &["node3: expired", "node:node3", "--renew"],
        );
        // A renewal the signer refused is said, with its reason.
        status_mut(&mut s, 3).certificate = None;
        status_mut(&mut s, 1).certificate.as_mut().unwrap().renewal =
            Some("renewal: refused by node5: the address 10.0.0.2 is live node node2 (b)'s".into());
        expect(
            &certificates(&s),
            CheckState::Warn,
            &["node1: renewal: refused by node5: the address"],
        );
        status_mut(&mut s, 1).certificate.as_mut().unwrap().renewal =
            Some("renewal: asked for a certificate; waiting for the signer".into());
        expect(&certificates(&s), CheckState::Warn, &["node2: 10 d left"]);
        let f = format!("{:?}", certificates(&s));
        assert!(!f.contains("waiting for the signer"), "{f}");
        status_mut(&mut s, 2).certificate = None;
        expect(
            &certificates(&s),
            CheckState::Warn,
            &["node2, node3 report(s) no certificate"],
        );
        kill(&mut s, 4);
        expect(&certificates(&s), CheckState::Fail, &["node4"]);
    }

    #[test]
    fn security_looks_at_every_url() {
        let mut s = boot();
        expect(
            &security(&s),
            CheckState::Warn,
            &[
                "not configured: 6 of 6 etcd URLs are plain http",
                "docs/tls.md",
            ],
        );
        // localhost:2379 is plaintext by design; a CLI endpoint on a node
        // address counts.
        s.endpoints = vec![
            "http://127.0.0.1:2379".into(),
            "http://[::1]:2379".into(),
            "http://localhost:2379".into(),
            "https://10.0.0.1:2379".into(),
        ];
        for m in s.members.as_mut().unwrap() {
            m.client_urls = vec![m.client_urls[0].replace("http:", "https:")];
            m.peer_urls = vec![m.peer_urls[0].replace("http:", "https:")];
        }
        expect(
            &security(&s),
            CheckState::Warn,
            &[
                "every etcd URL between hosts is https (6)",
                "etcd auth is off",
            ],
        );
        s.endpoints.push("http://10.0.0.9:2379".into());
        expect(
            &security(&s),
            CheckState::Warn,
            &["1 of 7 etcd URLs are plain http (e.g. http://10.0.0.9:2379)"],
        );
        s.endpoints.pop();
        // Nothing read: no claim about URLs it did not see.
        s.members = Err("no member answered".into());
        let f = security(&s);
        expect(&f, CheckState::Fail, &["cannot run: no member answered"]);
        assert!(!f.saw.contains("https"), "{}", f.saw);
    }

    #[test]
    fn an_unreachable_cluster_fails_and_passes_nothing() {
        let s = Snapshot::unreachable(
            "/deckhand",
            vec!["http://127.0.0.1:2379".into()],
            "no etcd endpoint answered:\n  http://127.0.0.1:2379: connection refused",
        );
        let f = checks(&s);
        assert_eq!(exit_status(&f), exit::FAILED);
        assert!(f.iter().all(|f| f.level != CheckState::Pass), "{f:#?}");
        for f in &f[..6] {
            expect(
                f,
                CheckState::Fail,
                &["cannot run: no etcd endpoint answered"],
            );
        }
    }

    #[tokio::test]
    async fn gather_reads_a_real_cluster() {
        let etcd = crate::testing::Etcd::start().await;
        let target = etcd.target();
        let s = gather(&target).await;
        let m = s.members.as_ref().unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].healthy, Some(true));
        assert_eq!(s.leader, Some(m[0].id));
        assert_eq!(s.alarms.as_ref().unwrap().len(), 0);
        assert!(s.nodes.as_ref().unwrap().is_empty());
        let f = checks(&s);
        // One voter: no fault tolerance; no node keys: the node checks fail.
        expect(
            &f[1],
            CheckState::Fail,
            &["fault tolerance: quorum 1 of 1, 1 up"],
        );
        expect(&f[4], CheckState::Fail, &["no node keys under /t"]);
        drop(etcd);
        let s = gather(&target).await;
        assert!(s.nodes.is_err() && s.members.is_err());
    }
}
