//! `deckhand status`: every node at a glance — desired and applied role,
//! etcd mode, leader, health, convergence, images, failing checks, agent
//! version — the cluster's health (fault tolerance in words, voters in
//! trouble, etcd alarms with what to do) and the plane units, from the node
//! keys, the alarm list, and a member list and voter statuses read live
//! from real members.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use deckhand_etcd::{Cluster, Member};
use deckhand_model::{
    Check, CheckState, EtcdMode, EtcdStatus, ImagesStatus, Plane, PlaneStatus, Role, UnitMode,
    VoterTrouble,
};
use deckhand_plan::{FaultTolerance, MemberView, voter_troubles};
use serde::Serialize;
use tokio::task::JoinSet;

use super::session::Session;
use super::table::columns;
use crate::agent::observe::{member_views, unix_now};
use crate::connect::Target;
use crate::store::{Alarm, AlarmKind, NodeKeys};

/// `deckhand status` arguments.
#[derive(Args)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Redraw on every change of the keys under the prefix (an etcd watch,
    /// not a poll) until interrupted; with --json, one JSON document per
    /// line per change.
    #[arg(long)]
    pub watch: bool,
}

/// `deckhand status --json`: every node, the member list, the leader and
/// the cluster's health.
#[derive(Debug, Serialize)]
pub struct StatusJson {
    nodes: Vec<NodeJson>,
    voters: usize,
    learners: usize,
    leader: Option<String>,
    members: Vec<MemberJson>,
    cluster: ClusterJson,
}

