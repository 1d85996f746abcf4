//! Membership operations on a cluster of real etcd members: list, add a
//! learner, promote, remove, move leadership, endpoint status and voter health.
//!
//! The runtime-reconfiguration rules these operations follow are etcd's:
//! <https://etcd.io/docs/v3.4/op-guide/runtime-configuration/> and, for
//! learners, <https://etcd.io/docs/v3.4/learning/design-learner/>.
//!
//! - `member`: what a member is ([`Member`]).
//! - `client`: the [`Cluster`] client, its endpoints and the member list.
//! - `membership`: add a learner, promote, remove ([`AddedLearner`]).
//! - `leadership`: who leads, and moving leadership.
//! - `status`: endpoint status and voter health ([`EndpointStatus`]).

mod client;
mod leadership;
mod member;
mod membership;
mod status;

pub use client::Cluster;
pub(crate) use client::KEEPALIVE_INTERVAL;
pub use member::Member;
pub use membership::AddedLearner;
pub use status::EndpointStatus;
