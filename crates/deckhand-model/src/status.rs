//! The status document a node's agent writes to `<prefix>/nodes/<id>/status`,
//! attached to the node's lease: it disappears when the node stops renewing.

use serde::{Deserialize, Serialize};

use crate::firewall::FirewallStatus;
use crate::planes::UnitMode;
use crate::role::{Plane, Role};

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
    /// Per plane of this node: its units and their state. Empty when the
    /// node serves no plane.
    #[serde(default)]
    pub planes: Vec<PlaneStatus>,
    /// The images this node keeps present (preseed).
    #[serde(default)]
    pub images: ImagesStatus,
    /// The node's own checks (local etcd, Docker daemon, free disk space...),
    /// in a fixed order. A check's document changes only when its outcome
    /// does, so checks add no periodic writes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
    /// Voters this agent sees in trouble (not started, not answering, no
    /// deckhand node behind them), each with when this agent first saw it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voter_problems: Vec<VoterProblem>,
    /// The node's TLS certificate (`tls.cert_file`), when TLS is on: what
    /// `deckhand status` and `doctor` show the days left of. Absent on a
    /// plaintext node and from agents that predate TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateStatus>,
    /// The TLS stage this node's agent has applied (`certs`: its etcd has
    /// the certificate files but still listens plaintext; `https`: every
    /// hop between hosts is TLS), written while `deckhand tls enable` runs
    /// and after; absent on a plaintext node that never took part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_stage: Option<String>,
    /// The host firewall on this node (`docs/firewall.md`); all false when
    /// the agent predates it.
    #[serde(default)]
    pub firewall: FirewallStatus,
    /// Where the agent serves `/metrics` (`[metrics] listen`, e.g.
    /// `0.0.0.0:7479`); absent when it is off, and from agents that
    /// predate it. `doctor`'s clock check reads `deckhand_node_time_seconds`
    /// there, on the node's address with this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
}

/// A certificate as its node's agent last read it from disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateStatus {
    /// The end of its validity, seconds since the Unix epoch (UTC).
    pub not_after_unix: u64,
    /// Its subject's common name (`node:<name>` for a node certificate);
    /// empty when it has none.
    #[serde(default)]
    pub common_name: String,
    /// The agent's renewal of it through etcd, in words, while one is under
    /// way or was refused ("refused by node1: ..."); `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal: Option<String>,
}

impl CertificateStatus {
    /// Whole days left at `now_unix` (seconds since the epoch), rounded
    /// down; negative once expired (-1 on the first day after).
    pub fn days_left(&self, now_unix: u64) -> i64 {
        (self.not_after_unix as i64 - now_unix as i64).div_euclid(86_400)
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckState {
    /// Nothing wrong.
    Pass,
    /// Works, but something needs attention soon.
    Warn,
    /// Broken, or the check could not run (its detail says which).
    Fail,
}

impl std::fmt::Display for CheckState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CheckState::Pass => "pass",
            CheckState::Warn => "warn",
            CheckState::Fail => "fail",
        })
    }
}

/// One check of a node, as its agent last ran it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// A stable, kebab-case name (`local-etcd`, `docker`, `disk-docker`,
    /// `disk-etcd`, ...).
    pub name: String,
    /// Pass, warn or fail.
    pub state: CheckState,
    /// What it saw and, unless it passed, what to do, in words. Holds no
    /// value that drifts while the outcome stays the same (no byte counts
    /// of a passing disk check), so the document is not rewritten for it.
    pub detail: String,
}

/// What is wrong with a voter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VoterTrouble {
    /// Added to the member list but never started (no name, no client URLs).
    NotStarted,
    /// Started once, but its client URL does not answer.
    NotAnswering,
    /// No deckhand node's address matches its peer URL.
    NoNode,
}

impl std::fmt::Display for VoterTrouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VoterTrouble::NotStarted => "not started",
            VoterTrouble::NotAnswering => "not answering",
            VoterTrouble::NoNode => "no deckhand node",
        })
    }
}

/// A voter in trouble, as one agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterProblem {
    /// The member id, hex.
    pub member_id: String,
    /// Its first peer URL.
    pub peer_url: String,
    /// What is wrong.
    pub trouble: VoterTrouble,
    /// When this agent first saw it, Unix seconds on this node's wall clock.
    /// For display only ("for 3 min"): no decision compares it with another
    /// node's clock; decisions use the judging agent's monotonic clock.
    pub since: u64,
}

/// One plane of a node, as its agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaneStatus {
    /// The plane.
    pub plane: Plane,
    /// Its units, in config order.
    pub units: Vec<UnitStatus>,
}

/// One unit of a plane on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitStatus {
    /// The systemd unit name.
    pub name: String,
    /// `global` or `singleton`.
    pub mode: UnitMode,
    /// The unit's systemd `ActiveState` on this node (`active`, `inactive`,
    /// `failed`, `activating`, ...), or `not-found` when no unit file exists.
    pub state: String,
    /// For a singleton: the name of the node that holds it (leads its
    /// election), if any node does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// For a singleton: why this node resigned its candidacy (its Docker
    /// daemon does not answer, or the unit failed to start or stay up here
    /// several times in a row; another node takes the unit over), or holds
    /// it although unhealthy (no other node is a candidate). Absent when
    /// healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidacy: Option<String>,
}

/// The images a node keeps present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagesStatus {
    /// How many images the node wants present.
    pub wanted: usize,
    /// How many of them are present in the local Docker.
    pub present: usize,
    /// The images being pulled now.
    #[serde(default)]
    pub pulling: Vec<String>,
    /// The images whose last pull failed, with the reason.
    #[serde(default)]
    pub failed: Vec<ImageFailure>,
}

/// An image that could not be pulled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFailure {
    /// The image reference.
    pub image: String,
    /// Why, in words (e.g. the registry's answer, "no progress for 60 s",
    /// "not enough free disk space").
    pub reason: String,
}

#[cfg(test)]
mod certificate_tests {
    use super::*;

    #[test]
    fn days_left_round_down_and_go_negative() {
        let c = CertificateStatus {
            not_after_unix: 10 * 86_400,
            common_name: "node:n1".into(),
            renewal: None,
        };
        assert_eq!(c.days_left(0), 10);
        assert_eq!(c.days_left(86_400 + 1), 8);
        assert_eq!(c.days_left(10 * 86_400), 0);
        assert_eq!(c.days_left(10 * 86_400 + 1), -1);
    }

    #[test]
    fn an_old_status_without_certificate_parses() {
        let json = r#"{"not_after_unix": 5}"#;
        let c: CertificateStatus = serde_json::from_str(json).unwrap();
        assert_eq!(c.common_name, "");
    }
}
