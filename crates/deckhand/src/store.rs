//! The typed store over deckhand's etcd keyspace (`docs/keyspace.md`; the
//! key layout itself is [`deckhand_model::Keyspace`]): role keys, name keys,
//! status, learner records, plane configs and the cluster config, read and
//! written with the value types of `deckhand-model`. The agent, the CLI and
//! `deckhand preseed` all go through it.
//!
//! Every request is bounded by the store's timeout. Writes that can race
//! with another writer compare on the key's revision in one transaction
//! (etcd's `Compare` on `mod_revision` / `create_revision`,
//! <https://etcd.io/docs/v3.5/learning/api/#transaction>): a role key is
//! created only if absent, and the replacer rewrites a role key only if it
//! is still the value it read, so it never overwrites an operator's
//! `deckhand role set` made a moment earlier.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use deckhand_model::pki::{self, CertApproval, CertIssued, CertRefusal, CertRequest};
use deckhand_model::{ClusterConfig, Keyspace, NodeStatus, Plane, PlaneConfig, Role};
use etcd_client::{Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};

/// An etcd revision (`mod_revision` of a key, or the store's revision after
/// a write).
pub type Revision = i64;

/// One node's keys (`<prefix>/nodes/<id>/{name,role,status}`).
#[derive(Debug, Default, Clone)]
pub struct NodeKeys {
    /// `name`: written by its agent, no lease.
    pub name: Option<String>,
    /// `role`: the raw value (it may not parse) and its mod revision.
    pub role: Option<(Vec<u8>, Revision)>,
    /// `status`: present while the node's lease lives; `None` also when it
    /// does not parse.
    pub status: Option<NodeStatus>,
}

impl NodeKeys {
    /// The role key parsed, when valid.
    pub fn role(&self) -> Option<Role> {
        self.role.as_ref().and_then(|(v, _)| Role::parse(v).ok())
    }

    /// The role key's mod revision; 0 when there is no role key.
    pub fn role_revision(&self) -> Revision {
        self.role.as_ref().map(|(_, r)| *r).unwrap_or(0)
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

/// A plane config key as stored: its raw value (it may not parse) and
/// mod revision.
#[derive(Debug, Clone)]
pub struct RawPlaneConfig {
    /// The value.
    pub value: Vec<u8>,
    /// Its mod revision.
    pub revision: Revision,
}

/// The plane configs under `config/planes/`, parsed.
#[derive(Debug, Default)]
pub struct PlaneConfigs {
    /// The valid configs.
    pub valid: BTreeMap<Plane, PlaneConfig>,
    /// Rejected keys, in words (`<key>: <why>`): a key that names no plane,
    /// a config that does not validate.
    pub rejected: Vec<String>,
}

/// An etcd alarm kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlarmKind {
    /// `NOSPACE`: the backend reached `--quota-backend-bytes`.
    NoSpace,
    /// `CORRUPT`: the member's data differs from the cluster's.
    Corrupt,
}

impl std::fmt::Display for AlarmKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AlarmKind::NoSpace => "NOSPACE",
            AlarmKind::Corrupt => "CORRUPT",
        })
    }
}

/// One active alarm: which member raised it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Alarm {
    /// The member that raised it.
    pub member_id: u64,
    /// What kind.
    pub kind: AlarmKind,
}

/// The typed store: an etcd client, the keyspace and a timeout per request.
#[derive(Clone)]
pub struct Store {
    client: Client,
    ks: Keyspace,
    timeout: Duration,
}

impl Store {
    /// A store over `client` under `ks`, each request bounded by `timeout`.
    pub fn new(client: Client, ks: Keyspace, timeout: Duration) -> Store {
        Store {
            client,
            ks,
            timeout,
        }
    }

    /// The key layout.
    pub fn keyspace(&self) -> &Keyspace {
        &self.ks
    }

    /// A handle of the underlying client (cheap: a clone shares the
    /// connection), for what `deckhand-etcd` does with it: leases,
    /// watches, elections and locks.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Replaces the client (after reconnecting to another endpoint).
    pub fn set_client(&mut self, client: Client) {
        self.client = client;
    }

