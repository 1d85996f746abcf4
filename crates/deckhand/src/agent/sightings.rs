//! First sightings, on this agent's own monotonic clock: since when each
//! member has been pending (a learner, or a voter that has not started) and
//! each voter down. The planner's bounds (`learner_timeout_seconds`,
//! `voter_start_timeout_seconds`) are judged on these, so no decision ever
//! compares one node's wall clock with another's; an agent that restarts
//! forgets them and waits the whole bound again (later, never earlier).
//!
//! Kept in memory only: nothing is written to etcd (the `learners/` records
//! of earlier versions, Unix seconds from whichever node saw a learner
//! first, are no longer read or written; see `docs/keyspace.md`).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use deckhand_plan::Sighting;

/// When each fact of one kind was first seen, by member id.
#[derive(Debug, Default)]
pub struct FirstSeen {
    first: HashMap<u64, (Instant, u64)>,
}

impl FirstSeen {
    /// Notes that the fact holds now for exactly `ids` (at `now` on the
    /// monotonic clock, `unix` on the wall clock, for display): new ids are
    /// first seen now, ids no longer listed are forgotten. Returns each
    /// listed id's sighting.
    pub fn see(&mut self, ids: &[u64], now: Instant, unix: u64) -> BTreeMap<u64, Sighting> {
        self.first.retain(|id, _| ids.contains(id));
        ids.iter()
            .map(|id| {
                let (at, at_unix) = *self.first.entry(*id).or_insert((now, unix));
                let for_secs = now.saturating_duration_since(at).as_secs();
                (*id, Sighting { for_secs, at_unix })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_sighting_counts_on_the_monotonic_clock_and_ends_when_the_fact_does() {
        let mut s = FirstSeen::default();
        let t0 = Instant::now();
        let a = s.see(&[1, 2], t0, 10_000);
        assert_eq!(
            a[&1],
            Sighting {
                for_secs: 0,
                at_unix: 10_000
            }
        );
        // The wall clock jumps an hour back: the count goes on.
        let b = s.see(&[1, 2], t0 + Duration::from_secs(30), 10_000 - 3_600 + 30);
        assert_eq!(
            b[&1],
            Sighting {
                for_secs: 30,
                at_unix: 10_000
            }
        );
        // 2 is no longer pending, 3 is new; 2 seen again starts from zero.
        let c = s.see(&[1, 3], t0 + Duration::from_secs(40), 5);
        assert_eq!((c[&1].for_secs, c[&3].for_secs), (40, 0));
        assert!(!c.contains_key(&2));
        let d = s.see(&[2], t0 + Duration::from_secs(50), 5);
        assert_eq!(d[&2].for_secs, 0);
    }
}
