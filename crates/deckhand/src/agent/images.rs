//! The agent's preseed worker: keeps the images the planner wants present
//! in the local Docker, in the background, with the `[docker]` settings of
//! the agent config, and reports what it sees.
//!
//! It runs [`Preseeder::ensure`] on the wanted set whenever the set changes
//! (a new `ensure` at once, beside any running one: the preseeder never
//! pulls the same image twice at once) and again every [`RECHECK`], which
//! also notices images removed behind its back (`docker rmi`, a prune) and
//! retries failed pulls. Every `ensure` event updates the shared
//! [`ImagesState`] that the plane pass reads and the status shows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use deckhand_images::{EventKind, Preseeder};
use deckhand_model::{ImageFailure, ImageRef, ImagesStatus};
use tokio::sync::{mpsc, watch};

use crate::config::DockerSettings;
use crate::images::{pull_options, write_cache};

/// How often the wanted images are checked again when nothing changed.
pub const RECHECK: Duration = Duration::from_secs(60);

/// What the plane pass wants: the images, and the pull concurrency (the
/// cluster config's `preseed_concurrency`).
pub type Wanted = (BTreeSet<ImageRef>, usize);

/// What the preseed worker reports about the images this node keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImagesState {
    /// The images wanted, as last received.
    pub wanted: BTreeSet<ImageRef>,
    /// Wanted images present in the local Docker.
    pub present: BTreeSet<ImageRef>,
    /// Images being pulled now.
    pub pulling: BTreeSet<ImageRef>,
    /// Images whose last pull failed after every attempt, with the reason.
    pub failed: BTreeMap<ImageRef, String>,
    /// The worker has checked the current wanted set at least once.
    pub checked: bool,
}

impl ImagesState {
    /// Whether every image of `images` is present or has failed.
    pub fn settled(&self, images: &BTreeSet<ImageRef>) -> bool {
        images
            .iter()
            .all(|i| self.present.contains(i) || self.failed.contains_key(i))
    }

    /// The status document's view.
    pub fn status(&self) -> ImagesStatus {
        ImagesStatus {
            wanted: self.wanted.len(),
            present: self
                .wanted
                .iter()
                .filter(|i| self.present.contains(*i))
                .count(),
            pulling: self.pulling.iter().map(|i| i.to_string()).collect(),
            failed: self
                .failed
                .iter()
                .map(|(i, r)| ImageFailure {
                    image: i.to_string(),
                    reason: r.clone(),
                })
                .collect(),
        }
    }
}

/// Runs the worker until `wanted`'s sender is dropped: pulls through the
/// daemon at `docker.socket` with the pull options of `docker`
/// ([`pull_options`]), `concurrency` following the wanted set's, and writes
/// the image cache `cache` whenever the wanted set changes.
pub async fn run(
    docker: DockerSettings,
    cache: PathBuf,
    mut wanted: watch::Receiver<Wanted>,
    state: watch::Sender<ImagesState>,
) {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (done_tx, mut done) = mpsc::unbounded_channel::<BTreeSet<ImageRef>>();
    let mut preseeder: Option<Preseeder> = None;
    let mut current: BTreeSet<ImageRef> = BTreeSet::new();
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut start = false;
        tokio::select! {
            changed = wanted.changed() => {
                if changed.is_err() {
                    return;
                }
                let (images, concurrency) = wanted.borrow_and_update().clone();
                let p = preseeder.get_or_insert_with(|| {
                    Preseeder::new(&docker.socket, pull_options(&docker, concurrency))
                });
                if p.concurrency() != concurrency {
                    p.set_concurrency(concurrency);
                }
                if images != current {
                    // For `deckhand preseed` at boot, before etcd answers.
                    if let Err(e) = write_cache(&cache, &images) {
                        tracing::debug!("cannot write {}: {e:#}", cache.display());
                    }
                    current = images;
                    state.send_modify(|s| {
                        s.wanted = current.clone();
                        s.checked = false;
                        // Forget what is no longer wanted.
                        s.present.retain(|i| current.contains(i));
                        s.failed.retain(|i, _| current.contains(i));
                    });
                    start = true;
                }
            }
            _ = recheck.tick() => start = !current.is_empty(),
            Some(ev) = events.recv() => {
                let ev: deckhand_images::Event = ev;
                state.send_if_modified(|s| apply(s, &ev.image, &ev.kind));
            }
            Some(set) = done.recv() => {
                state.send_if_modified(|s| {
                    let was = s.checked;
                    if set == s.wanted {
                        s.checked = true;
                    }
                    was != s.checked
                });
            }
        }
        if start && let Some(p) = &preseeder {
            let p = p.clone();
            let set = current.clone();
            let images: Vec<ImageRef> = set.iter().cloned().collect();
            let events_tx = events_tx.clone();
            let done_tx = done_tx.clone();
            tokio::spawn(async move {
                let report = p.ensure(&images, events_tx).await;
                for f in &report.failed {
                    tracing::warn!("preseed: {} not present: {}", f.image, f.reason);
                    super::metrics::image_pull_failed();
                }
                for pulled in &report.pulled {
                    super::metrics::image_pulled(pulled.bytes, pulled.elapsed);
                    tracing::info!(
                        "preseed: pulled {} in {:.1} s ({} bytes)",
                        pulled.image,
                        pulled.elapsed.as_secs_f64(),
                        pulled.bytes
                    );
                }
                let _ = done_tx.send(set);
            });
        }
    }
}

