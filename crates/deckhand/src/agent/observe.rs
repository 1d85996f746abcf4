//! The observation: everything the planner decides on, read fresh each
//! iteration — the local units and files (D-Bus, disk), the member list
//! from a real member, the leader, the voters' health, the membership lock,
//! and this agent's first sightings of pending members and down voters (on
//! its monotonic clock).
//!
//! The voters' health comes from the reports the voters publish
//! ([`super::voter_health`], read through a watch), so that a voter's load
//! does not grow with the number of nodes. Only a node whose own
//! membership change is pending ([`needs_direct_health`]) asks every voter
//! itself, once per pass while the change is pending: the planner's quorum
//! rules for that change then rest on answers of this instant, not on a
//! report up to [`super::voter_health::REPORT_TTL`] old.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use deckhand_etcd::{Cluster, Member};
use deckhand_plan::{ClusterView, LockView, MemberView, Observation, Sighting};

/// Sightings by member id.
type Sightings = std::collections::BTreeMap<u64, Sighting>;

use super::context::Context;
use super::desired::Desired;
use super::sightings::FirstSeen;

/// Timeout of one health check of a voter (also the replacer's).
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a steady proxy reuses its member list while no voter's report
/// changed (a bounded refresh: URL changes reach it within this).
pub const MEMBER_LIST_EVERY: Duration = Duration::from_secs(60);
/// Timeout of one status request while looking for the leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(1);

/// Now, in Unix seconds on this node's wall clock: for display only (when
/// a fact was first seen), never compared with another node's clock nor fed
/// into a decision.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The planner's view of `members`, with the health of those in `health`
/// (member id, healthy) and unknown health for the others.
pub fn member_views(members: &[Member], health: &[(u64, bool)]) -> Vec<MemberView> {
    members
        .iter()
        .map(|m| MemberView {
            id: m.id,
            name: m.name.clone(),
            peer_urls: m.peer_urls.clone(),
            client_urls: m.client_urls.clone(),
            is_learner: m.is_learner,
            healthy: health.iter().find(|(id, _)| *id == m.id).map(|(_, h)| *h),
        })
        .collect()
}

/// Damps failed health checks: counts consecutive failures per member id
/// in `streak` and, when `damp`, reports a voter's first failure as unknown
/// health rather than unhealthy. A proxy drops a voter from its endpoints
/// only after two failed checks in a row, so a member's restart does not
/// bounce every proxy twice. Members no longer listed are forgotten.
pub fn damp_health(views: &mut [MemberView], streak: &mut HashMap<u64, u32>, damp: bool) {
    streak.retain(|id, _| views.iter().any(|m| m.id == *id));
    for v in views {
        let count = streak.entry(v.id).or_default();
        if v.healthy == Some(false) {
            *count += 1;
            if damp && *count < 2 {
                v.healthy = None;
            }
        } else {
            *count = 0;
        }
    }
}

/// Whether this node must ask every voter for its health itself rather
/// than read the published reports: while a membership change of its own
/// is pending, the planner's quorum rules ([`deckhand_plan::check_removal`],
/// [`deckhand_plan::check_promotion`], [`deckhand_plan::add_refusal`],
/// [`deckhand_plan::unstarted_voter`], [`deckhand_plan::stale_self_entries`])
/// decide on it. `me`: this node's entry in the member list; `wants_proxy`:
/// its role key asks for a proxy; `namesake`: another entry bears this
/// node's name; `lost_data`: no member env, data dir or running member;
/// `unstarted`: some voter never started.
///
/// A steady proxy (no entry, role proxy) and a converged member never need
/// it: the first uses health only to choose its endpoints, the second not
/// at all.
pub fn needs_direct_health(
    me: Option<&Member>,
    wants_proxy: bool,
    namesake: bool,
    lost_data: bool,
    unstarted: bool,
) -> bool {
    let joiner = me.is_none() && !wants_proxy;
    let voter = me.is_some_and(|m| !m.is_learner);
    namesake
        || joiner
        || me.is_some_and(|m| m.is_learner)
        || (voter && (wants_proxy || lost_data))
        // Removed by voters and joiners only (`housekeeping`).
        || (unstarted && (voter || joiner))
}

