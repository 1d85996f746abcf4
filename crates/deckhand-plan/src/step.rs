//! The steps the agent can take: one per planner decision.

use std::fmt;

/// The next step. Each is idempotent: taking it twice, or after a crash
/// half-way, is safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do: the node runs its target role.
    Converged,
    /// Waiting on something outside this node; the reason in words.
    Wait(String),
    /// Refused: going on would break a safety rule; the reason in words.
    Blocked(String),
    /// First boot of a node named in the initial cluster: write the member
    /// environment with state `new` and start the member.
    BootstrapMember,
    /// Start the member from its existing environment.
    StartMember,
    /// Write the proxy environment with these endpoints and start the proxy.
    StartProxy {
        /// Voter client URLs.
        endpoints: Vec<String>,
    },
    /// Rewrite the proxy environment and restart the proxy: the voter set changed.
    UpdateProxy {
        /// Voter client URLs.
        endpoints: Vec<String>,
    },
    /// Take the cluster-wide membership lock.
    AcquireLock,
    /// Release the membership lock.
    ReleaseLock,
    /// Add this node as a learner (or reuse the learner with its peer URL).
    AddLearner,
    /// Write the member environment (state `existing`, no localhost listener)
    /// and start the member as the learner `id`.
    StartLearner {
        /// The learner's member id.
        id: u64,
        /// The `--initial-cluster` value.
        initial_cluster: String,
        /// An old data dir is in the way: move it aside first.
        move_aside: bool,
    },
    /// Promote the learner `id`, retrying while it is not in sync.
    Promote {
        /// Member id.
        id: u64,
    },
    /// Hand `127.0.0.1:2379` from the proxy to the member: rewrite the
    /// member environment with the localhost listener, stop the proxy,
    /// restart the member.
    ServeLocalhostFromMember {
        /// This node's member id.
        id: u64,
    },
    /// Move raft leadership away from this node before it leaves.
    TransferLeadership {
        /// This node's member id (the leader).
        from: u64,
        /// The voter to take over.
        to: u64,
    },
    /// Remove this node's member through another member.
    RemoveSelf {
        /// Member id.
        id: u64,
    },
    /// Remove another member (a stale learner, or an entry left over from an
    /// earlier life of this host).
    RemoveMember {
        /// Member id.
        id: u64,
        /// Why, in words.
        why: String,
    },
    /// Stop the member unit.
    StopMember,
    /// Rename the member data dir aside (never delete it) and drop the
    /// member environment.
    MoveDataDirAside,
    /// The local member is not the member the cluster knows (another
    /// cluster's data dir, a removed member): stop it, move its data dir
    /// and environment aside (never delete them), so that the proxy serves
    /// `localhost:2379` and the node rejoins as its role says.
    QuarantineMember {
        /// Why, in words ([`crate::identity::Mismatch`]).
        reason: String,
    },
    /// Record the confirmed member's identity in its environment file
    /// (`DECKHAND_MEMBER_ID`, `DECKHAND_CLUSTER_ID`): what the member
    /// unit's start check compares with when no other voter answers.
    RecordMemberIdentity {
        /// Member id.
        member_id: u64,
        /// Cluster id.
        cluster_id: u64,
    },
}

impl Step {
    /// The step's kind in kebab case (`add-learner`, `remove-self`, ...):
    /// stable names for logs and failpoints.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Converged => "converged",
            Step::Wait(_) => "wait",
            Step::Blocked(_) => "blocked",
            Step::BootstrapMember => "bootstrap-member",
            Step::StartMember => "start-member",
            Step::StartProxy { .. } => "start-proxy",
            Step::UpdateProxy { .. } => "update-proxy",
            Step::AcquireLock => "acquire-lock",
            Step::ReleaseLock => "release-lock",
            Step::AddLearner => "add-learner",
            Step::StartLearner { .. } => "start-learner",
            Step::Promote { .. } => "promote",
            Step::ServeLocalhostFromMember { .. } => "serve-localhost-from-member",
            Step::TransferLeadership { .. } => "transfer-leadership",
            Step::RemoveSelf { .. } => "remove-self",
            Step::RemoveMember { .. } => "remove-member",
            Step::StopMember => "stop-member",
            Step::MoveDataDirAside => "move-data-dir-aside",
            Step::QuarantineMember { .. } => "quarantine-member",
            Step::RecordMemberIdentity { .. } => "record-member-identity",
        }
    }

    /// The kinds of the steps that change something, in the order the two
    /// transitions take them: every failpoint is `before-<kind>` or
    /// `after-<kind>` of one of these. The identity steps
    /// (`quarantine-member`, `record-member-identity`) have their failpoints
    /// too but are left out here: no role change reaches them, so the fault
    /// schedule (`integration/src/faults`) does not draw them.
    pub const ACTING_KINDS: [&'static str; 15] = [
        "bootstrap-member",
        "start-member",
        "start-proxy",
        "update-proxy",
        "acquire-lock",
        "add-learner",
        "start-learner",
        "promote",
        "serve-localhost-from-member",
        "release-lock",
        "transfer-leadership",
        "remove-self",
        "remove-member",
        "stop-member",
        "move-data-dir-aside",
    ];

    /// A step that changes nothing (converged, waiting, blocked).
    pub fn is_idle(&self) -> bool {
        matches!(self, Step::Converged | Step::Wait(_) | Step::Blocked(_))
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Converged => write!(f, "converged"),
            Step::Wait(r) => write!(f, "waiting: {r}"),
            Step::Blocked(r) => write!(f, "blocked: {r}"),
            Step::BootstrapMember => write!(f, "bootstrapping a new cluster as a member"),
            Step::StartMember => write!(f, "starting the member"),
            Step::StartProxy { endpoints } => {
                write!(f, "starting the proxy to {}", endpoints.join(","))
            }
            Step::UpdateProxy { endpoints } => {
                write!(f, "pointing the proxy at {}", endpoints.join(","))
            }
            Step::AcquireLock => write!(f, "taking the membership lock"),
            Step::ReleaseLock => write!(f, "releasing the membership lock"),
            Step::AddLearner => write!(f, "adding this node as a learner"),
            Step::StartLearner { id, .. } => write!(f, "starting learner {id:x}"),
            Step::Promote { id } => write!(f, "promoting learner {id:x}"),
            Step::ServeLocalhostFromMember { .. } => {
                write!(f, "handing localhost:2379 from the proxy to the member")
            }
            Step::TransferLeadership { to, .. } => write!(f, "moving leadership to {to:x}"),
            Step::RemoveSelf { id } => write!(f, "removing member {id:x}"),
            Step::RemoveMember { id, why } => write!(f, "removing member {id:x}: {why}"),
            Step::StopMember => write!(f, "stopping the member"),
            Step::MoveDataDirAside => write!(f, "moving the member data dir aside"),
            Step::QuarantineMember { reason } => {
                write!(f, "quarantining the local member: {reason}")
            }
            Step::RecordMemberIdentity {
                member_id,
                cluster_id,
            } => write!(
                f,
                "recording member {member_id:x} of cluster {cluster_id:x} as confirmed"
            ),
        }
    }
}
