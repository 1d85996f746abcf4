//! Preseed: keeps Docker images present in the local Docker daemon, through
//! the Docker Engine API (<https://docs.docker.com/reference/api/engine/>)
//! over its unix socket.
//!
//! - **Presence** ([`Preseeder::is_present`]): by digest when the reference
//!   pins one (an image whose `RepoDigests` holds `name@digest`), else by
//!   `name:tag` existing locally; ImageInspect,
//!   <https://docs.docker.com/reference/api/engine/version/v1.41/#tag/Image/operation/ImageInspect>.
//! - **Pulls** ([`Preseeder::ensure`]): ImageCreate
//!   (<https://docs.docker.com/reference/api/engine/version/v1.41/#tag/Image/operation/ImageCreate>),
//!   at most [`PullOptions::concurrency`] at once per [`Preseeder`], never
//!   two of the same image at once (a second caller waits for the first
//!   pull's result), each attempt cancelled after
//!   [`PullOptions::no_progress_timeout`] without progress, each image
//!   given up after [`PullOptions::deadline`], retried with exponential
//!   backoff and jitter ([`backon`]).
//! - **Disk**: before each pull attempt, the free space of the file system
//!   holding the daemon's `DockerRootDir` (SystemInfo,
//!   <https://docs.docker.com/reference/api/engine/version/v1.41/#tag/System/operation/SystemInfo>)
//!   must be at least [`PullOptions::min_free_bytes`].
//! - **Credentials**: from a Docker client `config.json`
//!   ([`PullOptions::docker_config`]), per registry.
//!
//! The API version is negotiated with the daemon (`GET /version`), so
//! daemons from Docker 20.10 (API 1.41) on work.

mod auth;
mod progress;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use bollard::Docker;
use bollard::query_parameters::CreateImageOptionsBuilder;
use deckhand_model::{ImageFailure, ImageRef, ImagesStatus};
use futures_util::StreamExt;
use tokio::sync::{OnceCell, Semaphore, mpsc::UnboundedSender, watch};
use tokio::time::Instant;

pub use progress::Progress;

/// One MiB, for messages.
const MIB: u64 = 1024 * 1024;

/// How pulls are run. [`Default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullOptions {
    /// Most pulls one [`Preseeder`] runs at once, over all its callers.
    /// Default 3; 0 counts as 1.
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

