//! The fence: stops this node's singleton units when its lease may
//! expire, without waiting for the main loop or etcd.
//!
//! A singleton runs only while this node's lease is certainly alive. etcd
//! expires a lease `ttl` after the last renewal it answered, and only then
//! can another node's candidacy lead. The [`Fence`] task stops every
//! singleton this node runs once `ttl / 2` has passed since the sending of
//! the last answered renewal; if the stop job is still running one second
//! before the lease can expire, it kills the unit's processes. So a
//! singleton unit must stop within `lease_ttl_seconds / 2` (minus a
//! second): keep its `TimeoutStopSec=` (and a container's stop timeout)
//! below that.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deckhand_etcd::Renewal;
use deckhand_systemd::Systemd;
use tokio::sync::watch;
use tokio::time::Instant;

/// The fence: stops this node's singleton units when its lease may expire.
#[derive(Clone)]
pub struct Fence {
    /// Singleton units this node runs (or is starting) as leader.
    running: Arc<Mutex<BTreeSet<String>>>,
    /// The lease keeper's renewals; replaced when the keeper is.
    renewals: Arc<Mutex<watch::Receiver<Option<Renewal>>>>,
}

impl Fence {
    /// A fence reading `renewals`, with its task started on `systemd`.
    pub fn spawn(systemd: Systemd, renewals: watch::Receiver<Option<Renewal>>) -> Fence {
        let fence = Fence {
            running: Arc::default(),
            renewals: Arc::new(Mutex::new(renewals)),
        };
        tokio::spawn(fence.clone().run(systemd));
        fence
    }

    /// Follows a new lease keeper's renewals.
    pub fn follow(&self, renewals: watch::Receiver<Option<Renewal>>) {
        *self.renewals.lock().expect("fence lock") = renewals;
    }

    fn renewal(&self) -> Option<Renewal> {
        *self.renewals.lock().expect("fence lock").borrow()
    }

    /// Whether a singleton may run now: the last answered renewal was sent
    /// less than `ttl / 2` ago. Returns the lease it holds for.
    pub fn may_lead(&self) -> Option<i64> {
        let r = self.renewal()?;
        (Instant::now() < r.sent + r.ttl / 2).then_some(r.lease)
    }

    /// Marks `unit` as run by this node as leader (before its start job).
    pub fn begin(&self, unit: &str) {
        self.running
            .lock()
            .expect("fence lock")
            .insert(unit.to_string());
    }

    /// The singleton units this node runs now.
    pub fn running_units(&self) -> Vec<String> {
        self.running
            .lock()
            .expect("fence lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Marks `unit` as no longer run here (after its stop job).
    pub fn end(&self, unit: &str) {
        self.running.lock().expect("fence lock").remove(unit);
    }

    async fn run(self, systemd: Systemd) {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if self.may_lead().is_some() {
                continue;
            }
            let units = self.running_units();
            if units.is_empty() {
                continue;
            }
            let r = self.renewal();
            let deadline = r.map(|r| r.alive_until()).unwrap_or_else(Instant::now);
            tracing::warn!(
                "fencing: the node lease was not renewed for half its TTL; stopping singleton units {} before it can expire",
                units.join(", ")
            );
            let mut stops = tokio::task::JoinSet::new();
            for u in units.clone() {
                let systemd = systemd.clone();
                stops.spawn(async move {
                    let budget = deadline
                        .saturating_duration_since(Instant::now())
                        .saturating_sub(Duration::from_secs(1))
                        .max(Duration::from_millis(200));
                    match systemd.stop(&u, budget).await {
                        Ok(()) => tracing::warn!("fencing: stopped {u}"),
                        Err(e) => {
                            tracing::error!("fencing: stopping {u} did not finish in time ({e}); killing its processes");
                            if let Err(e) = systemd.kill(&u, 9).await {
                                tracing::error!("fencing: cannot kill {u}: {e}");
                            }
                        }
                    }
                });
            }
            stops.join_all().await;
            let mut running = self.running.lock().expect("fence lock");
            for u in &units {
                running.remove(u);
            }
        }
    }
}
