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
mod daemon;
mod ensure;
mod error;
mod options;
mod ping;
mod preseeder;
mod progress;
mod pull;
mod report;

pub use error::Error;
pub use options::PullOptions;
pub use preseeder::Preseeder;
pub use progress::Progress;
pub use report::{Event, EventKind, Failure, Pulled, Report};

/// One MiB, for messages.
const MIB: u64 = 1024 * 1024;
