//! The agent's watches: its role key, the cluster config, the plane
//! configs, the elections and the voters' health reports, each resumed by `deckhand_etcd::watch_key`
//! after a broken stream or a compaction, their events tagged with where
//! they came from and merged into one channel for the loop.

use deckhand_etcd::KeyEvent;
use deckhand_model::Keyspace;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Which watch an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This node's role key.
    Role,
    /// The cluster config key.
    Config,
    /// `config/planes/` (prefix).
    Planes,
    /// `elections/` (prefix): only wakes the loop up.
    Elections,
    /// `health/voters/` (prefix): the voters' published health
    /// ([`super::voter_health`]).
    VoterHealth,
}

/// The running watches and the channel their events arrive on.
pub struct Watches {
    tasks: Vec<JoinHandle<()>>,
    tx: mpsc::Sender<(Source, KeyEvent)>,
    /// Events, in arrival order per watch.
    pub events: mpsc::Receiver<(Source, KeyEvent)>,
}

impl Default for Watches {
    /// No watch yet; [`Watches::start`] starts them.
    fn default() -> Watches {
        let (tx, events) = mpsc::channel(64);
        Watches {
            tasks: Vec::new(),
            tx,
            events,
        }
    }
}

impl Watches {
    /// (Re)starts every watch of node `id` on `client`; each first sends a
    /// [`KeyEvent::Snapshot`] of what it watches.
    pub fn start(&mut self, client: &etcd_client::Client, ks: &Keyspace, id: &str) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        for (src, key, prefix) in [
            (Source::Role, ks.role(id), false),
            (Source::Config, ks.cluster_config(), false),
            (Source::Planes, ks.planes(), true),
            (Source::Elections, ks.elections(), true),
            (Source::VoterHealth, ks.voter_healths(), true),
        ] {
            let mut rx = deckhand_etcd::watch_key(client.clone(), key, prefix);
            let tx = self.tx.clone();
            self.tasks.push(tokio::spawn(async move {
                while let Some(ev) = rx.recv().await {
                    if tx.send((src, ev)).await.is_err() {
                        break;
                    }
                }
            }));
        }
    }
}
