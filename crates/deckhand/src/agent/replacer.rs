//! The replacer: with `voters` set in the cluster config, the one agent
//! holding the replacer lock keeps that many healthy voters
//! ([`deckhand_plan::plan_replacement`]): it removes the member of a node
//! dead for `dead_grace_seconds` (only when the healthy voters keep quorum)
//! and sets that node's role key to proxy, and sets a healthy proxy's role
//! key to member. Its role-key writes compare on the mod revision it read,
//! so an operator's `deckhand role set` made meanwhile wins.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use deckhand_etcd::{LockOutcome, Member};
use deckhand_model::{EtcdMode, EtcdRole, Plane, Role};
use deckhand_plan::{NodeView, Replacement};

use super::context::Context;
use super::observe::{HEALTH_TIMEOUT, member_views};
use super::status::EventLog;
use crate::store::{NodeKeys, Store};

/// The planner's view of the nodes. `dead_since` remembers when each node
/// was first seen without a status (its lease expired); it is updated here:
/// a node seen dead now for the first time is recorded at `now`, and nodes
/// alive again (or gone) are forgotten.
pub fn node_views(
    nodes: &BTreeMap<String, NodeKeys>,
    dead_since: &mut HashMap<String, Instant>,
    now: Instant,
) -> Vec<NodeView> {
    dead_since.retain(|id, _| nodes.get(id).is_some_and(|k| k.status.is_none()));
    nodes
        .iter()
        .map(|(id, k)| {
            let alive = k.status.is_some();
            let dead_for = if alive {
                0
            } else {
                now.duration_since(*dead_since.entry(id.clone()).or_insert(now))
                    .as_secs()
            };
            let role = k.role();
            NodeView {
                id: id.clone(),
                name: k.display_name(),
                alive,
                dead_for,
                mode: k
                    .status
                    .as_ref()
                    .map(|s| s.etcd.mode)
                    .unwrap_or(EtcdMode::None),
                desired: role.as_ref().map(|r| r.etcd),
                converged: k.status.as_ref().is_some_and(|s| s.converged),
                blocked: k.status.as_ref().is_some_and(|s| s.blocked.is_some()),
                control_plane: role
                    .as_ref()
                    .is_some_and(|r| r.planes.contains(&Plane::Control)),
                failure_domain: k.status.as_ref().and_then(|s| s.failure_domain.clone()),
            }
        })
        .collect()
}

/// The role the replacer writes for `node`: etcd role `etcd`, the planes its
/// role key has now.
fn role_for(nodes: &BTreeMap<String, NodeKeys>, node: &str, etcd: EtcdRole) -> (Role, i64) {
    let keys = nodes.get(node);
    let planes = keys
        .and_then(|k| k.role())
        .map(|r| r.planes)
        .unwrap_or_default();
    (
        Role { etcd, planes },
        keys.map(NodeKeys::role_revision).unwrap_or(0),
    )
}

/// Sets `node`'s role key to `role` if it is still at `expected`; the
/// outcome in words for the note, `Ok` when written.
async fn set_role(store: &Store, node: &str, role: &Role, expected: i64) -> Result<(), String> {
    match store.put_role_if(node, role, expected).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(format!(
            "node {node}'s role key changed since it was read (revision {expected}); looking again"
        )),
        Err(e) => Err(format!("setting node {node}'s role failed: {e:#}")),
    }
}

/// The replacer's state on this agent.
#[derive(Default)]
pub struct Replacer {
    /// While this agent holds the replacer lock: what it did last.
    pub note: Option<String>,
    /// Nodes seen dead, since when (node id → first seen).
    dead_since: HashMap<String, Instant>,
}

