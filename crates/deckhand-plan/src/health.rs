//! The cluster's health from the member list, pure: its fault tolerance in
//! numbers and in words (how many more voters may fail before etcd loses
//! quorum), and the voters in trouble (not started, not answering, no
//! deckhand node behind them).

use deckhand_model::VoterTrouble;

use crate::observation::MemberView;
use crate::rules::quorum;

/// One voter in trouble: its member id, its first peer URL (empty when it
/// has none) and what is wrong.
pub type VoterTroubleEntry = (u64, String, VoterTrouble);

/// The voters of `members` in trouble, one entry per voter, ordered by
/// member id. Learners are left out (a stalled learner is the learner
/// timeout's business).
///
/// Each voter gets its most basic trouble only:
/// 1. [`VoterTrouble::NotStarted`]: added (`etcdctl member add`, or a join
///    that never started) but it has never published its name and client
///    URLs ([`MemberView::is_started`]); etcd counts it in the quorum all
///    the same (<https://etcd.io/docs/v3.4/op-guide/runtime-configuration/#add-a-new-member>).
/// 2. [`VoterTrouble::NotAnswering`]: started, but its health check failed
///    (`healthy == Some(false)`); a voter whose health was not checked
///    (`None`) is not reported.
/// 3. [`VoterTrouble::NoNode`]: none of its peer URLs is in
///    `node_peer_urls`, the peer URLs (`http://<address>:2380`) of the
///    deckhand nodes known from their status documents. A trailing `/` is
///    ignored on both sides.
pub fn voter_troubles(members: &[MemberView], node_peer_urls: &[String]) -> Vec<VoterTroubleEntry> {
    // Host and port: the scheme changes while `deckhand tls enable` runs.
    let norm = |u: &str| {
        u.split_once("://")
            .map_or(u, |(_, rest)| rest)
            .trim_end_matches('/')
            .to_string()
    };
    let nodes: Vec<String> = node_peer_urls.iter().map(|u| norm(u)).collect();
    let mut out: Vec<VoterTroubleEntry> = members
        .iter()
        .filter(|m| !m.is_learner)
        .filter_map(|m| {
            let trouble = if !m.is_started() {
                VoterTrouble::NotStarted
            } else if m.healthy == Some(false) {
                VoterTrouble::NotAnswering
            } else if !m.peer_urls.iter().any(|u| nodes.contains(&norm(u))) {
                VoterTrouble::NoNode
            } else {
                return None;
            };
            Some((
                m.id,
                m.peer_urls.first().cloned().unwrap_or_default(),
                trouble,
            ))
        })
        .collect();
    out.sort_by_key(|t| t.0);
    out
}

/// How many voter failures the cluster can take, from the voters' health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultTolerance {
    /// Voters in the member list (learners excluded).
    pub voters: usize,
    /// Of them, started and answering (health `Some(true)`).
    pub up: usize,
    /// Votes a decision needs: a strict majority of `voters`.
    pub quorum: usize,
}

impl FaultTolerance {
    /// The fault tolerance of `members`; a voter of unknown health counts
    /// as not up (so the figure never flatters).
    pub fn of(members: &[MemberView]) -> FaultTolerance {
        let voters: Vec<&MemberView> = members.iter().filter(|m| !m.is_learner).collect();
        FaultTolerance {
            voters: voters.len(),
            up: voters
                .iter()
                .filter(|m| m.is_started() && m.healthy == Some(true))
                .count(),
            quorum: quorum(voters.len()),
        }
    }

    /// Further voter failures the cluster survives with quorum; `None` when
    /// quorum is already lost.
    pub fn spare(&self) -> Option<usize> {
        self.up.checked_sub(self.quorum)
    }
}