    async fn bounded<T, E>(&self, what: &str, f: impl Future<Output = Result<T, E>>) -> Result<T>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| anyhow!("{what}: no answer within {} s", self.timeout.as_secs()))?
            .with_context(|| what.to_string())
    }

    /// Every node's keys, by node id, in one range request.
    ///
    /// # Errors
    /// The request failed or timed out.
    pub async fn nodes(&self) -> Result<BTreeMap<String, NodeKeys>> {
        let mut c = self.client();
        let resp = self
            .bounded(
                "reading node keys",
                c.get(self.ks.nodes(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let mut nodes: BTreeMap<String, NodeKeys> = BTreeMap::new();
        for kv in resp.kvs() {
            let Ok(key) = kv.key_str() else { continue };
            let Some((id, leaf)) = self.ks.parse_node_key(key) else {
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

    /// Node `id`'s role key: `None` when absent.
    ///
    /// # Errors
    /// The request failed, or the value is not a valid role (naming the key).
    pub async fn role(&self, id: &str) -> Result<Option<Role>> {
        let mut c = self.client();
        let key = self.ks.role(id);
        let resp = self
            .bounded("reading the role key", c.get(key.clone(), None))
            .await?;
        match resp.kvs().first() {
            Some(kv) => {
                Ok(Some(Role::parse(kv.value()).with_context(|| {
                    format!("the role key {key} is invalid")
                })?))
            }
            None => Ok(None),
        }
    }

    /// Writes node `id`'s role key unconditionally (the operator's
    /// `deckhand role set`). Returns the revision of the write.
    ///
    /// # Errors
    /// The request failed or timed out.
    pub async fn put_role(&self, id: &str, role: &Role) -> Result<Revision> {
        let mut c = self.client();
        let resp = self
            .bounded(
                "writing the role key",
                c.put(self.ks.role(id), role.to_json(), None),
            )
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// Writes node `id`'s role key only if its mod revision is still
    /// `expected` (0: only if the key is absent). Returns the revision of
    /// the write, or `None` when the key changed in between (nothing written).
    ///
    /// # Errors
    /// The request failed or timed out.
    pub async fn put_role_if(
        &self,
        id: &str,
        role: &Role,
        expected: Revision,
    ) -> Result<Option<Revision>> {
        let key = self.ks.role(id);
        let cmp = if expected == 0 {
            Compare::create_revision(key.clone(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(key.clone(), CompareOp::Equal, expected)
        };
        let txn = Txn::new()
            .when([cmp])
            .and_then([TxnOp::put(key, role.to_json(), None)]);
        let mut c = self.client();
        let resp = self.bounded("writing the role key", c.txn(txn)).await?;
        Ok(resp
            .succeeded()
            .then(|| resp.header().map(|h| h.revision()).unwrap_or(0)))
    }

    /// Writes node `id`'s name key (no lease: it outlives the node, so a dead
    /// node keeps its name in `deckhand status`).
    ///
    /// # Errors
    /// The request failed or timed out.
    pub async fn put_name(&self, id: &str, name: &str) -> Result<()> {
        let mut c = self.client();
        self.bounded("writing the name key", c.put(self.ks.name(id), name, None))
            .await?;
        Ok(())
    }

    /// Writes node `id`'s status document on `lease` (it disappears when the
    /// lease expires: a dead node has no status).
    ///
    /// # Errors
    /// Serialization, or the request failed or timed out.
    pub async fn put_status(&self, status: &NodeStatus, lease: i64) -> Result<()> {
        let json = serde_json::to_string(status)?;
        let mut c = self.client();
        self.bounded(
            "writing status",
            c.put(
                self.ks.status(&status.id),
                json,
                Some(PutOptions::new().with_lease(lease)),
            ),
        )
        .await?;
        Ok(())
    }

    /// Deletes every key of node `id` (`nodes/<id>/`: role, name, status,
    /// and anything else under it), in one transaction that does nothing
    /// while its status key exists (its lease is alive: the node runs).
    /// Returns the keys deleted; `None` when the status key exists. No other
    /// key is touched: the range is exactly the prefix `nodes/<id>/`.
    ///
    /// # Errors
    /// An id that is empty or contains `/`; the request failed or timed out.
    pub async fn forget_node(&self, id: &str) -> Result<Option<Vec<String>>> {
        anyhow::ensure!(!id.is_empty() && !id.contains('/'), "bad node id {id:?}");
        let prefix = format!("{}{id}/", self.ks.nodes());
        let status = self.ks.status(id);
        let txn = Txn::new()
            .when([Compare::create_revision(status, CompareOp::Equal, 0)])
            .and_then([TxnOp::delete(
                prefix.clone(),
                Some(DeleteOptions::new().with_prefix().with_prev_key()),
            )]);
        let mut c = self.client();
        let resp = self.bounded("forgetting a node", c.txn(txn)).await?;
        if !resp.succeeded() {
            return Ok(None);
        }
        let mut deleted = Vec::new();
        for op in resp.op_responses() {
            if let etcd_client::TxnOpResponse::Delete(d) = op {
                deleted.extend(
                    d.prev_kvs()
                        .iter()
                        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned()),
                );
            }
        }
        Ok(Some(deleted))
    }

    /// The cluster's active alarms, as etcd lists them: one entry per
    /// member and alarm (`NOSPACE`: the member's backend reached its quota,
    /// so etcd refuses puts and lease grants until compaction,
    /// defragmentation and a disarm; `CORRUPT`: a hash check found the
    /// member's data differs from the others'). Reading works under
    /// `NOSPACE`. See <https://etcd.io/docs/v3.4/op-guide/maintenance/#space-quota>.
    ///
    /// # Errors
    /// The request failed or timed out.
    pub async fn alarms(&self) -> Result<Vec<Alarm>> {
        use etcd_client::{AlarmAction, AlarmType};
        let mut c = self.client();
        let resp = self
            .bounded(
                "reading etcd's alarm list",
                c.alarm(AlarmAction::Get, AlarmType::None, None),
            )
            .await?;
        Ok(resp
            .alarms()
            .iter()
            .filter_map(|a| {
                let kind = match a.alarm() {
                    AlarmType::Nospace => AlarmKind::NoSpace,
                    AlarmType::Corrupt => AlarmKind::Corrupt,
                    AlarmType::None => return None,
                };
                Some(Alarm {
                    member_id: a.member_id(),
                    kind,
                })
            })
            .collect())
    }

    /// Whether the etcd behind this store's client answers: a serializable
    /// count-only read of the cluster config key, which a member (even without
    /// quorum, or under `NOSPACE`) and a grpc-proxy answer from local state
    /// (<https://etcd.io/docs/v3.4/learning/api_guarantees/#isolation-level-and-consistency-of-replicas>).
    /// Returns the revision of the answer.
    ///
    /// # Errors
    /// The request failed or timed out.
    pub async fn answers(&self) -> Result<Revision> {
        let mut c = self.client();
        let opts = GetOptions::new().with_count_only().with_serializable();
        let resp = self
            .bounded(
                "a serializable read",
                c.get(self.ks.cluster_config(), Some(opts)),
            )
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// The holder of the membership lock (a node id), `None` when free.
    ///
    /// # Errors
    /// The request failed or timed out.
    pub async fn membership_lock_holder(&self) -> Result<Option<String>> {
        let mut c = self.client();
        let resp = self
            .bounded(
                "reading the membership lock",
                c.get(self.ks.membership_lock(), None),
            )
            .await?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    /// The cluster config, the defaults when the key is absent, and its
    /// mod revision (0 when absent).
    ///
    /// # Errors
    /// The request failed, or the value is invalid (naming the key).
    pub async fn cluster_config(&self) -> Result<(ClusterConfig, Revision)> {
        match self.cluster_config_raw().await? {
            Some((value, rev)) => Ok((
                ClusterConfig::parse(&value).with_context(|| {
                    format!("the cluster config {} is invalid", self.ks.cluster_config())
                })?,
                rev,
            )),
            None => Ok((ClusterConfig::default(), 0)),
        }
    }

    /// Plane `plane`'s config key as stored, `None` when absent.
    ///
    /// # Errors
    /// The request failed or timed out.
    pub async fn plane_config_raw(&self, plane: Plane) -> Result<Option<RawPlaneConfig>> {
        let mut c = self.client();
        let resp = self
            .bounded(
                "reading the plane config",
                c.get(self.ks.plane(plane), None),
            )
            .await?;
        Ok(resp.kvs().first().map(|kv| RawPlaneConfig {
            value: kv.value().to_vec(),
            revision: kv.mod_revision(),
        }))
    }

    /// Every plane config under `config/planes/`, parsed; rejected keys are
    /// listed, not fatal.
    ///
    /// # Errors
    /// The request failed or timed out.
    pub async fn plane_configs(&self) -> Result<PlaneConfigs> {
        let prefix = self.ks.planes();
        let mut c = self.client();
        let resp = self
            .bounded(
                "reading the plane configs",
                c.get(prefix.clone(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let mut out = PlaneConfigs::default();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let name = key.strip_prefix(&prefix).unwrap_or(&key);
            let Ok(plane) = name.parse::<Plane>() else {
                out.rejected.push(format!("{key}: {name:?} is not a plane"));
                continue;
            };
            match PlaneConfig::parse(plane, kv.value()) {
                Ok(c) => {
                    out.valid.insert(plane, c);
                }
                Err(e) => out.rejected.push(format!("{key}: {e}")),
            }
        }
        Ok(out)
    }

    /// Writes plane `plane`'s config (validated by its type). Returns the
    /// revision of the write.
    ///
    /// # Errors
    /// Serialization, or the request failed or timed out.
    pub async fn put_plane_config(&self, plane: Plane, config: &PlaneConfig) -> Result<Revision> {
        let json = serde_json::to_string(config)?;
        let mut c = self.client();
        let resp = self
            .bounded(
                "writing the plane config",
                c.put(self.ks.plane(plane), json, None),
            )
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// The cluster config key's raw value and mod revision, `None` when the
    /// key is absent (every field then takes its default).
    ///
    /// # Errors
    /// The request failed or timed out.
    pub async fn cluster_config_raw(&self) -> Result<Option<(Vec<u8>, Revision)>> {
        let mut c = self.client();
        let resp = self
            .bounded(
                "reading the cluster config",
                c.get(self.ks.cluster_config(), None),
            )
            .await?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision())))
    }

    /// Writes `value` (already validated by the caller) as the cluster
    /// config, only if the key's mod revision is still `expected` (0: only
    /// if the key is absent). Returns the new revision, or `None` when the
    /// key changed meanwhile (nothing written).
    ///
    /// # Errors
    /// The request failed or timed out.
    pub async fn put_cluster_config_if(
        &self,
        value: &[u8],
        expected: Revision,
    ) -> Result<Option<Revision>> {
        let key = self.ks.cluster_config();
        let cmp = if expected == 0 {
            Compare::create_revision(key.clone(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(key.clone(), CompareOp::Equal, expected)
        };
        let txn = Txn::new()
            .when([cmp])
            .and_then([TxnOp::put(key, value.to_vec(), None)]);
        let mut c = self.client();
        let resp = self
            .bounded("writing the cluster config", c.txn(txn))
            .await?;
        Ok(resp
            .succeeded()
            .then(|| resp.header().map(|h| h.revision()).unwrap_or(0)))
    }

    /// Deletes plane `plane`'s config; returns whether there was one.
    ///
    /// # Errors
    /// The request failed or timed out.
    pub async fn delete_plane_config(&self, plane: Plane) -> Result<bool> {
        let mut c = self.client();
        let resp = self
            .bounded(
                "deleting the plane config",
                c.delete(self.ks.plane(plane), None),
            )
            .await?;
        Ok(resp.deleted() > 0)
    }
}

/// The pki keys of one node (`pki/{requests,issued,refused,approvals}/<id>`),
/// each parsed (`Err` in words when a value does not parse).
#[derive(Debug, Default, Clone)]
pub struct PkiKeys {
    /// The node's open request.
    pub request: Option<Result<CertRequest, String>>,
    /// The signer's answer.
    pub issued: Option<Result<CertIssued, String>>,
    /// The signer's refusal.
    pub refused: Option<Result<CertRefusal, String>>,
    /// An operator's approval.
    pub approval: Option<Result<CertApproval, String>>,
}

impl Store {
    /// Every node's pki keys, by node id, in one range request over
    /// `pki/`.
    ///
    /// # Errors
    /// The request failed or timed out.
    pub async fn pki(&self) -> Result<BTreeMap<String, PkiKeys>> {
        let prefix = format!("{}/pki/", self.ks.prefix());
        let mut c = self.client();
        let resp = self
            .bounded(
                "reading the pki keys",
                c.get(prefix.clone(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let mut out: BTreeMap<String, PkiKeys> = BTreeMap::new();
        for kv in resp.kvs() {
            let Ok(key) = kv.key_str() else { continue };
            let Some((kind, id)) = key
                .strip_prefix(prefix.as_str())
                .and_then(|r| r.split_once('/'))
            else {
                continue;
            };
            if id.is_empty() || id.contains('/') {
                continue;
            }
            let e = out.entry(id.to_string()).or_default();
            let v = kv.value();
            match kind {
                "requests" => e.request = Some(pki::parse(v)),
                "issued" => e.issued = Some(pki::parse(v)),
                "refused" => e.refused = Some(pki::parse(v)),
                "approvals" => e.approval = Some(pki::parse(v)),
                _ => {}
            }
        }
        Ok(out)
    }

    /// One node's pki keys (see [`Store::pki`]).
    ///
    /// # Errors
    /// The request failed or timed out.
    pub async fn pki_of(&self, id: &str) -> Result<PkiKeys> {
        Ok(self.pki().await?.remove(id).unwrap_or_default())
    }

    async fn put_json(&self, what: &str, key: String, value: &impl serde::Serialize) -> Result<()> {
        let json = serde_json::to_string(value)?;
        let mut c = self.client();
        self.bounded(what, c.put(key, json, None)).await?;
        Ok(())
    }

    /// Writes node `id`'s certificate request (replacing an older one of
    /// its own), and deletes any answer to an older request.
    ///
    /// # Errors
    /// The request failed or timed out.
    pub async fn put_cert_request(&self, id: &str, r: &CertRequest) -> Result<()> {
        let json = serde_json::to_string(r)?;
        let txn = Txn::new().and_then([
            TxnOp::put(self.ks.pki_request(id), json, None),
            TxnOp::delete(self.ks.pki_issued(id), None),
            TxnOp::delete(self.ks.pki_refused(id), None),
        ]);
        let mut c = self.client();
        self.bounded("writing the certificate request", c.txn(txn))
            .await?;
        Ok(())
    }

    /// Writes the certificates issued for node `id`'s request, and deletes
    /// a refusal and the approval of it.
    ///
    /// # Errors
    /// The request failed or timed out.
    pub async fn put_cert_issued(&self, id: &str, i: &CertIssued) -> Result<()> {
        let json = serde_json::to_string(i)?;
        let txn = Txn::new().and_then([
            TxnOp::put(self.ks.pki_issued(id), json, None),
            TxnOp::delete(self.ks.pki_refused(id), None),
            TxnOp::delete(self.ks.pki_approval(id), None),
        ]);
        let mut c = self.client();
        self.bounded("writing the issued certificates", c.txn(txn))
            .await?;
        Ok(())
    }

    /// Writes why node `id`'s request was refused (or waits for approval).
    ///
    /// # Errors
    /// The request failed or timed out.
    pub async fn put_cert_refusal(&self, id: &str, r: &CertRefusal) -> Result<()> {
        self.put_json("writing the refusal", self.ks.pki_refused(id), r)
            .await
    }

    /// Writes an operator's approval of node `id`'s request.
    ///
    /// # Errors
    /// The request failed or timed out.
    pub async fn put_cert_approval(&self, id: &str, a: &CertApproval) -> Result<()> {
        self.put_json("writing the approval", self.ks.pki_approval(id), a)
            .await
    }

    /// Deletes node `id`'s request and the answers to it (once its
    /// certificates are installed).
    ///
    /// # Errors
    /// The request failed or timed out.
    pub async fn delete_cert_request(&self, id: &str) -> Result<()> {
        let txn = Txn::new().and_then([
            TxnOp::delete(self.ks.pki_request(id), None),
            TxnOp::delete(self.ks.pki_issued(id), None),
            TxnOp::delete(self.ks.pki_refused(id), None),
            TxnOp::delete(self.ks.pki_approval(id), None),
        ]);
        let mut c = self.client();
        self.bounded("deleting the certificate request", c.txn(txn))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use deckhand_model::EtcdRole;

    use super::*;
    use crate::testing::Etcd;

    #[tokio::test]
    async fn role_writes_that_race_compare_on_the_revision_read() {
        let etcd = Etcd::start().await;
        let store = Store::new(
            etcd.client().await,
            Keyspace::new("/t"),
            Duration::from_secs(5),
        );
        let id = "a".repeat(32);
        let member = Role::new(EtcdRole::Member);
        let proxy = Role::new(EtcdRole::Proxy);
        // Create-if-absent: the first wins, the second finds a key.
        let rev = store.put_role_if(&id, &proxy, 0).await.unwrap().unwrap();
        assert_eq!(store.put_role_if(&id, &member, 0).await.unwrap(), None);
        // The replacer read revision `rev`; an operator writes meanwhile.
        let operator = store.put_role(&id, &proxy).await.unwrap();
        assert!(operator > rev);
        assert_eq!(
            store.put_role_if(&id, &member, rev).await.unwrap(),
            None,
            "the operator's write is not overwritten"
        );
        assert_eq!(store.role(&id).await.unwrap(), Some(proxy.clone()));
        // Against the revision it now reads, the write goes through.
        let nodes = store.nodes().await.unwrap();
        let read = nodes[&id].role_revision();
        assert_eq!(read, operator);
        assert!(
            store
                .put_role_if(&id, &member, read)
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(store.role(&id).await.unwrap(), Some(member));
    }

    #[tokio::test]
    async fn forgetting_a_node_deletes_only_its_keys_and_never_a_live_one() {
        let etcd = Etcd::start().await;
        let store = Store::new(
            etcd.client().await,
            Keyspace::new("/t"),
            Duration::from_secs(5),
        );
        let mut c = store.client();
        for k in [
            "/t/nodes/ab/role",
            "/t/nodes/ab/name",
            "/t/nodes/abc/name",
            "/t/nodes/cd/name",
            "/t/config/cluster",
        ] {
            c.put(k, "x", None).await.unwrap();
        }
        let mut gone = store.forget_node("ab").await.unwrap().unwrap();
        gone.sort();
        assert_eq!(gone, ["/t/nodes/ab/name", "/t/nodes/ab/role"]);
        let left = c
            .get(
                "/t/",
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .unwrap();
        let left: Vec<&str> = left.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
        assert_eq!(
            left,
            ["/t/config/cluster", "/t/nodes/abc/name", "/t/nodes/cd/name"]
        );
        // A node whose status exists is not touched.
        c.put("/t/nodes/cd/status", "{}", None).await.unwrap();
        assert_eq!(store.forget_node("cd").await.unwrap(), None);
        assert_eq!(
            c.get("/t/nodes/cd/name", None).await.unwrap().kvs().len(),
            1
        );
        assert!(store.forget_node("").await.is_err());
        assert!(store.forget_node("a/b").await.is_err());
    }

    #[tokio::test]
    async fn nodes_plane_configs_and_a_bad_cluster_config() {
        let etcd = Etcd::start().await;
        let store = Store::new(
            etcd.client().await,
            Keyspace::new("/t"),
            Duration::from_secs(5),
        );
        let id = "b".repeat(32);
        store.put_name(&id, "node2").await.unwrap();
        let mut c = store.client();
        c.put(format!("/t/nodes/{id}/status"), "not json", None)
            .await
            .unwrap();
        let nodes = store.nodes().await.unwrap();
        assert_eq!(nodes[&id].display_name(), "node2");
        assert!(
            nodes[&id].status.is_none(),
            "an unparsable status counts as none"
        );
        assert!(!store.delete_plane_config(Plane::Router).await.unwrap());
        let cfg = PlaneConfig::parse(Plane::Router, br#"{"images":["r/a:1"]}"#).unwrap();
        store.put_plane_config(Plane::Router, &cfg).await.unwrap();
        c.put("/t/config/planes/bogus", "{}", None).await.unwrap();
        c.put("/t/config/planes/data", "[1]", None).await.unwrap();
        let all = store.plane_configs().await.unwrap();
        assert_eq!(all.valid.len(), 1);
        assert_eq!(all.rejected.len(), 2, "{:?}", all.rejected);
        assert!(
            store
                .plane_config_raw(Plane::Router)
                .await
                .unwrap()
                .is_some()
        );
        assert!(store.delete_plane_config(Plane::Router).await.unwrap());
        assert_eq!(
            store.cluster_config().await.unwrap().1,
            0,
            "absent: defaults"
        );
        c.put("/t/config/cluster", r#"{"min_voters":"x"}"#, None)
            .await
            .unwrap();
        let e = format!("{:#}", store.cluster_config().await.unwrap_err());
        assert!(e.contains("/t/config/cluster is invalid"), "{e}");
    }
}