/// A member list a steady proxy may reuse: it names neither this node (by
/// `peer_url` or `name`: a change of this node's is then pending) nor a
/// voter that never started (voters and joiners remove those).
pub fn list_reusable(members: &[Member], peer_url: &str, name: &str) -> bool {
    !members
        .iter()
        .any(|m| m.has_peer_url(peer_url) || m.name == name || (!m.is_learner && !m.is_started()))
}

/// The observer's memory between iterations.
#[derive(Default)]
pub struct Observer {
    /// The voters' published health reports (fed by the watch).
    pub reports: super::voter_health::Reports,
    /// Publishes this node's own voter's health (started on first use).
    publisher: Option<super::voter_health::Publisher>,
    /// The last member list read, when, and the reports' generation then.
    listed: Option<(Vec<Member>, Instant, u64)>,
    /// The last lock view.
    last_lock: Option<LockView>,
    /// This pass's answer of the node's own member to `Status` (`Some(None)`:
    /// asked, no answer), when it was asked.
    own_status: Option<Option<deckhand_etcd::EndpointStatus>>,
    /// Consecutive failed health checks per voter (member id → count).
    unhealthy_streak: HashMap<u64, u32>,
    /// Members first seen pending: learners, and voters not started.
    pending: FirstSeen,
    /// Voters first seen not answering a health check.
    down: FirstSeen,
}

impl Observer {
    /// One observation.
    ///
    /// # Errors
    /// The local unit states could not be read over D-Bus. An etcd that does
    /// not answer is not an error: the observation then has no cluster.
    pub async fn observe(&mut self, ctx: &Context, desired: &Desired) -> Result<Observation> {
        let local = ctx
            .local
            .observe()
            .await
            .context("reading local unit states over D-Bus")?;
        // A steady proxy reuses its last member list and lock view while
        // no voter's report changed (see `steady_proxy`).
        let steady = self.steady_proxy(ctx, desired, &local);
        let members = match &steady {
            Some(members) => Some(members.clone()),
            // No outer timeout: each attempt is bounded, and the list moves
            // on to the next member when one does not answer.
            None => match ctx.cluster.member_list().await {
                Ok(m) if !m.is_empty() => {
                    self.listed = Some((m.clone(), Instant::now(), self.reports.generation()));
                    Some(m)
                }
                Ok(_) => None,
                Err(e) => {
                    tracing::debug!("member list failed: {e}");
                    None
                }
            },
        };
        if members.is_none() {
            self.listed = None;
        }
        let me_peer = ctx.identity.peer_url();
        let cluster = match &members {
            Some(members) => {
                let me = members.iter().find(|m| m.has_peer_url(&me_peer));
                let lost_data = !local.member_unit_active
                    && local.member_env.is_none()
                    && !local.data_dir_exists;
                let namesake = members
                    .iter()
                    .any(|m| m.name == ctx.identity.name && !m.has_peer_url(&me_peer));
                // Proxies point only at healthy voters: the published
                // reports tell them. A node changing membership asks the
                // voters itself (a voter that never started is removed
                // only when the others are known healthy).
                let unstarted = members.iter().any(|m| !m.is_learner && !m.is_started());
                let need_health =
                    needs_direct_health(me, desired.wants_proxy(), namesake, lost_data, unstarted);
                let view = self.cluster_view(ctx, members, need_health).await;
                self.publish(ctx, me, local.member_unit_active);
                Some(view)
            }
            None => None,
        };
        let lock = match (&cluster, steady) {
            (Some(_), Some(_)) => self.last_lock.clone().unwrap_or(LockView::Free),
            (Some(_), None) => lock_view(ctx).await,
            (None, _) => LockView::Free,
        };
        self.last_lock = Some(lock.clone());
        // Without a member list nothing is known: the sightings are kept
        // (forgetting them would only make the bounds longer).
        let (pending, down) = match (&members, &cluster) {
            (Some(m), Some(c)) => self.sightings(m, c),
            _ => Default::default(),
        };
        let voter_urls: Vec<String> = members
            .iter()
            .flatten()
            .filter(|m| !m.is_learner)
            .flat_map(|m| m.client_urls.iter().cloned())
            .collect();
        let own = if cluster.is_some() {
            self.own_status.take()
        } else {
            None
        };
        let identity =
            super::member_identity::observe_with(ctx, &local, &voter_urls, own.as_ref()).await;
        let s = &ctx.settings;
        Ok(Observation {
            node_name: ctx.identity.name.clone(),
            peer_url: me_peer,
            desired: desired.role().cloned(),
            in_initial_cluster: s
                .initial_cluster
                .iter()
                .any(|(n, u)| *n == ctx.identity.name || *u == ctx.identity.peer_url()),
            config_endpoints: s.endpoints.clone(),
            min_voters: desired.config.min_voters,
            local,
            cluster,
            lock,
            learner_timeout: desired.config.learner_timeout_seconds,
            voter_start_timeout: desired.config.voter_start_timeout_seconds,
            pending,
            down,
            identity,
        })
    }

