//! The status document a node's agent writes to `<prefix>/nodes/<id>/status`,
//! attached to the node's lease: it disappears when the node stops renewing.

use serde::{Deserialize, Serialize};

use crate::role::Role;

/// What the local etcd is, as observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EtcdMode {
    /// A voting member.
    Member,
    /// A learner: non-voting, refuses client requests until promoted.
    Learner,
    /// An `etcd grpc-proxy` on `localhost:2379`.
    Proxy,
    /// Nothing serves `localhost:2379`.
    None,
}

impl std::fmt::Display for EtcdMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EtcdMode::Member => "member",
            EtcdMode::Learner => "learner",
            EtcdMode::Proxy => "proxy",
            EtcdMode::None => "none",
        })
    }
}

/// The local etcd as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdStatus {
    /// Member, learner, proxy or none.
    pub mode: EtcdMode,
    /// This node's etcd member id in hex, when it has one.
    pub member_id: Option<String>,
    /// Whether this node's member is the raft leader.
    pub leader: bool,
}

/// One node's status document. Rewritten only when a field changes, so it
/// carries no timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node id (`/etc/machine-id`).
    pub id: String,
    /// The node name (hostname).
    pub name: String,
    /// The address peers and clients reach this node on.
    pub address: String,
    /// The agent's version.
    pub version: String,
    /// The role the operator asked for (the last valid value), if any.
    pub desired: Option<Role>,
    /// The etcd mod revision of the role key `desired` came from; 0 if none.
    pub desired_revision: i64,
    /// The role the node runs now, as far as it has been applied.
    pub applied: Option<Role>,
    /// True when the applied role is the desired role and nothing is pending.
    pub converged: bool,
    /// The local etcd.
    pub etcd: EtcdStatus,
    /// The step the agent is taking or waiting on, in words; `None` when converged.
    pub step: Option<String>,
    /// Why the agent refuses to go on, e.g. a change that would cost quorum.
    pub blocked: Option<String>,
    /// The last error in words: a malformed role or config, a failed step.
    pub error: Option<String>,
    /// The node's failure domain (rack, zone), from its agent config.
    #[serde(default)]
    pub failure_domain: Option<String>,
    /// On the one agent that keeps the configured number of voters: what
    /// it did or waits for.
    #[serde(default)]
    pub replacer: Option<String>,
    /// Notable events this agent caused, newest last (a reaped learner, a
    /// removed stale member, a replacement), at most a few.
    #[serde(default)]
    pub events: Vec<String>,
}
