//! `deckhand`: the node agent and the operator's command line, as a library
//! (the binary in `main.rs` only parses, dispatches and exits; the fuzz
//! targets import the parsers from here).
//!
//! Where things live (arrows only point down this list):
//! - [`cli`]: the parser and the `role`, `plane`, `status` commands;
//!   [`preseed`]: `deckhand preseed`; [`agent`]: `deckhand agent`, the
//!   reconcile loop and its parts; [`member_check`]: the member unit's
//!   start check (`deckhand check-member`, hidden).
//! - [`store`]: the typed store over the etcd keyspace; [`connect`]: which
//!   endpoint, the first that answers, errors in few words; [`images`]: pull
//!   options and the image cache shared by the agent and `preseed`.
//! - [`config`] (the agent config and its drop-ins), [`tls`] (the TLS files
//!   and the `tls-certificate` check), [`identity`] (who this
//!   node is), [`paths`] (every file the agent uses), [`exit`] (exit
//!   statuses), [`logging`], [`failpoint`].
//!
//! The decisions themselves are pure functions in `deckhand-plan`; the
//! value types and the key layout are `deckhand-model`'s.

pub mod agent;
pub mod backup;
pub mod cli;
pub mod config;
pub mod connect;
pub mod enroll;
pub mod exit;
pub mod failpoint;
pub mod identity;
pub mod images;
pub mod logging;
pub mod member_check;
pub mod paths;
pub mod preseed;
pub mod restore;
pub mod store;
pub mod tls;
pub mod tls_enable;

#[cfg(test)]
mod testing;
