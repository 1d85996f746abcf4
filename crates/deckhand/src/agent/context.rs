//! What every part of the agent reaches: who this node is, its settings,
//! the local etcd side, the cluster client for membership requests, and the
//! store for keys (through `localhost:2379`).

use std::time::Duration;

use deckhand_etcd::Cluster;

use super::local::Local;
use crate::config::Settings;
use crate::identity::Identity;
use crate::store::Store;

/// Timeout of one etcd request made by the loop.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// The agent's handles, shared by its parts.
pub struct Context {
    /// This node: id, name, address.
    pub identity: Identity,
    /// The agent config.
    pub settings: Settings,
    /// The local member and proxy units, their env files and data dir.
    pub local: Local,
    /// Membership requests, sent to real members (never a proxy).
    pub cluster: Cluster,
    /// Keys, through `localhost:2379` (this node's member or proxy).
    pub store: Store,
}
