//! What members say about themselves: one endpoint's `Status`, and the
//! health of every voter.

use std::time::Duration;

use tokio::task::JoinSet;

use super::client::build_client;
use super::{Cluster, Member};
use crate::error::{Error, Result, timed};
use crate::tls::Tls;

/// The status one member reports about itself (etcd's `Status` RPC, what
/// `etcdctl endpoint status` prints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStatus {
    /// The client URL that was asked.
    pub endpoint: String,
    /// The id of the member behind the endpoint.
    pub member_id: u64,
    /// The id of the cluster that member belongs to (`ResponseHeader.cluster_id`).
    pub cluster_id: u64,
    /// The leader's member id as this member knows it; 0 when it knows none.
    pub leader: u64,
    /// The raft term.
    pub raft_term: u64,
    /// The raft log index.
    pub raft_index: u64,
    /// The store revision this member has applied.
    pub revision: i64,
    /// The member is a learner.
    pub is_learner: bool,
    /// Errors the member reports, such as active alarms (`NOSPACE`, `CORRUPT`).
    pub errors: Vec<String>,
    /// The etcd server version, e.g. `3.4.23`.
    pub version: String,
}

impl EndpointStatus {
    /// This member is the raft leader.
    pub fn is_leader(&self) -> bool {
        self.leader != 0 && self.leader == self.member_id
    }
}

impl Cluster {
    /// The status of the member at client URL `endpoint` (etcd's
    /// `Maintenance.Status` RPC, what `etcdctl endpoint status` shows),
    /// through a client of its own bound to that endpoint only, with
    /// `timeout` for connecting and for the request. A learner answers too.
    /// An `https://` endpoint needs `tls` (mutual TLS, see
    /// [`Cluster::connect`]); an `http://` one is asked in plaintext.
    ///
    /// Errors: [`Error::InvalidEndpoints`], [`Error::Timeout`], [`Error::Request`].
    pub async fn endpoint_status(
        endpoint: &str,
        timeout: Duration,
        tls: Option<&Tls>,
    ) -> Result<EndpointStatus> {
        let endpoints = [endpoint.to_owned()];
        let mut client = build_client(&endpoints, timeout, tls).await?;
        let resp = timed("status", timeout, client.status()).await?;
        let header = resp.header().ok_or(Error::Protocol {
            op: "status",
            what: "no response header".to_owned(),
        })?;
        Ok(EndpointStatus {
            endpoint: endpoint.to_owned(),
            member_id: header.member_id(),
            cluster_id: header.cluster_id(),
            leader: resp.leader(),
            raft_term: resp.raft_term(),
            raft_index: resp.raft_index(),
            revision: header.revision(),
            is_learner: resp.is_learner(),
            errors: resp.errors().to_vec(),
            version: resp.version().to_owned(),
        })
    }

    /// The health of each voter in `members`, in their order: healthy when
    /// one of its client URLs answered `Status` within `timeout` and it knows a
    /// leader. Learners are skipped; a voter without client URLs (never
    /// started) is unhealthy. All voters are asked at once.
    ///
    /// Returns `(member id, healthy)` for each voter. Never fails: a voter
    /// that cannot be asked counts as unhealthy.
    pub async fn voter_health(&self, members: &[Member], timeout: Duration) -> Vec<(u64, bool)> {
        let voters: Vec<&Member> = members.iter().filter(|m| !m.is_learner).collect();
        let mut tasks = JoinSet::new();
        for (index, voter) in voters.iter().enumerate() {
            let urls = voter.client_urls.clone();
            let tls = self.tls.clone();
            tasks.spawn(async move {
                for url in urls {
                    if let Ok(status) = Cluster::endpoint_status(&url, timeout, tls.as_ref()).await
                    {
                        return (index, status.leader != 0);
                    }
                }
                (index, false)
            });
        }
        let mut healthy = vec![false; voters.len()];
        while let Some(done) = tasks.join_next().await {
            let Ok((index, ok)) = done else { continue };
            if let Some(slot) = healthy.get_mut(index) {
                *slot = ok;
            }
        }
        voters
            .iter()
            .zip(healthy)
            .map(|(m, ok)| (m.id, ok))
            .collect()
    }
}

/// The status of each endpoint, asked all at once.
pub(super) async fn statuses(
    endpoints: Vec<String>,
    timeout: Duration,
    tls: Option<&Tls>,
) -> Vec<(String, Result<EndpointStatus>)> {
    let mut tasks = JoinSet::new();
    for endpoint in endpoints {
        let tls = tls.cloned();
        tasks.spawn(async move {
            let status = Cluster::endpoint_status(&endpoint, timeout, tls.as_ref()).await;
            (endpoint, status)
        });
    }
    let mut out = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(pair) = done {
            out.push(pair);
        }
    }
    out
}