    /// Notes the pending members and the down voters of this observation
    /// (before damping: a voter's first failed check starts its count).
    fn sightings(&mut self, members: &[Member], view: &ClusterView) -> (Sightings, Sightings) {
        let (now, unix) = (Instant::now(), unix_now());
        let pending: Vec<u64> = members
            .iter()
            .filter(|m| m.is_learner || !m.is_started())
            .map(|m| m.id)
            .collect();
        let down: Vec<u64> = view
            .members
            .iter()
            .filter(|v| !v.is_learner && self.unhealthy_streak.get(&v.id).is_some_and(|n| *n > 0))
            .map(|v| v.id)
            .collect();
        (
            self.pending.see(&pending, now, unix),
            self.down.see(&down, now, unix),
        )
    }

    /// The last member list, when this node is a steady proxy that may
    /// reuse it instead of asking a voter again: its role key asks for a
    /// proxy, the proxy runs and nothing of a member is left on the node;
    /// the list was read less than [`MEMBER_LIST_EVERY`] ago, no voter's
    /// health report changed since (a voter added, removed, restarted or
    /// gone changes its report, so the list is read again at once), it does
    /// not name this node (by peer URL or name) nor a voter that never
    /// started, and this agent did not hold the membership lock. The
    /// planner's steps for such a node ([`deckhand_plan::plan`], a proxy
    /// outside the member list) use the list only for the proxy's
    /// endpoints, and never the lock but to release it.
    fn steady_proxy(
        &self,
        ctx: &Context,
        desired: &Desired,
        local: &deckhand_plan::LocalView,
    ) -> Option<Vec<Member>> {
        let (members, at, generation) = self.listed.as_ref()?;
        let steady = desired.wants_proxy()
            && local.proxy_unit_active
            && !local.member_unit_active
            && local.member_env.is_none()
            && !local.data_dir_exists
            && self.reports.known()
            && *generation == self.reports.generation()
            && at.elapsed() < MEMBER_LIST_EVERY
            && self
                .last_lock
                .as_ref()
                .is_some_and(|l| *l != LockView::Mine)
            && list_reusable(members, &ctx.identity.peer_url(), &ctx.identity.name);
        steady.then(|| members.clone())
    }

