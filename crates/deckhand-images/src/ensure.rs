//! Making a set of images present ([`Preseeder::ensure`]): a presence check
//! for each, a pull of the missing ones, and never two pulls of one image at
//! once (a second caller waits for the first pull's result).

use deckhand_model::ImageRef;
use futures_util::StreamExt;
use tokio::sync::{mpsc::UnboundedSender, watch};

use crate::preseeder::Inner;
use crate::{Event, EventKind, Failure, Preseeder, Pulled, Report};

/// The result of one pull, shared with the callers that waited for it.
#[derive(Debug, Clone)]
pub(crate) enum Shared {
    Present,
    Pulled,
    Failed(String),
}

/// One image's outcome within an `ensure`.
enum Outcome {
    Present,
    Pulled(Pulled),
    Joined,
    Failed(String),
}

/// Removes an image's in-flight entry when its pull ends (or its future is
/// dropped: the waiters then see the sender gone and pull themselves).
struct InflightGuard<'a> {
    inner: &'a Inner,
    image: ImageRef,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.inner
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.image);
    }
}

impl Preseeder {
    /// Makes every image of `images` present: checks each, pulls the
    /// missing ones (at most
    /// [`PullOptions::concurrency`](crate::PullOptions::concurrency) at once
    /// over all callers of this preseeder, never the same image twice at
    /// once: a concurrent call for an image being pulled waits for that
    /// pull's result), and reports each image in one list of the
    /// [`Report`].
    /// Duplicates in `images` count once. Events go to `events` as they
    /// happen (a closed receiver is fine).
    ///
    /// Never fails as a whole: an image that cannot be checked or pulled
    /// (daemon down, registry error, no progress, deadline, disk space,
    /// credentials) is in [`Report::failed`] with the reason.
    pub async fn ensure(&self, images: &[ImageRef], events: UnboundedSender<Event>) -> Report {
        let mut unique: Vec<ImageRef> = images.to_vec();
        unique.sort();
        unique.dedup();
        // Presence checks are cheap; the slots bound the pulls.
        let outcomes: Vec<(ImageRef, Outcome)> = futures_util::stream::iter(unique)
            .map(|image| {
                let events = events.clone();
                async move {
                    let o = self.ensure_one(&image, &events).await;
                    (image, o)
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut report = Report::default();
        for (image, o) in outcomes {
            match o {
                Outcome::Present => report.present.push(image),
                Outcome::Pulled(p) => {
                    report.layers_downloaded += u64::from(p.layers_downloaded);
                    report.pulled.push(p);
                }
                Outcome::Joined => report.joined.push(image),
                Outcome::Failed(reason) => report.failed.push(Failure { image, reason }),
            }
        }
        report.present.sort();
        report.joined.sort();
        report.pulled.sort_by(|a, b| a.image.cmp(&b.image));
        report.failed.sort_by(|a, b| a.image.cmp(&b.image));
        report
    }

    /// One image of an `ensure`: its presence check, then its pull, or a
    /// wait for the pull another caller runs (pulling anew if that caller's
    /// future is dropped).
    async fn ensure_one(&self, image: &ImageRef, events: &UnboundedSender<Event>) -> Outcome {
        let emit = |kind: EventKind| {
            let _ = events.send(Event {
                image: image.clone(),
                kind,
            });
        };
        emit(EventKind::Checking);
        match self.is_present(image).await {
            Ok(true) => {
                emit(EventKind::Present);
                return Outcome::Present;
            }
            Ok(false) => {}
            Err(e) => {
                let reason = format!("cannot check whether {image} is present: {e}");
                emit(EventKind::Failed {
                    reason: reason.clone(),
                });
                return Outcome::Failed(reason);
            }
        }
        loop {
            let claim = {
                let mut map = self
                    .inner
                    .inflight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                match map.get(image) {
                    Some(rx) => Err(rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        map.insert(image.clone(), rx);
                        Ok(tx)
                    }
                }
            };
            match claim {
                Err(mut rx) => {
                    emit(EventKind::Waiting);
                    let result = rx.wait_for(Option::is_some).await.map(|v| v.clone());
                    match result {
                        Ok(Some(Shared::Present | Shared::Pulled)) => {
                            emit(EventKind::Present);
                            return Outcome::Joined;
                        }
                        Ok(Some(Shared::Failed(reason))) => {
                            emit(EventKind::Failed {
                                reason: reason.clone(),
                            });
                            return Outcome::Failed(reason);
                        }
                        // The puller's future was dropped: claim it anew.
                        Ok(None) | Err(_) => continue,
                    }
                }
                Ok(tx) => {
                    let _guard = InflightGuard {
                        inner: &self.inner,
                        image: image.clone(),
                    };
                    // Another call may have pulled it between our check and
                    // our claim.
                    if let Ok(true) = self.is_present(image).await {
                        let _ = tx.send(Some(Shared::Present));
                        emit(EventKind::Present);
                        return Outcome::Present;
                    }
                    let outcome = self.pull(image, &emit).await;
                    let _ = tx.send(Some(match &outcome {
                        Ok(_) => Shared::Pulled,
                        Err(reason) => Shared::Failed(reason.clone()),
                    }));
                    return match outcome {
                        Ok(p) => {
                            emit(EventKind::Pulled {
                                elapsed: p.elapsed,
                                bytes: p.bytes,
                                layers_downloaded: p.layers_downloaded,
                                layers_existing: p.layers_existing,
                            });
                            Outcome::Pulled(p)
                        }
                        Err(reason) => {
                            emit(EventKind::Failed {
                                reason: reason.clone(),
                            });
                            Outcome::Failed(reason)
                        }
                    };
                }
            }
        }
    }
}
