//! The [`Cluster`] client itself: connecting, the endpoint it is bound to,
//! and the member list, which moves to another member when one does not answer.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tracing::debug;

use super::member::{Member, members_of};
use crate::error::{Error, Result, timed};
use crate::tls::{self, Tls};

/// HTTP/2 keep-alive ping interval on client connections. etcd 3.4 answers
/// pings more frequent than `--grpc-keepalive-min-time` (5 s by default) with
/// GOAWAY, and refuses pings while no stream is open, so pings are only sent
/// while a stream (watch, lease keep-alive) is open.
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

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
    pub(super) tls: Option<Tls>,
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

/// Builds a client for `endpoints`: `http://` URLs in plaintext, `https://`
/// ones with mutual TLS from `tls` ([`crate::tls::apply`]). etcd-client
/// connects lazily, so this does not fail when the members are down; the
/// first request does (a TLS handshake refused shows up there too).
pub(super) async fn build_client(
    endpoints: &[String],
    timeout: Duration,
    tls: Option<&Tls>,
) -> Result<Client> {
    let invalid = |reason: String| Error::InvalidEndpoints {
        endpoints: endpoints.to_vec(),
        reason,
    };
    if endpoints.is_empty() {
        return Err(invalid("the list is empty".to_owned()));
    }
    let opts = tls::apply(connect_options(timeout), endpoints, tls).map_err(invalid)?;
    match tokio::time::timeout(timeout, Client::connect(endpoints, Some(opts))).await {
        Err(_) => Err(Error::Timeout {
            op: "connect",
            timeout,
        }),
        Ok(Err(e)) => Err(invalid(e.to_string())),
        Ok(Ok(client)) => Ok(client),
    }
}

impl Cluster {
    /// Connects to the members at `endpoints` (client URLs,
    /// `http://host:port`, or `https://host:port` with `tls`: mutual TLS
    /// with that CA and client identity, kept for every later connection of
    /// this `Cluster` and its clones, to other members included).
    ///
    /// `timeout` bounds connecting to an endpoint and every request made
    /// through this `Cluster`. Connecting is lazy: this fails only for an empty
    /// or malformed list, a list mixing `http://` and `https://`, or
    /// `https://` without `tls` ([`Error::InvalidEndpoints`]); unreachable
    /// members, and members refusing the TLS handshake, show up as
    /// [`Error::Timeout`] or [`Error::Request`] on the first request.
    pub async fn connect(
        endpoints: &[String],
        timeout: Duration,
        tls: Option<&Tls>,
    ) -> Result<Cluster> {
        build_client(endpoints, timeout, tls).await?; // validates the whole list
        let client = build_client(&endpoints[..1], timeout, tls).await?;
        Ok(Cluster {
            inner: Arc::new(RwLock::new(Inner {
                client,
                endpoints: endpoints.to_vec(),
                current: 0,
            })),
            timeout,
            tls: tls.cloned(),
        })
    }

    /// The TLS material given to [`Cluster::connect`], if any.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
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
        build_client(endpoints, self.timeout, self.tls()).await?; // validates the whole list
        let (old, old_client) = {
            let inner = self.read();
            (inner.endpoints[inner.current].clone(), inner.client.clone())
        };
        // Keep the endpoint in use when it is still listed.
        let (current, client) = match endpoints.iter().position(|e| *e == old) {
            Some(i) => (i, old_client),
            None => (
                0,
                build_client(&endpoints[..1], self.timeout, self.tls()).await?,
            ),
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
                build_client(&endpoints[index..=index], self.timeout, self.tls()).await?
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
}
