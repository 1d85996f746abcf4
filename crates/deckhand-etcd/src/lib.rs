//! deckhand's etcd client: membership operations on real members, the
//! membership lock, a lease keeper and a watch that resumes.
//!
//! - [`Cluster`] — member list, add a learner, promote, remove, move
//!   leadership, endpoint status, voter health ([`cluster`]).
//! - [`try_lock`] / [`unlock`] — one change at a time, cluster-wide ([`lock`]).
//! - [`LeaseKeeper`] — the node's lease, kept alive and replaced when lost
//!   ([`lease`]).
//! - [`Tls`] — mutual TLS for `https://` endpoints ([`tls`]).
//! - [`election`] — singleton elections in etcd's own key layout.
//! - [`watch_key`] — a key or prefix as a snapshot plus changes, across broken
//!   streams and compactions ([`watch`]).
//!
//! Written against etcd 3.4 (Debian's `etcd-server`), whose behaviour the
//! tests check against real `etcd` processes. Every network call has a
//! timeout; retries use backoff.

pub mod cluster;
pub mod election;
pub mod error;
pub mod lease;
pub mod lock;
pub mod snapshot;
pub mod tls;
pub mod watch;

use std::time::Duration;

pub use cluster::{AddedLearner, Cluster, EndpointStatus, Member};
pub use election::{Candidate, ElectionView};
pub use error::{Error, Result};
pub use lease::{LeaseKeeper, Renewal};
pub use lock::{LockOutcome, try_lock, unlock};
pub use tls::Tls;
pub use watch::{KeyEvent, WATCH_PROGRESS_INTERVAL, watch_key};

/// The timeout of requests made through a bare [`etcd_client::Client`] (lock,
/// lease grant and revoke, watch creation, the watcher's `Get`), where no
/// timeout is given by the caller.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
