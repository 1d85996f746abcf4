//! A CLI command's connection to etcd: the store over the first endpoint
//! that answers.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use deckhand_etcd::{Cluster, Member};
use deckhand_model::EtcdMode;

use crate::connect::{self, CLI_REQUEST_TIMEOUT, Target};
use crate::store::{NodeKeys, Store};

/// How long each endpoint may take to answer when a command connects.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one group of endpoints may take to answer a member list.
const MEMBER_LIST_TIMEOUT: Duration = Duration::from_secs(2);

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
        let client = connect::first_answering(&target.endpoints, CONNECT_TIMEOUT, target.tls())
            .await
            .map_err(|e| match &target.tls_error {
                Some(why) => e.context(why.clone()),
                None => e,
            })?;
        Ok(Session {
            store: Store::new(client, target.keyspace.clone(), CLI_REQUEST_TIMEOUT),
            target,
        })
    }

    /// Tries the endpoints again (the one in use stopped answering, e.g.
    /// while the local member or proxy restarts); keeps the old client
    /// when none answers.
    pub async fn reconnect(&mut self) {
        if let Ok(c) =
            connect::first_answering(&self.target.endpoints, CONNECT_TIMEOUT, self.target.tls())
                .await
        {
            self.store.set_client(c);
        }
    }

    /// The member list, from a real member, never from a grpc-proxy (a
    /// proxy answers `MemberList` with itself: see DESIGN.md's etcd facts
    /// and <https://etcd.io/docs/v3.4/op-guide/grpc_proxy/>), with a client over the group of endpoints that answered. Asks, in
    /// this order, the members the nodes' statuses report (`nodes`), the
    /// agent config's endpoints, then the command's `--endpoints`; each
    /// group is bounded by 2 s, so a member that died but is still reported
    /// (for up to a lease TTL) costs at most that.
    ///
    /// # Errors
    /// No group answered with a non-empty list: each one's reason, or that
    /// there was nothing to ask.
    pub async fn member_list(
        &self,
        nodes: &BTreeMap<String, NodeKeys>,
    ) -> Result<(Cluster, Vec<Member>)> {
        let t = &self.target;
        // The statuses record addresses: https:// when this command has
        // TLS material, as the members then serve TLS on them.
        let reported: Vec<String> = nodes
            .values()
            .filter_map(|k| k.status.as_ref())
            .filter(|s| s.etcd.mode == EtcdMode::Member)
            .filter_map(|s| s.address.parse().ok())
            .map(|a| crate::identity::client_url_of(a, t.tls().is_some()))
            .collect();
        let mut tried = Vec::new();
        for eps in [&reported, &t.config_endpoints, &t.cli_endpoints] {
            if eps.is_empty() {
                continue;
            }
            match Cluster::connect(eps, MEMBER_LIST_TIMEOUT, t.tls()).await {
                Ok(c) => match c.member_list().await {
                    // A grpc-proxy answers with itself: member id 0, no peer URLs.
                    Ok(list) if list.iter().any(|m| m.id == 0) => tried.push(format!(
                        "{}: a grpc-proxy (it lists itself, not the members)",
                        eps.join(",")
                    )),
                    Ok(list) if !list.is_empty() => return Ok((c, list)),
                    Ok(_) => tried.push(format!("{}: an empty member list", eps.join(","))),
                    Err(e) => tried.push(format!("{}: {e}", eps.join(","))),
                },
                Err(e) => tried.push(format!("{}: {e}", eps.join(","))),
            }
        }
        if tried.is_empty() {
            bail!(
                "no member to ask for the member list: no node reports a member and no endpoint is configured (give --endpoints of a member)"
            )
        }
        bail!("no member answered a member list: {}", tried.join("; "))
    }
}
