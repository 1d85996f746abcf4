//! How pulls are run: [`PullOptions`] and its defaults.

use std::path::PathBuf;
use std::time::Duration;

use crate::MIB;

/// How pulls are run. [`Default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullOptions {
    /// Most pulls one [`Preseeder`](crate::Preseeder) runs at once, over all
    /// its callers. Default 3; 0 counts as 1.
    pub concurrency: usize,
    /// A pull attempt whose progress stream says nothing new for this long
    /// is cancelled (its connection closed, which makes the daemon abandon
    /// it) and counts as a failed attempt: "no progress for 60 s". Default
    /// 60 s.
    pub no_progress_timeout: Duration,
    /// Longest time one image may take, over all its attempts and the
    /// delays between them, counted from its first attempt (time waiting
    /// for a free pull slot is not counted). Default 30 min.
    pub deadline: Duration,
    /// Attempts per image, at least 1. Default 3. Errors that another
    /// attempt cannot fix (unknown image, access denied, disk full) are not
    /// retried.
    pub attempts: u32,
    /// Delay before the first retry; each later delay doubles, up to
    /// [`PullOptions::max_backoff`], plus a random jitter of up to the delay
    /// itself. Default 2 s.
    pub min_backoff: Duration,
    /// Longest delay between two attempts (before jitter). Default 60 s.
    pub max_backoff: Duration,
    /// Free bytes the daemon's root dir (`DockerRootDir`) must have before a
    /// pull starts, else the image fails with "not enough free disk
    /// space". Default 1 GiB (1073741824).
    pub min_free_bytes: u64,
    /// A Docker client `config.json` with registry credentials (`auths`);
    /// `None` pulls anonymously. Read at each pull; a missing or invalid
    /// file fails the pull with its path.
    pub docker_config: Option<PathBuf>,
    /// Timeout of one API request (version, inspect, info). A pull's answer
    /// is bounded by [`PullOptions::no_progress_timeout`] instead (the
    /// daemon answers only once the registry gave the manifest). Default
    /// 30 s.
    pub request_timeout: Duration,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            concurrency: 3,
            no_progress_timeout: Duration::from_secs(60),
            deadline: Duration::from_secs(30 * 60),
            attempts: 3,
            min_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(60),
            min_free_bytes: 1024 * MIB,
            docker_config: None,
            request_timeout: Duration::from_secs(30),
        }
    }
}
