//! Certificates through etcd: a node without certificates joins with a
//! join credential and asks for them ([`requester`], at start-up), a
//! running node renews its own before they expire (`agent::renewal`), and
//! the elected agent on a node that holds the CA key signs what the policy
//! allows ([`signer`], the policy in [`deckhand_plan::pki`]). The signer
//! checks a request's claimed address with a challenge to it
//! ([`challenge`]); the requester installs what it got ([`install`]).
//! The keys: `docs/keyspace.md`; the flow and its limits: `docs/pki.md`.

pub mod challenge;
pub mod install;
pub mod join;
pub mod requester;
pub mod signer;

#[cfg(test)]
mod tests;