/// The cluster's health in `deckhand status --json`.
#[derive(Debug, Serialize)]
struct ClusterJson {
    /// From the member list and each voter's status, read just now; `None`
    /// when no member list could be read.
    fault_tolerance: Option<FaultToleranceJson>,
    /// Voters in trouble, seen just now, ordered by member id.
    voter_problems: Vec<VoterProblemJson>,
    /// etcd's active alarms.
    alarms: Vec<AlarmJson>,
    /// Why the alarm list could not be read, if it could not.
    alarms_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct FaultToleranceJson {
    voters: usize,
    up: usize,
    quorum: usize,
    /// Further voter failures survived; `None` when quorum is lost.
    spare: Option<usize>,
    /// In words, e.g. "quorum 3 of 4, 3 up: one more failure loses quorum".
    words: String,
}

#[derive(Debug, Serialize)]
struct VoterProblemJson {
    member_id: String,
    peer_url: String,
    trouble: VoterTrouble,
    /// The earliest first sighting any agent reported (Unix seconds, that
    /// agent's wall clock: for display only); `None` when no agent has
    /// reported it yet.
    since: Option<u64>,
    /// `since` as a duration from now, in words ("3 min"), or "just seen".
    for_how_long: String,
}

#[derive(Debug, Serialize)]
struct AlarmJson {
    /// `NOSPACE` or `CORRUPT`.
    alarm: String,
    /// The member that raised it, hex.
    member_id: String,
    /// Its member name, when the member list has it.
    member: Option<String>,
    /// The deckhand node behind the member, when one reports it.
    node: Option<String>,
    /// What etcd does meanwhile and what to do, in words.
    what_to_do: String,
}

/// One node in `deckhand status --json`: its status document, or what is
/// known of a node without one (dead: its lease expired).
#[derive(Debug, Serialize)]
struct NodeJson {
    id: String,
    name: String,
    address: Option<String>,
    /// The agent's version (its `CARGO_PKG_VERSION`); `None` for a dead node.
    version: Option<String>,
    alive: bool,
    desired: Option<Role>,
    desired_revision: i64,
    applied: Option<Role>,
    converged: bool,
    etcd: deckhand_model::EtcdStatus,
    step: Option<String>,
    blocked: Option<String>,
    error: Option<String>,
    failure_domain: Option<String>,
    replacer: Option<String>,
    events: Vec<String>,
    planes: Vec<PlaneStatus>,
    images: ImagesStatus,
    /// The node's checks as its agent last ran them; empty for a node
    /// without status.
    checks: Vec<Check>,
    /// The voters this node's agent reports in trouble (only the leader's
    /// agent watches them).
    voter_problems: Vec<deckhand_model::VoterProblem>,
    /// The node's host firewall (`docs/firewall.md`); all false for a
    /// node without status.
    firewall: deckhand_model::FirewallStatus,
    /// The node's TLS certificate as its agent reports it; `None` without
    /// TLS (or from an older agent).
    certificate: Option<deckhand_model::CertificateStatus>,
    /// Whole days left on `certificate` by this host's clock; negative
    /// once expired.
    certificate_days_left: Option<i64>,
    /// The TLS stage the node's agent applied (`deckhand tls enable`):
    /// `certs`, `https`, or `None` (plaintext, never enabled).
    tls_stage: Option<String>,
}

#[derive(Debug, Serialize)]
struct MemberJson {
    id: String,
    name: String,
    learner: bool,
    peer_urls: Vec<String>,
    client_urls: Vec<String>,
}

/// `deckhand status`.
///
/// # Errors
/// No endpoint answered, or the node keys could not be read. A member list
/// that cannot be had is not an error: the table then shows no members.
pub async fn status(target: Target, args: StatusArgs) -> Result<()> {
    let session = Session::connect(target).await?;
    if args.watch {
        return super::status_watch::watch(session, args.json).await;
    }
    out!("{}", render(&session, args.json).await?);
    Ok(())
}

/// What `deckhand status` prints once: the table, or the JSON document
/// (pretty; one line: [`render_json_line`]).
///
/// # Errors
/// The node keys could not be read.
pub(super) async fn render(session: &Session, json: bool) -> Result<String> {
    let out = gather(session).await?;
    Ok(if json {
        format!("{}\n", serde_json::to_string_pretty(&out)?)
    } else {
        let mut text = table(&out);
        if let Some(line) = super::backup::status_line(&session.store).await {
            text.push_str(&line);
            text.push('\n');
        }
        text
    })
}

/// The status report as one line of JSON (`status --watch --json`).
///
/// # Errors
/// The node keys could not be read.
pub(super) async fn render_json_line(session: &Session) -> Result<String> {
    Ok(format!(
        "{}\n",
        serde_json::to_string(&gather(session).await?)?
    ))
}

async fn gather(session: &Session) -> Result<StatusJson> {
    let nodes = session.store.nodes().await?;
    // Without a member list the report has no voters; stderr says why.
    let members = match session.member_list(&nodes).await {
        Ok((_, list)) => list,
        Err(e) => {
            eprintln!(
                "deckhand: warning: the member list could not be read, so no voter is shown: {e:#}"
            );
            Vec::new()
        }
    };
    let (health, leader) = voter_statuses(&members, session.target.tls()).await;
    let alarms = session.store.alarms().await.map_err(|e| format!("{e:#}"));
    let live = Live {
        members: &members,
        leader,
        health: &health,
        alarms,
        now: unix_now(),
    };
    Ok(report(&nodes, &live))
}

/// Every voter's `Status`, asked at once (2 s each): `(member id,
/// healthy)` for each voter (healthy: it answered and knows a leader), and
/// the leader's member id as the first answer names it.
async fn voter_statuses(
    members: &[Member],
    tls: Option<&deckhand_etcd::Tls>,
) -> (Vec<(u64, bool)>, Option<u64>) {
    let mut tasks = JoinSet::new();
    for m in members.iter().filter(|m| !m.is_learner) {
        let (id, urls) = (m.id, m.client_urls.clone());
        let tls = tls.cloned();
        tasks.spawn(async move {
            for url in urls {
                if let Ok(st) =
                    Cluster::endpoint_status(&url, Duration::from_secs(2), tls.as_ref()).await
                {
                    return (id, st.leader);
                }
            }
            (id, 0)
        });
    }
    let mut health = Vec::new();
    let mut leader: Option<u64> = None;
    while let Some(Ok((id, l))) = tasks.join_next().await {
        health.push((id, l != 0));
        if l != 0 {
            leader.get_or_insert(l);
        }
    }
    health.sort();
    (health, leader)
}

/// What `deckhand status` read live, beside the node keys.
pub struct Live<'a> {
    /// The member list, from a real member; empty when none answered.
    pub members: &'a [Member],
    /// The leader's member id, when a voter named one.
    pub leader: Option<u64>,
    /// `(member id, healthy)` of the voters asked.
    pub health: &'a [(u64, bool)],
    /// etcd's active alarms, or why they could not be read.
    pub alarms: Result<Vec<Alarm>, String>,
    /// Now, Unix seconds (this host's clock: for "for how long" only).
    pub now: u64,
}