/// In words, e.g. "quorum 3 of 4 voters up: one more failure loses quorum".
impl std::fmt::Display for FaultTolerance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let FaultTolerance { voters, up, quorum } = *self;
        let head = format!("quorum {quorum} of {voters}, {up} up");
        match self.spare() {
            None => write!(
                f,
                "{head}: quorum is lost; etcd refuses every write until {} more voter(s) answer",
                quorum - up
            ),
            Some(0) => write!(f, "{head}: one more failure loses quorum"),
            Some(1) => write!(f, "{head}: survives one more failure"),
            Some(n) => write!(f, "{head}: survives {n} more failures"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voter(id: u64, healthy: Option<bool>, started: bool) -> MemberView {
        MemberView {
            id,
            name: if started {
                format!("n{id}")
            } else {
                String::new()
            },
            peer_urls: vec![format!("http://10.0.0.{id}:2380")],
            client_urls: if started {
                vec![format!("http://10.0.0.{id}:2379")]
            } else {
                vec![]
            },
            is_learner: false,
            healthy,
        }
    }

    #[test]
    fn counts_only_started_answering_voters() {
        let mut m = vec![
            voter(1, Some(true), true),
            voter(2, Some(true), true),
            voter(3, Some(true), true),
            voter(4, None, false),
        ];
        let ft = FaultTolerance::of(&m);
        assert_eq!(
            (ft.voters, ft.up, ft.quorum, ft.spare()),
            (4, 3, 3, Some(0))
        );
        assert_eq!(
            ft.to_string(),
            "quorum 3 of 4, 3 up: one more failure loses quorum"
        );
        m.pop();
        assert_eq!(
            FaultTolerance::of(&m).to_string(),
            "quorum 2 of 3, 3 up: survives one more failure"
        );
        m[0].healthy = Some(false);
        m[1].healthy = None;
        let ft = FaultTolerance::of(&m);
        assert_eq!(ft.spare(), None);
        assert!(ft.to_string().contains("quorum is lost"), "{ft}");
    }

    #[test]
    fn voter_troubles_one_per_voter_most_basic_first() {
        let urls = |ids: &[u64]| -> Vec<String> {
            ids.iter()
                .map(|i| format!("http://10.0.0.{i}:2380"))
                .collect()
        };
        let mut m = vec![
            voter(3, Some(true), true),
            voter(1, Some(true), true),
            voter(2, Some(true), true),
        ];
        assert!(voter_troubles(&m, &urls(&[1, 2, 3])).is_empty());
        // Health not checked is not trouble; a failed check is.
        m[0].healthy = None;
        assert!(voter_troubles(&m, &urls(&[1, 2, 3])).is_empty());
        m[0].healthy = Some(false);
        assert_eq!(
            voter_troubles(&m, &urls(&[1, 2, 3])),
            [(3, "http://10.0.0.3:2380".into(), VoterTrouble::NotAnswering)]
        );
        // An added, never started voter with no node behind it: not started
        // (the more basic trouble), listed in member id order.
        m.push(voter(9, None, false));
        // A started, answering voter on an address no deckhand node has.
        m.push(voter(7, Some(true), true));
        assert_eq!(
            voter_troubles(&m, &urls(&[1, 2, 3])),
            [
                (3, "http://10.0.0.3:2380".into(), VoterTrouble::NotAnswering),
                (7, "http://10.0.0.7:2380".into(), VoterTrouble::NoNode),
                (9, "http://10.0.0.9:2380".into(), VoterTrouble::NotStarted),
            ]
        );
        // Trailing slashes do not matter; learners are not voters.
        let with_slash: Vec<String> = urls(&[1, 2, 3, 7])
            .iter()
            .map(|u| format!("{u}/"))
            .collect();
        m[4].is_learner = true;
        m[3].is_learner = true;
        m[0].healthy = Some(true);
        assert!(voter_troubles(&m, &with_slash).is_empty());
        // A voter with no peer URL at all is reported with an empty one.
        let mut odd = voter(5, Some(true), true);
        odd.peer_urls.clear();
        assert_eq!(
            voter_troubles(&[odd], &urls(&[5])),
            [(5, String::new(), VoterTrouble::NoNode)]
        );
    }

    #[test]
    fn learners_do_not_count() {
        let mut m: Vec<MemberView> = (1..=5).map(|i| voter(i, Some(true), true)).collect();
        m[4].is_learner = true;
        let ft = FaultTolerance::of(&m);
        assert_eq!((ft.voters, ft.up, ft.quorum), (4, 4, 3));
        assert_eq!(
            ft.to_string(),
            "quorum 3 of 4, 4 up: survives one more failure"
        );
        let m: Vec<MemberView> = (1..=7).map(|i| voter(i, Some(true), true)).collect();
        assert_eq!(
            FaultTolerance::of(&m).to_string(),
            "quorum 4 of 7, 7 up: survives 3 more failures"
        );
    }
}