/// Applies one event to the state; true when it changed.
fn apply(s: &mut ImagesState, image: &ImageRef, kind: &EventKind) -> bool {
    if !s.wanted.contains(image) {
        return false;
    }
    let before = s.clone();
    match kind {
        EventKind::Present | EventKind::Pulled { .. } => {
            s.present.insert(image.clone());
            s.pulling.remove(image);
            s.failed.remove(image);
        }
        EventKind::Pulling { .. } | EventKind::Waiting => {
            s.present.remove(image);
            s.pulling.insert(image.clone());
        }
        EventKind::Failed { reason } => {
            s.present.remove(image);
            s.pulling.remove(image);
            s.failed.insert(image.clone(), reason.clone());
        }
        EventKind::Checking | EventKind::Progress(_) | EventKind::Retrying { .. } => {}
    }
    *s != before
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    /// Runs the worker with the `[docker]` settings of a config whose drop-in
    /// says `dropin`, wants `image`, and returns why it failed.
    async fn failure_with(dropin: &str, image: &ImageRef) -> String {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.toml");
        std::fs::write(&main, "[etcd]\nendpoints=[\"http://10.0.0.1:2379\"]\n").unwrap();
        std::fs::create_dir(dir.path().join("config.d")).unwrap();
        std::fs::write(dir.path().join("config.d/50-docker.toml"), dropin).unwrap();
        let settings = config::load(&main).unwrap();
        let (wanted_tx, wanted_rx) = watch::channel((BTreeSet::new(), 0));
        let (state_tx, mut state_rx) = watch::channel(ImagesState::default());
        let cache = dir.path().join("images.json");
        let worker = tokio::spawn(run(settings.docker, cache.clone(), wanted_rx, state_tx));
        wanted_tx
            .send((BTreeSet::from([image.clone()]), 2))
            .unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Some(r) = state_rx.borrow_and_update().failed.get(image) {
                    return r.clone();
                }
                state_rx.changed().await.unwrap();
            }
        })
        .await
        .expect("the worker reported no failure within 30 s");
        assert!(cache.exists(), "the image cache is written");
        drop(wanted_tx);
        let _ = worker.await;
        reason
    }

    /// The agent's worker uses `docker.socket` and `docker.min_free_bytes`
    /// from the agent config's drop-ins (the second case asks the host's
    /// Docker daemon, as the preseed library's tests do).
    #[tokio::test]
    async fn the_worker_follows_the_docker_settings_of_the_config() {
        let image = ImageRef::parse("127.0.0.1:9/deckhand-test/absent:1").unwrap();
        let reason = failure_with(
            "[docker]\nsocket=\"/nonexistent/deckhand-test.sock\"\npull_attempts=1\n",
            &image,
        )
        .await;
        assert!(
            reason.contains("/nonexistent/deckhand-test.sock"),
            "the configured socket is used: {reason}"
        );
        let reason = failure_with(
            "[docker]\nmin_free_bytes=4611686018427387904\npull_attempts=1\n",
            &image,
        )
        .await;
        assert!(
            reason.contains("not enough free disk space")
                && reason.contains("docker.min_free_bytes"),
            "the configured free-space floor is used: {reason}"
        );
    }

    fn img(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn events_move_images_between_present_pulling_and_failed() {
        let (a, b) = (img("r/a:1"), img("r/b:1"));
        let mut s = ImagesState {
            wanted: [a.clone(), b.clone()].into(),
            ..Default::default()
        };
        assert!(!s.settled(&s.wanted.clone()));
        assert!(apply(&mut s, &a, &EventKind::Pulling { attempt: 1 }));
        assert!(s.pulling.contains(&a));
        assert!(apply(
            &mut s,
            &a,
            &EventKind::Pulled {
                elapsed: Duration::from_secs(1),
                bytes: 10,
                layers_downloaded: 1,
                layers_existing: 0
            }
        ));
        assert!(s.present.contains(&a) && s.pulling.is_empty());
        assert!(apply(
            &mut s,
            &b,
            &EventKind::Failed {
                reason: "manifest unknown".into()
            }
        ));
        assert!(
            s.settled(&s.wanted.clone()),
            "present or failed counts as settled"
        );
        let st = s.status();
        assert_eq!((st.wanted, st.present), (2, 1));
        assert_eq!(st.failed[0].reason, "manifest unknown");
        // A later check finds b present: its failure is forgotten.
        assert!(apply(&mut s, &b, &EventKind::Present));
        assert!(s.failed.is_empty());
        assert!(
            !apply(&mut s, &b, &EventKind::Present),
            "no change, no wake-up"
        );
        // Events about images no longer wanted are ignored.
        assert!(!apply(&mut s, &img("r/c:1"), &EventKind::Present));
    }
}