/// The status report from every node's keys and what was read live
/// (pure). Nodes are sorted by name, then id. Each node reports its own
/// leader flag, which lags a leader change by up to one of its iterations;
/// the leader read just now overrides it. A node without status while a
/// `NOSPACE` alarm is active is reported as unable to write it, not as
/// down.
pub fn report(nodes: &BTreeMap<String, NodeKeys>, live: &Live<'_>) -> StatusJson {
    let members = live.members;
    let nospace = live
        .alarms
        .as_ref()
        .is_ok_and(|a| a.iter().any(|a| a.kind == AlarmKind::NoSpace));
    let leader = live
        .leader
        .and_then(|id| members.iter().find(|m| m.id == id))
        .map(|m| m.name.clone());
    let mut out = StatusJson {
        voters: members.iter().filter(|m| !m.is_learner).count(),
        learners: members.iter().filter(|m| m.is_learner).count(),
        leader,
        members: members
            .iter()
            .map(|m| MemberJson {
                id: format!("{:x}", m.id),
                name: m.name.clone(),
                learner: m.is_learner,
                peer_urls: m.peer_urls.clone(),
                client_urls: m.client_urls.clone(),
            })
            .collect(),
        nodes: nodes
            .iter()
            .map(|(id, k)| node_json(id, k, nospace, live.now))
            .collect(),
        cluster: cluster_json(nodes, live),
    };
    if let Some(leader) = &out.leader {
        for n in &mut out.nodes {
            n.etcd.leader = n.alive && n.name == *leader;
        }
    }
    out.nodes
        .sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    out
}

/// Fault tolerance, voters in trouble and alarms, from the live reads and
/// the nodes' own reports (for `since`).
fn cluster_json(nodes: &BTreeMap<String, NodeKeys>, live: &Live<'_>) -> ClusterJson {
    let views: Vec<MemberView> = member_views(live.members, live.health);
    let statuses: Vec<&deckhand_model::NodeStatus> =
        nodes.values().filter_map(|k| k.status.as_ref()).collect();
    let node_urls: Vec<String> = statuses
        .iter()
        .filter_map(|s| s.address.parse().ok())
        // The status records the address, not the scheme: both match.
        .flat_map(|a| {
            [
                crate::identity::peer_url_of(a, false),
                crate::identity::peer_url_of(a, true),
            ]
        })
        .collect();
    // A node whose status is missing (e.g. it cannot write it under
    // NOSPACE) still has its name key: a voter of that name has a node.
    let node_names: Vec<String> = nodes.values().map(NodeKeys::display_name).collect();
    let voter_problems = voter_troubles(&views, &node_urls)
        .into_iter()
        .filter(|(id, _, t)| {
            *t != VoterTrouble::NoNode
                || !views
                    .iter()
                    .any(|m| m.id == *id && !m.name.is_empty() && node_names.contains(&m.name))
        })
        .map(|(id, peer_url, trouble)| {
            let hex = format!("{id:x}");
            let since = statuses
                .iter()
                .flat_map(|s| &s.voter_problems)
                .filter(|p| p.member_id == hex && p.trouble == trouble)
                .map(|p| p.since)
                .min();
            VoterProblemJson {
                member_id: hex,
                peer_url,
                trouble,
                since,
                for_how_long: since
                    .map(|t| how_long(live.now.saturating_sub(t)))
                    .unwrap_or_else(|| "just seen".into()),
            }
        })
        .collect();
    let fault_tolerance = (!live.members.is_empty()).then(|| {
        let ft = FaultTolerance::of(&views);
        FaultToleranceJson {
            voters: ft.voters,
            up: ft.up,
            quorum: ft.quorum,
            spare: ft.spare(),
            words: ft.to_string(),
        }
    });
    let (alarms, alarms_error) = match &live.alarms {
        Ok(list) => (
            list.iter()
                .map(|a| {
                    let hex = format!("{:x}", a.member_id);
                    let member = live
                        .members
                        .iter()
                        .find(|m| m.id == a.member_id)
                        .map(|m| m.name.clone())
                        .filter(|n| !n.is_empty());
                    let node = statuses
                        .iter()
                        .find(|s| s.etcd.member_id.as_deref() == Some(hex.as_str()))
                        .map(|s| s.name.clone())
                        .or_else(|| member.clone().filter(|m| node_names.contains(m)));
                    AlarmJson {
                        alarm: a.kind.to_string(),
                        member_id: hex,
                        member,
                        node,
                        what_to_do: what_to_do(a.kind),
                    }
                })
                .collect(),
            None,
        ),
        Err(e) => (Vec::new(), Some(e.clone())),
    };
    ClusterJson {
        fault_tolerance,
        voter_problems,
        alarms,
        alarms_error,
    }
}

/// What etcd does under an alarm, and the way out
/// (<https://etcd.io/docs/v3.4/op-guide/maintenance/#space-quota>,
/// <https://etcd.io/docs/v3.4/op-guide/data_corruption/>).
fn what_to_do(kind: AlarmKind) -> String {
    match kind {
        AlarmKind::NoSpace => "the member's backend reached its quota (--quota-backend-bytes): etcd refuses puts and lease grants cluster-wide (reads and deletes still work), so agents cannot write their status. Compact the history (`etcdctl compact <current revision>`), defragment every member (`etcdctl defrag --cluster`), then `etcdctl alarm disarm`; if the data is that large legitimately, raise --quota-backend-bytes (ETCD_QUOTA_BACKEND_BYTES) on every member first".into(),
        AlarmKind::Corrupt => "a hash check found this member's data differs from the others': stop that member, move its data dir aside (never delete it), remove it from the cluster and let it rejoin as a new member, which copies the data from the others; then `etcdctl alarm disarm`".into(),
    }
}

