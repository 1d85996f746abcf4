//! Identity: is the local etcd member the member the cluster knows? Pure
//! decisions shared by the member unit's start check (`deckhand
//! check-member`, before etcd can bind `localhost:2379`) and the agent's
//! every-observation rule ([`identity_step`]).
//!
//! A member holds two ids that etcd never changes for the life of its data
//! dir: its member id and its cluster id (both in the header of every
//! response, <https://etcd.io/docs/v3.4/dev-guide/api_reference_v3/>
//! `ResponseHeader`, and in the first record of every WAL file). A data dir
//! from another cluster or an earlier life of the host, or a member
//! bootstrapped by hand, carries another cluster id; a member removed
//! behind deckhand's back carries an id the member list no longer holds.

use std::fmt;

use deckhand_model::EtcdRole;

use crate::{Observation, Step, target_role};

/// A member's identity: its member id and its cluster id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberIdentity {
    /// The member id (etcd's `ResponseHeader.member_id`, WAL `Metadata.NodeID`).
    pub member_id: u64,
    /// The cluster id (etcd's `ResponseHeader.cluster_id`, WAL `Metadata.ClusterID`).
    pub cluster_id: u64,
}

/// The cluster as its other voters report it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterIdentity {
    /// The cluster id most of the other voters that answered report.
    pub cluster_id: u64,
    /// Every member id in the member list, with its peer URLs, as a voter
    /// of that cluster (not the local member) lists them.
    pub members: Vec<(u64, Vec<String>)>,
}

/// What the agent recorded in the member environment file when it last
/// confirmed the member (`DECKHAND_MEMBER_ID`, `DECKHAND_CLUSTER_ID`, hex).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordedIdentity {
    /// The member id, when recorded (from `MemberAdd` for a learner, or
    /// once confirmed).
    pub member_id: Option<u64>,
    /// The cluster id, once confirmed.
    pub cluster_id: Option<u64>,
}

/// The identity part of an observation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityView {
    /// What the local member reports about itself (its `Status` response
    /// header, asked on the node's own client URL), when it answered.
    pub local: Option<MemberIdentity>,
    /// The cluster as the other voters report it, when one answered.
    pub cluster: Option<ClusterIdentity>,
    /// The identity recorded in the member environment file.
    pub recorded: RecordedIdentity,
    /// The member unit's start check refused the member's data dir: its
    /// reason in words (from the file it leaves; gone once a check passes).
    pub start_refused: Option<String>,
}

/// Why a member is not the member the cluster knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// The member belongs to another cluster.
    ForeignCluster {
        /// The local member's identity.
        local: MemberIdentity,
        /// The cluster's id, as its other voters report it.
        cluster_id: u64,
    },
    /// The cluster's member list does not hold the member's id: it was
    /// removed (or never belonged).
    NotListed {
        /// The local member's identity.
        local: MemberIdentity,
    },
    /// The member list holds the id, but with another peer URL.
    OtherPeerUrl {
        /// The local member's identity.
        local: MemberIdentity,
        /// The peer URLs listed for that id.
        listed: Vec<String>,
        /// This node's peer URL.
        mine: String,
    },
    /// The member's identity is not the one recorded when deckhand last
    /// confirmed it (checked only when no other voter answers).
    NotRecorded {
        /// The local member's identity.
        local: MemberIdentity,
        /// What was recorded.
        recorded: RecordedIdentity,
    },
}

impl Mismatch {
    /// The member's identity that failed the check.
    pub fn local(&self) -> MemberIdentity {
        match self {
            Mismatch::ForeignCluster { local, .. }
            | Mismatch::NotListed { local }
            | Mismatch::OtherPeerUrl { local, .. }
            | Mismatch::NotRecorded { local, .. } => *local,
        }
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::ForeignCluster { local, cluster_id } => write!(
                f,
                "member {:x} belongs to cluster {:x}, not to this cluster ({cluster_id:x}): its data dir is from another cluster, an earlier life of this host, or a member bootstrapped by hand",
                local.member_id, local.cluster_id
            ),
            Mismatch::NotListed { local } => write!(
                f,
                "member {:x} is not in the member list of cluster {:x}: it was removed (not by this node's agent)",
                local.member_id, local.cluster_id
            ),
            Mismatch::OtherPeerUrl {
                local,
                listed,
                mine,
            } => write!(
                f,
                "member {:x} is listed with peer URL {}, not this node's {mine}",
                local.member_id,
                listed.join(",")
            ),
            Mismatch::NotRecorded { local, recorded } => {
                let hex = |v: Option<u64>| v.map_or("?".to_string(), |v| format!("{v:x}"));
                write!(
                    f,
                    "the data dir holds member {:x} of cluster {:x}, but this node's agent last confirmed member {} of cluster {}",
                    local.member_id,
                    local.cluster_id,
                    hex(recorded.member_id),
                    hex(recorded.cluster_id)
                )
            }
        }
    }
}

