//! Voters in trouble, watched by one agent: the one whose member is the
//! raft leader. Every [`VOTER_CHECK_EVERY`] it asks every voter for its
//! status, matches the voters' peer URLs against the deckhand nodes'
//! addresses, and keeps the troubles ([`deckhand_plan::voter_troubles`])
//! with the time it first saw each (`since`, this node's wall clock, for
//! display). The list changes only when a trouble appears or goes, so it
//! adds no periodic status writes. Every other agent reports none.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use deckhand_etcd::Member;
use deckhand_model::{VoterProblem, VoterTrouble};
use deckhand_plan::{MemberView, Observation, voter_troubles};

use super::context::Context;
use super::observe::{HEALTH_TIMEOUT, member_views, unix_now};

/// How often the leader's agent checks the voters.
pub const VOTER_CHECK_EVERY: Duration = Duration::from_secs(10);

/// The voter watch's memory between iterations.
#[derive(Default)]
pub struct VoterWatch {
    last_check: Option<Instant>,
    /// Peer URLs of the deckhand nodes (`http://<address>:2380`, `https://`
    /// with TLS), as last
    /// read.
    node_peer_urls: Vec<String>,
    /// Troubles seen in the previous round. A voter is reported not
    /// answering, or without a deckhand node, only when two rounds in a
    /// row saw it so: a member restart is not trouble, and neither is a
    /// node that has not written its status yet (a cluster's first boot).
    previous: BTreeSet<(u64, VoterTrouble)>,
    /// The problems reported, ordered by member id.
    problems: Vec<VoterProblem>,
}

impl VoterWatch {
    /// The voters in trouble, refreshed when due: on the agent whose member
    /// leads, at most every [`VOTER_CHECK_EVERY`]; empty on every other.
    pub async fn refresh(&mut self, ctx: &Context, o: &Observation) -> &[VoterProblem] {
        let Some(cluster) = &o.cluster else {
            return &self.problems;
        };
        let leads = o
            .me()
            .is_some_and(|m| !m.is_learner && cluster.leader == Some(m.id));
        if !leads {
            if self.last_check.is_some() {
                tracing::info!("not the leader's agent: no longer watching the voters");
            }
            *self = VoterWatch::default();
            return &self.problems;
        }
        if self.last_check.is_none() {
            tracing::info!(
                "the leader's agent: watching the voters every {} s",
                VOTER_CHECK_EVERY.as_secs()
            );
        }
        if self
            .last_check
            .is_some_and(|t| t.elapsed() < VOTER_CHECK_EVERY)
        {
            return &self.problems;
        }
        self.last_check = Some(Instant::now());
        let members: Vec<Member> = cluster.members.iter().map(member_of).collect();
        let health = ctx.cluster.voter_health(&members, HEALTH_TIMEOUT).await;
        let views = member_views(&members, &health);
        let nodes = self.node_peer_urls(ctx, &views).await;
        let troubles = voter_troubles(&views, &nodes);
        let now = unix_now();
        let seen: BTreeSet<(u64, VoterTrouble)> = troubles.iter().map(|t| (t.0, t.2)).collect();
        let since: BTreeMap<(u64, VoterTrouble), u64> = self
            .problems
            .iter()
            .filter_map(|p| {
                let id = u64::from_str_radix(&p.member_id, 16).ok()?;
                Some(((id, p.trouble), p.since))
            })
            .collect();
        self.problems = troubles
            .into_iter()
            .filter(|(id, _, t)| {
                *t == VoterTrouble::NotStarted || self.previous.contains(&(*id, *t))
            })
            .map(|(id, peer_url, trouble)| VoterProblem {
                member_id: format!("{id:x}"),
                peer_url,
                trouble,
                since: since.get(&(id, trouble)).copied().unwrap_or(now),
            })
            .collect();
        self.previous = seen;
        if self.problems.len() != since.len()
            || self.problems.iter().any(|p| {
                u64::from_str_radix(&p.member_id, 16)
                    .is_ok_and(|id| !since.contains_key(&(id, p.trouble)))
            })
        {
            let words: Vec<String> = self
                .problems
                .iter()
                .map(|p| format!("{} {}: {}", p.member_id, p.peer_url, p.trouble))
                .collect();
            tracing::info!("voters in trouble: [{}]", words.join("; "));
        }
        &self.problems
    }

    /// The deckhand nodes' peer URLs from their status documents, read
    /// again only when a voter's peer URL is not among those known (so at
    /// most once a round, and only while some voter seems to have no
    /// node). A voter whose member name is a node's name (its name key,
    /// which outlives its status) counts as having a node too. When the
    /// node keys cannot be read, every voter counts as having a node: "no
    /// deckhand node" is never guessed.
    async fn node_peer_urls(&mut self, ctx: &Context, views: &[MemberView]) -> Vec<String> {
        let unknown = |urls: &[String]| -> Vec<MemberView> {
            views
                .iter()
                .filter(|m| !m.is_learner && !m.peer_urls.iter().any(|u| urls.contains(u)))
                .cloned()
                .collect()
        };
        if unknown(&self.node_peer_urls).is_empty() {
            return self.node_peer_urls.clone();
        }
        match ctx.store.nodes().await {
            Ok(nodes) => {
                self.node_peer_urls = nodes
                    .values()
                    .filter_map(|k| k.status.as_ref())
                    .filter_map(|s| s.address.parse().ok())
                    .map(|a| crate::identity::peer_url_of(a, ctx.identity.tls))
                    .collect();
                let names: Vec<String> = nodes.values().map(|k| k.display_name()).collect();
                let mut urls = self.node_peer_urls.clone();
                for m in unknown(&urls) {
                    if !m.name.is_empty() && names.contains(&m.name) {
                        urls.extend(m.peer_urls.iter().cloned());
                    }
                }
                urls
            }
            Err(e) => {
                tracing::debug!("voter watch: {e:#}");
                views.iter().flat_map(|m| m.peer_urls.clone()).collect()
            }
        }
    }
}

fn member_of(m: &MemberView) -> Member {
    Member {
        id: m.id,
        name: m.name.clone(),
        peer_urls: m.peer_urls.clone(),
        client_urls: m.client_urls.clone(),
        is_learner: m.is_learner,
    }
}
