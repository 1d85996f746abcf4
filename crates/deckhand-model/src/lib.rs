//! deckhand's data model: the etcd keyspace, role keys, cluster config and the
//! status document, with their validation. Pure: serde only, no I/O.
//!
//! Every value an operator writes into etcd is parsed here, and every parse
//! error says what is wrong in words an operator can act on.

pub mod backup;
pub mod cluster;
pub mod firewall;
pub mod image;
pub mod keyspace;
pub mod pki;
pub mod planes;
pub mod role;
pub mod status;
pub mod unit_name;

pub use cluster::{ClusterConfig, ClusterConfigError, PkiConfig};
pub use firewall::{
    FirewallConfig, FirewallDefault, FirewallStatus, METRICS_PORT, Network, PlanePort, PortFrom,
    PortProtocol,
};
pub use image::{ImageRef, ImageRefError};
pub use keyspace::Keyspace;
pub use planes::{PlaneConfig, PlaneConfigError, PlaneUnit, UnitMode};
pub use role::{EtcdRole, Plane, Role, RoleError};
pub use status::{
    CertificateStatus, Check, CheckState, EtcdMode, EtcdStatus, ImageFailure, ImagesStatus,
    NodeStatus, PlaneStatus, UnitStatus, VoterProblem, VoterTrouble,
};

/// Largest value, in bytes, that deckhand accepts in a role or config key.
/// Larger values are rejected as malformed (etcd itself allows up to 1.5 MiB
/// per request by default, far more than any role needs).
pub const MAX_VALUE_BYTES: usize = 4096;
