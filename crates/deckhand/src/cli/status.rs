//! `deckhand status`: every node at a glance — desired and applied role,
//! etcd mode, leader, health, convergence, images, agent version — and the
//! plane units, from the node keys and a member list read from a real
//! member.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use deckhand_etcd::{Cluster, Member};
use deckhand_model::{EtcdMode, EtcdStatus, ImagesStatus, Plane, PlaneStatus, Role, UnitMode};
use serde::Serialize;

use super::session::Session;
use super::table::columns;
use crate::connect::Target;
use crate::store::NodeKeys;

/// `deckhand status` arguments.
#[derive(Args)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `deckhand status --json`: every node, the member list and the leader.
#[derive(Debug, Serialize)]
pub struct StatusJson {
    nodes: Vec<NodeJson>,
    voters: usize,
    learners: usize,
    leader: Option<String>,
    members: Vec<MemberJson>,
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
    let nodes = session.store.nodes().await?;
    // The member list must come from a real member, never a grpc-proxy:
    // ask the nodes that report a member, then the configured endpoints,
    // then the endpoints given on the command line.
    let reported: Vec<String> = nodes
        .values()
        .filter_map(|k| k.status.as_ref())
        .filter(|s| s.etcd.mode == EtcdMode::Member)
        .map(|s| format!("http://{}:2379", s.address))
        .collect();
    let mut members = Vec::new();
    let mut leader = None;
    for eps in [
        reported,
        session.target.config_endpoints.clone(),
        session.target.cli_endpoints.clone(),
    ] {
        if eps.is_empty() {
            continue;
        }
        // A short timeout per endpoint: right after a member died its node
        // still reports it for up to a lease TTL.
        if let Ok(c) = Cluster::connect(&eps, Duration::from_secs(1)).await
            && let Ok(list) = c.member_list().await
        {
            members = list;
            break;
        }
    }
    'voters: for m in members.iter().filter(|m| !m.is_learner) {
        for ep in &m.client_urls {
            if let Ok(st) = Cluster::endpoint_status(ep, Duration::from_secs(2)).await
                && st.leader != 0
            {
                leader = Some(st.leader);
                break 'voters;
            }
        }
    }
    let out = report(&nodes, &members, leader);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", table(&out));
    }
    Ok(())
}

/// The status report from every node's keys, the member list and the
/// leader's member id (pure). Nodes are sorted by name, then id. Each node
/// reports its own leader flag, which lags a leader change by up to one of
/// its iterations; the leader read just now overrides it.
pub fn report(
    nodes: &BTreeMap<String, NodeKeys>,
    members: &[Member],
    leader_id: Option<u64>,
) -> StatusJson {
    let leader = leader_id
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
        nodes: nodes.iter().map(|(id, k)| node_json(id, k)).collect(),
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

fn node_json(id: &str, k: &NodeKeys) -> NodeJson {
    match &k.status {
        Some(s) => NodeJson {
            id: id.to_string(),
            name: s.name.clone(),
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
            converged: false,
            etcd: EtcdStatus {
                mode: EtcdMode::None,
                member_id: None,
                leader: false,
            },
            step: None,
            blocked: None,
            error: Some("no status: the node's lease expired (agent or node down)".into()),
            failure_domain: None,
            replacer: None,
            events: Vec::new(),
            planes: Vec::new(),
            images: ImagesStatus::default(),
        },
    }
}

/// The status table: a summary line, one row per node, then one row per
/// plane unit.
pub fn table(s: &StatusJson) -> String {
    let mut out = format!(
        "voters: {}   learners: {}   leader: {}\n",
        s.voters,
        s.learners,
        s.leader.as_deref().unwrap_or("(none)")
    );
    let rows: Vec<[String; 11]> = s
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
                } else {
                    "DEAD".into()
                },
                if n.converged {
                    "yes".into()
                } else {
                    "no".into()
                },
                images_cell(&n.images),
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
        "VERSION",
        "NOTE",
    ];
    out.push_str(&columns(&header, &rows));
    out.push_str(&units_table(s));
    out
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
        let r = report(&nodes, &members, Some(1));
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
        let header = t.lines().nth(1).unwrap();
        assert!(header.contains("VERSION"), "{t}");
        assert!(t.lines().nth(2).unwrap().contains("0.2.0"), "{t}");
        assert!(t.lines().nth(4).unwrap().contains("DEAD"), "{t}");
    }
}