impl Replacer {
    /// One pass, keeping `voters` (the cluster config's; `None` turns the
    /// replacer off and releases its lock). `lease` is the node's lease (0:
    /// none yet, nothing is done).
    pub async fn run(
        &mut self,
        ctx: &Context,
        voters: Option<usize>,
        dead_grace_seconds: u64,
        lease: i64,
        events: &mut EventLog,
    ) {
        let key = ctx.store.keyspace().replacer_lock();
        let id = &ctx.identity.id;
        let mut kv = ctx.store.client();
        let Some(target) = voters else {
            if self.note.take().is_some() {
                let _ = deckhand_etcd::unlock(&mut kv, &key, id).await;
            }
            return;
        };
        if lease == 0 {
            return;
        }
        match deckhand_etcd::try_lock(&mut kv, &key, id, lease).await {
            Ok(LockOutcome::Acquired) => {}
            _ => {
                self.note = None;
                self.dead_since.clear();
                return;
            }
        }
        let nodes = match ctx.store.nodes().await {
            Ok(n) => n,
            Err(e) => {
                self.note = Some(format!("cannot read the nodes: {e:#}"));
                return;
            }
        };
        let members: Vec<Member> = match ctx.cluster.member_list().await {
            Ok(m) => m,
            Err(e) => {
                self.note = Some(format!("cannot read the member list: {e}"));
                return;
            }
        };
        let health = ctx.cluster.voter_health(&members, HEALTH_TIMEOUT).await;
        let member_views = member_views(&members, &health);
        let node_views = node_views(&nodes, &mut self.dead_since, Instant::now());
        let action =
            deckhand_plan::plan_replacement(target, dead_grace_seconds, &member_views, &node_views);
        let note = match action {
            Replacement::Idle => format!("keeping {target} voters: nothing to do"),
            Replacement::Wait(w) => w,
            Replacement::Blocked(b) => format!("blocked: {b}"),
            Replacement::RemoveDead {
                member_id,
                node,
                why,
            } => {
                let lock = ctx.store.keyspace().membership_lock();
                match deckhand_etcd::try_lock(&mut kv, &lock, id, lease).await {
                    Ok(LockOutcome::Acquired) => {}
                    Ok(LockOutcome::HeldBy(owner)) => {
                        self.note = Some(format!(
                            "waiting for the membership lock held by node {owner}"
                        ));
                        return;
                    }
                    Err(e) => {
                        self.note = Some(format!("cannot take the membership lock: {e}"));
                        return;
                    }
                }
                let result = ctx.cluster.remove(member_id).await;
                let mut role_note = String::new();
                if result.is_ok()
                    && let Some(node) = &node
                {
                    let (role, rev) = role_for(&nodes, node, EtcdRole::Proxy);
                    if let Err(why) = set_role(&ctx.store, node, &role, rev).await {
                        role_note = format!(" ({why})");
                    }
                }
                let _ = deckhand_etcd::unlock(&mut kv, &lock, id).await;
                match result {
                    Ok(()) => {
                        let msg = if role_note.is_empty() {
                            format!(
                                "replacer removed member {member_id:x}: {why}; its role key now says proxy"
                            )
                        } else {
                            format!("replacer removed member {member_id:x}: {why}{role_note}")
                        };
                        tracing::warn!("{msg}");
                        events.push(msg.clone());
                        msg
                    }
                    Err(e) => format!("removing dead member {member_id:x} failed: {e}"),
                }
            }
            Replacement::Promote { node, why } => {
                let (role, rev) = role_for(&nodes, &node, EtcdRole::Member);
                match set_role(&ctx.store, &node, &role, rev).await {
                    Ok(()) => {
                        let msg = format!("replacer set node {node}'s role to member: {why}");
                        tracing::warn!("{msg}");
                        events.push(msg.clone());
                        msg
                    }
                    Err(why) => why,
                }
            }
        };
        if self.note.as_ref() != Some(&note) {
            tracing::info!("replacer: {note}");
        }
        self.note = Some(note);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use deckhand_model::NodeStatus;

    use super::*;
    use crate::testing::node_status;

    fn status(name: &str, mode: EtcdMode, domain: Option<&str>) -> NodeStatus {
        let mut s = node_status(name, mode);
        s.failure_domain = domain.map(str::to_string);
        s
    }

    #[test]
    fn node_views_track_how_long_each_node_is_dead() {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            "a".to_string(),
            NodeKeys {
                name: Some("node-a".into()),
                role: Some((br#"{"etcd":"member","planes":["control"]}"#.to_vec(), 4)),
                status: Some(status("node-a", EtcdMode::Member, Some("rack-1"))),
            },
        );
        nodes.insert(
            "b".to_string(),
            NodeKeys {
                name: Some("node-b".into()),
                role: Some((b"garbage".to_vec(), 5)),
                status: None,
            },
        );
        let mut dead = HashMap::new();
        let t0 = Instant::now();
        let v = node_views(&nodes, &mut dead, t0);
        assert!(v[0].alive && v[0].control_plane);
        assert_eq!(v[0].mode, EtcdMode::Member);
        assert_eq!(v[0].desired, Some(EtcdRole::Member));
        assert_eq!(v[0].failure_domain.as_deref(), Some("rack-1"));
        assert!(!v[1].alive && v[1].dead_for == 0 && v[1].desired.is_none());
        assert_eq!(v[1].name, "node-b", "a dead node keeps its name");
        let v = node_views(&nodes, &mut dead, t0 + Duration::from_secs(30));
        assert_eq!(v[1].dead_for, 30);
        // b comes back: forgotten; when it dies again the clock restarts.
        nodes.get_mut("b").unwrap().status = Some(status("node-b", EtcdMode::Proxy, None));
        node_views(&nodes, &mut dead, t0 + Duration::from_secs(31));
        assert!(dead.is_empty());
        nodes.get_mut("b").unwrap().status = None;
        let v = node_views(&nodes, &mut dead, t0 + Duration::from_secs(40));
        assert_eq!(v[1].dead_for, 0);
    }

    #[test]
    fn the_role_written_keeps_the_planes_and_compares_on_the_revision_read() {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            "a".to_string(),
            NodeKeys {
                role: Some((br#"{"etcd":"member","planes":["router"]}"#.to_vec(), 9)),
                ..Default::default()
            },
        );
        let (role, rev) = role_for(&nodes, "a", EtcdRole::Proxy);
        assert_eq!(role.etcd, EtcdRole::Proxy);
        assert!(role.planes.contains(&Plane::Router));
        assert_eq!(rev, 9);
        // No role key: created only if still absent.
        assert_eq!(role_for(&nodes, "zz", EtcdRole::Member).1, 0);
    }
}
