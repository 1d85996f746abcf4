//! The agent's preseed worker: keeps the images the planner wants present
//! in the local Docker, in the background, and reports what it sees.
//!
//! It runs [`Preseeder::ensure`] on the wanted set whenever the set changes
//! (a new `ensure` at once, beside any running one: the preseeder never
//! pulls the same image twice at once) and again every [`RECHECK`], which
//! also notices images removed behind its back (`docker rmi`, a prune) and
//! retries failed pulls. Every `ensure` event updates the shared
//! [`ImagesState`] that the plane pass reads and the status shows.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use deckhand_images::{EventKind, Preseeder, PullOptions};
use deckhand_model::ImageRef;
use tokio::sync::{mpsc, watch};

use crate::planes::ImagesState;

/// How often the wanted images are checked again when nothing changed.
pub const RECHECK: Duration = Duration::from_secs(60);

/// What the plane pass wants: the images, and the pull concurrency (the
/// cluster config's `preseed_concurrency`).
pub type Wanted = (BTreeSet<ImageRef>, usize);

/// The Docker socket and pull options from the agent's settings.
pub fn pull_options(_settings: &crate::config::Settings) -> (PathBuf, PullOptions) {
    (
        PathBuf::from("/var/run/docker.sock"),
        PullOptions::default(),
    )
}

/// Runs the worker until `wanted`'s sender is dropped.
pub async fn run(
    socket: PathBuf,
    opts: PullOptions,
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
                let p = preseeder.get_or_insert_with(|| Preseeder::new(&socket, opts.clone()));
                if p.concurrency() != concurrency {
                    p.set_concurrency(concurrency);
                }
                if images != current {
                    // For `deckhand preseed` at boot, before etcd answers.
                    let cache = std::path::Path::new(crate::preseed::CACHE_FILE);
                    if let Err(e) = crate::preseed::write_cache(cache, &images) {
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
                }
                for pulled in &report.pulled {
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
