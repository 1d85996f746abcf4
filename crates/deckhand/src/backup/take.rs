//! Taking one snapshot: the deckhand cluster id, a healthy voter to
//! stream from, the atomic write (temporary file, fsync, verify, rename,
//! fsync of the folder) and the manifest beside it; and the backup keys
//! (`<prefix>/backup/...`) the taker and `deckhand backup` read and write.
//!
//! Without etcd auth (today) the snapshot RPC needs no credential. With
//! auth on it needs the `root` role: the connection made in
//! [`stream_from`] is where a root credential gets plugged in.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use deckhand_etcd::{Member, Tls};
use deckhand_model::backup::{BackupRequest, BackupStatus, Manifest};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::{file_name, manifest_path, verify};
use crate::store::Store;

/// Bound on one key request of the backup keys.
const KEY_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on connecting to the voter streamed from.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on the wait for each message of the snapshot stream (progress,
/// not the whole transfer).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

async fn bounded<T>(
    what: &str,
    f: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T> {
    tokio::time::timeout(KEY_TIMEOUT, f)
        .await
        .map_err(|_| anyhow!("{what}: no answer within {} s", KEY_TIMEOUT.as_secs()))?
        .map_err(|e| anyhow!("{what}: {}", crate::connect::root_cause(&e)))
}

/// The deckhand cluster id (`<prefix>/backup/cluster-id`): read, or made
/// once (16 random bytes in hex, put only if the key does not exist, so
/// two agents racing agree on the first).
///
/// # Errors
/// etcd did not answer, or the value is not a cluster id.
pub async fn cluster_id(store: &Store) -> Result<String> {
    let key = store.keyspace().backup_cluster_id();
    let mut c = store.client();
    let fresh = {
        let mut b = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
            .map_err(|_| anyhow!("no random bytes from the system"))?;
        super::hex(&b)
    };
    let txn = Txn::new()
        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key.as_str(), fresh.as_str(), None)])
        .or_else([TxnOp::get(key.as_str(), None)]);
    let resp = bounded("reading the cluster id", c.txn(txn)).await?;
    if resp.succeeded() {
        tracing::info!("made the deckhand cluster id {fresh} ({key})");
        return Ok(fresh);
    }
    for r in resp.op_responses() {
        if let etcd_client::TxnOpResponse::Get(g) = r
            && let Some(kv) = g.kvs().first()
        {
            let id = String::from_utf8_lossy(kv.value()).into_owned();
            if id.is_empty()
                || id.len() > 64
                || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                bail!("{key} holds {id:?}, not a cluster id (letters, digits and '-')");
            }
            return Ok(id);
        }
    }
    bail!("{key}: the transaction answered neither a put nor the value")
}

async fn get_json<T: serde::de::DeserializeOwned>(store: &Store, key: String) -> Result<Option<T>> {
    let mut c = store.client();
    let resp = bounded(&format!("reading {key}"), c.get(key.as_str(), None)).await?;
    match resp.kvs().first() {
        None => Ok(None),
        Some(kv) => serde_json::from_slice(kv.value())
            .map(Some)
            .with_context(|| format!("{key} is not JSON of the expected shape")),
    }
}

async fn put_json<T: serde::Serialize>(store: &Store, key: String, v: &T) -> Result<()> {
    let mut c = store.client();
    let value = serde_json::to_vec(v)?;
    bounded(&format!("writing {key}"), c.put(key.as_str(), value, None)).await?;
    Ok(())
}

/// The taker's status, if one was written.
///
/// # Errors
/// etcd did not answer, or the value does not parse.
pub async fn read_status(store: &Store) -> Result<Option<BackupStatus>> {
    get_json(store, store.keyspace().backup_status()).await
}

/// Writes the taker's status.
///
/// # Errors
/// etcd did not answer.
pub async fn write_status(store: &Store, s: &BackupStatus) -> Result<()> {
    put_json(store, store.keyspace().backup_status(), s).await
}

/// The pending `deckhand backup now` request, if any.
///
/// # Errors
/// etcd did not answer, or the value does not parse.
pub async fn read_request(store: &Store) -> Result<Option<BackupRequest>> {
    get_json(store, store.keyspace().backup_request()).await
}

/// Asks the taker for a snapshot now; returns the request's id.
///
/// # Errors
/// etcd did not answer.
pub async fn put_request(store: &Store) -> Result<String> {
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| anyhow!("no random bytes from the system"))?;
    let id = super::hex(&b);
    put_json(
        store,
        store.keyspace().backup_request(),
        &BackupRequest { id: id.clone() },
    )
    .await?;
    Ok(id)
}

/// Deletes the request `id` once answered (not a newer one).
///
/// # Errors
/// etcd did not answer.
pub async fn clear_request(store: &Store, id: &str) -> Result<()> {
    let key = store.keyspace().backup_request();
    let value = serde_json::to_vec(&BackupRequest { id: id.to_owned() })?;
    let mut c = store.client();
    let txn = Txn::new()
        .when([Compare::value(key.as_str(), CompareOp::Equal, value)])
        .and_then([TxnOp::delete(key.as_str(), None)]);
    bounded("clearing the backup request", c.txn(txn)).await?;
    Ok(())
}

