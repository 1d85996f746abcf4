//! The node lease: one [`LeaseKeeper`] with the cluster config's TTL, and
//! its replacement when `lease_ttl_seconds` changes, handed over so that no
//! key on the lease (the status, locks, singleton candidacies) is missing
//! for even one read.
//!
//! etcd cannot change a lease's TTL in place (a keep-alive renews to the
//! TTL it was granted with). So a TTL change grants a second lease with the
//! new TTL, moves every key of the old lease onto it
//! ([`deckhand_etcd::lease::move_keys`]: same value, same create revision,
//! so a singleton's candidacy keeps its place and its unit keeps running),
//! points the fence at the new lease's renewals, and only then revokes the
//! old lease. Until the move succeeds both leases are kept alive and the
//! old one stays the node's lease; the move is retried on the next pass.

use std::time::Duration;

use deckhand_etcd::LeaseKeeper;

use super::fence::Fence;

/// The node lease and, during a TTL change, its replacement.
#[derive(Default)]
pub struct NodeLease {
    /// The keeper of the node's current lease.
    keeper: Option<LeaseKeeper>,
    /// The TTL `keeper` was started with, in seconds.
    ttl: u64,
    /// The replacement being brought up, with its TTL.
    pending: Option<(LeaseKeeper, u64)>,
}

impl NodeLease {
    /// Starts the first keeper with `ttl` seconds; the fence follows it.
    pub fn start(&mut self, client: etcd_client::Client, ttl: u64, fence: &Fence) {
        let keeper = LeaseKeeper::spawn(client, ttl as i64);
        fence.follow(keeper.renewals());
        super::metrics::follow_renewals(keeper.renewals());
        self.keeper = Some(keeper);
        self.ttl = ttl;
    }

    /// The node's lease, 0 while it has none.
    pub fn id(&self) -> i64 {
        self.keeper
            .as_ref()
            .map(|k| *k.lease().borrow())
            .unwrap_or(0)
    }

    /// Follows a change of the cluster config's `lease_ttl_seconds` (call
    /// every pass; nothing happens while `ttl` is the current TTL): brings up
    /// a lease of `ttl` seconds, moves the current lease's keys onto it,
    /// makes the fence follow it, and revokes the old lease. Each request is
    /// bounded by `timeout`; when one fails, or the new lease is not granted
    /// yet, the old lease stays the node's and the next call goes on.
    /// Returns true when the lease was replaced.
    pub async fn follow_ttl(
        &mut self,
        client: &etcd_client::Client,
        ttl: u64,
        fence: &Fence,
        timeout: Duration,
    ) -> bool {
        if ttl == self.ttl {
            // Changed back before the handover finished.
            if let Some((p, _)) = self.pending.take() {
                let _ = tokio::time::timeout(timeout, p.revoke()).await;
            }
            return false;
        }
        if self.pending.as_ref().is_some_and(|(_, t)| *t != ttl)
            && let Some((p, _)) = self.pending.take()
        {
            let _ = tokio::time::timeout(timeout, p.revoke()).await;
        }
        let (pending, _) = self.pending.get_or_insert_with(|| {
            tracing::info!(
                "lease TTL changed from {} s to {ttl} s; granting a lease with the new TTL",
                self.ttl
            );
            (LeaseKeeper::spawn(client.clone(), ttl as i64), ttl)
        });
        let new = *pending.lease().borrow();
        if new == 0 {
            return false;
        }
        let old = self.id();
        if old != 0 {
            let mut c = client.clone();
            match tokio::time::timeout(timeout, deckhand_etcd::lease::move_keys(&mut c, old, new))
                .await
            {
                Ok(Ok(keys)) => tracing::info!(
                    "moved {} keys from lease {old:x} to lease {new:x} ({ttl} s): {}",
                    keys.len(),
                    keys.join(", ")
                ),
                Ok(Err(e)) => {
                    tracing::warn!(
                        "cannot move the keys of lease {old:x} to lease {new:x} yet: {e}; \
                         keeping both until they are moved"
                    );
                    return false;
                }
                Err(_) => {
                    tracing::warn!(
                        "moving the keys of lease {old:x} to lease {new:x} timed out; \
                         keeping both until they are moved"
                    );
                    return false;
                }
            }
        }
        let (keeper, ttl) = self.pending.take().expect("pending keeper set above");
        fence.follow(keeper.renewals());
        super::metrics::follow_renewals(keeper.renewals());
        let old_keeper = self.keeper.replace(keeper);
        self.ttl = ttl;
        if let Some(k) = old_keeper {
            // Holds no key of ours any more: nothing disappears with it.
            let _ = tokio::time::timeout(timeout, k.revoke()).await;
        }
        true
    }

    /// Revokes the node's lease (and a replacement being brought up): the
    /// agent is stopping.
    pub async fn revoke(&mut self, timeout: Duration) {
        if let Some((p, _)) = self.pending.take() {
            let _ = tokio::time::timeout(timeout, p.revoke()).await;
        }
        if let Some(k) = self.keeper.take() {
            let _ = tokio::time::timeout(timeout, k.revoke()).await;
        }
    }
}
