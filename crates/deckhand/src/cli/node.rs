//! `deckhand node forget NODE`: removes the keys of a node that is dead
//! and no longer an etcd member, so that it leaves `deckhand status`.

use anyhow::{Result, anyhow, bail};
use clap::Subcommand;

use super::member::is_node_member;
use super::session::Session;
use crate::exit::Failure;

/// `deckhand node ...`
#[derive(Subcommand)]
pub enum NodeCommand {
    /// Remove the keys of a node that is gone for good.
    ///
    /// Deletes every key under <prefix>/nodes/<id>/ (its role, name and
    /// status keys) and nothing else. Refused, with the reason, while the
    /// node is alive (its status key exists: its agent's lease has not
    /// expired; stop the host or its agent and wait lease_ttl_seconds), or
    /// while the cluster's member list still holds a member of that name
    /// (remove it first: `deckhand member remove NODE`). Its singleton
    /// candidacies and the locks it held were on its lease and went with it.
    ///
    /// Should the host come back, its agent writes its keys again (with the
    /// role it runs then), as on a first boot.
    ///
    /// Example: deckhand node forget node5
    ///
    /// Exit status: 0 forgotten; 1 refused (the reason is printed) or etcd
    /// failed; 2 no such node.
    #[command(verbatim_doc_comment)]
    Forget {
        /// Node id (/etc/machine-id) or hostname.
        node: String,
    },
}

/// `deckhand node forget`.
///
/// # Errors
/// [`crate::exit::USAGE`] for an unknown node (nothing is written);
/// [`crate::exit::FAILED`] for a refusal or etcd not answering.
pub async fn node(target: crate::connect::Target, cmd: NodeCommand) -> Result<(), Failure> {
    let NodeCommand::Forget { node } = cmd;
    let session = Session::connect(target).await?;
    let nodes = session.store.nodes().await?;
    let id = super::role::resolve(&nodes, &node).map_err(Failure::usage)?;
    let Some(keys) = nodes.get(&id) else {
        return Err(Failure::usage(anyhow!(
            "no node {node:?} has keys under {} (see `deckhand status`)",
            session.store.keyspace().nodes()
        )));
    };
    let name = keys.display_name();
    let run = async {
        if keys.status.is_some() {
            bail!(
                "node {name} ({id}) is alive: its status key exists, so its agent's lease has not expired; stop its agent or host and wait lease_ttl_seconds first"
            );
        }
        let members = session
            .member_list(&nodes)
            .await
            .map(|(_, list)| list)
            .map_err(|e| e.context("cannot check that the node is no longer a member"))?;
        if let Some(m) = members.iter().find(|m| is_node_member(keys, m)) {
            bail!(
                "node {name} ({id}) is still etcd {} {:x}; remove it first: `deckhand member remove {name}`",
                if m.is_learner { "learner" } else { "voter" },
                m.id
            );
        }
        match session.store.forget_node(&id).await? {
            None => bail!(
                "node {name} ({id}) wrote its status meanwhile: it is alive; nothing was deleted"
            ),
            Some(deleted) => {
                outln!("forgot node {name} ({id}): deleted {}", deleted.join(", "));
                Ok(())
            }
        }
    };
    run.await.map_err(Failure::failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Etcd;
    use deckhand_etcd::Cluster;
    use std::time::Duration;

    #[tokio::test]
    async fn forget_refuses_unknown_live_and_member_nodes_and_removes_only_a_dead_ones_keys() {
        let etcd = Etcd::start().await;
        let target = etcd.target();
        let forget = |n: &str| NodeCommand::Forget { node: n.into() };
        let mut kv = etcd.client().await;
        // The test etcd's one member is named "t".
        let c = Cluster::connect(
            std::slice::from_ref(&etcd.url),
            Duration::from_secs(2),
            None,
        )
        .await
        .unwrap();
        assert_eq!(c.member_list().await.unwrap()[0].name, "t");
        let (dead, live, member) = ("d".repeat(32), "e".repeat(32), "f".repeat(32));
        kv.put(format!("/t/nodes/{dead}/name"), "gone", None)
            .await
            .unwrap();
        kv.put(format!("/t/nodes/{dead}/role"), r#"{"etcd":"proxy"}"#, None)
            .await
            .unwrap();
        kv.put(format!("/t/nodes/{live}/name"), "alive", None)
            .await
            .unwrap();
        let st = serde_json::to_string(&crate::testing::node_status(
            "alive",
            deckhand_model::EtcdMode::Proxy,
        ))
        .unwrap();
        kv.put(format!("/t/nodes/{live}/status"), st, None)
            .await
            .unwrap();
        kv.put(format!("/t/nodes/{member}/name"), "t", None)
            .await
            .unwrap();

        let e = node(target.clone(), forget("nosuch")).await.unwrap_err();
        assert_eq!(e.code, crate::exit::USAGE);
        let e = node(target.clone(), forget("alive")).await.unwrap_err();
        assert_eq!(e.code, crate::exit::FAILED);
        assert!(format!("{:#}", e.error).contains("is alive"));
        let e = node(target.clone(), forget("t")).await.unwrap_err();
        assert!(
            format!("{:#}", e.error).contains("still etcd voter"),
            "{:#}",
            e.error
        );
        node(target.clone(), forget("gone")).await.unwrap();
        let left = kv
            .get(
                "/t/",
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_keys_only(),
                ),
            )
            .await
            .unwrap();
        let left: Vec<&str> = left.kvs().iter().map(|k| k.key_str().unwrap()).collect();
        assert_eq!(
            left,
            [
                format!("/t/nodes/{live}/name"),
                format!("/t/nodes/{live}/status"),
                format!("/t/nodes/{member}/name"),
            ]
        );
    }
}
