//! deckhand's planner: a pure function from what the agent observed to the
//! next safe step. Every cluster-safety rule lives here, where it is unit- and
//! property-tested without I/O.
//!
//! The agent runs observe → [`plan`] → act, one step at a time; every step is
//! idempotent and is chosen again from fresh observations after a crash.
//!
//! The membership rules follow etcd's runtime reconfiguration guide
//! (<https://etcd.io/docs/v3.4/op-guide/runtime-configuration/>) and its
//! learner design (<https://etcd.io/docs/v3.4/learning/design-learner/>):
//! join as a learner, promote once in sync, one learner at a time, and never
//! remove a voter when the healthy voters left would not hold quorum.

pub mod firewall;
pub mod health;
pub mod identity;
mod observation;
pub mod pki;
pub mod planes;
mod replace;
pub mod retention;
mod rules;
mod step;

pub use health::{FaultTolerance, VoterTroubleEntry, voter_troubles};
pub use identity::IdentityView;
pub use observation::{
    ClusterView, LocalView, LockView, MemberEnvView, MemberView, Observation, Sighting, utc,
};
pub use planes::{
    ProbeJudge, Standing, StartFailures, UnitObservation, UnitPlan, plan_units, wanted_images,
};
pub use replace::{NodeView, Replacement, plan_replacement};
pub use rules::{check_promotion, check_removal, quorum};
pub use step::Step;

use deckhand_model::{EtcdMode, EtcdRole};

/// The etcd role the node should have: the desired role key if there is one,
/// else member if it has a member environment or a voter entry, else what it
/// runs now, else its bootstrap default (member when named in the initial
/// cluster, proxy otherwise).
pub fn target_role(o: &Observation) -> EtcdRole {
    if let Some(desired) = &o.desired {
        return desired.etcd;
    }
    // No role key read yet (after a reboot of a member, localhost:2379 only
    // answers once the member runs): a member environment or a voter entry
    // with this peer URL means the node is a member until told otherwise.
    if o.local.member_env.is_some() || o.me().is_some_and(|m| !m.is_learner) {
        return EtcdRole::Member;
    }
    match etcd_mode(o) {
        EtcdMode::Member | EtcdMode::Learner => EtcdRole::Member,
        EtcdMode::Proxy => EtcdRole::Proxy,
        EtcdMode::None if o.in_initial_cluster => EtcdRole::Member,
        EtcdMode::None => EtcdRole::Proxy,
    }
}

/// What serves `localhost:2379` on this node, from the local units and the
/// member list.
pub fn etcd_mode(o: &Observation) -> EtcdMode {
    let me = o.me();
    let member_up = o.local.member_unit_active;
    match me {
        Some(m) if member_up && !m.is_learner && o.local.member_serves_localhost() => {
            EtcdMode::Member
        }
        Some(m) if member_up && m.is_learner => EtcdMode::Learner,
        _ if o.local.proxy_unit_active => EtcdMode::Proxy,
        None if member_up && o.cluster.is_none() => EtcdMode::Member,
        Some(_) if member_up => EtcdMode::Member,
        _ => EtcdMode::None,
    }
}

/// The next step toward the target role. Pure; see the crate docs.
pub fn plan(o: &Observation) -> Step {
    // Serve localhost:2379 first: the agent's own keys, lease and lock go
    // through it, so nothing else can be done without it. A proxy is never
    // destructive, and a later hand-over stops it. (An initial member on its
    // first boot bootstraps straight away: its member serves localhost.)
    // Identity first: a member that is not the member the cluster knows
    // must not serve localhost:2379 a moment longer.
    if let Some(step) = identity::identity_step(o) {
        return step;
    }
    let l = &o.local;
    let will_bootstrap = o.in_initial_cluster && !l.bootstrapped && !l.data_dir_exists;
    if let Some(cluster) = &o.cluster
        && !l.member_unit_active
        && !l.proxy_unit_active
        && l.member_env.is_none()
        && !will_bootstrap
    {
        return Step::StartProxy {
            endpoints: cluster.proxy_endpoints(),
        };
    }
    if let Some(step) = housekeeping(o) {
        return step;
    }
    match target_role(o) {
        EtcdRole::Member => plan_member(o),
        EtcdRole::Proxy => plan_proxy(o),
    }
}

