//! The membership lock: one key whose value names the owner, taken and
//! released with single transactions, optionally attached to the owner's lease.
//!
//! This is deliberately not etcd's `Lock` service (a queue of waiters under a
//! prefix): the agent never waits for the lock, it tries, and on `HeldBy`
//! reports who holds it and tries again on its next pass. Transactions:
//! <https://etcd.io/docs/v3.4/learning/api/#transaction>.

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use tracing::debug;

use crate::REQUEST_TIMEOUT;
use crate::error::{Error, Result, timed};

/// The answer of [`try_lock`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutcome {
    /// The caller holds the lock now (newly taken, or already its own).
    Acquired,
    /// Someone else holds it: the value of the lock key (the holder's node id).
    HeldBy(String),
}

/// Tries once to take the lock `key` for `owner`, without waiting.
///
/// One transaction, atomic in etcd: if the key does not exist
/// (`create_revision == 0`), put `owner` under lease `lease`; else, if its
/// value is `owner` already, put it again under `lease` (re-entrant, and moves
/// the lock to the owner's current lease); else read the holder. `lease` is a
/// lease id, or 0 for none: with a lease the lock disappears when the lease
/// expires or is revoked, so a dead owner cannot hold it forever.
///
/// The request has a timeout of [`REQUEST_TIMEOUT`].
///
/// Errors: [`Error::Timeout`], [`Error::Request`] (e.g. "etcdserver: requested
/// lease not found" for an expired `lease`).
pub async fn try_lock(
    client: &mut Client,
    key: &str,
    owner: &str,
    lease: i64,
) -> Result<LockOutcome> {
    const OP: &str = "lock";
    let put = || TxnOp::put(key, owner, Some(PutOptions::new().with_lease(lease)));
    let already_mine = Txn::new()
        .when([Compare::value(key, CompareOp::Equal, owner)])
        .and_then([put()])
        .or_else([TxnOp::get(key, None)]);
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([put()])
        .or_else([TxnOp::txn(already_mine)]);
    let resp = timed(OP, REQUEST_TIMEOUT, client.txn(txn)).await?;
    if resp.succeeded() {
        debug!(key, owner, lease, "took lock");
        return Ok(LockOutcome::Acquired);
    }
    let unexpected = |what: &str| Error::Protocol {
        op: OP,
        what: what.to_owned(),
    };
    let inner = match resp.op_responses().into_iter().next() {
        Some(TxnOpResponse::Txn(inner)) => inner,
        _ => return Err(unexpected("no nested transaction answer")),
    };
    if inner.succeeded() {
        debug!(key, owner, lease, "lock already ours; renewed its lease");
        return Ok(LockOutcome::Acquired);
    }
    match inner.op_responses().into_iter().next() {
        Some(TxnOpResponse::Get(get)) => match get.kvs().first() {
            Some(kv) => Ok(LockOutcome::HeldBy(
                String::from_utf8_lossy(kv.value()).into_owned(),
            )),
            // Cannot happen inside one transaction: the key existed.
            None => Err(unexpected("lock key vanished inside the transaction")),
        },
        _ => Err(unexpected("no get answer in the nested transaction")),
    }
}

/// Releases the lock `key` if `owner` holds it: one transaction deleting the
/// key only while its value is `owner`. `Ok` when the lock is free or held by
/// someone else (nothing to release).
///
/// The request has a timeout of [`REQUEST_TIMEOUT`].
///
/// Errors: [`Error::Timeout`], [`Error::Request`].
pub async fn unlock(client: &mut Client, key: &str, owner: &str) -> Result<()> {
    let txn = Txn::new()
        .when([Compare::value(key, CompareOp::Equal, owner)])
        .and_then([TxnOp::delete(key, None)]);
    let resp = timed("unlock", REQUEST_TIMEOUT, client.txn(txn)).await?;
    debug!(key, owner, released = resp.succeeded(), "unlock");
    Ok(())
}