/// Seconds in words: "12 s", "3 min", "5 h", "2 d".
fn how_long(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs / 60),
        7200..172800 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86400),
    }
}

fn node_json(id: &str, k: &NodeKeys, nospace: bool, now: u64) -> NodeJson {
    match &k.status {
        Some(s) => NodeJson {
            id: id.to_string(),
            name: s.name.clone(),
            firewall: s.firewall.clone(),
            address: Some(s.address.clone()),
            version: Some(s.version.clone()),
            alive: true,
            desired: s.desired.clone(),
            desired_revision: s.desired_revision,
            applied: s.applied.clone(),
            converged: s.converged,
            etcd: s.etcd.clone(),
            step: s.step.clone(),
            blocked: s.blocked.clone(),
            error: s.error.clone(),
            failure_domain: s.failure_domain.clone(),
            replacer: s.replacer.clone(),
            events: s.events.clone(),
            planes: s.planes.clone(),
            images: s.images.clone(),
            checks: s.checks.clone(),
            voter_problems: s.voter_problems.clone(),
            certificate: s.certificate.clone(),
            certificate_days_left: s.certificate.as_ref().map(|c| c.days_left(now)),
            tls_stage: s.tls_stage.clone(),
        },
        None => NodeJson {
            id: id.to_string(),
            name: k.name.clone().unwrap_or_default(),
            address: None,
            version: None,
            alive: false,
            desired: k.role(),
            desired_revision: k.role_revision(),
            applied: None,
            firewall: Default::default(),
            converged: false,
            etcd: EtcdStatus {
                mode: EtcdMode::None,
                member_id: None,
                leader: false,
            },
            step: None,
            blocked: None,
            error: Some(if nospace {
                "cannot write its status: etcd NOSPACE (the cluster refuses puts and lease grants; see the alarm above)".into()
            } else {
                "no status: the node's lease expired (agent or node down)".into()
            }),
            failure_domain: None,
            replacer: None,
            events: Vec::new(),
            planes: Vec::new(),
            images: ImagesStatus::default(),
            checks: Vec::new(),
            voter_problems: Vec::new(),
            certificate: None,
            certificate_days_left: None,
            tls_stage: None,
        },
    }
}

/// The status table: a summary line, the cluster's health (fault
/// tolerance, voters in trouble, alarms), one row per node, then one row
/// per plane unit.
pub fn table(s: &StatusJson) -> String {
    let mut out = format!(
        "voters: {}   learners: {}   leader: {}\n",
        s.voters,
        s.learners,
        s.leader.as_deref().unwrap_or("(none)")
    );
    out.push_str(&cluster_lines(&s.cluster));
    let nospace = s.cluster.alarms.iter().any(|a| a.alarm == "NOSPACE");
    let rows: Vec<[String; 14]> = s
        .nodes
        .iter()
        .map(|n| {
            let role = |r: &Option<Role>| {
                r.as_ref()
                    .map(Role::to_string)
                    .unwrap_or_else(|| "-".into())
            };
            let note = n
                .blocked
                .as_ref()
                .map(|b| format!("blocked: {b}"))
                .or_else(|| n.error.clone())
                .or_else(|| {
                    n.firewall
                        .reason
                        .as_ref()
                        .filter(|_| n.alive)
                        .map(|r| format!("firewall {r}"))
                })
                .or_else(|| n.step.clone())
                .unwrap_or_default();
            [
                n.name.clone(),
                n.address.clone().unwrap_or_else(|| "-".into()),
                role(&n.desired),
                role(&n.applied),
                n.etcd.mode.to_string(),
                if n.etcd.leader {
                    "*".into()
                } else {
                    String::new()
                },
                if n.alive {
                    "alive".into()
                } else if nospace {
                    "NO-WRITE".into()
                } else {
                    "DEAD".into()
                },
                if n.converged {
                    "yes".into()
                } else {
                    "no".into()
                },
                images_cell(&n.images),
                checks_cell(n.alive, &n.checks),
                firewall_cell(n.alive, &n.firewall),
                cert_cell(n.certificate_days_left),
                n.version.clone().unwrap_or_else(|| "-".into()),
                note,
            ]
        })
        .collect();
    let header = [
        "NODE",
        "ADDRESS",
        "DESIRED",
        "APPLIED",
        "ETCD",
        "LEADER",
        "HEALTH",
        "CONVERGED",
        "IMAGES",
        "CHECKS",
        "FIREWALL",
        "CERT",
        "VERSION",
        "NOTE",
    ];
    out.push_str(&columns(&header, &rows));
    out.push_str(&units_table(s));
    out
}

