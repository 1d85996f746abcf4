//! The etcd keyspace deckhand reads and writes: one place for every key name.
//!
//! See `docs/keyspace.md` for the layout with example values.

/// Key names under a configurable prefix (default `/deckhand`).
///
/// ```
/// let ks = deckhand_model::Keyspace::new("/deckhand");
/// assert_eq!(ks.role("abc"), "/deckhand/nodes/abc/role");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyspace {
    prefix: String,
}

impl Keyspace {
    /// The default key prefix.
    pub const DEFAULT_PREFIX: &'static str = "/deckhand";

    /// A keyspace under `prefix`; a trailing `/` is ignored.
    pub fn new(prefix: &str) -> Keyspace {
        Keyspace {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// The prefix, without a trailing `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>/nodes/`: the parent of every node's keys.
    pub fn nodes(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }

    /// `<prefix>/nodes/<node-id>/role`: the role an operator wants for the node.
    pub fn role(&self, node_id: &str) -> String {
        format!("{}/nodes/{node_id}/role", self.prefix)
    }

    /// `<prefix>/nodes/<node-id>/status`: the node's status, on its lease.
    pub fn status(&self, node_id: &str) -> String {
        format!("{}/nodes/{node_id}/status", self.prefix)
    }

    /// `<prefix>/nodes/<node-id>/name`: the node's name (hostname), written
    /// by its agent without a lease, so a dead node can still be named.
    pub fn name(&self, node_id: &str) -> String {
        format!("{}/nodes/{node_id}/name", self.prefix)
    }

    /// `<prefix>/config/cluster`: cluster-wide settings.
    pub fn cluster_config(&self) -> String {
        format!("{}/config/cluster", self.prefix)
    }

    /// `<prefix>/config/tls`: the state of `deckhand tls enable` (each
    /// node's TLS stage; `docs/tls.md`).
    pub fn tls_rollout(&self) -> String {
        format!("{}/config/tls", self.prefix)
    }

    /// `<prefix>/config/planes/`: the parent of the plane configs.
    pub fn planes(&self) -> String {
        format!("{}/config/planes/", self.prefix)
    }

    /// `<prefix>/config/planes/<plane>`: a plane's units and images.
    pub fn plane(&self, plane: crate::Plane) -> String {
        format!("{}/config/planes/{plane}", self.prefix)
    }

    /// `<prefix>/elections/<unit>`: the election of a singleton unit. Its
    /// candidates are the keys `<election>/<lease id hex>`, each on its
    /// node's lease, valued with the node id; the leader is the candidate
    /// with the lowest create revision. This is the layout of etcd's own
    /// election API (`go.etcd.io/etcd/client/v3/concurrency`), so
    /// `etcdctl elect --listen <election>` shows the leader.
    pub fn election(&self, unit: &str) -> String {
        format!("{}/elections/{unit}", self.prefix)
    }

    /// `<prefix>/elections/<unit>/<lease id hex>`: one node's candidacy.
    pub fn election_candidate(&self, unit: &str, lease_id: i64) -> String {
        format!("{}/elections/{unit}/{lease_id:x}", self.prefix)
    }

    /// `<prefix>/elections/`: the parent of every election.
    pub fn elections(&self) -> String {
        format!("{}/elections/", self.prefix)
    }

    /// `<prefix>/locks/replacer`: held by the one agent that keeps the
    /// configured number of voters.
    pub fn replacer_lock(&self) -> String {
        format!("{}/locks/replacer", self.prefix)
    }

    /// `<prefix>/health/voters/<member id, hex>`: the health report of one
    /// voter, written by that voter's own agent on a lease of its own
    /// (`docs/scale.md`, "Voter health").
    pub fn voter_health(&self, member_id: u64) -> String {
        format!("{}/health/voters/{member_id:x}", self.prefix)
    }

    /// `<prefix>/health/voters/`: the parent of every voter's health report.
    pub fn voter_healths(&self) -> String {
        format!("{}/health/voters/", self.prefix)
    }

    /// `<prefix>/locks/membership`: the one-change-at-a-time membership lock.
    pub fn membership_lock(&self) -> String {
        format!("{}/locks/membership", self.prefix)
    }

    /// `<prefix>/pki/requests/`: the parent of the open certificate
    /// requests.
    pub fn pki_requests(&self) -> String {
        format!("{}/pki/requests/", self.prefix)
    }

    /// `<prefix>/pki/requests/<node-id>`: a node's certificate request
    /// (join or renewal), written by the node.
    pub fn pki_request(&self, node_id: &str) -> String {
        format!("{}/pki/requests/{node_id}", self.prefix)
    }

    /// `<prefix>/pki/issued/<node-id>`: the certificates the signer issued
    /// for the node's request.
    pub fn pki_issued(&self, node_id: &str) -> String {
        format!("{}/pki/issued/{node_id}", self.prefix)
    }

    /// `<prefix>/pki/refused/<node-id>`: why the signer refused the node's
    /// request.
    pub fn pki_refused(&self, node_id: &str) -> String {
        format!("{}/pki/refused/{node_id}", self.prefix)
    }

    /// `<prefix>/pki/approvals/<node-id>`: an operator's approval of the
    /// node's request (`pki.auto_sign` off).
    pub fn pki_approval(&self, node_id: &str) -> String {
        format!("{}/pki/approvals/{node_id}", self.prefix)
    }

    /// `<prefix>/elections/pki-signer`: the election of the agent that
    /// signs requests, among the nodes that hold the CA key. (No unit
    /// election can take the name: a unit name has a type suffix.)
    pub fn pki_signer_election(&self) -> String {
        self.election("pki-signer")
    }

    /// Splits a key under [`Keyspace::nodes`] into `(node_id, leaf)`, e.g.
    /// `("abc", "role")`. `None` for any other key.
    pub fn parse_node_key<'a>(&self, key: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = key
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix("/nodes/")?;
        let (id, leaf) = rest.split_once('/')?;
        if id.is_empty() || leaf.contains('/') {
            return None;
        }
        Some((id, leaf))
    }

    /// `<prefix>/backup/cluster-id`: the deckhand cluster id snapshots are
    /// named by, made once (put if absent); in the data, so a restore keeps it.
    pub fn backup_cluster_id(&self) -> String {
        format!("{}/backup/cluster-id", self.prefix)
    }

    /// `<prefix>/backup/status`: the taker's [`crate::backup::BackupStatus`].
    pub fn backup_status(&self) -> String {
        format!("{}/backup/status", self.prefix)
    }

    /// `<prefix>/backup/request`: a [`crate::backup::BackupRequest`] of
    /// `deckhand backup now`.
    pub fn backup_request(&self) -> String {
        format!("{}/backup/request", self.prefix)
    }

    /// `<prefix>/elections/backup`: the election of the agent that takes
    /// snapshots, among the nodes that may (`backup.nodes`).
    pub fn backup_election(&self) -> String {
        self.election("backup")
    }
}

impl Default for Keyspace {
    fn default() -> Self {
        Keyspace::new(Keyspace::DEFAULT_PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_parse() {
        let ks = Keyspace::new("/x/");
        assert_eq!(ks.status("n1"), "/x/nodes/n1/status");
        assert_eq!(
            ks.parse_node_key("/x/nodes/n1/status"),
            Some(("n1", "status"))
        );
        assert_eq!(ks.parse_node_key("/x/nodes/n1"), None);
        assert_eq!(ks.parse_node_key("/y/nodes/n1/role"), None);
        assert_eq!(ks.parse_node_key("/x/nodes/n1/a/b"), None);
    }
}