/// The voter to stream from: among `members`' voters (never a learner)
/// that `health` says are healthy and have a client URL, the one named
/// `prefer` (this node's own member: no copy over the network), else the
/// first.
pub fn pick_voter<'a>(
    members: &'a [Member],
    health: &[(u64, bool)],
    prefer: &str,
) -> Option<&'a Member> {
    let healthy: Vec<&Member> = members
        .iter()
        .filter(|m| !m.is_learner && !m.client_urls.is_empty())
        .filter(|m| health.iter().any(|(id, ok)| *id == m.id && *ok))
        .collect();
    healthy
        .iter()
        .find(|m| m.name == prefer)
        .or(healthy.first())
        .copied()
}

/// What [`take`] needs.
pub struct Take<'a> {
    /// The deckhand cluster id ([`cluster_id`]).
    pub cluster_id: &'a str,
    /// The backup dir (`backup.dir`).
    pub dir: &'a Path,
    /// The voter to stream from ([`pick_voter`]).
    pub member: &'a Member,
    /// Mutual TLS for its `https://` client URLs.
    pub tls: Option<&'a Tls>,
    /// This node's name.
    pub node: &'a str,
    /// The clock: Unix seconds now.
    pub now: fn() -> u64,
    /// The `deckhand backup now` request answered, if any.
    pub request: Option<String>,
}

/// Streams a snapshot from `t.member` into `<dir>/<cluster id>/`, verifies
/// it ([`verify`]) and only then gives it its name and writes its manifest,
/// each by rename after fsync, then fsyncs the folder. The folder is made
/// 0700 (a snapshot holds every key, secrets included), files 0600.
/// Leftover temporary files of an earlier attempt are removed first.
///
/// # Errors
/// In words: the stream (member, timeout), the disk (e.g. a read-only
/// `dir` outside `deckhand.service`'s `ReadWritePaths=`), or the
/// verification refused the file (it is removed, never named).
pub async fn take(t: Take<'_>) -> Result<Manifest> {
    let folder = t.dir.join(t.cluster_id);
    std::fs::create_dir_all(&folder).with_context(|| format!("making {}", folder.display()))?;
    let _ = std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700));
    remove_temporaries(&folder);
    let started = (t.now)();
    let tmp = folder.join(format!(".tmp-{started}.db"));
    let result = stream_from(&t, &tmp).await;
    let streamed = match result {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let taken_at = (t.now)();
    let v = match verify(&tmp, None).await {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            bail!(
                "the snapshot streamed from {} does not count: {}",
                t.member.name,
                e.why
            );
        }
    };
    let path = folder.join(file_name(taken_at, v.revision));
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    let manifest = Manifest {
        cluster_id: t.cluster_id.to_owned(),
        revision: v.revision,
        keys: v.keys,
        size: v.size,
        sha256: v.sha256,
        taken_at,
        member: t.member.name.clone(),
        member_id: format!("{:x}", t.member.id),
        node: t.node.to_owned(),
        path: path.display().to_string(),
        request: t.request.clone(),
    };
    write_atomic(
        &manifest_path(&path),
        &serde_json::to_vec_pretty(&manifest)?,
    )?;
    sync_dir(&folder)?;
    tracing::info!(
        "snapshot {} written and verified: revision {}, {} keys, {} bytes from {} in {} s ({} bytes streamed)",
        path.display(),
        manifest.revision,
        manifest.keys,
        manifest.size,
        manifest.member,
        taken_at.saturating_sub(started),
        streamed
    );
    Ok(manifest)
}

/// Streams into `tmp` and fsyncs it; returns the bytes streamed.
async fn stream_from(t: &Take<'_>, tmp: &Path) -> Result<u64> {
    let url = &t.member.client_urls[0];
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let mut out = tokio::io::BufWriter::new(tokio::fs::File::from_std(file));
    // No etcd auth yet: no credential. With auth, a root user's token goes
    // on this connection.
    let s = deckhand_etcd::snapshot::stream_snapshot(
        url,
        t.tls,
        CONNECT_TIMEOUT,
        IDLE_TIMEOUT,
        &mut out,
    )
    .await
    .with_context(|| format!("streaming a snapshot from {} ({url})", t.member.name))?;
    let file = out.into_inner();
    file.sync_all()
        .await
        .with_context(|| format!("fsync of {}", tmp.display()))?;
    Ok(s.bytes)
}

fn remove_temporaries(folder: &Path) {
    let Ok(rd) = std::fs::read_dir(folder) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().starts_with(".tmp-") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Writes `bytes` to `path` by a temporary file beside it, fsync, rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = path.with_file_name(format!(".tmp-{name}"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync of {}", dir.display()))
}
