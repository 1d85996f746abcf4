//! Automatic member replacement: with the cluster config's `voters` set, the
//! one agent holding the replacer lock keeps that many healthy voters. A
//! voter whose node has been dead longer than the grace period is removed
//! (when the healthy voters keep quorum) and its node's role key set to
//! proxy; then a healthy proxy is chosen (control-plane nodes first, spread
//! over failure domains) and its role key set to member. Role keys stay the
//! single source of truth: the chosen node's own agent does the join.

use std::collections::BTreeMap;

use deckhand_model::{EtcdMode, EtcdRole};

use crate::observation::MemberView;
use crate::rules::check_removal;

/// One node as the replacer sees it (from the `nodes/` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Node id.
    pub id: String,
    /// Node name (the etcd member name of its member).
    pub name: String,
    /// Its status key exists (its lease is alive).
    pub alive: bool,
    /// Seconds since the replacer first saw it dead; 0 while alive.
    pub dead_for: u64,
    /// Its etcd mode, from its status.
    pub mode: EtcdMode,
    /// The etcd role of its role key.
    pub desired: Option<EtcdRole>,
    /// Its status says converged.
    pub converged: bool,
    /// Its status says blocked: it is not changing anything.
    pub blocked: bool,
    /// Its role includes the control plane.
    pub control_plane: bool,
    /// Its failure domain.
    pub failure_domain: Option<String>,
}

/// What the replacer does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replacement {
    /// The cluster has the voters it should.
    Idle,
    /// Waiting (a grace period, a transition in progress); the reason.
    Wait(String),
    /// Refused; the reason.
    Blocked(String),
    /// Remove the dead voter `member_id`, and set the role key of its node
    /// (when known) to proxy so that it comes back as one.
    RemoveDead {
        /// Member id.
        member_id: u64,
        /// Node id of the dead node, if known.
        node: Option<String>,
        /// Why, in words.
        why: String,
    },
    /// Set this node's role key to member.
    Promote {
        /// Node id.
        node: String,
        /// Why, in words.
        why: String,
    },
}