/// A pending learner that is not this node's and that this agent has seen
/// pending for longer than the learner timeout: it never started or never
/// caught up. Judged on this agent's own monotonic sighting
/// ([`Sighting::for_secs`]), never on another node's clock.
pub fn stale_learner(o: &Observation) -> Option<&MemberView> {
    let cluster = o.cluster.as_ref()?;
    let me = o.me().map(|m| m.id);
    cluster.members.iter().find(|m| {
        m.is_learner
            && Some(m.id) != me
            && o.pending
                .get(&m.id)
                .is_some_and(|s| s.for_secs > o.learner_timeout)
    })
}

/// A voter that is not this node's, was added but has not started (no
/// client URLs published), and that this agent has seen so for longer than
/// `voter_start_timeout_seconds` (on its own monotonic clock). A voter that
/// started once and died is not one: that is the replacer's business.
pub fn unstarted_voter(o: &Observation) -> Option<&MemberView> {
    let cluster = o.cluster.as_ref()?;
    let me = o.me().map(|m| m.id);
    cluster.members.iter().find(|m| {
        !m.is_learner
            && !m.is_started()
            // A member that answers a health check has started, whatever
            // the member list says yet (its name is published after start).
            && m.healthy != Some(true)
            && Some(m.id) != me
            && o.pending
                .get(&m.id)
                .is_some_and(|s| s.for_secs > o.voter_start_timeout)
    })
}

/// Why etcd would refuse to add a member now, in words, naming the voter
/// in the way and the two ways out; `None` when no voter is known to be in
/// the way.
///
/// etcd's strict reconfiguration check (on by default) refuses a
/// `MemberAdd`, even of a learner, with "etcdserver: unhealthy cluster"
/// unless the member taking the request has been connected to every voter
/// for the last 5 s (`mayAddMember`, `isConnectedFullySince` in etcd 3.4's
/// `etcdserver/server.go`; <https://etcd.io/docs/v3.4/op-guide/configuration/#--strict-reconfig-check>).
/// A voter that never started, or one this agent's health checks found
/// down, is such a voter.
pub fn add_refusal(o: &Observation) -> Option<String> {
    let cluster = o.cluster.as_ref()?;
    let me = o.me().map(|m| m.id);
    let in_the_way = cluster
        .members
        .iter()
        .filter(|m| !m.is_learner && Some(m.id) != me)
        .find(|m| !m.is_started() || m.healthy == Some(false))?;
    let seen = |map: &std::collections::BTreeMap<u64, Sighting>| {
        map.get(&in_the_way.id)
            .map(|s| format!(" since {} (first seen by this agent)", s.at_utc()))
            .unwrap_or_default()
    };
    let peer = in_the_way.peer_urls.first().map_or("", String::as_str);
    let rule = "etcd refuses to add a member, even a learner, until every voter has been connected for 5 s (--strict-reconfig-check)";
    let (what, handle) = if in_the_way.is_started() {
        (
            format!(
                "voter {} ({:x}, {peer}) has not answered{}",
                in_the_way.display_name(),
                in_the_way.id,
                seen(&o.down)
            ),
            in_the_way.name.clone(),
        )
    } else {
        (
            format!(
                "voter {:x} ({peer}) was added but has not started{}; deckhand removes it once it has not started for voter_start_timeout_seconds = {}",
                in_the_way.id,
                seen(&o.pending),
                o.voter_start_timeout
            ),
            format!("{:x}", in_the_way.id),
        )
    };
    Some(format!(
        "cannot join: {rule}, and {what}; start it again, or remove it: `deckhand member remove {handle}`"
    ))
}

/// Member entries left over from an earlier life of this host: its peer URL
/// listed as a started voter although the host has no member environment,
/// no data dir and no member running (the disk was wiped or the host
/// reprovisioned); or its name listed with another peer URL and not healthy
/// (the host came back with another address).
pub fn stale_self_entries(o: &Observation) -> Vec<&MemberView> {
    let Some(cluster) = &o.cluster else {
        return Vec::new();
    };
    let l = &o.local;
    let lost_data = !l.member_unit_active && l.member_env.is_none() && !l.data_dir_exists;
    cluster
        .members
        .iter()
        .filter(|m| {
            let mine = m
                .peer_urls
                .iter()
                .any(|u| observation::same_peer_url(u, &o.peer_url));
            (mine && lost_data && !m.is_learner && m.is_started())
                || (!mine
                    && !o.node_name.is_empty()
                    && m.name == o.node_name
                    && m.healthy != Some(true))
        })
        .collect()
}

