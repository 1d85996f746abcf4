//! What [`Preseeder::ensure`](crate::Preseeder::ensure) tells its caller:
//! an [`Event`] as each thing happens, and a [`Report`] at the end.

use std::time::Duration;

use deckhand_model::{ImageFailure, ImageRef, ImagesStatus};

use crate::Progress;

/// One thing that happened to one image during [`Preseeder::ensure`](crate::Preseeder::ensure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The image.
    pub image: ImageRef,
    /// What happened.
    pub kind: EventKind,
}

/// What happened to an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// Checking whether the image is present.
    Checking,
    /// The image is present; nothing to do.
    Present,
    /// Another [`Preseeder::ensure`](crate::Preseeder::ensure) on the same
    /// [`Preseeder`](crate::Preseeder) is pulling this image; waiting for its
    /// result instead of pulling it again.
    Waiting,
    /// A pull attempt starts (`attempt` counts from 1).
    Pulling {
        /// The attempt number, from 1.
        attempt: u32,
    },
    /// A layer of the pull made progress.
    Progress(Progress),
    /// An attempt failed; the next starts after `delay`.
    Retrying {
        /// The attempt that failed, from 1.
        attempt: u32,
        /// Why it failed.
        reason: String,
        /// Delay before the next attempt.
        delay: Duration,
    },
    /// The image was pulled and is present.
    Pulled {
        /// From the first attempt's start to the end of the last.
        elapsed: Duration,
        /// Bytes downloaded, as Docker's progress reported them.
        bytes: u64,
        /// Layers downloaded.
        layers_downloaded: u32,
        /// Layers the daemon already had.
        layers_existing: u32,
    },
    /// The image is not present and could not be pulled.
    Failed {
        /// Why, in words (the registry's message verbatim, "no progress for
        /// 60 s", "not enough free disk space in ...").
        reason: String,
    },
}

/// An image pulled by [`Preseeder::ensure`](crate::Preseeder::ensure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The image.
    pub image: ImageRef,
    /// From the first attempt's start to the end of the last.
    pub elapsed: Duration,
    /// Bytes downloaded, as Docker's progress reported them (a layer too
    /// small for a progress message may count 0).
    pub bytes: u64,
    /// Layers downloaded.
    pub layers_downloaded: u32,
    /// Layers the daemon already had (shared with another image).
    pub layers_existing: u32,
}

/// An image that is not present and could not be pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The image.
    pub image: ImageRef,
    /// Why, in words.
    pub reason: String,
}

impl From<&Failure> for ImageFailure {
    fn from(f: &Failure) -> ImageFailure {
        ImageFailure {
            image: f.image.to_string(),
            reason: f.reason.clone(),
        }
    }
}

/// What [`Preseeder::ensure`](crate::Preseeder::ensure) did, each image in exactly one list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Already present: nothing downloaded.
    pub present: Vec<ImageRef>,
    /// Pulled by this call.
    pub pulled: Vec<Pulled>,
    /// Missing when checked, then pulled by a concurrent call on the same
    /// [`Preseeder`](crate::Preseeder) that this call waited for: present
    /// now, downloaded once, by the other call.
    pub joined: Vec<ImageRef>,
    /// Not present, and the pull failed.
    pub failed: Vec<Failure>,
    /// Layers this call downloaded, over all its pulls.
    pub layers_downloaded: u64,
}

impl Report {
    /// Number of images present now (present, pulled or joined).
    pub fn present_now(&self) -> usize {
        self.present.len() + self.pulled.len() + self.joined.len()
    }

    /// The status document's image section for these images (nothing is
    /// pulling once `ensure` returned).
    pub fn images_status(&self) -> ImagesStatus {
        ImagesStatus {
            wanted: self.present_now() + self.failed.len(),
            present: self.present_now(),
            pulling: Vec::new(),
            failed: self.failed.iter().map(ImageFailure::from).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_status() {
        let r = Report {
            present: vec![ImageRef::parse("a").unwrap()],
            joined: vec![ImageRef::parse("b").unwrap()],
            failed: vec![Failure {
                image: ImageRef::parse("c").unwrap(),
                reason: "no".into(),
            }],
            ..Default::default()
        };
        let s = r.images_status();
        assert_eq!((s.wanted, s.present), (3, 2));
        assert_eq!(s.failed[0].image, "docker.io/library/c:latest");
    }
}
