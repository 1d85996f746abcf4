//! The learner records (`learners/<member id hex>` → when it was first
//! seen as a learner): the clock by which a learner that never starts or
//! never catches up is reaped after `learner_timeout_seconds`, whichever
//! node looks. The earliest sighting wins (create-if-absent), and the
//! records of members that are no longer learners are deleted.

use std::collections::BTreeMap;

use deckhand_etcd::Member;

use crate::store::Store;

/// What to do with the records, given the pending learners.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RecordPlan {
    /// Pending learners with a record: member id → first seen (Unix seconds).
    pub since: BTreeMap<u64, u64>,
    /// Records of members that are no longer learners: delete them.
    pub stale: Vec<u64>,
    /// Pending learners without a record: record them as seen now.
    pub missing: Vec<u64>,
}

/// Compares the `records` read from etcd with the pending `learners`.
pub fn plan_records(learners: &[u64], records: &BTreeMap<u64, u64>) -> RecordPlan {
    let mut plan = RecordPlan::default();
    for (id, since) in records {
        if learners.contains(id) {
            plan.since.insert(*id, *since);
        } else {
            plan.stale.push(*id);
        }
    }
    plan.missing = learners
        .iter()
        .copied()
        .filter(|id| !records.contains_key(id))
        .collect();
    plan
}

/// The learner records, as this agent keeps them.
#[derive(Default)]
pub struct LearnerRecords {
    /// Learners were pending at the last look (so records may need deleting).
    seen: bool,
}

impl LearnerRecords {
    /// When each pending learner of `members` was first seen: records the
    /// learners that have none and deletes the records of members that are
    /// no longer learners. Reads nothing while no learner is pending and
    /// none was at the last look. An etcd error gives what could be had
    /// (an empty map when nothing could be read): the next pass tries again.
    pub async fn since(
        &mut self,
        store: &Store,
        members: &[Member],
        now: u64,
    ) -> BTreeMap<u64, u64> {
        let learners: Vec<u64> = members
            .iter()
            .filter(|m| m.is_learner)
            .map(|m| m.id)
            .collect();
        if learners.is_empty() && !self.seen {
            return BTreeMap::new();
        }
        let Ok(records) = store.learner_records(now).await else {
            return BTreeMap::new();
        };
        let mut plan = plan_records(&learners, &records);
        for id in &plan.stale {
            let _ = store.delete_learner_record(*id).await;
        }
        for id in &plan.missing {
            if let Ok(true) = store.record_learner(*id, now).await {
                plan.since.insert(*id, now);
            }
        }
        self.seen = !learners.is_empty();
        plan.since
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_kept_for_learners_added_for_new_ones_and_dropped_for_others() {
        let records = BTreeMap::from([(1, 100), (2, 200)]);
        let plan = plan_records(&[1, 3], &records);
        assert_eq!(plan.since, BTreeMap::from([(1, 100)]));
        assert_eq!(plan.stale, [2]);
        assert_eq!(plan.missing, [3]);
        assert_eq!(plan_records(&[], &BTreeMap::new()), RecordPlan::default());
    }
}