/// Cluster chores that come before the node's own role: remove entries of
/// this host's earlier life, voters that never started, and stale learners
/// (done by voters and by nodes that want to join, so that a dead joiner
/// never blocks later joins).
fn housekeeping(o: &Observation) -> Option<Step> {
    let cluster = o.cluster.as_ref()?;
    if let Some(stale) = stale_self_entries(o).first() {
        if !stale.is_learner
            && let Err(reason) = check_removal(&cluster.members, stale.id, None)
        {
            return Some(Step::Blocked(format!(
                "member {:x} ({}) is left over from an earlier life of this host and must be removed first, but {reason}",
                stale.id,
                stale.display_name()
            )));
        }
        if o.lock != LockView::Mine {
            return Some(lock_step(o));
        }
        return Some(Step::RemoveMember {
            id: stale.id,
            why: format!(
                "member {:x} ({}) is left over from an earlier life of this host",
                stale.id,
                stale.display_name()
            ),
        });
    }
    let me = o.me();
    let wants_to_join = me.is_none() && target_role(o) == EtcdRole::Member;
    let is_voter = me.is_some_and(|m| !m.is_learner);
    if !(wants_to_join || is_voter) {
        return None;
    }
    // A voter that never started: removed only when the started, healthy
    // voters keep quorum without it (else it stays, and `add_refusal`
    // names it to a joiner).
    if let Some(voter) = unstarted_voter(o)
        && check_removal(&cluster.members, voter.id, None).is_ok()
    {
        if o.lock != LockView::Mine {
            return Some(lock_step(o));
        }
        return Some(Step::RemoveMember {
            id: voter.id,
            why: format!(
                "voter {:x} ({}) was added but did not start within {} s",
                voter.id,
                voter.peer_urls.first().map_or("", String::as_str),
                o.voter_start_timeout
            ),
        });
    }
    let learner = stale_learner(o)?;
    if o.lock != LockView::Mine {
        return Some(lock_step(o));
    }
    Some(Step::RemoveMember {
        id: learner.id,
        why: format!(
            "learner {:x} ({}) did not start or catch up within {} s",
            learner.id,
            learner.display_name(),
            o.learner_timeout
        ),
    })
}

/// Keeps `localhost:2379` served while no voter can be reached: restart a
/// member that has an environment (a full-cluster reboot needs its members
/// back to regain quorum), bootstrap on first boot, else run a proxy.
fn plan_unreachable(o: &Observation) -> Step {
    let l = &o.local;
    if l.member_env.is_some() && !l.member_unit_active {
        return Step::StartMember;
    }
    if l.member_env.is_none()
        && !l.member_unit_active
        && o.in_initial_cluster
        && !l.bootstrapped
        && !l.data_dir_exists
        && target_role(o) == EtcdRole::Member
    {
        return Step::BootstrapMember;
    }
    if !l.member_unit_active && !l.proxy_unit_active {
        let endpoints = if l.proxy_endpoints.is_empty() {
            o.config_endpoints.clone()
        } else {
            l.proxy_endpoints.clone()
        };
        return Step::StartProxy { endpoints };
    }
    Step::Wait("no etcd voter is reachable; waiting for the cluster".into())
}

