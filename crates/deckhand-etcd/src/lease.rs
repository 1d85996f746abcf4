//! The lease keeper: one etcd lease kept alive in the background, replaced by
//! a new one whenever it is lost, its current id published on a watch channel.
//!
//! etcd's lease model: <https://etcd.io/docs/v3.4/learning/api/#lease-api>.
//! A lease expires when no keep-alive reaches the leader for its TTL; its keys
//! are then deleted. A new leader extends every lease by its TTL plus an
//! election timeout, so leases survive leader changes and restarts of a
//! single-member cluster.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use etcd_client::{Client, Compare, CompareOp, LeaseTimeToLiveOptions, PutOptions, Txn, TxnOp};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::REQUEST_TIMEOUT;
use crate::error::{Chain, timed};

/// The shortest keep-alive interval and per-message timeout, whatever the TTL.
const MIN_INTERVAL: Duration = Duration::from_millis(500);

/// Keeps one lease alive.
///
/// [`LeaseKeeper::spawn`] grants a lease of `ttl` seconds and sends a
/// keep-alive every `ttl / 3` seconds over etcd's `LeaseKeepAlive` stream.
/// When the lease is lost it grants a new one. Lost means: etcd answers a
/// keep-alive with TTL 0 (expired or revoked), or no keep-alive has been
/// answered for `ttl` seconds (etcd may have expired it; the keeper cannot
/// tell, so it publishes 0 at once, grants a new lease as soon as etcd
/// answers, and revokes the old one best effort).
///
/// The current lease id is published on [`LeaseKeeper::lease`]; 0 while the
/// keeper holds no lease it knows to be alive. A change of id means keys put
/// with the old lease may be gone: put them again with the new one.
///
/// No wait is unbounded: each keep-alive answer is awaited for at most
/// `ttl / 3` (at least 0.5 s), grants and stream opens for at most
/// [`REQUEST_TIMEOUT`]; failures are retried with backoff (50 ms up to a
/// ninth of the TTL, at most 1 s).
///
/// Dropping the keeper stops it without revoking: the lease then expires
/// after its TTL. Use [`LeaseKeeper::revoke`] to end it at once.
pub struct LeaseKeeper {
    lease: watch::Receiver<i64>,
    renewal: watch::Receiver<Option<Renewal>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Vec<i64>>,
    client: Client,
}

impl LeaseKeeper {
    /// Starts keeping a lease of `ttl` seconds (at least 1) alive through
    /// `client`, on the current tokio runtime.
    pub fn spawn(client: Client, ttl: i64) -> LeaseKeeper {
        let ttl = ttl.max(1);
        let (tx, lease) = watch::channel(0);
        let (renewal_tx, renewal) = watch::channel(None);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(client.clone(), ttl, tx, renewal_tx, stopped));
        LeaseKeeper {
            lease,
            renewal,
            stop: Some(stop),
            task,
            client,
        }
    }

    /// The current lease id, 0 while there is none.
    pub fn lease(&self) -> watch::Receiver<i64> {
        self.lease.clone()
    }

    /// The last renewal etcd confirmed: which lease, and when the request
    /// that renewed it was sent. `None` until the first grant. Fencing reads
    /// it: the lease lives at least until [`Renewal::alive_until`], and may
    /// be gone any time after.
    pub fn renewals(&self) -> watch::Receiver<Option<Renewal>> {
        self.renewal.clone()
    }

    /// Stops keeping the lease and revokes it (and a lease given up after a
    /// loss of contact, if it was not revoked yet), deleting the keys attached
    /// to it. Best effort: a revoke that fails is logged, and the lease then
    /// expires after its TTL.
    pub async fn revoke(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let leases = match tokio::time::timeout(REQUEST_TIMEOUT, &mut self.task).await {
            Ok(Ok(leases)) => leases,
            Ok(Err(e)) => {
                warn!(error = %e, "lease keeper task failed; leases expire after their TTL");
                Vec::new()
            }
            Err(_) => {
                self.task.abort();
                vec![*self.lease.borrow()]
            }
        };
        for id in leases.into_iter().filter(|id| *id != 0) {
            revoke_lease(&mut self.client, id).await;
        }
    }
}