/// Checks `local` against the cluster as its other voters report it: the
/// same cluster id, and the member list holds `local`'s member id with
/// `peer_url`.
///
/// # Errors
/// The [`Mismatch`] found.
pub fn check_live(
    local: MemberIdentity,
    peer_url: &str,
    cluster: &ClusterIdentity,
) -> Result<(), Mismatch> {
    if local.cluster_id != cluster.cluster_id {
        return Err(Mismatch::ForeignCluster {
            local,
            cluster_id: cluster.cluster_id,
        });
    }
    match cluster
        .members
        .iter()
        .find(|(id, _)| *id == local.member_id)
    {
        None => Err(Mismatch::NotListed { local }),
        Some((_, urls))
            if !urls
                .iter()
                .any(|u| crate::observation::same_peer_url(u, peer_url)) =>
        {
            Err(Mismatch::OtherPeerUrl {
                local,
                listed: urls.clone(),
                mine: peer_url.to_string(),
            })
        }
        Some(_) => Ok(()),
    }
}

/// Checks `local` against what the agent recorded: each recorded id must
/// match (an id not recorded is not checked).
///
/// # Errors
/// [`Mismatch::NotRecorded`].
pub fn check_recorded(local: MemberIdentity, recorded: RecordedIdentity) -> Result<(), Mismatch> {
    let member_ok = recorded.member_id.is_none_or(|id| id == local.member_id);
    let cluster_ok = recorded.cluster_id.is_none_or(|id| id == local.cluster_id);
    if member_ok && cluster_ok {
        Ok(())
    } else {
        Err(Mismatch::NotRecorded { local, recorded })
    }
}

/// What the member unit's start check decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartVerdict {
    /// Start etcd; why, in words.
    Start(String),
    /// Do not start etcd: it would serve the wrong data.
    Refuse(Mismatch),
}

/// The member unit's start check, before etcd may bind any port.
///
/// - `wal`: the identity in the data dir's WAL; `None` when there is no
///   WAL yet (a first bootstrap, a learner's fresh data dir: etcd takes
///   its identity from the cluster) or it could not be read (etcd then
///   reads it itself and refuses a corrupt one; the check never guesses).
/// - `live`: the cluster as its other voters report it, when one answered
///   within the check's bound.
/// - `recorded`: the member environment's recorded identity.
///
/// With no other voter answering (a full cold restart of every member at
/// once) the recorded identity decides, so the cluster's own restart is
/// never blocked by the check; with nothing recorded either, etcd starts.
pub fn start_verdict(
    wal: Option<MemberIdentity>,
    peer_url: &str,
    live: Option<&ClusterIdentity>,
    recorded: RecordedIdentity,
) -> StartVerdict {
    let Some(local) = wal else {
        return StartVerdict::Start("no member identity in the data dir yet".into());
    };
    if let Some(cluster) = live {
        return match check_live(local, peer_url, cluster) {
            Ok(()) => StartVerdict::Start(format!(
                "member {:x} of cluster {:x} is listed with this node's peer URL",
                local.member_id, local.cluster_id
            )),
            Err(m) => StartVerdict::Refuse(m),
        };
    }
    match check_recorded(local, recorded) {
        Ok(()) if recorded.member_id.is_none() && recorded.cluster_id.is_none() => {
            StartVerdict::Start(format!(
                "no other voter answered and no identity was recorded; starting member {:x} of cluster {:x}",
                local.member_id, local.cluster_id
            ))
        }
        Ok(()) => StartVerdict::Start(format!(
            "no other voter answered; member {:x} of cluster {:x} is the one recorded",
            local.member_id, local.cluster_id
        )),
        Err(m) => StartVerdict::Refuse(m),
    }
}

