//! Elections for singleton units: one leader among the candidates, decided
//! by etcd's revision order, each candidacy on its node's lease.
//!
//! The key layout is that of etcd's own election API
//! (`go.etcd.io/etcd/client/v3/concurrency`, served as `v3election`): a
//! candidate is the key `<election>/<lease id hex>` put on that lease, and
//! the leader is the candidate with the lowest create revision. So
//! `etcdctl elect --listen <election>` shows the same leader. Unlike that
//! API's `Campaign`, which blocks until the caller leads, [`campaign`]
//! enters and answers at once, so the agent's loop never waits on it: the
//! agent asks again on its next pass (and watches the prefix).
//!
//! A candidacy disappears when its lease expires (a dead or cut-off node)
//! or on [`resign`]; the next candidate in revision order then leads.
//! Transactions: <https://etcd.io/docs/v3.4/learning/api/#transaction>.

use etcd_client::{
    Client, Compare, CompareOp, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse,
};

use crate::REQUEST_TIMEOUT;
use crate::error::{Error, Result, timed};

/// One candidate of an election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its key, `<election>/<lease id hex>`.
    pub key: String,
    /// Its value: who the candidate is (deckhand puts the node name).
    pub value: String,
    /// The lease the candidacy is attached to.
    pub lease: i64,
    /// The revision that created the key: the lowest leads.
    pub create_revision: i64,
}

/// The candidates of one election, in revision order (the leader first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElectionView {
    /// Every candidate, lowest create revision first.
    pub candidates: Vec<Candidate>,
    /// The etcd revision the view was read at.
    pub revision: i64,
}

impl ElectionView {
    /// The leader: the candidate with the lowest create revision.
    pub fn leader(&self) -> Option<&Candidate> {
        self.candidates.first()
    }

    /// Whether the candidacy on `lease` leads.
    pub fn leads(&self, lease: i64) -> bool {
        lease != 0 && self.leader().is_some_and(|c| c.lease == lease)
    }
}

fn prefix_of(election: &str) -> String {
    format!("{}/", election.trim_end_matches('/'))
}

fn candidate_key(election: &str, lease: i64) -> String {
    format!("{}{lease:x}", prefix_of(election))
}

fn range_op(election: &str) -> TxnOp {
    TxnOp::get(
        prefix_of(election),
        Some(
            GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Create, SortOrder::Ascend),
        ),
    )
}

fn view_of(resp: &etcd_client::GetResponse) -> ElectionView {
    let candidates = resp
        .kvs()
        .iter()
        .map(|kv| Candidate {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            value: String::from_utf8_lossy(kv.value()).into_owned(),
            lease: kv.lease(),
            create_revision: kv.create_revision(),
        })
        .collect();
    ElectionView {
        candidates,
        revision: resp.header().map(|h| h.revision()).unwrap_or(0),
    }
}

/// Enters `election` as `value` on `lease` (if not entered already) and
/// reads the candidates: when no candidate is on `lease` yet (a candidacy
/// moved onto `lease` from an older lease by [`crate::lease::move_keys`]
/// keeps its old key and counts), one transaction puts `value` at
/// `<election>/<lease hex>` on `lease` if that key does not exist, and
/// ranges over the election's prefix sorted by create revision.
/// Idempotent: a second call keeps the candidacy's place.
///
/// The read is linearizable, so a node cut off from the quorum gets an error
/// rather than a stale leader.
///
/// The request has a timeout of [`REQUEST_TIMEOUT`].
///
/// Errors: [`Error::Timeout`], [`Error::Request`] (e.g. "etcdserver:
/// requested lease not found" for an expired `lease`), [`Error::Protocol`]
/// for an answer of the wrong shape.
pub async fn campaign(
    client: &mut Client,
    election: &str,
    lease: i64,
    value: &str,
) -> Result<ElectionView> {
    const OP: &str = "campaign";
    let view = leader(client, election).await?;
    if view.candidates.iter().any(|c| c.lease == lease) {
        return Ok(view);
    }
    let key = candidate_key(election, lease);
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([
            TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease))),
            range_op(election),
        ])
        .or_else([range_op(election)]);
    let resp = timed(OP, REQUEST_TIMEOUT, client.txn(txn)).await?;
    for op in resp.op_responses() {
        if let TxnOpResponse::Get(get) = op {
            return Ok(view_of(&get));
        }
    }
    Err(Error::Protocol {
        op: OP,
        what: "no range answer in the campaign transaction".into(),
    })
}

/// Reads the candidates of `election` without entering it (linearizable);
/// [`ElectionView::leader`] is the leader.
///
/// One read, like etcd's `Leader` (which answers with the leader only), not
/// a stream like etcd's `Observe`.
///
/// Errors: [`Error::Timeout`], [`Error::Request`].
pub async fn leader(client: &mut Client, election: &str) -> Result<ElectionView> {
    let opts = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend);
    let resp = timed(
        "election leader",
        REQUEST_TIMEOUT,
        client.get(prefix_of(election), Some(opts)),
    )
    .await?;
    Ok(view_of(&resp))
}

/// Withdraws the candidacy on `lease` from `election`: deletes its key
/// `<election>/<lease hex>` (a missing key is fine) and any other candidate
/// key on `lease` (one moved there from an older lease), each only while it
/// is still on `lease`. The next candidate leads at once.
///
/// Errors: [`Error::Timeout`], [`Error::Request`].
pub async fn resign(client: &mut Client, election: &str, lease: i64) -> Result<()> {
    timed(
        "resign",
        REQUEST_TIMEOUT,
        client.delete(candidate_key(election, lease), None),
    )
    .await?;
    if lease == 0 {
        return Ok(());
    }
    let view = leader(client, election).await?;
    for c in view.candidates.iter().filter(|c| c.lease == lease) {
        remove_candidate(client, &c.key, lease).await?;
    }
    Ok(())
}

/// Deletes the candidate key `key` only while it is still on `lease`: used
/// to withdraw a node's own candidacy left by an earlier run of its agent.
/// `true` when it was deleted; `false` when the key is gone or on another
/// lease (nothing deleted).
///
/// Errors: [`Error::Timeout`], [`Error::Request`].
pub async fn remove_candidate(client: &mut Client, key: &str, lease: i64) -> Result<bool> {
    let txn = Txn::new()
        .when([Compare::lease(key, CompareOp::Equal, lease)])
        .and_then([TxnOp::delete(key, None)]);
    let resp = timed("remove candidate", REQUEST_TIMEOUT, client.txn(txn)).await?;
    Ok(resp.succeeded())
}