impl std::fmt::Debug for LeaseKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseKeeper")
            .field("lease", &*self.lease.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn revoke_lease(client: &mut Client, id: i64) {
    match timed("lease_revoke", REQUEST_TIMEOUT, client.lease_revoke(id)).await {
        Ok(_) => info!(lease = id, "revoked lease"),
        Err(e) => {
            warn!(lease = id, error = %Chain(&e), "cannot revoke lease; it expires after its TTL")
        }
    }
}

/// Moves every key attached to lease `from` onto lease `to`, keeping each
/// key's value and create revision, so that `from` can then be revoked
/// without any of its keys disappearing, not even for one read. Used when
/// the node lease is replaced (a TTL change): grant the new lease, move,
/// only then revoke the old one.
///
/// The keys are those etcd lists for `from` (`LeaseTimeToLive` with
/// `keys`, as `etcdctl lease timetolive --keys`); each is moved by one
/// transaction: if the key is still on `from`, put it with `ignore_value`
/// on `to` (etcd keeps its value; a put on an existing key keeps its create
/// revision, so an election candidacy keeps its place). A key deleted or
/// moved meanwhile is skipped. Returns the keys moved. A lease `from` that
/// no longer exists has no keys: `Ok` with none.
/// <https://etcd.io/docs/v3.4/learning/api/#lease-api>,
/// <https://etcd.io/docs/v3.4/learning/api/#put>.
///
/// Each request has a timeout of [`REQUEST_TIMEOUT`].
///
/// Errors: [`crate::Error::Timeout`], [`crate::Error::Request`] (e.g.
/// "requested lease not found" for a `to` that does not exist). On an error
/// some keys may have moved and others not: call it again (it is
/// idempotent) before revoking `from`.
pub async fn move_keys(client: &mut Client, from: i64, to: i64) -> crate::Result<Vec<String>> {
    let ttl = timed(
        "lease_time_to_live",
        REQUEST_TIMEOUT,
        client.lease_time_to_live(from, Some(LeaseTimeToLiveOptions::new().with_keys())),
    )
    .await?;
    let mut moved = Vec::new();
    if ttl.ttl() < 0 {
        return Ok(moved);
    }
    for key in ttl.keys() {
        let txn = Txn::new()
            .when([Compare::lease(key.clone(), CompareOp::Equal, from)])
            .and_then([TxnOp::put(
                key.clone(),
                Vec::<u8>::new(),
                Some(PutOptions::new().with_lease(to).with_ignore_value()),
            )]);
        let resp = timed("move key to lease", REQUEST_TIMEOUT, client.txn(txn)).await?;
        if resp.succeeded() {
            moved.push(String::from_utf8_lossy(key).into_owned());
        }
    }
    debug!(from, to, moved = moved.len(), "moved keys to the new lease");
    Ok(moved)
}

/// A renewal (grant or keep-alive) that etcd answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewal {
    /// The lease renewed.
    pub lease: i64,
    /// When the renewing request was sent (local monotonic clock). etcd
    /// renewed the lease no earlier than this.
    pub sent: Instant,
    /// The lease's TTL as etcd granted it.
    pub ttl: Duration,
}

impl Renewal {
    /// The instant before which the lease is certainly alive: `sent + ttl`.
    /// etcd expires a lease `ttl` after the leader last renewed it (a new
    /// leader extends every lease, which only makes this later); see
    /// <https://etcd.io/docs/v3.4/learning/api/#lease-api>.
    pub fn alive_until(&self) -> Instant {
        self.sent + self.ttl
    }
}

/// What the keeper task knows.
struct State {
    client: Client,
    ttl: i64,
    tx: watch::Sender<i64>,
    renewal: watch::Sender<Option<Renewal>>,
    /// The lease being kept alive; 0 when none.
    held: i64,
    /// A lease given up after a loss of contact, to revoke once etcd answers.
    given_up: Option<i64>,
    /// When etcd last confirmed `held` alive.
    last_ok: Instant,
    backoff: ExponentialBackoff,
}

/// Why keeping a lease alive ended.
enum Lost {
    /// etcd said the lease is gone.
    Expired,
    /// No keep-alive was answered for a whole TTL.
    Unreachable,
}

/// Backoff between failed attempts: 50 ms doubling up to `max`.
fn new_backoff(max: Duration) -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

impl State {
    fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl.unsigned_abs())
    }

    /// The keep-alive interval and per-message timeout: a third of the TTL.
    fn interval(&self) -> Duration {
        (self.ttl() / 3).max(MIN_INTERVAL)
    }

    /// A fresh backoff: retries stay well inside one keep-alive interval, so
    /// a lease survives a short outage of etcd.
    fn new_backoff(&self) -> ExponentialBackoff {
        new_backoff((self.interval() / 3).clamp(Duration::from_millis(100), Duration::from_secs(1)))
    }

    async fn pause(&mut self) {
        let delay = self.backoff.next().unwrap_or(Duration::from_secs(1));
        tokio::time::sleep(delay).await;
    }

    /// Records that etcd answered a renewal of `held` sent at `sent`.
    fn renewed(&mut self, sent: Instant) {
        self.last_ok = sent;
        self.renewal.send_replace(Some(Renewal {
            lease: self.held,
            sent,
            ttl: self.ttl(),
        }));
    }

    /// Publishes `id`, waking receivers only when it changed.
    fn publish(&self, id: i64) {
        self.tx.send_if_modified(|current| {
            let changed = *current != id;
            *current = id;
            changed
        });
    }
}

