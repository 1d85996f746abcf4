//! What the agent observed, as plain data: the input of the planner.

use std::collections::BTreeMap;

use deckhand_model::Role;

/// Everything the planner decides from. Built by the agent each iteration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// This node's etcd member name (its hostname).
    pub node_name: String,
    /// This node's peer URL, e.g. `http://10.0.0.5:2380`; it identifies the
    /// node's entry in the member list.
    pub peer_url: String,
    /// The last valid desired role; `None` while the role key is absent.
    pub desired: Option<Role>,
    /// Whether the node is named in the configured initial cluster.
    pub in_initial_cluster: bool,
    /// The configured endpoints: where a proxy points before any member list
    /// has been read.
    pub config_endpoints: Vec<String>,
    /// The cluster config's `min_voters`.
    pub min_voters: usize,
    /// Local units and files.
    pub local: LocalView,
    /// The member list from a real member; `None` when no voter answered.
    pub cluster: Option<ClusterView>,
    /// The membership lock.
    pub lock: LockView,
    /// The cluster config's `learner_timeout_seconds`.
    pub learner_timeout: u64,
    /// The cluster config's `voter_start_timeout_seconds`.
    pub voter_start_timeout: u64,
    /// Members this agent has seen pending, by member id: learners, and
    /// voters that have not started. Bounds are judged on these sightings
    /// (see [`Sighting`]), never on another node's clock.
    pub pending: BTreeMap<u64, Sighting>,
    /// Voters this agent has seen not answering its health checks, by
    /// member id (empty when it did not check).
    pub down: BTreeMap<u64, Sighting>,
    /// The local member's identity against the cluster's
    /// ([`crate::identity`]).
    pub identity: crate::identity::IdentityView,
}

impl Observation {
    /// This node's entry in the member list, matched by peer URL (its
    /// host and port: the scheme changes when `deckhand tls enable` turns
    /// TLS on, one member at a time).
    pub fn me(&self) -> Option<&MemberView> {
        self.cluster
            .as_ref()?
            .members
            .iter()
            .find(|m| m.peer_urls.iter().any(|u| same_peer_url(u, &self.peer_url)))
    }
}

/// Two peer URLs name the same listener: the same host and port, whatever
/// the scheme (`http://` or `https://`) and a trailing `/`.
pub fn same_peer_url(a: &str, b: &str) -> bool {
    let strip = |u: &str| {
        u.split_once("://")
            .map_or(u, |(_, rest)| rest)
            .trim_end_matches('/')
            .to_string()
    };
    strip(a) == strip(b)
}

/// When this agent first saw a fact (a member pending, a voter down), on
/// two clocks.
///
/// Every bound that more than one node judges (the learner timeout, the
/// unstarted-voter timeout) is measured by `for_secs`, on the judging
/// agent's own monotonic clock (`std::time::Instant`): a wall clock that is
/// off or stepped by NTP changes nothing, and an agent that restarts starts
/// counting again, so it only ever waits longer, never reaps early.
/// `at_unix` is for display only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sighting {
    /// Seconds since the first sighting, on this agent's monotonic clock.
    pub for_secs: u64,
    /// The first sighting on this node's wall clock, Unix seconds; frozen
    /// (so a status that shows it does not change every second) and never
    /// fed into a decision.
    pub at_unix: u64,
}

impl Sighting {
    /// `at_unix` as an HTTP date, e.g. `Wed, 02 Dec 2026 03:50:45 GMT`.
    pub fn at_utc(&self) -> String {
        utc(self.at_unix)
    }
}

/// Unix seconds as an HTTP date (`Wed, 02 Dec 2026 03:50:45 GMT`, RFC 9110
/// §5.6.7), by the `httpdate` crate already in the tree through hyper.
pub fn utc(unix: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
}

