//! The errors of this crate: each says what failed and what the operator can do.
//!
//! etcd reports most refusals as a gRPC status whose message is a fixed string
//! (`etcdserver: ...`, see
//! <https://github.com/etcd-io/etcd/blob/release-3.4/etcdserver/api/v3rpc/rpctypes/error.go>).
//! The ones the agent acts on are matched here and turned into their own
//! variants; everything else stays a [`Error::Request`] with the etcd error
//! attached.

use std::time::Duration;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in this crate.
///
/// Member ids are printed in hex, the way `etcdctl member list` prints them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The endpoint list is empty or an endpoint is not a valid URL.
    #[error(
        "cannot use etcd endpoints {endpoints:?}: {reason}; pass the client URLs of real \
         etcd members, e.g. http://10.0.0.1:2379 (https:// with TLS)"
    )]
    InvalidEndpoints {
        /// The endpoints as given.
        endpoints: Vec<String>,
        /// Why they were refused.
        reason: String,
    },

    /// An etcd request did not answer within its timeout.
    #[error(
        "etcd request `{op}` got no answer within {timeout:?}; check that the etcd members \
         in the endpoint list are running and reachable (`etcdctl endpoint status`)"
    )]
    Timeout {
        /// The request, e.g. `member_list`.
        op: &'static str,
        /// How long it waited.
        timeout: Duration,
    },

    /// etcd answered a request with an error this crate has no special meaning for.
    #[error(
        "etcd request `{op}` failed; check the etcd members' health \
         (`etcdctl endpoint status --cluster`) and their logs"
    )]
    Request {
        /// The request, e.g. `member_add`.
        op: &'static str,
        /// The error from etcd or from the transport.
        #[source]
        source: etcd_client::Error,
    },

    /// etcd refused a membership change: the voters that have been connected
    /// to the member that took the request for the last 5 seconds would not
    /// hold a quorum of the new configuration (etcd's
    /// `--strict-reconfig-check`, on by default). Happens for a few seconds
    /// after a member starts, and for as long as a voter is down.
    #[error(
        "etcd refused `{op}`: \"etcdserver: unhealthy cluster\" (not every voter has been \
         connected for the last 5 s, and the change needs them); if a member just started, \
         wait a few seconds and retry; if a voter is down, start it, or remove that voter \
         first (`etcdctl endpoint status --cluster`)"
    )]
    UnhealthyCluster {
        /// The request, e.g. `member_add`.
        op: &'static str,
    },

    /// etcd refused a membership change that would leave fewer started voters
    /// (members that have run and published their name) than a quorum of the
    /// new configuration.
    #[error(
        "etcd refused `{op}` of member {id:x}: \"etcdserver: re-configuration failed due to \
         not enough started members\"; start the voters that never started, or remove \
         them first (`etcdctl member list` shows them as unstarted)"
    )]
    NotEnoughStartedMembers {
        /// The request, e.g. `member_remove`.
        op: &'static str,
        /// The member the change was about.
        id: u64,
    },

    /// etcd 3.4 allows one learner at a time.
    #[error(
        "cannot add a learner for {peer_url}: etcd allows one learner at a time (\"etcdserver: \
         too many learner members in cluster\"); promote or remove the pending learner first"
    )]
    TooManyLearners {
        /// The peer URL of the learner that was to be added.
        peer_url: String,
    },

    /// The learner has not caught up with the leader's log yet.
    #[error(
        "cannot promote learner {id:x} yet: \"etcdserver: can only promote a learner member \
         which is in sync with leader\"; make sure its etcd process runs and retry"
    )]
    LearnerNotInSync {
        /// The learner's member id.
        id: u64,
    },

    /// The learner did not catch up within the time allowed.
    #[error(
        "learner {id:x} did not catch up with the leader within {deadline:?}; check that its \
         etcd process runs and can reach the other members on its peer URL, or remove it \
         and add it again"
    )]
    PromoteDeadline {
        /// The learner's member id.
        id: u64,
        /// How long promotion was retried.
        deadline: Duration,
    },

    /// No member with this id is in the member list.
    #[error(
        "etcd request `{op}`: member {id:x} is not in the member list (\"etcdserver: member \
         not found\"); list the members again (`etcdctl member list`) and use a current id"
    )]
    MemberNotFound {
        /// The request, e.g. `move_leader`.
        op: &'static str,
        /// The id asked for.
        id: u64,
    },

    /// Leadership can only move to a started voter.
    #[error(
        "cannot move leadership to member {id:x}: it is a learner or has not started; promote \
         it or pick a started voter"
    )]
    BadLeaderTransferee {
        /// The member id asked for.
        id: u64,
    },

    /// None of the voters asked says it is the leader (each voter's own
    /// `Status`: its leader id is its member id).
    #[error(
        "no etcd member reports a leader ({checked} voter endpoints asked); the cluster may \
         have lost quorum: check `etcdctl endpoint status --cluster`"
    )]
    NoLeader {
        /// How many endpoints were asked.
        checked: usize,
    },

    /// etcd answered with something the protocol does not allow.
    #[error("etcd answered `{op}` unexpectedly: {what}; this is a bug in deckhand or etcd")]
    Protocol {
        /// The request, e.g. `member_add`.
        op: &'static str,
        /// What was wrong with the answer.
        what: String,
    },
}

/// The gRPC status message of an etcd error, if the error is a gRPC status.
pub(crate) fn grpc_message(e: &etcd_client::Error) -> Option<&str> {
    match e {
        etcd_client::Error::GRpcStatus(status) => Some(status.message()),
        _ => None,
    }
}

/// etcd's error strings that this crate maps to its own variants
/// (etcd 3.4 `etcdserver/errors.go` and `api/v3rpc/rpctypes/error.go`).
pub(crate) mod etcd_msg {
    pub const UNHEALTHY: &str = "etcdserver: unhealthy cluster";
    pub const NOT_ENOUGH_STARTED: &str =
        "etcdserver: re-configuration failed due to not enough started members";
    pub const TOO_MANY_LEARNERS: &str = "etcdserver: too many learner members in cluster";
    pub const LEARNER_NOT_READY: &str =
        "etcdserver: can only promote a learner member which is in sync with leader";
    pub const NOT_LEARNER: &str = "etcdserver: can only promote a learner member";
    pub const MEMBER_NOT_FOUND: &str = "etcdserver: member not found";
    pub const PEER_URL_EXISTS: &str = "etcdserver: Peer URLs already exists";
    pub const MEMBER_EXISTS: &str = "etcdserver: member ID already exist";
    pub const NOT_LEADER: &str = "etcdserver: not leader";
    pub const BAD_LEADER_TRANSFEREE: &str = "etcdserver: bad leader transferee";
}

/// Runs one etcd request with a timeout, turning the answer into this crate's
/// [`Result`]. The timeout is needed on top of the client's own: with every
/// endpoint down, etcd-client's balanced channel waits for a ready endpoint
/// without bound.
pub(crate) async fn timed<T>(
    op: &'static str,
    timeout: Duration,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(Error::Timeout { op, timeout }),
        Ok(Err(source)) => Err(Error::Request { op, source }),
        Ok(Ok(v)) => Ok(v),
    }
}

/// An error and its causes, joined with `: `, for logs.
pub(crate) struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}
