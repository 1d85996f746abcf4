//! Reading the progress stream of a pull.
//!
//! ImageCreate answers with one JSON object per line
//! (<https://docs.docker.com/reference/api/engine/version/v1.41/#tag/Image/operation/ImageCreate>):
//! `{"status":"Pulling from team/app","id":"1"}`, then per layer (`id` is
//! the layer's short digest) `Pulling fs layer`, `Waiting`, `Downloading`
//! with `progressDetail: {current, total}` in bytes, `Verifying Checksum`,
//! `Download complete`, `Extracting` (bytes again), `Pull complete`; or
//! `Already exists` for a layer the daemon has; then `Digest: ...` and
//! `Status: ...` without an id. An error arrives as `errorDetail`.

use std::collections::BTreeMap;

use bollard::models::CreateImageInfo;

/// One layer of a pull, as observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LayerState {
    Queued,
    Downloading,
    Downloaded,
    Extracting,
    Done,
    Existing,
}

#[derive(Debug, Clone)]
struct Layer {
    state: LayerState,
    /// Bytes downloaded so far.
    current: u64,
    /// Size of the compressed layer in bytes, once Docker said it.
    total: Option<u64>,
    /// Bytes extracted so far.
    extracted: u64,
}

/// A progress update of one pull: the layer that changed, and the pull's
/// totals so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The layer's short id as Docker prints it (12 hex digits).
    pub layer: String,
    /// Docker's words for the layer's state: `Downloading`, `Extracting`,
    /// `Pull complete`, `Already exists`, ...
    pub status: String,
    /// Bytes of this layer done in that state (downloaded, or extracted).
    pub current: u64,
    /// Bytes of this layer in all, when Docker said it.
    pub total: Option<u64>,
    /// Bytes downloaded so far over all layers of the image.
    pub bytes: u64,
    /// Sum of the sizes of the layers being downloaded, as far as known,
    /// in bytes (grows as Docker announces layers).
    pub total_bytes: u64,
    /// Layers downloaded (complete) so far.
    pub layers_downloaded: u32,
    /// Layers the daemon already had (`Already exists`): not downloaded.
    pub layers_existing: u32,
    /// Layers seen in all.
    pub layers: u32,
}

/// What a finished pull downloaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub bytes: u64,
    pub layers_downloaded: u32,
    pub layers_existing: u32,
}

/// Folds a pull's progress stream into per-layer state.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    layers: BTreeMap<String, Layer>,
}

impl Tracker {
    /// Applies one message; returns the progress update when the message
    /// says something new about a layer (a state change or more bytes),
    /// `None` for a repeat or a message that is not about a layer.
    pub(crate) fn update(&mut self, info: &CreateImageInfo) -> Option<Progress> {
        let status = info.status.as_deref()?;
        let id = info.id.as_deref()?;
        let (current, total) = info
            .progress_detail
            .as_ref()
            .map(|d| {
                (
                    d.current.and_then(|c| u64::try_from(c).ok()),
                    d.total
                        .and_then(|t| u64::try_from(t).ok())
                        .filter(|t| *t > 0),
                )
            })
            .unwrap_or((None, None));
        let state = match status {
            "Pulling fs layer" | "Waiting" => LayerState::Queued,
            "Downloading" => LayerState::Downloading,
            "Verifying Checksum" | "Download complete" => LayerState::Downloaded,
            "Extracting" => LayerState::Extracting,
            "Pull complete" => LayerState::Done,
            "Already exists" => LayerState::Existing,
            // "Pulling from <repo>" (id: the tag), "Retrying in N seconds"
            // and anything new: not a layer state.
            _ => return None,
        };
        let fresh = !self.layers.contains_key(id);
        let layer = self.layers.entry(id.to_string()).or_insert(Layer {
            state: LayerState::Queued,
            current: 0,
            total: None,
            extracted: 0,
        });
        let before = (layer.state, layer.current, layer.total);
        let mut shown = current.unwrap_or(0);
        match state {
            LayerState::Downloading => {
                layer.state = state;
                if let Some(c) = current {
                    layer.current = layer.current.max(c);
                }
                if total.is_some() {
                    layer.total = total;
                }
            }
            LayerState::Downloaded => {
                layer.state = state;
                if let Some(t) = layer.total {
                    layer.current = t;
                }
                shown = layer.current;
            }
            LayerState::Extracting => {
                // Extraction bytes are not download bytes; keep the
                // download count, but a change is progress.
                layer.state = state;
                if let Some(t) = layer.total {
                    layer.current = t;
                }
                let extracted = layer.extracted;
                layer.extracted = layer.extracted.max(shown);
                let changed = fresh || before.0 != LayerState::Extracting || shown > extracted;
                return changed.then(|| self.progress(id, status, shown, total));
            }
            LayerState::Done => {
                layer.state = state;
                if let Some(t) = layer.total {
                    layer.current = t;
                }
                shown = layer.current;
            }
            LayerState::Existing | LayerState::Queued => layer.state = state,
        }
        let after = (layer.state, layer.current, layer.total);
        let total = layer.total;
        (fresh || after != before).then(|| self.progress(id, status, shown, total))
    }