fn plan_member(o: &Observation) -> Step {
    let Some(cluster) = &o.cluster else {
        return plan_unreachable(o);
    };
    let l = &o.local;
    match o.me() {
        None => {
            if l.member_unit_active {
                // Our member runs but the cluster does not list it: it was
                // removed. Stop it before joining again.
                return Step::StopMember;
            }
            if !l.proxy_unit_active {
                return Step::StartProxy {
                    endpoints: cluster.proxy_endpoints(),
                };
            }
            if let Some(reason) = add_refusal(o) {
                // Reported, not retried against etcd: the agent looks again
                // each pass and joins once the voter is back or removed.
                // The lock is not held meanwhile: others may need it to
                // remove the voter in the way.
                if o.lock == LockView::Mine {
                    return Step::ReleaseLock;
                }
                return Step::Blocked(reason);
            }
            if let Some(learner) = cluster.members.iter().find(|m| m.is_learner) {
                return Step::Wait(format!(
                    "learner {} ({:x}) is pending; etcd allows one learner at a time",
                    learner.display_name(),
                    learner.id
                ));
            }
            match &o.lock {
                LockView::Other(owner) => {
                    Step::Wait(format!("membership lock is held by node {owner}"))
                }
                LockView::Free => Step::AcquireLock,
                LockView::Mine => Step::AddLearner,
            }
        }
        Some(me) if me.is_learner => {
            if o.lock != LockView::Mine {
                return lock_step(o);
            }
            if !l.member_unit_active {
                return Step::StartLearner {
                    id: me.id,
                    initial_cluster: cluster.initial_cluster_for(me.id, &o.node_name),
                    move_aside: l.data_dir_exists
                        && l.member_env.as_ref().and_then(|e| e.member_id) != Some(me.id),
                };
            }
            if let Err(reason) = check_promotion(&cluster.members, me.id) {
                return Step::Blocked(reason);
            }
            Step::Promote { id: me.id }
        }
        Some(me) => {
            if !l.member_unit_active {
                if l.member_env.is_some() {
                    return Step::StartMember;
                }
                if o.in_initial_cluster && !l.bootstrapped && !me.is_started() {
                    // The cluster was bootstrapped by its other initial
                    // members and waits for this one.
                    return Step::BootstrapMember;
                }
                if l.data_dir_exists {
                    return Step::Blocked(format!(
                        "member {:x} with this node's peer URL exists and a data dir is present, but this node has no member environment; move {} aside by hand if it is stale",
                        me.id, "the data dir"
                    ));
                }
                return Step::Wait(format!(
                    "member {:x} with this node's peer URL has not started yet",
                    me.id
                ));
            }
            if !l.member_serves_localhost() || l.proxy_unit_active {
                return Step::ServeLocalhostFromMember { id: me.id };
            }
            if o.lock == LockView::Mine {
                return Step::ReleaseLock;
            }
            Step::Converged
        }
    }
}

fn plan_proxy(o: &Observation) -> Step {
    let Some(cluster) = &o.cluster else {
        return plan_unreachable(o);
    };
    let l = &o.local;
    match o.me() {
        Some(me) if !me.is_learner => {
            if let Err(reason) = check_removal(&cluster.members, me.id, Some(o.min_voters)) {
                return Step::Blocked(reason);
            }
            if o.lock != LockView::Mine {
                return lock_step(o);
            }
            if cluster.leader == Some(me.id) {
                let to = cluster
                    .members
                    .iter()
                    .filter(|m| !m.is_learner && m.id != me.id && m.is_started())
                    .find(|m| m.healthy == Some(true));
                return match to {
                    Some(m) => Step::TransferLeadership {
                        from: me.id,
                        to: m.id,
                    },
                    None => Step::Blocked("no healthy voter to take leadership".into()),
                };
            }
            Step::RemoveSelf { id: me.id }
        }
        Some(me) => {
            // A learner we no longer want: removing it never touches quorum.
            if o.lock != LockView::Mine {
                return lock_step(o);
            }
            Step::RemoveSelf { id: me.id }
        }
        None => {
            if l.member_unit_active {
                return Step::StopMember;
            }
            let endpoints = cluster.proxy_endpoints();
            if !l.proxy_unit_active {
                return Step::StartProxy { endpoints };
            }
            if l.data_dir_exists || l.member_env.is_some() {
                return Step::MoveDataDirAside;
            }
            if !endpoints.is_empty() && l.proxy_endpoints != endpoints {
                return Step::UpdateProxy { endpoints };
            }
            if o.lock == LockView::Mine {
                return Step::ReleaseLock;
            }
            Step::Converged
        }
    }
}

fn lock_step(o: &Observation) -> Step {
    match &o.lock {
        LockView::Other(owner) => Step::Wait(format!("membership lock is held by node {owner}")),
        _ => Step::AcquireLock,
    }
}

#[cfg(test)]
mod tests;