/// The cluster lines under the summary: fault tolerance, then one line per
/// voter in trouble and per alarm.
fn cluster_lines(c: &ClusterJson) -> String {
    let mut out = String::new();
    if let Some(ft) = &c.fault_tolerance {
        out.push_str(&format!("fault tolerance: {}\n", ft.words));
    }
    for p in &c.voter_problems {
        out.push_str(&format!(
            "voter {} {}: {}, {}\n",
            p.member_id,
            if p.peer_url.is_empty() {
                "(no peer URL)"
            } else {
                &p.peer_url
            },
            p.trouble,
            if p.since.is_some() {
                format!("for {}", p.for_how_long)
            } else {
                p.for_how_long.clone()
            }
        ));
    }
    for a in &c.alarms {
        let by = match (&a.member, &a.node) {
            (_, Some(node)) => format!("member {} (node {node})", a.member_id),
            (Some(m), None) => format!("member {} ({m})", a.member_id),
            (None, None) => format!("member {}", a.member_id),
        };
        out.push_str(&format!(
            "ALARM {} raised by {by}: {}\n",
            a.alarm, a.what_to_do
        ));
    }
    if let Some(e) = &c.alarms_error {
        out.push_str(&format!("alarms: could not be read: {e}\n"));
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// The node certificate's days left (`312d`), `EXPIRED`, or `-` without
/// TLS.
fn cert_cell(days: Option<i64>) -> String {
    match days {
        None => "-".into(),
        Some(d) if d < 0 => "EXPIRED".into(),
        Some(d) => format!("{d}d"),
    }
}

/// "ok", or the failing checks' names (warnings as `name(warn)`); "-"
/// without checks (a dead node, or an agent too old to report them).
fn checks_cell(alive: bool, checks: &[Check]) -> String {
    if !alive || checks.is_empty() {
        return "-".into();
    }
    let bad: Vec<String> = checks
        .iter()
        .filter(|c| c.state != CheckState::Pass)
        .map(|c| match c.state {
            CheckState::Warn => format!("{}(warn)", c.name),
            _ => c.name.clone(),
        })
        .collect();
    if bad.is_empty() {
        "ok".into()
    } else {
        bad.join(",")
    }
}

/// The FIREWALL column: `off` (disabled), the role whose rules are in
/// place when they are the current ones (`member`, `proxy`), `stale`
/// (older rules stay: see the note), `none` (no rules in place yet),
/// `wrong-role` (rules of the other role, for a moment during a change);
/// `-` for a dead node.
fn firewall_cell(alive: bool, fw: &deckhand_model::FirewallStatus) -> String {
    if !alive {
        return "-".into();
    }
    if !fw.enabled {
        return "off".into();
    }
    match (&fw.role, fw.applied, fw.matches_role) {
        (None, _, _) => "none".into(),
        (Some(role), true, true) => role.clone(),
        (Some(_), true, false) => "wrong-role".into(),
        (Some(_), false, _) => "stale".into(),
    }
}

/// `present/wanted`, with pulls and failures.
fn images_cell(i: &ImagesStatus) -> String {
    if i.wanted == 0 {
        return "-".into();
    }
    let mut cell = format!("{}/{}", i.present, i.wanted);
    if !i.pulling.is_empty() {
        cell.push_str(&format!(" ({} pulling)", i.pulling.len()));
    }
    if !i.failed.is_empty() {
        cell.push_str(&format!(" ({} FAILED)", i.failed.len()));
    }
    cell
}

/// One line per plane unit: where it runs and, for a singleton, who holds
/// it; empty without plane units (else a blank line first).
fn units_table(s: &StatusJson) -> String {
    // (plane, unit) → (mode, nodes running it, nodes not running it, holder,
    // nodes that resigned its candidacy)
    type Row = (
        UnitMode,
        Vec<String>,
        Vec<String>,
        Option<String>,
        Vec<String>,
    );
    let mut units: BTreeMap<(Plane, String), Row> = BTreeMap::new();
    for n in s.nodes.iter().filter(|n| n.alive) {
        for p in &n.planes {
            for u in &p.units {
                let row = units
                    .entry((p.plane, u.name.clone()))
                    .or_insert_with(|| (u.mode, Vec::new(), Vec::new(), None, Vec::new()));
                if u.state == "active" {
                    row.1.push(n.name.clone());
                } else if u.mode == UnitMode::Global {
                    row.2.push(format!("{}:{}", n.name, u.state));
                }
                if row.3.is_none() {
                    row.3.clone_from(&u.holder);
                }
                if u.candidacy
                    .as_deref()
                    .is_some_and(|c| c.starts_with("resigned"))
                {
                    row.4.push(n.name.clone());
                }
            }
        }
    }
    if units.is_empty() {
        return String::new();
    }
    let rows: Vec<[String; 5]> = units
        .into_iter()
        .map(|((plane, name), (mode, on, off, holder, resigned))| {
            let mut running = if on.is_empty() {
                "(nowhere)".to_string()
            } else {
                on.join(",")
            };
            if !off.is_empty() {
                running.push_str(&format!("   not running: {}", off.join(",")));
            }
            if !resigned.is_empty() {
                // The reason is in each node's status (--json: candidacy).
                running.push_str(&format!("   resigned: {}", resigned.join(",")));
            }
            [
                plane.to_string(),
                name,
                mode.to_string(),
                holder.unwrap_or_else(|| "-".into()),
                running,
            ]
        })
        .collect();
    let header = ["PLANE", "UNIT", "MODE", "HOLDER", "RUNNING ON"];
    format!("\n{}", columns(&header, &rows))
}

#[cfg(test)]
mod tests {
    use deckhand_model::EtcdRole;

    use super::*;
    use crate::testing::node_status;

    fn member(id: u64, name: &str, learner: bool) -> Member {
        Member {
            id,
            name: name.into(),
            peer_urls: vec![format!("http://10.0.0.{id}:2380")],
            client_urls: vec![format!("http://10.0.0.{id}:2379")],
            is_learner: learner,
        }
    }

    fn alive(name: &str, version: &str, leader_flag: bool) -> NodeKeys {
        let mut s = node_status(name, EtcdMode::Member);
        s.version = version.into();
        s.desired = Some(Role::new(EtcdRole::Member));
        s.desired_revision = 3;
        s.applied = Some(Role::new(EtcdRole::Member));
        s.etcd.member_id = Some("1".into());
        s.etcd.leader = leader_flag;
        NodeKeys {
            name: Some(name.into()),
            role: None,
            status: Some(s),
        }
    }

    #[test]
    fn report_shows_versions_dead_nodes_and_the_fresh_leader() {
        let mut nodes = BTreeMap::new();
        nodes.insert("b".repeat(32), alive("node2", "0.1.0", true));
        nodes.insert("a".repeat(32), alive("node1", "0.2.0", false));
        nodes.insert(
            "c".repeat(32),
            NodeKeys {
                name: Some("node3".into()),
                role: Some((br#"{"etcd":"proxy"}"#.to_vec(), 8)),
                status: None,
            },
        );
        let members = [
            member(1, "node1", false),
            member(2, "node2", false),
            member(9, "x", true),
        ];
        let live = Live {
            members: &members,
            leader: Some(1),
            health: &[(1, true), (2, true)],
            alarms: Ok(vec![]),
            now: 0,
        };
        let r = report(&nodes, &live);
        assert_eq!((r.voters, r.learners), (2, 1));
        assert_eq!(r.leader.as_deref(), Some("node1"));
        let names: Vec<&str> = r.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["node1", "node2", "node3"]);
        assert!(
            r.nodes[0].etcd.leader && !r.nodes[1].etcd.leader,
            "the fresh leader wins"
        );
        assert_eq!(r.nodes[0].version.as_deref(), Some("0.2.0"));
        let dead = &r.nodes[2];
        assert!(!dead.alive && dead.version.is_none());
        assert_eq!(dead.desired_revision, 8);
        assert!(dead.error.as_ref().unwrap().contains("lease expired"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["nodes"][1]["version"], "0.1.0");
        assert!(json["nodes"][2]["version"].is_null());
        let t = table(&r);
        // Summary, fault tolerance, a blank line, then the node table.
        assert!(
            t.lines().nth(1).unwrap().starts_with("fault tolerance: "),
            "{t}"
        );
        let header = t.lines().nth(3).unwrap();
        assert!(header.contains("VERSION"), "{t}");
        assert!(t.lines().nth(4).unwrap().contains("0.2.0"), "{t}");
        assert!(t.lines().nth(6).unwrap().contains("DEAD"), "{t}");
    }

    fn keys(s: deckhand_model::NodeStatus) -> NodeKeys {
        NodeKeys {
            name: Some(s.name.clone()),
            role: None,
            status: Some(s),
        }
    }

    fn check(name: &str, state: CheckState) -> Check {
        Check {
            name: name.into(),
            state,
            detail: String::new(),
        }
    }

    #[test]
    fn cert_column_shows_days_left() {
        let mut nodes = BTreeMap::new();
        let day = 86_400;
        let cert = |after: u64| {
            Some(deckhand_model::CertificateStatus {
                not_after_unix: after,
                common_name: "node:x".into(),
                renewal: None,
            })
        };
        let mut a = alive("node1", "0.1.0", true);
        a.status.as_mut().unwrap().certificate = cert(100 * day + 300 * day + 7);
        let mut b = alive("node2", "0.1.0", false);
        b.status.as_mut().unwrap().certificate = cert(100 * day - 1);
        nodes.insert("a".repeat(32), a);
        nodes.insert("b".repeat(32), b);
        nodes.insert("c".repeat(32), alive("node3", "0.1.0", false));
        let members = [member(1, "node1", false)];
        let live = Live {
            members: &members,
            leader: Some(1),
            health: &[(1, true)],
            alarms: Ok(vec![]),
            now: 100 * day,
        };
        let r = report(&nodes, &live);
        let t = table(&r);
        let cell = |node: &str| column_cell(&t, "CERT", node);
        assert_eq!(cell("node1"), "300d", "{t}");
        assert_eq!(cell("node2"), "EXPIRED", "{t}");
        assert_eq!(cell("node3"), "-", "{t}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["nodes"][0]["certificate_days_left"], 300);
        assert_eq!(json["nodes"][0]["certificate"]["common_name"], "node:x");
    }

    #[test]
    fn firewall_column_says_off_role_or_stale() {
        use deckhand_model::FirewallStatus;
        let mut fw = FirewallStatus::default();
        assert_eq!(firewall_cell(true, &fw), "off");
        assert_eq!(firewall_cell(false, &fw), "-");
        fw.enabled = true;
        assert_eq!(firewall_cell(true, &fw), "none");
        fw.role = Some("member".into());
        fw.applied = true;
        fw.matches_role = true;
        assert_eq!(firewall_cell(true, &fw), "member");
        fw.matches_role = false;
        assert_eq!(firewall_cell(true, &fw), "wrong-role");
        fw.applied = false;
        assert_eq!(firewall_cell(true, &fw), "stale");
    }

    /// The word under `column` in `node`'s row of the node table.
    fn column_cell(table: &str, column: &str, node: &str) -> String {
        let header = table.lines().find(|l| l.starts_with("NODE")).unwrap();
        let col = header.find(column).unwrap();
        let line = table.lines().find(|l| l.starts_with(node)).unwrap();
        line[col..].split_whitespace().next().unwrap().to_string()
    }

    #[test]
    fn checks_column_names_the_failing_checks() {
        let mut nodes = BTreeMap::new();
        let mut a = alive("node1", "0.1.0", true);
        a.status.as_mut().unwrap().checks = vec![
            check("local-etcd", CheckState::Pass),
            check("docker", CheckState::Fail),
            check("disk-docker", CheckState::Pass),
            check("disk-etcd", CheckState::Warn),
        ];
        let mut b = alive("node2", "0.1.0", false);
        b.status.as_mut().unwrap().checks = vec![check("docker", CheckState::Pass)];
        nodes.insert("a".repeat(32), a);
        nodes.insert("b".repeat(32), b);
        nodes.insert("c".repeat(32), alive("node3", "0.1.0", false));
        let members = [member(1, "node1", false)];
        let live = Live {
            members: &members,
            leader: Some(1),
            health: &[(1, true)],
            alarms: Ok(vec![]),
            now: 0,
        };
        let r = report(&nodes, &live);
        let t = table(&r);
        let cell = |node: &str| column_cell(&t, "CHECKS", node);
        assert_eq!(cell("node1"), "docker,disk-etcd(warn)", "{t}");
        assert_eq!(cell("node2"), "ok", "{t}");
        assert_eq!(cell("node3"), "-", "{t}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["nodes"][0]["checks"][1]["name"], "docker");
        assert_eq!(json["nodes"][0]["checks"][1]["state"], "fail");
    }

    #[test]
    fn cluster_section_fault_tolerance_voter_problems_and_nospace() {
        // node1..3 are voters 1..3 (node1's status is gone: it cannot write
        // it under NOSPACE); voter 9 was added by hand and never started.
        let mut nodes = BTreeMap::new();
        for (i, name) in [(2u64, "node2"), (3, "node3")] {
            let mut s = node_status(name, EtcdMode::Member);
            s.address = format!("10.0.0.{i}");
            s.etcd.member_id = Some(format!("{i:x}"));
            if i == 3 {
                s.voter_problems = vec![deckhand_model::VoterProblem {
                    member_id: "9".into(),
                    peer_url: "http://10.0.0.9:2380".into(),
                    trouble: VoterTrouble::NotStarted,
                    since: 1000,
                }];
            }
            nodes.insert(format!("{i}").repeat(32), keys(s));
        }
        nodes.insert(
            "1".repeat(32),
            NodeKeys {
                name: Some("node1".into()),
                role: None,
                status: None,
            },
        );
        let mut unstarted = member(9, "", false);
        unstarted.client_urls.clear();
        let members = [
            member(1, "node1", false),
            member(2, "node2", false),
            member(3, "node3", false),
            unstarted,
        ];
        let health = [(1, true), (2, true), (3, true), (9, false)];
        let alarms = vec![Alarm {
            member_id: 2,
            kind: AlarmKind::NoSpace,
        }];
        let live = Live {
            members: &members,
            leader: Some(2),
            health: &health,
            alarms: Ok(alarms.clone()),
            now: 1000 + 190,
        };
        let r = report(&nodes, &live);
        let ft = r.cluster.fault_tolerance.as_ref().unwrap();
        assert_eq!((ft.voters, ft.up, ft.quorum, ft.spare), (4, 3, 3, Some(0)));
        assert_eq!(r.cluster.voter_problems.len(), 1, "{:?}", r.cluster);
        let p = &r.cluster.voter_problems[0];
        assert_eq!(
            (p.member_id.as_str(), p.trouble),
            ("9", VoterTrouble::NotStarted)
        );
        assert_eq!((p.since, p.for_how_long.as_str()), (Some(1000), "3 min"));
        let a = &r.cluster.alarms[0];
        assert_eq!(
            (a.alarm.as_str(), a.member_id.as_str(), a.node.as_deref()),
            ("NOSPACE", "2", Some("node2"))
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["nodes"][2]["voter_problems"][0]["member_id"], "9");
        let t = table(&r);
        assert!(
            t.contains("fault tolerance: quorum 3 of 4, 3 up: one more failure loses quorum\n"),
            "{t}"
        );
        assert!(
            t.contains("voter 9 http://10.0.0.9:2380: not started, for 3 min\n"),
            "{t}"
        );
        assert!(
            t.contains("ALARM NOSPACE raised by member 2 (node node2): "),
            "{t}"
        );
        assert!(t.contains("etcdctl alarm disarm"), "{t}");
        let node1 = t.lines().find(|l| l.starts_with("node1")).unwrap();
        assert!(node1.contains("NO-WRITE"), "{t}");
        assert!(
            node1.contains("cannot write its status: etcd NOSPACE"),
            "{t}"
        );
        assert!(!t.contains("DEAD"), "{t}");
        // Without the alarm the same node is down, and a problem no agent
        // reported yet is "just seen".
        nodes
            .get_mut(&"3".repeat(32))
            .unwrap()
            .status
            .as_mut()
            .unwrap()
            .voter_problems
            .clear();
        let live = Live {
            alarms: Ok(vec![]),
            ..live
        };
        let r = report(&nodes, &live);
        let t = table(&r);
        assert!(
            t.contains("voter 9 http://10.0.0.9:2380: not started, just seen\n"),
            "{t}"
        );
        let node1 = t.lines().find(|l| l.starts_with("node1")).unwrap();
        assert!(
            node1.contains("DEAD") && node1.contains("agent or node down"),
            "{t}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["cluster"]["voter_problems"][0]["trouble"],
            "not-started"
        );
        assert!(json["cluster"]["voter_problems"][0]["since"].is_null());
        assert_eq!(json["cluster"]["fault_tolerance"]["spare"], 0);
        assert_eq!(json["nodes"][2]["name"], "node3");
        assert!(
            json["nodes"][2]["voter_problems"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_voter_without_a_node_and_one_whose_node_cannot_write() {
        // Voter 7 answers but no deckhand node has its address; voter 1's
        // node has only its name key left: it has a node.
        let mut nodes = BTreeMap::new();
        nodes.insert(
            "1".repeat(32),
            NodeKeys {
                name: Some("node1".into()),
                role: None,
                status: None,
            },
        );
        let members = [member(1, "node1", false), member(7, "stray", false)];
        let live = Live {
            members: &members,
            leader: Some(1),
            health: &[(1, true), (7, true)],
            alarms: Err("no answer".into()),
            now: 0,
        };
        let r = report(&nodes, &live);
        let ids: Vec<(&str, VoterTrouble)> = r
            .cluster
            .voter_problems
            .iter()
            .map(|p| (p.member_id.as_str(), p.trouble))
            .collect();
        assert_eq!(ids, [("7", VoterTrouble::NoNode)]);
        assert!(table(&r).contains("alarms: could not be read: no answer"));
        assert_eq!(how_long(7200), "2 h");
        assert_eq!(how_long(3 * 86400), "3 d");
    }
}