    fn progress(&self, layer: &str, status: &str, current: u64, total: Option<u64>) -> Progress {
        let t = self.totals();
        Progress {
            layer: layer.to_string(),
            status: status.to_string(),
            current,
            total,
            bytes: t.bytes,
            total_bytes: self
                .layers
                .values()
                .filter(|l| l.state != LayerState::Existing)
                .filter_map(|l| l.total)
                .sum(),
            layers_downloaded: t.layers_downloaded,
            layers_existing: t.layers_existing,
            layers: u32::try_from(self.layers.len()).unwrap_or(u32::MAX),
        }
    }

    /// Bytes and layers downloaded so far.
    pub(crate) fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for l in self.layers.values() {
            match l.state {
                LayerState::Existing => t.layers_existing += 1,
                LayerState::Downloaded | LayerState::Extracting | LayerState::Done => {
                    t.layers_downloaded += 1;
                    t.bytes += l.current;
                }
                LayerState::Queued | LayerState::Downloading => t.bytes += l.current,
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ProgressDetail;

    fn msg(
        status: &str,
        id: Option<&str>,
        cur: Option<i64>,
        total: Option<i64>,
    ) -> CreateImageInfo {
        CreateImageInfo {
            status: Some(status.into()),
            id: id.map(Into::into),
            progress_detail: (cur.is_some() || total.is_some()).then_some(ProgressDetail {
                current: cur,
                total,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn counts_bytes_and_layers_of_a_real_looking_pull() {
        let mut t = Tracker::default();
        let stream = [
            msg("Pulling from team/app", Some("1"), None, None),
            msg("Already exists", Some("aaa"), None, None),
            msg("Pulling fs layer", Some("bbb"), None, None),
            msg("Pulling fs layer", Some("ccc"), None, None),
            msg("Waiting", Some("ccc"), None, None),
            msg("Downloading", Some("bbb"), Some(100), Some(1000)),
            msg("Downloading", Some("bbb"), Some(600), Some(1000)),
            msg("Verifying Checksum", Some("bbb"), None, None),
            msg("Download complete", Some("bbb"), None, None),
            msg("Extracting", Some("bbb"), Some(500), Some(1000)),
            msg("Pull complete", Some("bbb"), None, None),
            // A layer too small for a Downloading message.
            msg("Download complete", Some("ccc"), None, None),
            msg("Pull complete", Some("ccc"), None, None),
            msg("Digest: sha256:00", None, None, None),
            msg(
                "Status: Downloaded newer image for team/app:1",
                None,
                None,
                None,
            ),
        ];
        let updates: Vec<Option<Progress>> = stream.iter().map(|m| t.update(m)).collect();
        assert!(updates[0].is_none(), "Pulling from is not a layer");
        let p = updates[6].as_ref().unwrap();
        assert_eq!(
            (p.layer.as_str(), p.current, p.total),
            ("bbb", 600, Some(1000))
        );
        assert_eq!((p.bytes, p.total_bytes, p.layers), (600, 1000, 3));
        assert!(updates[13].is_none() && updates[14].is_none());
        assert_eq!(
            t.totals(),
            Totals {
                bytes: 1000,
                layers_downloaded: 2,
                layers_existing: 1
            }
        );
        // A repeat says nothing new.
        assert!(
            t.update(&msg("Pull complete", Some("bbb"), None, None))
                .is_none()
        );
    }
}