/// The keeper task: returns the leases to revoke when stopped.
async fn run(
    client: Client,
    ttl: i64,
    tx: watch::Sender<i64>,
    renewal: watch::Sender<Option<Renewal>>,
    stop: oneshot::Receiver<()>,
) -> Vec<i64> {
    let mut state = State {
        client,
        ttl,
        tx,
        renewal,
        held: 0,
        given_up: None,
        last_ok: Instant::now(),
        backoff: new_backoff(Duration::from_secs(1)),
    };
    state.backoff = state.new_backoff();
    tokio::select! {
        _ = stop => {}
        _ = keep(&mut state) => {}
    }
    state.publish(0);
    [state.held].into_iter().chain(state.given_up).collect()
}

/// Grants leases and keeps them alive, forever.
async fn keep(state: &mut State) {
    loop {
        if state.held == 0 {
            grant(state).await;
        }
        match keep_alive(state).await {
            Lost::Expired => {
                warn!(
                    lease = state.held,
                    "lease expired or was revoked; granting a new one"
                );
            }
            Lost::Unreachable => {
                warn!(
                    lease = state.held,
                    ttl = state.ttl,
                    "no keep-alive answered for a whole TTL; the lease may have expired, \
                     granting a new one"
                );
                state.given_up = Some(state.held);
            }
        }
        state.held = 0;
        state.publish(0);
    }
}

/// Grants a lease, retrying until etcd answers; then revokes a given-up lease.
async fn grant(state: &mut State) {
    let mut failures = 0u32;
    loop {
        let mut client = state.client.clone();
        let sent = Instant::now();
        match timed(
            "lease_grant",
            REQUEST_TIMEOUT,
            client.lease_grant(state.ttl, None),
        )
        .await
        {
            Ok(resp) => {
                state.held = resp.id();
                state.renewed(sent);
                state.backoff = state.new_backoff();
                info!(lease = resp.id(), ttl = resp.ttl(), "granted lease");
                state.publish(resp.id());
                if let Some(old) = state.given_up.take() {
                    revoke_lease(&mut client, old).await;
                }
                return;
            }
            Err(e) => {
                failures += 1;
                if failures % 20 == 1 {
                    warn!(error = %Chain(&e), failures, "cannot grant a lease; retrying");
                } else {
                    debug!(error = %Chain(&e), failures, "cannot grant a lease; retrying");
                }
                state.pause().await;
            }
        }
    }
}

/// Keeps `state.held` alive until it is lost, reopening the keep-alive stream
/// whenever it breaks. `last_ok` is the time a keep-alive that etcd answered
/// was *sent*: etcd renewed the lease no earlier, so it lives at least until
/// `last_ok + ttl`.
async fn keep_alive(state: &mut State) -> Lost {
    loop {
        if state.last_ok.elapsed() > state.ttl() {
            return Lost::Unreachable;
        }
        let mut client = state.client.clone();
        let timeout = state.interval().min(REQUEST_TIMEOUT);
        let sent = Instant::now();
        let (mut keeper, mut stream) = match timed(
            "lease_keep_alive",
            timeout,
            client.lease_keep_alive(state.held),
        )
        .await
        {
            Ok(pair) => pair,
            Err(e) if is_lease_not_found(&e) => return Lost::Expired,
            Err(e) => {
                debug!(lease = state.held, error = %Chain(&e), "cannot open the keep-alive stream; retrying");
                state.pause().await;
                continue;
            }
        };
        // Opening the stream sent a keep-alive and got a live answer.
        state.renewed(sent);
        state.backoff = state.new_backoff();
        state.publish(state.held);
        loop {
            tokio::time::sleep(state.interval()).await;
            let sent = Instant::now();
            if keeper.keep_alive().await.is_err() {
                debug!(lease = state.held, "keep-alive stream closed; reopening");
                break;
            }
            match tokio::time::timeout(state.interval(), stream.message()).await {
                Ok(Ok(Some(resp))) if resp.ttl() > 0 => state.renewed(sent),
                Ok(Ok(Some(_))) => return Lost::Expired,
                Ok(Ok(None)) => {
                    debug!(lease = state.held, "keep-alive stream ended; reopening");
                    break;
                }
                Ok(Err(e)) => {
                    debug!(lease = state.held, error = %e, "keep-alive stream failed; reopening");
                    break;
                }
                Err(_) => {
                    debug!(
                        lease = state.held,
                        "keep-alive not answered in time; reopening"
                    );
                    break;
                }
            }
        }
    }
}

/// etcd-client's answer when the first keep-alive finds the lease gone (TTL 0).
fn is_lease_not_found(e: &crate::Error) -> bool {
    matches!(
        e,
        crate::Error::Request {
            source: etcd_client::Error::LeaseKeepAliveError(m),
            ..
        } if m.contains("not found")
    )
}