    /// Tells the publisher whether this node runs a started voter (its
    /// member unit active): it then reports that voter's health.
    fn publish(&mut self, ctx: &Context, me: Option<&Member>, member_active: bool) {
        let publisher = self.publisher.get_or_insert_with(|| {
            super::voter_health::Publisher::spawn(
                ctx.store.clone(),
                ctx.identity.name.clone(),
                ctx.identity.client_url(),
                ctx.cluster.tls().cloned(),
            )
        });
        let voter = me.filter(|m| !m.is_learner && m.is_started() && member_active);
        publisher.set(voter.map(|m| (m.id, m.client_urls.clone())));
        if voter.is_some()
            && let Some(answer) = &self.own_status
        {
            publisher.sample(answer.clone());
        }
    }

    async fn cluster_view(
        &mut self,
        ctx: &Context,
        members: &[Member],
        need_health: bool,
    ) -> ClusterView {
        let in_list = members
            .iter()
            .any(|m| m.has_peer_url(&ctx.identity.peer_url()));
        // A node outside the member list that is not changing membership (a
        // proxy) takes the leader from the published reports; members and
        // nodes changing membership ask (their own member first).
        let from_reports = !in_list && !need_health && self.reports.known();
        let mut leader = None;
        let mut candidates: Vec<String> = Vec::new();
        if from_reports {
            leader = self.reports.leader(members);
        } else {
            candidates.push(ctx.identity.client_url());
            candidates.extend(
                members
                    .iter()
                    .filter(|m| !m.is_learner)
                    .flat_map(|m| m.client_urls.clone()),
            );
        }
        self.own_status = None;
        for (i, ep) in candidates.into_iter().enumerate() {
            let answer = Cluster::endpoint_status(&ep, LEADER_TIMEOUT, ctx.cluster.tls()).await;
            if i == 0 {
                // This node's own member: the one answer of this pass that
                // the identity check and the health publisher share.
                self.own_status = Some(answer.as_ref().ok().cloned());
            }
            if let Ok(st) = answer
                && st.leader != 0
                && !st.is_learner
            {
                leader = Some(st.leader);
                break;
            }
        }
        // Asked directly while a change of this node's is pending, or while
        // the reports' watch has not delivered its snapshot yet.
        let (health, direct) = match self.reports.health(members) {
            _ if need_health => (
                ctx.cluster.voter_health(members, HEALTH_TIMEOUT).await,
                true,
            ),
            Some(published) => (published, false),
            // A converged member needs none; a proxy asks until the
            // reports' snapshot arrives.
            None if in_list => (Vec::new(), false),
            None => (
                ctx.cluster.voter_health(members, HEALTH_TIMEOUT).await,
                true,
            ),
        };
        // The publisher forgives one failed check itself.
        let damp = direct && !in_list;
        let mut views = member_views(members, &health);
        damp_health(&mut views, &mut self.unhealthy_streak, damp);
        ClusterView {
            members: views,
            leader,
        }
    }
}

