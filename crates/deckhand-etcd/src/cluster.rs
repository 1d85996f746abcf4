//! Membership operations on a cluster of real etcd members: list, add a
//! learner, promote, remove, move leadership, endpoint status and voter health.
//!
//! The runtime-reconfiguration rules these operations follow are etcd's:
//! <https://etcd.io/docs/v3.4/op-guide/runtime-configuration/> and, for
//! learners, <https://etcd.io/docs/v3.4/learning/design-learner/>.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use etcd_client::{Client, ConnectOptions, MemberAddOptions};
use tokio::task::JoinSet;
use tracing::debug;

use crate::error::{Error, Result, etcd_msg, grpc_message, timed};

/// HTTP/2 keep-alive ping interval on client connections. etcd 3.4 answers
/// pings more frequent than `--grpc-keepalive-min-time` (5 s by default) with
/// GOAWAY, and refuses pings while no stream is open, so pings are only sent
/// while a stream (watch, lease keep-alive) is open.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// How often a refused `MoveLeader` ("not leader": the leader changed while we
/// looked) is retried against the new leader.
const MOVE_LEADER_ATTEMPTS: usize = 3;

/// One entry of etcd's member list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Member {
    /// The member id (etcd prints it in hex).
    pub id: u64,
    /// The member name (`--name`); empty until the member has started and
    /// published itself to the cluster.
    pub name: String,
    /// The URLs the other members reach it on (`--initial-advertise-peer-urls`).
    pub peer_urls: Vec<String>,
    /// The URLs clients reach it on (`--advertise-client-urls`); empty until
    /// the member has started.
    pub client_urls: Vec<String>,
    /// The member is a raft learner: it receives the log but does not vote,
    /// and refuses client reads and writes.
    pub is_learner: bool,
}

impl Member {
    /// The member's etcd process has run and published its name and client URLs.
    ///
    /// etcd adds a member with only its peer URLs; the member sets its name
    /// and client URLs through raft once it runs (`publish` in
    /// `etcdserver/server.go`). Members of a bootstrap's initial cluster carry
    /// their names from `--initial-cluster` before they ever ran, so only the
    /// client URLs tell: none means it never started.
    pub fn is_started(&self) -> bool {
        !self.client_urls.is_empty()
    }

    /// The member lists `peer_url` among its peer URLs (a trailing `/` is ignored).
    pub fn has_peer_url(&self, peer_url: &str) -> bool {
        let want = peer_url.trim_end_matches('/');
        self.peer_urls
            .iter()
            .any(|u| u.trim_end_matches('/') == want)
    }
}

impl From<&etcd_client::Member> for Member {
    fn from(m: &etcd_client::Member) -> Self {
        Member {
            id: m.id(),
            name: m.name().to_owned(),
            peer_urls: m.peer_urls().to_vec(),
            client_urls: m.client_urls().to_vec(),
            is_learner: m.is_learner(),
        }
    }
}

fn members_of(list: &[etcd_client::Member]) -> Vec<Member> {
    list.iter().map(Member::from).collect()
}

/// The answer of [`Cluster::add_learner`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedLearner {
    /// The member that has the peer URL: the new learner, or the member found
    /// already there (which may be a voter by now, see [`Member::is_learner`]).
    pub member: Member,
    /// The member list after the add.
    pub members: Vec<Member>,
    /// The member was already in the list (an earlier add that was interrupted
    /// or timed out); nothing was added.
    pub reused: bool,
}

/// The status one member reports about itself (etcd's `Status` RPC, what
/// `etcdctl endpoint status` prints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStatus {
    /// The client URL that was asked.
    pub endpoint: String,
    /// The id of the member behind the endpoint.
    pub member_id: u64,
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

/// A client of an etcd cluster, bound to real members' client URLs.
///
/// Never point it at an `etcd grpc-proxy`: a 3.4 proxy answers `MemberList`
/// with itself, not with the cluster's members.
///
/// Every request carries a timeout (the one given to [`Cluster::connect`]);
/// connecting to an endpoint has the same timeout. Clones share the client;
/// [`Cluster::set_endpoints`] on one clone switches them all.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<RwLock<Inner>>,
    timeout: Duration,
}