/// The agent's identity rule, checked before every other rule on each
/// observation:
/// - the member unit's start check refused the data dir (and the member is
///   not running): quarantine;
/// - the running member reports another cluster id than the other voters,
///   or is listed with another peer URL: quarantine;
/// - it is not in the member list while the node should be a member:
///   quarantine (a node that should be a proxy stops its removed member
///   through the proxy rules as always); likewise a stopped member whose
///   recorded member id the list no longer holds;
/// - it is confirmed but the member environment does not record its
///   identity yet: record it (what the start check relies on when no other
///   voter answers).
///
/// Returns `None` when identity asks nothing.
pub fn identity_step(o: &Observation) -> Option<Step> {
    let id = &o.identity;
    if let Some(reason) = &id.start_refused
        && !o.local.member_unit_active
    {
        return Some(Step::QuarantineMember {
            reason: format!("the member's start check refused it: {reason}"),
        });
    }
    if !o.local.member_unit_active
        && let (Some(member_id), Some(cluster)) = (id.recorded.member_id, id.cluster.as_ref())
        && target_role(o) == EtcdRole::Member
        && id
            .recorded
            .cluster_id
            .is_none_or(|c| c == cluster.cluster_id)
        && !cluster.members.iter().any(|(m, _)| *m == member_id)
    {
        // The member stopped (etcd exits when it applies its own removal)
        // and the cluster no longer lists the member it recorded.
        let local = MemberIdentity {
            member_id,
            cluster_id: cluster.cluster_id,
        };
        return Some(Step::QuarantineMember {
            reason: Mismatch::NotListed { local }.to_string(),
        });
    }
    let local = id.local?;
    let cluster = id.cluster.as_ref()?;
    match check_live(local, &o.peer_url, cluster) {
        Err(Mismatch::NotListed { .. }) if target_role(o) != EtcdRole::Member => None,
        Err(m) => Some(Step::QuarantineMember {
            reason: m.to_string(),
        }),
        Ok(()) => {
            let want = RecordedIdentity {
                member_id: Some(local.member_id),
                cluster_id: Some(local.cluster_id),
            };
            (o.local.member_env.is_some() && o.local.member_unit_active && id.recorded != want)
                .then_some(Step::RecordMemberIdentity {
                    member_id: local.member_id,
                    cluster_id: local.cluster_id,
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClusterView, LocalView, LockView, MemberEnvView, MemberView, plan};
    use deckhand_model::Role;

    /// node4 (member 4 of cluster c1), a voter running and serving
    /// localhost, its identity recorded.
    fn running_member() -> Observation {
        let view = |id: u64| MemberView {
            id,
            name: format!("node{id}"),
            peer_urls: vec![format!("http://10.0.0.{id}:2380")],
            client_urls: vec![format!("http://10.0.0.{id}:2379")],
            is_learner: false,
            healthy: Some(true),
        };
        Observation {
            node_name: "node4".into(),
            peer_url: ME.into(),
            desired: Some(Role::new(EtcdRole::Member)),
            in_initial_cluster: false,
            config_endpoints: vec![],
            min_voters: 3,
            local: LocalView {
                member_unit_active: true,
                member_env: Some(MemberEnvView {
                    member_id: Some(4),
                    serves_localhost: true,
                }),
                data_dir_exists: true,
                bootstrapped: true,
                ..LocalView::default()
            },
            cluster: Some(ClusterView {
                members: (1..=4).map(view).collect(),
                leader: Some(1),
            }),
            lock: LockView::Free,
            learner_timeout: 300,
            voter_start_timeout: 300,
            pending: Default::default(),
            down: Default::default(),
            identity: IdentityView {
                local: Some(ident(4, 0xc1)),
                cluster: Some(cluster()),
                recorded: RecordedIdentity {
                    member_id: Some(4),
                    cluster_id: Some(0xc1),
                },
                start_refused: None,
            },
        }
    }

    #[test]
    fn a_confirmed_member_asks_nothing_or_records_its_identity_once() {
        let mut o = running_member();
        assert_eq!(identity_step(&o), None);
        assert_eq!(plan(&o), Step::Converged);
        o.identity.recorded.cluster_id = None;
        assert_eq!(
            plan(&o),
            Step::RecordMemberIdentity {
                member_id: 4,
                cluster_id: 0xc1
            }
        );
        // Nobody else answers (a cold restart): nothing to decide.
        o.identity.cluster = None;
        assert_eq!(identity_step(&o), None);
    }

    #[test]
    fn a_foreign_or_removed_member_is_quarantined_before_anything_else() {
        let mut o = running_member();
        o.identity.local = Some(ident(7, 0xf0));
        let step = plan(&o);
        assert!(
            matches!(&step, Step::QuarantineMember { reason } if reason.contains("belongs to cluster f0")),
            "{step:?}"
        );
        // Removed behind deckhand's back, still running.
        let mut o = running_member();
        o.identity
            .cluster
            .as_mut()
            .unwrap()
            .members
            .retain(|(id, _)| *id != 4);
        assert!(matches!(plan(&o), Step::QuarantineMember { .. }));
        // ... but a node on its way to proxy stops it by the proxy rules.
        o.desired = Some(Role::new(EtcdRole::Proxy));
        assert_eq!(identity_step(&o), None);
        // Removed, and etcd exited: the recorded id is not listed.
        let mut o = running_member();
        o.local.member_unit_active = false;
        o.identity.local = None;
        o.identity
            .cluster
            .as_mut()
            .unwrap()
            .members
            .retain(|(id, _)| *id != 4);
        assert!(
            matches!(plan(&o), Step::QuarantineMember { reason } if reason.contains("removed"))
        );
        // Stopped and still listed: no quarantine (a restart is due).
        let mut o = running_member();
        o.local.member_unit_active = false;
        o.identity.local = None;
        assert_eq!(identity_step(&o), None);
        // The start check refused the data dir: quarantine once the unit
        // is down, whatever the network says.
        let mut o = running_member();
        o.local.member_unit_active = false;
        o.identity.local = None;
        o.identity.cluster = None;
        o.cluster = None;
        o.identity.start_refused = Some("member 7 belongs to cluster f0".into());
        assert!(
            matches!(plan(&o), Step::QuarantineMember { reason } if reason.contains("start check refused"))
        );
    }

    const ME: &str = "http://10.0.0.4:2380";

    fn cluster() -> ClusterIdentity {
        ClusterIdentity {
            cluster_id: 0xc1,
            members: vec![
                (1, vec!["http://10.0.0.1:2380".into()]),
                (4, vec![ME.into()]),
            ],
        }
    }

    fn ident(member_id: u64, cluster_id: u64) -> MemberIdentity {
        MemberIdentity {
            member_id,
            cluster_id,
        }
    }

    #[test]
    fn the_live_cluster_decides_id_list_and_peer_url() {
        assert_eq!(check_live(ident(4, 0xc1), ME, &cluster()), Ok(()));
        assert!(matches!(
            check_live(ident(4, 0xf0), ME, &cluster()),
            Err(Mismatch::ForeignCluster {
                cluster_id: 0xc1,
                ..
            })
        ));
        assert!(matches!(
            check_live(ident(9, 0xc1), ME, &cluster()),
            Err(Mismatch::NotListed { .. })
        ));
        assert!(matches!(
            check_live(ident(1, 0xc1), ME, &cluster()),
            Err(Mismatch::OtherPeerUrl { .. })
        ));
        let m = check_live(ident(4, 0xf0), ME, &cluster()).unwrap_err();
        assert!(
            m.to_string()
                .contains("cluster f0, not to this cluster (c1)"),
            "{m}"
        );
    }

    #[test]
    fn the_start_check_passes_a_fresh_data_dir_and_a_cold_restart() {
        let rec = RecordedIdentity {
            member_id: Some(4),
            cluster_id: Some(0xc1),
        };
        // No WAL: first bootstrap or a learner's fresh data dir.
        assert!(matches!(
            start_verdict(None, ME, Some(&cluster()), rec),
            StartVerdict::Start(_)
        ));
        // Cold restart: nobody answers, the record matches.
        assert!(matches!(
            start_verdict(Some(ident(4, 0xc1)), ME, None, rec),
            StartVerdict::Start(_)
        ));
        // Nothing recorded (an environment written before the record
        // existed) and nobody answers: etcd starts.
        assert!(matches!(
            start_verdict(Some(ident(4, 0xc1)), ME, None, RecordedIdentity::default()),
            StartVerdict::Start(_)
        ));
        // A learner whose id came from MemberAdd, cluster id not yet recorded.
        let learner = RecordedIdentity {
            member_id: Some(4),
            cluster_id: None,
        };
        assert!(matches!(
            start_verdict(Some(ident(4, 0xc1)), ME, None, learner),
            StartVerdict::Start(_)
        ));
    }

    #[test]
    fn the_start_check_refuses_a_foreign_or_removed_data_dir() {
        let rec = RecordedIdentity {
            member_id: Some(4),
            cluster_id: Some(0xc1),
        };
        // Foreign cluster, voters answer.
        assert!(matches!(
            start_verdict(Some(ident(7, 0xf0)), ME, Some(&cluster()), rec),
            StartVerdict::Refuse(Mismatch::ForeignCluster { .. })
        ));
        // Foreign cluster, nobody answers: the record refuses it.
        assert!(matches!(
            start_verdict(Some(ident(7, 0xf0)), ME, None, rec),
            StartVerdict::Refuse(Mismatch::NotRecorded { .. })
        ));
        // Same cluster, removed member (recorded id and all).
        let mut c = cluster();
        c.members.retain(|(id, _)| *id != 4);
        assert!(matches!(
            start_verdict(Some(ident(4, 0xc1)), ME, Some(&c), rec),
            StartVerdict::Refuse(Mismatch::NotListed { .. })
        ));
        // The live cluster wins over the record: a member the record does
        // not know but the cluster lists with this peer URL starts.
        assert!(matches!(
            start_verdict(
                Some(ident(4, 0xc1)),
                ME,
                Some(&cluster()),
                RecordedIdentity {
                    member_id: Some(5),
                    cluster_id: None
                }
            ),
            StartVerdict::Start(_)
        ));
    }
}
