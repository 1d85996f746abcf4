//! A CLI command's connection to etcd: the store over the first endpoint
//! that answers.

use std::time::Duration;

use anyhow::Result;

use crate::connect::{self, CLI_REQUEST_TIMEOUT, Target};
use crate::store::Store;

/// How long each endpoint may take to answer when a command connects.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A CLI command's connection: the store over the first endpoint that
/// answered, and where the command was pointed.
pub struct Session {
    /// Keys, through the endpoint that answered.
    pub store: Store,
    /// The endpoints and prefix.
    pub target: Target,
}

impl Session {
    /// Connects to the first endpoint of `target` that answers.
    ///
    /// # Errors
    /// No endpoint answered: each one's reason in few words.
    pub async fn connect(target: Target) -> Result<Session> {
        let client = connect::first_answering(&target.endpoints, CONNECT_TIMEOUT).await?;
        Ok(Session {
            store: Store::new(client, target.keyspace.clone(), CLI_REQUEST_TIMEOUT),
            target,
        })
    }

    /// Tries the endpoints again (the one in use stopped answering, e.g.
    /// while the local member or proxy restarts); keeps the old client
    /// when none answers.
    pub async fn reconnect(&mut self) {
        if let Ok(c) = connect::first_answering(&self.target.endpoints, CONNECT_TIMEOUT).await {
            self.store.set_client(c);
        }
    }
}
