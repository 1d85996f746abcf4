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
/// How often, at most, the node keys are read again to learn the deckhand
/// nodes' peer URLs when a voter's is not among those known.
const NODES_REREAD_EVERY: Duration = Duration::from_secs(60);

/// The voter watch's memory between iterations.
#[derive(Default)]
pub struct VoterWatch {
    last_check: Option<Instant>,
    /// Peer URLs of the deckhand nodes (`http://<address>:2380`), and when
    /// they were read.
    node_peer_urls: Option<(Vec<String>, Instant)>,
    /// Troubles seen in the previous round (a voter reported not answering
    /// only when it did not answer two rounds in a row: a member restart
    /// is not trouble).
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
            *self = VoterWatch::default();
            return &self.problems;
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
                *t != VoterTrouble::NotAnswering || self.previous.contains(&(*id, *t))
            })
            .map(|(id, peer_url, trouble)| VoterProblem {
                member_id: format!("{id:x}"),
                peer_url,
                trouble,
                since: since.get(&(id, trouble)).copied().unwrap_or(now),
            })
            .collect();
        self.previous = seen;
        &self.problems
    }

    /// The deckhand nodes' peer URLs from their status documents, read
    /// again only when a voter's peer URL is not among those known (and at
    /// most every [`NODES_REREAD_EVERY`]). When they cannot be read, every
    /// voter counts as having a node: "no deckhand node" is never guessed.
    async fn node_peer_urls(&mut self, ctx: &Context, views: &[MemberView]) -> Vec<String> {
        let known = |urls: &[String]| {
            views
                .iter()
                .filter(|m| !m.is_learner)
                .all(|m| m.peer_urls.iter().any(|u| urls.contains(u)))
        };
        match &self.node_peer_urls {
            Some((urls, at)) if known(urls) || at.elapsed() < NODES_REREAD_EVERY => {
                return urls.clone();
            }
            _ => {}
        }
        match ctx.store.nodes().await {
            Ok(nodes) => {
                let urls: Vec<String> = nodes
                    .values()
                    .filter_map(|k| k.status.as_ref())
                    .filter_map(|s| s.address.parse().ok())
                    .map(crate::identity::peer_url_of)
                    .collect();
                self.node_peer_urls = Some((urls.clone(), Instant::now()));
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
