//! Reading every node's keys (`<prefix>/nodes/<id>/{name,role,status}`) in
//! one range request: used by `deckhand status` and by the replacer.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use deckhand_model::{Keyspace, NodeStatus, Role};
use etcd_client::{Client, GetOptions};

/// How long the range read may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// One node's keys.
#[derive(Debug, Default)]
pub struct NodeKeys {
    /// `name`: written by its agent, no lease.
    pub name: Option<String>,
    /// `role`: raw value and mod revision.
    pub role: Option<(Vec<u8>, i64)>,
    /// `status`: present while the node's lease lives.
    pub status: Option<NodeStatus>,
}

impl NodeKeys {
    /// The role key parsed, when valid.
    pub fn role(&self) -> Option<Role> {
        self.role.as_ref().and_then(|(v, _)| Role::parse(v).ok())
    }

    /// The node's name from its status or its name key.
    pub fn display_name(&self) -> String {
        self.status
            .as_ref()
            .map(|s| s.name.clone())
            .or_else(|| self.name.clone())
            .unwrap_or_default()
    }
}

/// Reads every node's keys, by node id.
///
/// # Errors
/// The range request failed or timed out.
pub async fn read_nodes(client: &mut Client, ks: &Keyspace) -> Result<BTreeMap<String, NodeKeys>> {
    let resp = tokio::time::timeout(
        TIMEOUT,
        client.get(ks.nodes(), Some(GetOptions::new().with_prefix())),
    )
    .await
    .context("reading node keys timed out")?
    .context("reading node keys")?;
    let mut nodes: BTreeMap<String, NodeKeys> = BTreeMap::new();
    for kv in resp.kvs() {
        let Ok(key) = kv.key_str() else { continue };
        let Some((id, leaf)) = ks.parse_node_key(key) else {
            continue;
        };
        let entry = nodes.entry(id.to_string()).or_default();
        match leaf {
            "name" => entry.name = Some(String::from_utf8_lossy(kv.value()).into_owned()),
            "role" => entry.role = Some((kv.value().to_vec(), kv.mod_revision())),
            "status" => entry.status = serde_json::from_slice(kv.value()).ok(),
            _ => {}
        }
    }
    Ok(nodes)
}