/// The membership lock as the planner sees it; an unreadable lock counts as
/// held by someone else (nothing that needs it is done).
async fn lock_view(ctx: &Context) -> LockView {
    match ctx.store.membership_lock_holder().await {
        Ok(None) => LockView::Free,
        Ok(Some(holder)) if holder == ctx.identity.id => LockView::Mine,
        Ok(Some(holder)) => LockView::Other(holder),
        Err(_) => {
            LockView::Other("? (the lock could not be read: localhost:2379 did not answer)".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: u64, healthy: Option<bool>) -> MemberView {
        MemberView {
            id,
            name: format!("n{id}"),
            peer_urls: vec![format!("http://10.0.0.{id}:2380")],
            client_urls: vec![format!("http://10.0.0.{id}:2379")],
            is_learner: false,
            healthy,
        }
    }

    #[test]
    fn member_views_carry_the_health_of_those_checked() {
        let m = |id: u64| Member {
            id,
            name: format!("n{id}"),
            peer_urls: vec![],
            client_urls: vec![],
            is_learner: id == 3,
        };
        let v = member_views(&[m(1), m(2), m(3)], &[(1, true), (2, false)]);
        assert_eq!(
            v.iter().map(|v| v.healthy).collect::<Vec<_>>(),
            [Some(true), Some(false), None]
        );
        assert!(v[2].is_learner);
    }

    #[test]
    fn only_a_node_changing_membership_asks_the_voters_itself() {
        let voter = Member {
            id: 1,
            name: "n1".into(),
            peer_urls: vec![],
            client_urls: vec!["http://10.0.0.1:2379".into()],
            is_learner: false,
        };
        let learner = Member {
            is_learner: true,
            ..voter.clone()
        };
        let f = needs_direct_health;
        // Steady states: a proxy, a converged member.
        assert!(
            !f(None, true, false, false, false),
            "a proxy reads the reports"
        );
        assert!(
            !f(Some(&voter), false, false, false, false),
            "a member needs none"
        );
        // A proxy does not remove unstarted voters: no direct check for it.
        assert!(!f(None, true, false, false, true));
        // Changes pending.
        assert!(f(None, false, false, false, false), "a joiner");
        assert!(f(Some(&learner), false, false, false, false), "a learner");
        assert!(
            f(Some(&voter), true, false, false, false),
            "a member to demote"
        );
        assert!(
            f(Some(&voter), false, false, true, false),
            "a member that lost its data"
        );
        assert!(f(None, true, true, false, false), "a stale namesake entry");
        assert!(
            f(Some(&voter), false, false, false, true),
            "a voter never started"
        );
    }

    #[test]
    fn a_proxy_reuses_a_list_that_names_neither_it_nor_an_unstarted_voter() {
        let m = |id: u64, name: &str, started: bool| Member {
            id,
            name: name.into(),
            peer_urls: vec![format!("http://10.0.0.{id}:2380")],
            client_urls: if started {
                vec![format!("http://10.0.0.{id}:2379")]
            } else {
                vec![]
            },
            is_learner: false,
        };
        let list = [m(1, "n1", true), m(2, "n2", true)];
        assert!(list_reusable(&list, "http://10.0.0.4:2380", "n4"));
        assert!(!list_reusable(&list, "http://10.0.0.2:2380", "n4"), "me");
        assert!(
            !list_reusable(&list, "http://10.0.0.4:2380", "n2"),
            "my name"
        );
        let mut with_unstarted = list.to_vec();
        with_unstarted.push(m(3, "", false));
        assert!(!list_reusable(
            &with_unstarted,
            "http://10.0.0.4:2380",
            "n4"
        ));
        // An unstarted learner is the joiner's business, not a proxy's.
        with_unstarted[2].is_learner = true;
        assert!(list_reusable(&with_unstarted, "http://10.0.0.4:2380", "n4"));
    }

    #[test]
    fn a_first_failure_counts_as_unknown_only_when_damped() {
        let mut streak = HashMap::new();
        let mut v = vec![view(1, Some(false)), view(2, Some(true))];
        damp_health(&mut v, &mut streak, true);
        assert_eq!(v[0].healthy, None, "one failure: unknown");
        let mut v = vec![view(1, Some(false)), view(2, Some(true))];
        damp_health(&mut v, &mut streak, true);
        assert_eq!(v[0].healthy, Some(false), "two in a row: unhealthy");
        // A success resets the streak.
        let mut v = vec![view(1, Some(true))];
        damp_health(&mut v, &mut streak, true);
        let mut v = vec![view(1, Some(false))];
        damp_health(&mut v, &mut streak, true);
        assert_eq!(v[0].healthy, None);
        // Members gone from the list are forgotten.
        assert!(!streak.contains_key(&2));
        // A member node (damp = false) sees the failure at once.
        let mut v = vec![view(7, Some(false))];
        damp_health(&mut v, &mut HashMap::new(), false);
        assert_eq!(v[0].healthy, Some(false));
    }
}
