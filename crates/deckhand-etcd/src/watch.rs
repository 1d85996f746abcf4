//! Watch one key or prefix with resume: a snapshot first, then every change,
//! across broken streams and compactions.
//!
//! etcd's watch API: <https://etcd.io/docs/v3.4/learning/api/#watch-api>. A
//! watch started at revision `r` replays every event from `r` on, unless `r`
//! has been compacted away; then etcd cancels the watch with
//! `compact_revision` set and the history is lost
//! (<https://etcd.io/docs/v3.4/op-guide/maintenance/#history-compaction-v3-api-key-value-database>).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::REQUEST_TIMEOUT;
use crate::error::{Chain, timed};

/// How long a watch stream may stay silent before the watcher asks etcd for a
/// progress notification (`WatchProgressRequest`, etcd 3.4+); if that is not
/// answered within the same time either, the stream is taken as broken and
/// the watch is re-established. HTTP/2 keep-alive on the client (see
/// [`crate::Cluster::connect`]) also breaks a stream whose connection died.
pub const WATCH_PROGRESS_INTERVAL: Duration = Duration::from_secs(10);

/// How many events may wait in the channel before the watcher stops reading
/// from etcd.
const CHANNEL_CAPACITY: usize = 64;

/// What [`watch_key`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyEvent {
    /// The full current state: every key with its value and mod revision, as of
    /// store revision `revision`. Sent first, and again whenever the watch had
    /// to start over because the history it needed was compacted (a resync):
    /// replace what you knew with it.
    Snapshot {
        /// `(key, value, mod_revision)` of each key present; empty when none.
        kvs: Vec<(String, Vec<u8>, i64)>,
        /// The store revision the snapshot was read at.
        revision: i64,
    },
    /// A key was put.
    Put {
        /// The key (bytes that are not UTF-8 are replaced).
        key: String,
        /// The new value.
        value: Vec<u8>,
        /// The revision of the put.
        mod_revision: i64,
    },
    /// A key was deleted (or its lease expired).
    Delete {
        /// The key.
        key: String,
        /// The revision of the delete.
        mod_revision: i64,
    },
}

/// Watches `key` (every key under it when `prefix`), in a task on the current
/// tokio runtime, until the receiver is dropped.
///
/// First a `Get` of the key: a [`KeyEvent::Snapshot`] at its revision `r`;
/// then a watch from `r + 1`, so no change is missed or seen twice. When the
/// stream breaks, it watches again from the last revision seen + 1, after a
/// backoff (100 ms to 5 s). When that revision was compacted, it starts over
/// with a new `Get` and a new snapshot. Every `Get` and watch creation has a
/// timeout of [`REQUEST_TIMEOUT`]; a silent stream is checked every
/// [`WATCH_PROGRESS_INTERVAL`].
pub fn watch_key(client: Client, key: String, prefix: bool) -> mpsc::Receiver<KeyEvent> {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    tokio::spawn(run(client, key, prefix, tx));
    rx
}

/// Watch streams opened again in this process since it started:
/// (after a break, after a compaction). Read by the agent's metrics.
static RESTARTS: (AtomicU64, AtomicU64) = (AtomicU64::new(0), AtomicU64::new(0));

/// How many watch streams of this process [`watch_key`] opened again:
/// `(broken, compacted)`, the first after a stream broke (resumed from the
/// last revision seen), the second after that revision was compacted
/// (started over with a snapshot). Monotonic, for counters.
pub fn restarts() -> (u64, u64) {
    (
        RESTARTS.0.load(Ordering::Relaxed),
        RESTARTS.1.load(Ordering::Relaxed),
    )
}

/// Why one watch stream ended.
enum End {
    /// The receiver is gone: stop.
    Closed,
    /// The revision to resume from was compacted: start over with a snapshot.
    Compacted(i64),
    /// The stream broke: watch again from the last revision seen.
    Broken(String),
}

fn new_backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

struct Watcher {
    client: Client,
    key: String,
    prefix: bool,
    tx: mpsc::Sender<KeyEvent>,
    backoff: ExponentialBackoff,
}

