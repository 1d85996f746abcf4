//! Following a restore: the etcd cluster behind `localhost:2379` changed
//! (its cluster ID, in every response header, is not the one this agent
//! saw before), as after `deckhand restore` (etcd gives a restored cluster
//! new member and cluster IDs). What the agent held from the old cluster
//! is dropped: the proxy is restarted (etcd's grpc-proxy resumes its own
//! upstream watches at old revisions), the watches start over from the
//! current revision with a fresh read of each key (a restored cluster's
//! revisions go back to the snapshot's: a watch resumed at an old
//! revision would wait, silent, until the new cluster reached it), the
//! node lease is revoked (the snapshot holds it and the keys on it: the
//! old status and candidacies go with it) and a new one granted, and the
//! status is written again. Singletons are then elected again on the new
//! leases by the plane pass.
//!
//! Local clients of `localhost:2379` see the same thing: deckhand does not
//! bump the revision (etcd 3.4's `snapshot restore` has no
//! `--bump-revision`, and the old cluster's last revision is not known
//! once it is gone), so a client that resumes a watch at a revision it saw
//! before the restore must re-list instead (`docs/backup.md`).

use std::time::Duration;

use etcd_client::GetOptions;

/// How long the cluster ID read may take.
const TIMEOUT: Duration = Duration::from_secs(1);

/// The etcd cluster ID the agent last saw behind `localhost:2379`.
#[derive(Debug, Default)]
pub struct ClusterIdWatch {
    seen: Option<u64>,
}

impl ClusterIdWatch {
    /// Notes `now` (`None` or 0: no answer, nothing noted); returns the
    /// previous ID when `now` differs from it (the first ID seen is no
    /// change).
    pub fn see(&mut self, now: Option<u64>) -> Option<u64> {
        let now = now.filter(|id| *id != 0)?;
        match self.seen.replace(now) {
            Some(old) if old != now => Some(old),
            _ => None,
        }
    }
}

/// The cluster ID in the header of a count-only, linearizable read of
/// `key` on `client` (through a grpc-proxy the header is the member's:
/// the proxy forwards linearizable reads). `None` when it did not answer
/// within a second.
pub async fn cluster_id(client: &etcd_client::Client, key: &str) -> Option<u64> {
    let mut c = client.clone();
    let resp = tokio::time::timeout(
        TIMEOUT,
        c.get(key, Some(GetOptions::new().with_count_only())),
    )
    .await
    .ok()?
    .ok()?;
    resp.header().map(|h| h.cluster_id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Etcd;

    #[test]
    fn a_change_is_a_different_id_after_a_first_one() {
        let mut w = ClusterIdWatch::default();
        assert_eq!(w.see(None), None);
        assert_eq!(w.see(Some(7)), None, "the first one seen");
        assert_eq!(w.see(Some(7)), None);
        assert_eq!(w.see(None), None, "no answer is no change");
        assert_eq!(w.see(Some(0)), None);
        assert_eq!(w.see(Some(9)), Some(7));
        assert_eq!(w.see(Some(9)), None);
    }

    #[tokio::test]
    async fn two_clusters_have_two_ids() {
        let (a, b) = (Etcd::start().await, Etcd::start().await);
        let ia = cluster_id(&a.client().await, "/k").await.unwrap();
        let ib = cluster_id(&b.client().await, "/k").await.unwrap();
        assert_ne!(ia, ib);
        let mut w = ClusterIdWatch::default();
        w.see(Some(ia));
        assert_eq!(w.see(Some(ib)), Some(ia));
    }
}