/// The next replacement action for `target` voters with a `grace` (seconds).
pub fn plan_replacement(
    target: usize,
    grace: u64,
    members: &[MemberView],
    nodes: &[NodeView],
) -> Replacement {
    if target.is_multiple_of(2) {
        return Replacement::Blocked(format!("voters = {target} is even; use an odd number"));
    }
    let node_of = |m: &MemberView| {
        nodes
            .iter()
            .find(|n| !m.name.is_empty() && n.name == m.name)
    };
    if let Some(l) = members.iter().find(|m| m.is_learner) {
        return Replacement::Wait(format!(
            "learner {:x} ({}) is pending",
            l.id,
            l.display_name()
        ));
    }
    let voters: Vec<&MemberView> = members.iter().filter(|m| !m.is_learner).collect();
    let mut waiting = None;
    for v in &voters {
        let Some(n) = node_of(v) else { continue };
        if n.alive || v.healthy == Some(true) {
            continue;
        }
        if n.dead_for < grace {
            waiting = Some(format!(
                "voter {} has been dead for {} s; replacing it after {grace} s",
                n.name, n.dead_for
            ));
            continue;
        }
        return match check_removal(members, v.id, None) {
            Ok(()) => Replacement::RemoveDead {
                member_id: v.id,
                node: Some(n.id.clone()),
                why: format!("node {} has been dead for {} s", n.name, n.dead_for),
            },
            Err(reason) => {
                Replacement::Blocked(format!("cannot replace dead voter {}: {reason}", n.name))
            }
        };
    }
    if let Some(w) = waiting {
        return Replacement::Wait(w);
    }
    // A blocked node changes nothing (it waits for safety, which may take
    // the very voters this adds): only nodes on the move are waited for.
    if let Some(n) = nodes.iter().find(|n| n.alive && !n.converged && !n.blocked) {
        return Replacement::Wait(format!("node {} is changing its role", n.name));
    }
    if voters.len() >= target {
        return Replacement::Idle;
    }
    // Voters per failure domain, to spread the new one.
    let mut per_domain: BTreeMap<Option<&str>, usize> = BTreeMap::new();
    for v in &voters {
        if let Some(n) = node_of(v) {
            *per_domain.entry(n.failure_domain.as_deref()).or_default() += 1;
        }
    }
    let mut candidates: Vec<&NodeView> = nodes
        .iter()
        .filter(|n| {
            n.alive
                && n.converged
                && n.mode == EtcdMode::Proxy
                && n.desired != Some(EtcdRole::Member)
        })
        .collect();
    candidates.sort_by_key(|n| {
        (
            !n.control_plane,
            per_domain
                .get(&n.failure_domain.as_deref())
                .copied()
                .unwrap_or(0),
            n.name.clone(),
        )
    });
    match candidates.first() {
        Some(n) => Replacement::Promote {
            node: n.id.clone(),
            why: format!(
                "the cluster has {} of {target} voters; promoting {}",
                voters.len(),
                n.name
            ),
        },
        None => Replacement::Blocked(format!(
            "the cluster has {} of {target} voters and no healthy, converged proxy to promote",
            voters.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u64, name: &str, healthy: bool) -> MemberView {
        MemberView {
            id,
            name: name.into(),
            peer_urls: vec![format!("http://10.0.0.{id}:2380")],
            client_urls: vec![format!("http://10.0.0.{id}:2379")],
            is_learner: false,
            healthy: Some(healthy),
        }
    }

    fn n(name: &str, alive: bool, mode: EtcdMode, domain: &str) -> NodeView {
        NodeView {
            id: format!("id-{name}"),
            name: name.into(),
            alive,
            dead_for: if alive { 0 } else { 600 },
            mode,
            desired: Some(if mode == EtcdMode::Member {
                EtcdRole::Member
            } else {
                EtcdRole::Proxy
            }),
            converged: alive,
            blocked: false,
            control_plane: false,
            failure_domain: Some(domain.into()),
        }
    }

    #[test]
    fn replaces_a_dead_voter_then_promotes_a_proxy_in_another_domain() {
        let members = vec![m(1, "a", true), m(2, "b", true), m(3, "c", false)];
        let mut nodes = vec![
            n("a", true, EtcdMode::Member, "r1"),
            n("b", true, EtcdMode::Member, "r2"),
            n("c", false, EtcdMode::None, "r3"),
            n("d", true, EtcdMode::Proxy, "r1"),
            n("e", true, EtcdMode::Proxy, "r3"),
        ];
        nodes[2].dead_for = 10;
        assert!(
            matches!(plan_replacement(3, 300, &members, &nodes), Replacement::Wait(w) if w.contains("after 300 s"))
        );
        nodes[2].dead_for = 600;
        assert_eq!(
            plan_replacement(3, 300, &members, &nodes),
            Replacement::RemoveDead {
                member_id: 3,
                node: Some("id-c".into()),
                why: "node c has been dead for 600 s".into()
            }
        );
        let left = &members[..2];
        match plan_replacement(3, 300, left, &nodes) {
            Replacement::Promote { node, .. } => assert_eq!(node, "id-e", "r3 has no voter left"),
            other => panic!("{other:?}"),
        }
        nodes[3].control_plane = true;
        assert!(
            matches!(plan_replacement(3, 300, left, &nodes), Replacement::Promote { node, .. } if node == "id-d")
        );
    }

    #[test]
    fn never_removes_when_quorum_would_go() {
        let members = vec![m(1, "a", true), m(2, "b", false), m(3, "c", false)];
        let nodes = vec![
            n("a", true, EtcdMode::Member, "r1"),
            n("b", false, EtcdMode::None, "r2"),
            n("c", false, EtcdMode::None, "r3"),
        ];
        assert!(
            matches!(plan_replacement(3, 300, &members, &nodes), Replacement::Blocked(r) if r.contains("would be healthy"))
        );
        assert!(
            matches!(plan_replacement(4, 300, &members, &nodes), Replacement::Blocked(r) if r.contains("even"))
        );
    }

    #[test]
    fn idle_when_full_and_waits_for_transitions() {
        let members = vec![m(1, "a", true), m(2, "b", true), m(3, "c", true)];
        let mut nodes = vec![
            n("a", true, EtcdMode::Member, "r1"),
            n("b", true, EtcdMode::Member, "r2"),
            n("c", true, EtcdMode::Member, "r3"),
        ];
        assert_eq!(
            plan_replacement(3, 300, &members, &nodes),
            Replacement::Idle
        );
        nodes[0].converged = false;
        assert!(matches!(
            plan_replacement(5, 300, &members, &nodes),
            Replacement::Wait(_)
        ));
    }
}