async fn run(client: Client, key: String, prefix: bool, tx: mpsc::Sender<KeyEvent>) {
    let mut w = Watcher {
        client,
        key,
        prefix,
        tx,
        backoff: new_backoff(),
    };
    loop {
        let Some(mut revision) = w.snapshot().await else {
            return;
        };
        loop {
            match w.watch_from(&mut revision).await {
                End::Closed => return,
                End::Compacted(compacted) => {
                    RESTARTS.1.fetch_add(1, Ordering::Relaxed);
                    info!(
                        key = w.key,
                        revision, compacted, "watch history compacted; reading the key again"
                    );
                    break;
                }
                End::Broken(reason) => {
                    RESTARTS.0.fetch_add(1, Ordering::Relaxed);
                    debug!(key = w.key, revision, reason, "watch broke; resuming");
                    if !w.pause().await {
                        return;
                    }
                }
            }
        }
    }
}

impl Watcher {
    /// Sleeps for the next backoff delay; false when the receiver went away.
    async fn pause(&mut self) -> bool {
        let delay = self.backoff.next().unwrap_or(Duration::from_secs(5));
        tokio::select! {
            _ = self.tx.closed() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    /// Sends an event; false when the receiver went away.
    async fn send(&self, event: KeyEvent) -> bool {
        self.tx.send(event).await.is_ok()
    }

    /// Reads and sends a snapshot, retrying until etcd answers; its revision,
    /// or `None` when the receiver went away.
    async fn snapshot(&mut self) -> Option<i64> {
        loop {
            let options = self.prefix.then(|| GetOptions::new().with_prefix());
            let got = timed(
                "get",
                REQUEST_TIMEOUT,
                self.client.get(self.key.as_bytes(), options),
            )
            .await;
            match got {
                Ok(resp) => {
                    let revision = resp.header().map_or(0, |h| h.revision());
                    let kvs = resp
                        .kvs()
                        .iter()
                        .map(|kv| {
                            (
                                String::from_utf8_lossy(kv.key()).into_owned(),
                                kv.value().to_vec(),
                                kv.mod_revision(),
                            )
                        })
                        .collect();
                    self.backoff = new_backoff();
                    if !self.send(KeyEvent::Snapshot { kvs, revision }).await {
                        return None;
                    }
                    return Some(revision);
                }
                Err(e) => {
                    warn!(key = self.key, error = %Chain(&e), "cannot read the watched key; retrying");
                    if !self.pause().await {
                        return None;
                    }
                }
            }
        }
    }

    /// Watches from `*revision + 1`, sending events and advancing `*revision`
    /// to the last revision delivered, until the stream ends.
    async fn watch_from(&mut self, revision: &mut i64) -> End {
        let mut options = WatchOptions::new()
            .with_start_revision(*revision + 1)
            .with_progress_notify();
        if self.prefix {
            options = options.with_prefix();
        }
        let opened = timed(
            "watch",
            REQUEST_TIMEOUT,
            self.client.watch(self.key.as_bytes(), Some(options)),
        )
        .await;
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(e) => return End::Broken(Chain(&e).to_string()),
        };
        let mut asked_progress = false;
        loop {
            let message = tokio::select! {
                _ = self.tx.closed() => return End::Closed,
                m = tokio::time::timeout(WATCH_PROGRESS_INTERVAL, stream.message()) => m,
            };
            let resp = match message {
                Err(_) if asked_progress => {
                    return End::Broken("no answer to a progress request".to_owned());
                }
                Err(_) => {
                    if let Err(e) = stream.request_progress().await {
                        return End::Broken(e.to_string());
                    }
                    asked_progress = true;
                    continue;
                }
                Ok(Err(e)) => return End::Broken(e.to_string()),
                Ok(Ok(None)) => return End::Broken("stream ended".to_owned()),
                Ok(Ok(Some(resp))) => resp,
            };
            asked_progress = false;
            self.backoff = new_backoff();
            if resp.compact_revision() > 0 {
                return End::Compacted(resp.compact_revision());
            }
            if resp.canceled() {
                return End::Broken(format!("canceled: {}", resp.cancel_reason()));
            }
            if resp.events().is_empty() {
                // A progress notification: every event up to its revision has
                // been delivered. (Not so for the `created` answer, which
                // comes before the replay of older events.)
                if let (false, Some(header)) = (resp.created(), resp.header()) {
                    *revision = (*revision).max(header.revision());
                }
                continue;
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let mod_revision = kv.mod_revision();
                let event = match event.event_type() {
                    EventType::Put => KeyEvent::Put {
                        key,
                        value: kv.value().to_vec(),
                        mod_revision,
                    },
                    EventType::Delete => KeyEvent::Delete { key, mod_revision },
                };
                if !self.send(event).await {
                    return End::Closed;
                }
                *revision = (*revision).max(mod_revision);
            }
        }
    }
}