/// The client is bound to one endpoint at a time (`endpoints[current]`):
/// etcd-client balances requests over every endpoint it is given, a dead one
/// included, so with one member down some requests would fail. Instead,
/// [`Cluster::member_list`] moves to the next endpoint when the current one
/// does not answer.
struct Inner {
    client: Client,
    endpoints: Vec<String>,
    current: usize,
}

/// A failure of the endpoint itself (timeout, connection refused, stream
/// broken), as opposed to an answer from etcd: worth trying another member.
fn is_endpoint_failure(e: &Error) -> bool {
    match e {
        Error::Timeout { .. } => true,
        Error::Request { source, .. } => match source {
            etcd_client::Error::GRpcStatus(st) => {
                matches!(
                    st.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
                ) && !st.message().starts_with("etcdserver:")
            }
            _ => true,
        },
        _ => false,
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("endpoints", &self.endpoints())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Options for a client: a connect timeout and a per-request timeout of
/// `timeout`, and HTTP/2 keep-alive on open streams so a dead connection under
/// a watch or a lease keep-alive is noticed within `KEEPALIVE_INTERVAL + timeout`.
fn connect_options(timeout: Duration) -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_timeout(timeout)
        .with_keep_alive(KEEPALIVE_INTERVAL, timeout)
        .with_keep_alive_while_idle(false)
}

/// Builds a client for `endpoints`. etcd-client connects lazily, so this does
/// not fail when the members are down; the first request does.
async fn build_client(endpoints: &[String], timeout: Duration) -> Result<Client> {
    let invalid = |reason: String| Error::InvalidEndpoints {
        endpoints: endpoints.to_vec(),
        reason,
    };
    if endpoints.is_empty() {
        return Err(invalid("the list is empty".to_owned()));
    }
    if let Some(bad) = endpoints.iter().find(|e| !e.starts_with("http://")) {
        return Err(invalid(format!(
            "{bad} is not an http:// URL (TLS is not built in)"
        )));
    }
    match tokio::time::timeout(
        timeout,
        Client::connect(endpoints, Some(connect_options(timeout))),
    )
    .await
    {
        Err(_) => Err(Error::Timeout {
            op: "connect",
            timeout,
        }),
        Ok(Err(e)) => Err(invalid(e.to_string())),
        Ok(Ok(client)) => Ok(client),
    }
}

impl Cluster {
    /// Connects to the members at `endpoints` (client URLs, `http://host:port`).
    ///
    /// `timeout` bounds connecting to an endpoint and every request made
    /// through this `Cluster`. Connecting is lazy: this fails only for an empty
    /// or malformed list ([`Error::InvalidEndpoints`]); unreachable members
    /// show up as [`Error::Timeout`] or [`Error::Request`] on the first request.
    pub async fn connect(endpoints: &[String], timeout: Duration) -> Result<Cluster> {
        build_client(endpoints, timeout).await?; // validates the whole list
        let client = build_client(&endpoints[..1], timeout).await?;
        Ok(Cluster {
            inner: Arc::new(RwLock::new(Inner {
                client,
                endpoints: endpoints.to_vec(),
                current: 0,
            })),
            timeout,
        })
    }

    /// A clone of the underlying etcd client, for KV, lease and watch use.
    ///
    /// It keeps the endpoints it was taken with; take a new one after
    /// [`Cluster::set_endpoints`].
    pub fn client(&self) -> Client {
        self.read().client.clone()
    }

    /// The endpoints this cluster client is bound to.
    pub fn endpoints(&self) -> Vec<String> {
        self.read().endpoints.clone()
    }

    /// The per-request timeout given to [`Cluster::connect`].
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Rebinds to a new set of client URLs (after the voter set changed) by
    /// building a new client. Requests already running finish on the old one.
    ///
    /// Errors: [`Error::InvalidEndpoints`] for an empty or malformed list; the
    /// old binding stays then.
    pub async fn set_endpoints(&self, endpoints: &[String]) -> Result<()> {
        build_client(endpoints, self.timeout).await?; // validates the whole list
        let (old, old_client) = {
            let inner = self.read();
            (inner.endpoints[inner.current].clone(), inner.client.clone())
        };
        // Keep the endpoint in use when it is still listed.
        let (current, client) = match endpoints.iter().position(|e| *e == old) {
            Some(i) => (i, old_client),
            None => (0, build_client(&endpoints[..1], self.timeout).await?),
        };
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.client = client;
        inner.endpoints = endpoints.to_vec();
        inner.current = current;
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The member list, voters and learners.
    ///
    /// Not linearizable: etcd 3.4 answers `MemberList` from the membership the
    /// answering member has applied, which can lag the leader (3.5 added a
    /// `linearizable` flag). Re-check before a decision that depends on it.
    /// See `Cluster.MemberList` in
    /// <https://etcd.io/docs/v3.4/dev-guide/api_reference_v3/>.
    ///
    /// Errors: [`Error::Timeout`], [`Error::Request`].
    ///
    /// When the current endpoint fails (no answer, connection refused), the
    /// other endpoints are tried in turn and the first that answers becomes
    /// the current one for every later request.
    pub async fn member_list(&self) -> Result<Vec<Member>> {
        let (endpoints, current) = {
            let inner = self.read();
            (inner.endpoints.clone(), inner.current)
        };
        let mut last = None;
        for attempt in 0..endpoints.len() {
            let index = (current + attempt) % endpoints.len();
            let mut client = if attempt == 0 {
                self.client()
            } else {
                build_client(&endpoints[index..=index], self.timeout).await?
            };
            match timed("member_list", self.timeout, client.member_list()).await {
                Ok(resp) => {
                    if attempt > 0 {
                        debug!(
                            endpoint = endpoints[index],
                            "switched to a member that answers"
                        );
                        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
                        if inner.endpoints == endpoints {
                            inner.client = client;
                            inner.current = index;
                        }
                    }
                    return Ok(members_of(resp.members()));
                }
                Err(e) if is_endpoint_failure(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(Error::Timeout {
            op: "member_list",
            timeout: self.timeout,
        }))
    }

    /// Adds a learner with `peer_url` (`MemberAdd` with `isLearner`), or
    /// returns the member that already has this peer URL (`reused`), so that
    /// re-running an interrupted or timed-out add is safe.
    ///
    /// A learner does not count toward quorum, so adding one never blocks
    /// writes; start its etcd process with `--initial-cluster-state existing`,
    /// then [`Cluster::promote_until_in_sync`]
    /// (<https://etcd.io/docs/v3.4/learning/design-learner/>).
    ///
    /// etcd's strict reconfiguration check
    /// (<https://etcd.io/docs/v3.4/op-guide/configuration/>)
    /// refuses any membership change for about 5 s after a voter (re)connects.
    ///
    /// Errors: [`Error::TooManyLearners`] (etcd 3.4 allows one learner),
    /// [`Error::UnhealthyCluster`] (a voter was not connected for the last
    /// 5 s: retry later), [`Error::Timeout`], [`Error::Request`].
    pub async fn add_learner(&self, peer_url: &str) -> Result<AddedLearner> {
        const OP: &str = "member_add";
        let members = self.member_list().await?;
        if let Some(member) = members.iter().find(|m| m.has_peer_url(peer_url)) {
            debug!(
                id = member.id,
                peer_url, "peer URL already in the member list"
            );
            return Ok(AddedLearner {
                member: member.clone(),
                members,
                reused: true,
            });
        }
        let mut client = self.client();
        let options = MemberAddOptions::new().with_is_learner();
        let added = timed(
            OP,
            self.timeout,
            client.member_add([peer_url.to_owned()], Some(options)),
        )
        .await;
        match added {
            Ok(resp) => {
                let member = resp.member().map(Member::from).ok_or(Error::Protocol {
                    op: OP,
                    what: "no member in the answer".to_owned(),
                })?;
                debug!(id = member.id, peer_url, "added learner");
                Ok(AddedLearner {
                    member,
                    members: members_of(resp.member_list()),
                    reused: false,
                })
            }
            Err(Error::Request { op, source }) => match grpc_message(&source) {
                // Someone added it meanwhile (or an earlier attempt that timed
                // out went through): the member list we read lagged.
                Some(etcd_msg::PEER_URL_EXISTS | etcd_msg::MEMBER_EXISTS) => {
                    self.find_added(peer_url, Error::Request { op, source })
                        .await
                }
                Some(etcd_msg::TOO_MANY_LEARNERS) => Err(Error::TooManyLearners {
                    peer_url: peer_url.to_owned(),
                }),
                Some(etcd_msg::UNHEALTHY) => Err(Error::UnhealthyCluster { op }),
                _ => Err(Error::Request { op, source }),
            },
            Err(e) => Err(e),
        }
    }

    /// After "peer URL exists": reads the member list until the member shows
    /// up (the list of the answering member may lag), or returns `refused`.
    async fn find_added(&self, peer_url: &str, refused: Error) -> Result<AddedLearner> {
        for attempt in 0..5u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let members = self.member_list().await?;
            if let Some(member) = members.iter().find(|m| m.has_peer_url(peer_url)) {
                return Ok(AddedLearner {
                    member: member.clone(),
                    members,
                    reused: true,
                });
            }
        }
        Err(refused)
    }

    /// One attempt to promote learner `id` to a voter (`MemberPromote`).
    ///
    /// Promoting a member that is already a voter is `Ok` (etcd says "can
    /// only promote a learner member"), so a re-run after an interrupted
    /// promote succeeds. A follower forwards the request to the leader, which
    /// decides (<https://etcd.io/docs/v3.4/learning/design-learner/>).
    ///
    /// Errors: [`Error::LearnerNotInSync`] while the learner's log is behind
    /// the leader's (etcd wants it at 90 % of the leader's progress; an
    /// unstarted learner is never in sync), [`Error::MemberNotFound`],
    /// [`Error::NotEnoughStartedMembers`], [`Error::UnhealthyCluster`],
    /// [`Error::Timeout`], [`Error::Request`].
    pub async fn promote(&self, id: u64) -> Result<()> {
        let mut client = self.client();
        match timed("member_promote", self.timeout, client.member_promote(id)).await {
            Ok(_) => {
                debug!(id, "promoted learner");
                Ok(())
            }
            Err(Error::Request { op, source }) => match grpc_message(&source) {
                Some(etcd_msg::LEARNER_NOT_READY) => Err(Error::LearnerNotInSync { id }),
                Some(etcd_msg::NOT_LEARNER) => {
                    debug!(id, "member is already a voter");
                    Ok(())
                }
                Some(etcd_msg::MEMBER_NOT_FOUND) => Err(Error::MemberNotFound { op, id }),
                Some(etcd_msg::NOT_ENOUGH_STARTED) => {
                    Err(Error::NotEnoughStartedMembers { op, id })
                }
                Some(etcd_msg::UNHEALTHY) => Err(Error::UnhealthyCluster { op }),
                _ => Err(Error::Request { op, source }),
            },
            Err(e) => Err(e),
        }
    }

    /// Promotes learner `id`, retrying with backoff (100 ms growing to 1 s)
    /// while etcd says it is not in sync, for at most `deadline`.
    ///
    /// Errors: [`Error::PromoteDeadline`] when the learner has not caught up
    /// within `deadline`; any other error of [`Cluster::promote`] ends the
    /// retries at once.
    pub async fn promote_until_in_sync(&self, id: u64, deadline: Duration) -> Result<()> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(1))
            .with_factor(1.5)
            .with_jitter()
            .without_max_times();
        let attempts = (|| self.promote(id))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e| matches!(e, Error::LearnerNotInSync { .. }))
            .notify(|_, after| debug!(id, ?after, "learner not in sync yet; retrying"));
        match tokio::time::timeout(deadline, attempts).await {
            Err(_) => Err(Error::PromoteDeadline { id, deadline }),
            Ok(result) => result,
        }
    }

    /// Removes member `id` (`MemberRemove`). Removing an id that is not (or no
    /// longer) in the cluster is `Ok`, so a re-run is safe.
    ///
    /// The removed member's etcd stops itself and its data dir can never
    /// start again ("the member has been permanently removed from the
    /// cluster"). Removing the leader stalls writes for an election (and a
    /// request made in that window is dropped by raft and ends only with its
    /// timeout): call [`Cluster::move_leader`] first. See
    /// <https://etcd.io/docs/v3.4/op-guide/runtime-configuration/#remove-a-member>.
    ///
    /// etcd's strict reconfiguration check refuses the removal of a voter when
    /// the voters left that are active (connected for the last 5 s) would not
    /// hold a quorum; removing a voter that is down, or a learner, passes.
    ///
    /// Errors: [`Error::UnhealthyCluster`] (too few active voters would be
    /// left: a voter is down or just started), [`Error::NotEnoughStartedMembers`]
    /// (too few voters that ever started would be left), [`Error::Timeout`],
    /// [`Error::Request`].
    pub async fn remove(&self, id: u64) -> Result<()> {
        let mut client = self.client();
        match timed("member_remove", self.timeout, client.member_remove(id)).await {
            Ok(_) => {
                debug!(id, "removed member");
                Ok(())
            }
            Err(Error::Request { op, source }) => match grpc_message(&source) {
                Some(etcd_msg::MEMBER_NOT_FOUND) => {
                    debug!(id, "member already removed");
                    Ok(())
                }
                Some(etcd_msg::NOT_ENOUGH_STARTED) => {
                    Err(Error::NotEnoughStartedMembers { op, id })
                }
                Some(etcd_msg::UNHEALTHY) => Err(Error::UnhealthyCluster { op }),
                _ => Err(Error::Request { op, source }),
            },
            Err(e) => Err(e),
        }
    }

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
            let mut client =
                build_client(std::slice::from_ref(&leader.endpoint), self.timeout).await?;
            match timed(OP, self.timeout, client.move_leader(to)).await {
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
        let statuses = statuses(endpoints, self.timeout).await;
        statuses
            .into_iter()
            .filter_map(|(_, s)| s.ok())
            .find(EndpointStatus::is_leader)
            .ok_or(Error::NoLeader { checked })
    }

    /// The status of the member at client URL `endpoint` (etcd's
    /// `Maintenance.Status` RPC, what `etcdctl endpoint status` shows),
    /// through a client of its own bound to that endpoint only, with
    /// `timeout` for connecting and for the request. A learner answers too.
    ///
    /// Errors: [`Error::InvalidEndpoints`], [`Error::Timeout`], [`Error::Request`].
    pub async fn endpoint_status(endpoint: &str, timeout: Duration) -> Result<EndpointStatus> {
        let endpoints = [endpoint.to_owned()];
        let mut client = build_client(&endpoints, timeout).await?;
        let resp = timed("status", timeout, client.status()).await?;
        let header = resp.header().ok_or(Error::Protocol {
            op: "status",
            what: "no response header".to_owned(),
        })?;
        Ok(EndpointStatus {
            endpoint: endpoint.to_owned(),
            member_id: header.member_id(),
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
    pub async fn voter_health(&self, members: &[Member], timeout: Duration) -> Vec<(u64, bool)> {
        let voters: Vec<&Member> = members.iter().filter(|m| !m.is_learner).collect();
        let mut tasks = JoinSet::new();
        for (index, voter) in voters.iter().enumerate() {
            let urls = voter.client_urls.clone();
            tasks.spawn(async move {
                for url in urls {
                    if let Ok(status) = Cluster::endpoint_status(&url, timeout).await {
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
async fn statuses(
    endpoints: Vec<String>,
    timeout: Duration,
) -> Vec<(String, Result<EndpointStatus>)> {
    let mut tasks = JoinSet::new();
    for endpoint in endpoints {
        tasks.spawn(async move {
            let status = Cluster::endpoint_status(&endpoint, timeout).await;
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