/// Why a Docker call failed. Every message says what failed and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The daemon's socket does not answer.
    #[error("cannot reach the Docker daemon at {}: {reason} (is docker.service running?)", socket.display())]
    Unreachable {
        /// The socket path.
        socket: PathBuf,
        /// What the connection said.
        reason: String,
    },
    /// The daemon accepted the connection but did not answer in time.
    #[error("the Docker daemon at {} did not answer {what} within {seconds} s (is it hung? see journalctl -u docker)", socket.display())]
    Timeout {
        /// The socket path.
        socket: PathBuf,
        /// The request.
        what: String,
        /// The request timeout, in seconds.
        seconds: u64,
    },
    /// The daemon answered with an error; `message` is its words verbatim
    /// (for a pull, usually the registry's).
    #[error("{message}")]
    Docker {
        /// What was asked, e.g. `pull of registry.example/app:1`.
        what: String,
        /// The HTTP status, 0 when the error came inside a progress stream.
        status: u16,
        /// The daemon's message.
        message: String,
    },
    /// The Docker `config.json` could not be used.
    #[error("cannot use the Docker credentials file {} (docker.config): {reason}", path.display())]
    Credentials {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// One thing that happened to one image during [`Preseeder::ensure`].
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
    /// Another [`Preseeder::ensure`] on the same [`Preseeder`] is pulling
    /// this image; waiting for its result instead of pulling it again.
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

/// An image pulled by [`Preseeder::ensure`].
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

/// What [`Preseeder::ensure`] did, each image in exactly one list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Already present: nothing downloaded.
    pub present: Vec<ImageRef>,
    /// Pulled by this call.
    pub pulled: Vec<Pulled>,
    /// Missing when checked, then pulled by a concurrent call on the same
    /// [`Preseeder`] that this call waited for: present now, downloaded
    /// once, by the other call.
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

/// The result of one pull, shared with the callers that waited for it.
#[derive(Debug, Clone)]
enum Shared {
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

/// A pull attempt's failure: its reason, and whether another attempt may
/// succeed.
struct AttemptError {
    reason: String,
    retry: bool,
}

/// Keeps images present in one Docker daemon. Cheap to share: clone it
/// (clones share the pull slots and the in-flight pulls).
#[derive(Clone)]
pub struct Preseeder {
    inner: Arc<Inner>,
}

struct Inner {
    socket: PathBuf,
    opts: PullOptions,
    docker: OnceCell<Docker>,
    root_dir: OnceCell<PathBuf>,
    slots: Arc<Semaphore>,
    /// The number of slots, as last set.
    concurrency: Mutex<usize>,
    /// Pulls in progress, by normalized reference: the receiver gets the
    /// pull's result.
    inflight: Mutex<HashMap<ImageRef, watch::Receiver<Option<Shared>>>>,
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

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
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

    fn map_err(&self, what: &str, e: bollard::errors::Error) -> Error {
        use bollard::errors::Error as B;
        match e {
            B::DockerResponseServerError {
                status_code,
                message,
            } => Error::Docker {
                what: what.to_string(),
                status: status_code,
                message,
            },
            B::DockerStreamError { error } => Error::Docker {
                what: what.to_string(),
                status: 0,
                message: error,
            },
            B::RequestTimeoutError => Error::Timeout {
                socket: self.inner.socket.clone(),
                what: what.to_string(),
                seconds: self.inner.opts.request_timeout.as_secs(),
            },
            other => Error::Unreachable {
                socket: self.inner.socket.clone(),
                reason: error_chain(&other),
            },
        }
    }

    async fn docker(&self) -> Result<&Docker, Error> {
        self.inner
            .docker
            .get_or_try_init(|| async {
                let path = self.inner.socket.to_string_lossy();
                let timeout = self.inner.opts.request_timeout.as_secs().max(1);
                let d = Docker::connect_with_socket(&path, timeout, bollard::API_DEFAULT_VERSION)
                    .map_err(|e| self.map_err("a connection", e))?;
                d.negotiate_version()
                    .await
                    .map_err(|e| self.map_err("GET /version", e))
            })
            .await
    }

    /// Whether `image` is present in the daemon: by digest when the
    /// reference pins one (an image whose `RepoDigests` holds
    /// `name@digest`; its tag, if any, is not looked at), else by
    /// `name:tag` existing locally (ImageInspect).
    ///
    /// # Errors
    /// [`Error`] when the daemon cannot be reached or answers anything but
    /// the image or "no such image" (HTTP 404).
    pub async fn is_present(&self, image: &ImageRef) -> Result<bool, Error> {
        let docker = self.docker().await?;
        let name = local_name(image);
        match docker.inspect_image(&name).await {
            Ok(info) => Ok(match image.digest() {
                Some(_) => info.repo_digests.unwrap_or_default().contains(&name),
                None => true,
            }),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(self.map_err(&format!("inspect of {name}"), e)),
        }
    }

    /// Makes every image of `images` present: checks each, pulls the
    /// missing ones (at most [`PullOptions::concurrency`] at once over all
    /// callers of this preseeder, never the same image twice at once: a
    /// concurrent call for an image being pulled waits for that pull's
    /// result), and reports each image in one list of the [`Report`].
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
                    let o = self.one(&image, &events).await;
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

    async fn one(&self, image: &ImageRef, events: &UnboundedSender<Event>) -> Outcome {
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

    /// Pulls with retries, within the deadline, holding a pull slot.
    async fn pull(&self, image: &ImageRef, emit: &impl Fn(EventKind)) -> Result<Pulled, String> {
        let opts = &self.inner.opts;
        let _slot = self
            .inner
            .slots
            .acquire()
            .await
            .map_err(|_| "the preseeder was shut down".to_string())?;
        let start = Instant::now();
        let deadline = start + opts.deadline;
        let attempts = opts.attempts.max(1);
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(opts.min_backoff)
            .with_max_delay(opts.max_backoff.max(opts.min_backoff))
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(attempts as usize)
            .build();
        let out_of_time = |last: &str| {
            format!(
                "pull of {image} did not finish within {} s (docker.pull_deadline_seconds){}",
                opts.deadline.as_secs(),
                if last.is_empty() {
                    String::new()
                } else {
                    format!("; last error: {last}")
                }
            )
        };
        let mut attempt = 1;
        loop {
            emit(EventKind::Pulling { attempt });
            let r = tokio::time::timeout_at(deadline, self.attempt(image, emit)).await;
            let err = match r {
                Err(_) => return Err(out_of_time("")),
                Ok(Ok(t)) => {
                    return Ok(Pulled {
                        image: image.clone(),
                        elapsed: start.elapsed(),
                        bytes: t.bytes,
                        layers_downloaded: t.layers_downloaded,
                        layers_existing: t.layers_existing,
                    });
                }
                Ok(Err(e)) => e,
            };
            if !err.retry {
                return Err(err.reason);
            }
            if attempt >= attempts {
                return Err(if attempts > 1 {
                    format!("{} (after {attempts} attempts)", err.reason)
                } else {
                    err.reason
                });
            }
            let delay = backoff.next().unwrap_or(opts.max_backoff);
            if Instant::now() + delay >= deadline {
                return Err(out_of_time(&err.reason));
            }
            tracing::debug!(image = %image, attempt, delay_ms = delay.as_millis() as u64, "pull failed, retrying: {}", err.reason);
            emit(EventKind::Retrying {
                attempt,
                reason: err.reason,
                delay,
            });
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// The daemon's root dir (`DockerRootDir` of SystemInfo), asked once.
    async fn root_dir(&self) -> Result<&Path, Error> {
        let docker = self.docker().await?;
        self.inner
            .root_dir
            .get_or_try_init(|| async {
                let info = docker
                    .info()
                    .await
                    .map_err(|e| self.map_err("GET /info", e))?;
                Ok(PathBuf::from(
                    info.docker_root_dir
                        .unwrap_or_else(|| "/var/lib/docker".to_string()),
                ))
            })
            .await
            .map(PathBuf::as_path)
    }

    /// Checks the free disk space of the daemon's root dir.
    async fn check_disk(&self) -> Result<(), AttemptError> {
        let min = self.inner.opts.min_free_bytes;
        if min == 0 {
            return Ok(());
        }
        let dir = self.root_dir().await.map_err(|e| AttemptError {
            reason: e.to_string(),
            retry: true,
        })?;
        match rustix::fs::statvfs(dir) {
            Ok(st) => {
                let free = st.f_bavail.saturating_mul(st.f_frsize);
                if free < min {
                    return Err(AttemptError {
                        reason: format!(
                            "not enough free disk space in {}: {} MiB free, at least {} MiB required (docker.min_free_bytes)",
                            dir.display(),
                            free / MIB,
                            min.div_ceil(MIB)
                        ),
                        retry: false,
                    });
                }
            }
            // The daemon's root dir is not visible here (another mount
            // namespace): the daemon's own errors will have to do.
            Err(e) => tracing::warn!(
                "cannot check the free disk space of Docker's root dir {}: {e}; pulling without the check",
                dir.display()
            ),
        }
        Ok(())
    }

    /// One pull attempt: disk check, credentials, ImageCreate, its stream
    /// read until the end with the no-progress timeout.
    async fn attempt(
        &self,
        image: &ImageRef,
        emit: &impl Fn(EventKind),
    ) -> Result<progress::Totals, AttemptError> {
        let opts = &self.inner.opts;
        self.check_disk().await?;
        let credentials = match &opts.docker_config {
            Some(path) => {
                auth::credentials_for(path, image.registry()).map_err(|e| AttemptError {
                    reason: e.to_string(),
                    retry: false,
                })?
            }
            None => None,
        };
        let docker = self.docker().await.map_err(|e| AttemptError {
            reason: e.to_string(),
            retry: true,
        })?;
        // ImageCreate: fromImage=<name>, tag=<tag or digest>, as the docker
        // CLI sends it.
        let options = CreateImageOptionsBuilder::new()
            .from_image(&image.docker_name())
            .tag(image.digest().or(image.tag()).unwrap_or("latest"))
            .build();
        let what = format!("pull of {image}");
        // The daemon answers ImageCreate only once it has the manifest from
        // the registry, which may take longer than an API call: the
        // no-progress timer below bounds the wait instead of the request
        // timeout.
        let docker = docker.clone().with_timeout(
            opts.no_progress_timeout.max(opts.request_timeout) + Duration::from_secs(1),
        );
        let mut stream = docker.create_image(Some(options), None, credentials);
        let mut tracker = progress::Tracker::default();
        let mut last_new = Instant::now();
        loop {
            let next = tokio::time::timeout_at(last_new + opts.no_progress_timeout, stream.next());
            match next.await {
                Err(_) => {
                    return Err(AttemptError {
                        reason: format!(
                            "no progress for {} s (docker.pull_no_progress_seconds)",
                            opts.no_progress_timeout.as_secs()
                        ),
                        retry: true,
                    });
                }
                Ok(None) => break,
                Ok(Some(Ok(info))) => {
                    if let Some(p) = tracker.update(&info) {
                        last_new = Instant::now();
                        emit(EventKind::Progress(p));
                    } else if info.progress_detail.is_none() && info.status.is_some() {
                        // A new status line ("Pulling from", "Digest: ...")
                        // is progress too; a repeated layer line is not.
                        last_new = Instant::now();
                    }
                }
                Ok(Some(Err(e))) => {
                    let e = self.map_err(&what, e);
                    let retry = match &e {
                        Error::Docker {
                            status, message, ..
                        } => retryable(*status, message),
                        _ => true,
                    };
                    return Err(AttemptError {
                        reason: e.to_string(),
                        retry,
                    });
                }
            }
        }
        // The stream ended without an error: the image must be there now.
        match self.is_present(image).await {
            Ok(true) => Ok(tracker.totals()),
            Ok(false) => Err(AttemptError {
                reason: format!(
                    "the pull of {image} ended without an error, but the image is not present afterwards"
                ),
                retry: true,
            }),
            Err(e) => Err(AttemptError {
                reason: e.to_string(),
                retry: true,
            }),
        }
    }
}

/// The name the daemon knows a reference by: `name@digest` when it pins a
/// digest, else `name:tag`.
fn local_name(image: &ImageRef) -> String {
    match image.digest() {
        Some(d) => format!("{}@{d}", image.docker_name()),
        None => format!(
            "{}:{}",
            image.docker_name(),
            image.tag().unwrap_or("latest")
        ),
    }
}

/// Whether another attempt may fix a pull error: not when the registry
/// says the image does not exist or access is denied.
fn retryable(status: u16, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    let permanent = [
        "manifest unknown",
        "not found",
        "unauthorized",
        "denied",
        "authentication required",
        "no basic auth credentials",
        "invalid reference format",
        "no matching manifest",
    ];
    !(status == 404 || status == 401 || status == 403 || permanent.iter().any(|p| m.contains(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_names() {
        let r = |s: &str| ImageRef::parse(s).unwrap();
        assert_eq!(local_name(&r("redis")), "redis:latest");
        assert_eq!(
            local_name(&r("127.0.0.1:5000/a/b:1")),
            "127.0.0.1:5000/a/b:1"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            local_name(&r(&format!("10.0.0.2:5000/app:1@{d}"))),
            format!("10.0.0.2:5000/app@{d}")
        );
    }

    #[test]
    fn classifies_errors() {
        assert!(!retryable(
            404,
            "manifest for x:1 not found: manifest unknown: manifest unknown"
        ));
        assert!(!retryable(0, "unauthorized: authentication required"));
        assert!(!retryable(
            500,
            "Head \"http://127.0.0.1:5000/v2/a/manifests/1\": no basic auth credentials"
        ));
        assert!(retryable(
            500,
            "Get \"http://127.0.0.1:1/v2/\": dial tcp 127.0.0.1:1: connect: connection refused"
        ));
        assert!(retryable(0, "unexpected EOF"));
    }

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

    #[tokio::test]
    async fn unreachable_daemon_says_so() {
        let p = Preseeder::new(
            Path::new("/nonexistent/docker.sock"),
            PullOptions::default(),
        );
        let e = p
            .is_present(&ImageRef::parse("redis").unwrap())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cannot reach the Docker daemon at /nonexistent/docker.sock")
                && e.ends_with("(is docker.service running?)"),
            "{e}"
        );
    }
}
