//! The [`Preseeder`] handle: its daemon socket, options, pull slots (how
//! many pulls run at once) and the table of pulls in flight.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bollard::Docker;
use deckhand_model::ImageRef;
use tokio::sync::{OnceCell, Semaphore, watch};

use crate::ensure::Shared;
use crate::{Error, PullOptions};

/// Keeps images present in one Docker daemon. Cheap to share: clone it
/// (clones share the pull slots and the in-flight pulls).
#[derive(Clone)]
pub struct Preseeder {
    pub(crate) inner: Arc<Inner>,
}

/// What the clones of one [`Preseeder`] share.
pub(crate) struct Inner {
    pub(crate) socket: PathBuf,
    pub(crate) opts: PullOptions,
    pub(crate) docker: OnceCell<Docker>,
    pub(crate) root_dir: OnceCell<PathBuf>,
    pub(crate) slots: Arc<Semaphore>,
    /// The number of slots, as last set.
    pub(crate) concurrency: Mutex<usize>,
    /// Pulls in progress, by normalized reference: the receiver gets the
    /// pull's result.
    pub(crate) inflight: Mutex<HashMap<ImageRef, watch::Receiver<Option<Shared>>>>,
}

impl Preseeder {
    /// A preseeder for the daemon at `socket` (e.g. `/var/run/docker.sock`).
    /// Does not contact the daemon: the first call does (and negotiates the
    /// API version), so an agent may create it before Docker is up.
    pub fn new(socket: &Path, opts: PullOptions) -> Preseeder {
        let slots = Arc::new(Semaphore::new(opts.concurrency.max(1)));
        let concurrency = Mutex::new(opts.concurrency.max(1));
        Preseeder {
            inner: Arc::new(Inner {
                socket: socket.to_path_buf(),
                opts,
                docker: OnceCell::new(),
                root_dir: OnceCell::new(),
                slots,
                concurrency,
                inflight: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// [`Preseeder::new`], then checks that the daemon answers.
    ///
    /// # Errors
    /// [`Error::Unreachable`] when nothing answers on `socket`,
    /// [`Error::Timeout`] when the daemon does not answer within
    /// [`PullOptions::request_timeout`].
    pub async fn connect(socket: &Path, opts: PullOptions) -> Result<Preseeder, Error> {
        let p = Preseeder::new(socket, opts);
        p.docker().await?;
        Ok(p)
    }

    /// Changes how many pulls run at once (e.g. when the cluster config's
    /// `preseed_concurrency` changes), keeping the in-flight pulls and their
    /// deduplication. 0 counts as 1. Raising takes effect at once; lowering
    /// as running pulls end (needs a Tokio runtime).
    pub fn set_concurrency(&self, n: usize) {
        let n = n.max(1);
        let mut current = self
            .inner
            .concurrency
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if n > *current {
            self.inner.slots.add_permits(n - *current);
        } else if n < *current {
            // Take the surplus slots out as they come free.
            let slots = self.inner.slots.clone();
            let surplus = u32::try_from(*current - n).unwrap_or(u32::MAX);
            tokio::spawn(async move {
                if let Ok(p) = slots.acquire_many(surplus).await {
                    p.forget();
                }
            });
        }
        *current = n;
    }

    /// How many pulls run at once at most.
    pub fn concurrency(&self) -> usize {
        *self
            .inner
            .concurrency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The options this preseeder runs with (`concurrency` as created; see
    /// [`Preseeder::concurrency`]).
    pub fn options(&self) -> &PullOptions {
        &self.inner.opts
    }

    /// The images being pulled now, by any caller.
    pub fn pulling(&self) -> Vec<ImageRef> {
        let mut v: Vec<ImageRef> = self
            .inner
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrency_changes_in_place() {
        let p = Preseeder::new(
            Path::new("/nonexistent/docker.sock"),
            PullOptions::default(),
        );
        assert_eq!(p.inner.slots.available_permits(), 3);
        p.set_concurrency(5);
        assert_eq!((p.concurrency(), p.inner.slots.available_permits()), (5, 5));
        // A pull holds a slot while the concurrency drops to 1: the slot
        // count follows once it is released.
        let held = p.inner.slots.clone().acquire_owned().await.unwrap();
        p.set_concurrency(1);
        assert_eq!(p.concurrency(), 1);
        tokio::task::yield_now().await;
        assert_eq!(
            p.inner.slots.available_permits(),
            0,
            "no new pull while one runs"
        );
        drop(held);
        for _ in 0..100 {
            if p.inner.slots.available_permits() == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(p.inner.slots.available_permits(), 1);
    }
}