/// The local side: units and files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalView {
    /// The member unit is active (or activating).
    pub member_unit_active: bool,
    /// The proxy unit is active (or activating).
    pub proxy_unit_active: bool,
    /// The member's environment file, when present.
    pub member_env: Option<MemberEnvView>,
    /// The endpoints in the proxy's environment file, sorted; empty if none.
    pub proxy_endpoints: Vec<String>,
    /// The member data dir exists.
    pub data_dir_exists: bool,
    /// This node has bootstrapped (as a member of the initial cluster or
    /// otherwise) before: never bootstrap a new cluster twice.
    pub bootstrapped: bool,
}

impl LocalView {
    /// The member's environment makes it listen on `127.0.0.1:2379`.
    pub fn member_serves_localhost(&self) -> bool {
        self.member_env.as_ref().is_some_and(|e| e.serves_localhost)
    }
}

/// What the agent wrote into the member's environment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberEnvView {
    /// The member id it was written for, if known (not for a bootstrap).
    pub member_id: Option<u64>,
    /// It lists `127.0.0.1:2379` among the client listen URLs.
    pub serves_localhost: bool,
}

/// The member list and leader, read from a real member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// Every member, voters and learners.
    pub members: Vec<MemberView>,
    /// The raft leader's member id, when known.
    pub leader: Option<u64>,
}

impl ClusterView {
    /// Client URLs of the started voters, sorted and deduplicated: where a
    /// proxy should point.
    pub fn voter_client_urls(&self) -> Vec<String> {
        let mut urls: Vec<String> = self
            .members
            .iter()
            .filter(|m| !m.is_learner && m.is_started())
            .flat_map(|m| m.client_urls.iter().cloned())
            .collect();
        urls.sort();
        urls.dedup();
        urls
    }

    /// Where a proxy should point: the client URLs of the started voters not
    /// known to be unhealthy (a partitioned voter would time out about every
    /// other request the proxy balances to it), or of all started voters when
    /// none is known healthy. Sorted and deduplicated.
    pub fn proxy_endpoints(&self) -> Vec<String> {
        let pick = |m: &&MemberView| !m.is_learner && m.is_started() && m.healthy != Some(false);
        let mut urls: Vec<String> = self
            .members
            .iter()
            .filter(pick)
            .flat_map(|m| m.client_urls.iter().cloned())
            .collect();
        if urls.is_empty() {
            return self.voter_client_urls();
        }
        urls.sort();
        urls.dedup();
        urls
    }

    /// The `--initial-cluster` value a joining member `me` must start with:
    /// every member's name and peer URLs. Members that have not started yet
    /// have no name, so they get `m<id hex>` (etcd matches peer URLs, and only
    /// uses the name to find the local member).
    pub fn initial_cluster_for(&self, me: u64, my_name: &str) -> String {
        let mut parts = Vec::new();
        for m in &self.members {
            let name = if m.id == me {
                my_name.to_string()
            } else if m.name.is_empty() {
                format!("m{:x}", m.id)
            } else {
                m.name.clone()
            };
            for url in &m.peer_urls {
                parts.push(format!("{name}={url}"));
            }
        }
        parts.join(",")
    }
}

/// One member, with its health where it was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Member id.
    pub id: u64,
    /// Member name; empty until the member has started and published it.
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs; empty until started.
    pub client_urls: Vec<String>,
    /// A learner (non-voting).
    pub is_learner: bool,
    /// `Some(true)` when its endpoint answered a status request with a
    /// leader; `Some(false)` when it did not; `None` when not checked.
    pub healthy: Option<bool>,
}

impl MemberView {
    /// The member has started: it has published its client URLs. (Members
    /// of a bootstrap's initial cluster carry their names before they start;
    /// members added at runtime get a name only once started.)
    pub fn is_started(&self) -> bool {
        !self.client_urls.is_empty()
    }

    /// Its name, or `(unstarted)`.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            "(unstarted)"
        } else {
            &self.name
        }
    }
}

/// The cluster-wide membership lock, as seen by this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockView {
    /// Nobody holds it (or it could not be read).
    Free,
    /// This node holds it.
    Mine,
    /// Another node holds it; its node id.
    Other(String),
}
