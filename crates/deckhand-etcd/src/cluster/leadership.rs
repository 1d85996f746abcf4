//! Raft leadership: which voter leads, and moving leadership to another voter.

use tracing::debug;

use super::client::build_client;
use super::status::statuses;
use super::{Cluster, EndpointStatus, Member};
use crate::error::{Error, Result, etcd_msg, grpc_message, timed};

/// How often a refused `MoveLeader` ("not leader": the leader changed while we
/// looked) is retried against the new leader.
const MOVE_LEADER_ATTEMPTS: usize = 3;

impl Cluster {
    /// Moves raft leadership to voter `to` (`MoveLeader`). `Ok` at once when
    /// `to` already leads.
    ///
    /// etcd only takes `MoveLeader` on the leader ("etcdserver: not leader"
    /// elsewhere), so this asks every started voter's client URL for its
    /// status, sends the request to the one that leads, and retries against
    /// the new leader if leadership moved meanwhile. etcd answers once the
    /// old leader sees `to` as leader (bounded by this client's timeout). See
    /// `Maintenance.MoveLeader` in
    /// <https://etcd.io/docs/v3.4/dev-guide/api_reference_v3/>.
    ///
    /// Errors: [`Error::MemberNotFound`], [`Error::BadLeaderTransferee`] (a
    /// learner or an unstarted member), [`Error::NoLeader`],
    /// [`Error::Timeout`], [`Error::Request`].
    pub async fn move_leader(&self, to: u64) -> Result<()> {
        const OP: &str = "move_leader";
        let mut last_err = None;
        for _ in 0..MOVE_LEADER_ATTEMPTS {
            let members = self.member_list().await?;
            let target = members
                .iter()
                .find(|m| m.id == to)
                .ok_or(Error::MemberNotFound { op: OP, id: to })?;
            if target.is_learner || !target.is_started() {
                return Err(Error::BadLeaderTransferee { id: to });
            }
            let leader = self.find_leader(&members).await?;
            if leader.member_id == to {
                debug!(to, "member already leads");
                return Ok(());
            }
            let mut client = build_client(
                std::slice::from_ref(&leader.endpoint),
                self.timeout(),
                self.tls(),
            )
            .await?;
            match timed(OP, self.timeout(), client.move_leader(to)).await {
                Ok(_) => {
                    debug!(from = leader.member_id, to, "moved leadership");
                    return Ok(());
                }
                Err(Error::Request { op, source }) => match grpc_message(&source) {
                    Some(etcd_msg::NOT_LEADER) => {
                        debug!(endpoint = leader.endpoint, "leader changed; looking again");
                        last_err = Some(Error::Request { op, source });
                    }
                    Some(etcd_msg::BAD_LEADER_TRANSFEREE) => {
                        return Err(Error::BadLeaderTransferee { id: to });
                    }
                    _ => return Err(Error::Request { op, source }),
                },
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or(Error::NoLeader { checked: 0 }))
    }

    /// Asks every started voter for its status and returns the leader's.
    async fn find_leader(&self, members: &[Member]) -> Result<EndpointStatus> {
        let endpoints: Vec<String> = members
            .iter()
            .filter(|m| !m.is_learner)
            .flat_map(|m| m.client_urls.iter().cloned())
            .collect();
        let checked = endpoints.len();
        let statuses = statuses(endpoints, self.timeout(), self.tls()).await;
        statuses
            .into_iter()
            .filter_map(|(_, s)| s.ok())
            .find(EndpointStatus::is_leader)
            .ok_or(Error::NoLeader { checked })
    }
}
