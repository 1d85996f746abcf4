//! The cluster's fault tolerance, in numbers and in words, from the voters'
//! health: how many more voters may fail before etcd loses quorum.

use crate::observation::MemberView;
use crate::rules::quorum;

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
