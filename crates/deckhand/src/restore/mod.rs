//! `deckhand restore`'s work on one node, without systemd: the checks that
//! must pass before anything is changed ([`check`]), the member's new data
//! dir made from the snapshot by `etcdctl snapshot restore` ([`prepare`]),
//! and the swap that moves the old data dir aside and puts the new one in
//! its place ([`swap_in`]). The units around it (agent, proxy, member) are
//! stopped and started by [`crate::cli::restore`]; `docs/backup.md`
//! ("Restore") is the operator's page.
//!
//! The same command runs on every control node (etcd member node), each
//! restoring its own member, and the nodes need not talk to each other:
//! `etcdctl snapshot restore` derives the member ids from the names, peer
//! URLs and the initial cluster token, and the cluster id from the member
//! ids (etcd 3.4, `etcdserver/api/membership/cluster.go`
//! `NewClusterFromURLsMap`, `member.go` `NewMember` without a time), so
//! every node given the same `--members` list and the same token computes
//! the same new cluster. The token defaults to
//! `deckhand-restore-<first 16 hex digits of the snapshot's SHA-256>`,
//! the same on every node restoring the same file and new for each
//! snapshot (a member of the lost cluster cannot be mistaken for one of
//! the new one).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use deckhand_model::backup::Manifest;
use deckhand_plan::identity::MemberIdentity;
use serde::{Deserialize, Serialize};

use crate::backup::{self, ETCDCTL, Verified};
use crate::member_check::wal;

/// The marker a restore leaves in the agent's state dir: what was restored
/// and into what member, for a second run to recognise its own work.
pub const MARKER: &str = "restored.json";
/// How long `etcdctl snapshot restore` may take.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a restore did not start: every refusal comes before anything is
/// stopped or moved.
#[derive(Debug)]
pub enum Refused {
    /// The snapshot itself: damaged, truncated, not what its manifest
    /// claims, or of another deckhand cluster (exit 65).
    Snapshot(String),
    /// The request: members, names, URLs, flags (exit 2).
    Usage(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Snapshot(s) | Refused::Usage(s) => f.write_str(s),
        }
    }
}

/// The S3 key in a SNAPSHOT argument (`s3://bucket/key` or `s3:key`), or
/// `None` for a local path (`deckhand restore` downloads a key first).
pub fn s3_key(arg: &str) -> Option<&str> {
    if arg.starts_with("s3://") {
        Some(arg)
    } else {
        arg.strip_prefix("s3:")
    }
}

/// The SNAPSHOT argument as a local file: a local path is itself; an S3
/// key ([`s3_key`]) is downloaded by the command before this.
///
/// # Errors
/// [`Refused::Usage`] for an S3 key (download it first) or an empty path.
pub fn resolve_snapshot(arg: &str) -> Result<PathBuf, Refused> {
    if s3_key(arg).is_some() {
        return Err(Refused::Usage(format!(
            "{arg} is an S3 key: it is downloaded first (deckhand restore --s3-settings FILE)"
        )));
    }
    if arg.is_empty() {
        return Err(Refused::Usage("SNAPSHOT is empty".into()));
    }
    Ok(PathBuf::from(arg))
}

/// Parses `--members`: `name=peerURL,...`, at least one, names and URLs
/// each once, every URL `http(s)://host:port`.
///
/// # Errors
/// [`Refused::Usage`] naming the bad entry.
pub fn parse_members(s: &str) -> Result<Vec<(String, String)>, Refused> {
    let mut out: Vec<(String, String)> = Vec::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, url)) = entry.split_once('=') else {
            return Err(Refused::Usage(format!(
                "--members entry {entry:?} is not NAME=PEER_URL (e.g. node1=https://10.0.0.1:2380)"
            )));
        };
        let ok_url = (url.starts_with("http://") || url.starts_with("https://"))
            && url
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
        if name.is_empty() || !ok_url {
            return Err(Refused::Usage(format!(
                "--members entry {entry:?} is not NAME=PEER_URL (e.g. node1=https://10.0.0.1:2380)"
            )));
        }
        if out.iter().any(|(n, u)| n == name || u == url) {
            return Err(Refused::Usage(format!(
                "--members names {name} or {url} twice"
            )));
        }
        out.push((name.to_owned(), url.to_owned()));
    }
    if out.is_empty() {
        return Err(Refused::Usage(
            "--members is empty: give every member of the restored cluster as NAME=PEER_URL".into(),
        ));
    }
    Ok(out)
}

/// `name=url,...` of `members` (etcd's `--initial-cluster`).
pub fn initial_cluster(members: &[(String, String)]) -> String {
    members
        .iter()
        .map(|(n, u)| format!("{n}={u}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The default initial cluster token of a restore from a snapshot with
/// SHA-256 `sha256` (hex): `deckhand-restore-<first 16 digits>`.
pub fn default_token(sha256: &str) -> String {
    format!("deckhand-restore-{}", &sha256[..sha256.len().min(16)])
}

/// The member and etcd cluster ids `etcdctl snapshot restore` gives member
/// `name` of `members` with `token`, computed as etcd 3.4 does
/// (`etcdserver/api/membership/member.go` `newMember` without a time: the
/// first 8 bytes, big-endian, of SHA-1 over the member's sorted peer URLs
/// and the token; `cluster.go` `genID`: the first 8 bytes of SHA-1 over
/// the sorted member ids, 8 bytes big-endian each). `None` when `name` is
/// not in `members`. Peer URLs are taken as written (etcd parses and
/// prints them again: the same for `scheme://ip:port`).
pub fn expected_identity(
    members: &[(String, String)],
    name: &str,
    token: &str,
) -> Option<MemberIdentity> {
    use ring::digest::{SHA1_FOR_LEGACY_USE_ONLY as SHA1, digest};
    let member_id = |url: &str| {
        let mut b = url.as_bytes().to_vec();
        b.extend_from_slice(token.as_bytes());
        let h = digest(&SHA1, &b);
        u64::from_be_bytes(h.as_ref()[..8].try_into().expect("8 bytes"))
    };
    let mut ids: Vec<u64> = members.iter().map(|(_, u)| member_id(u)).collect();
    ids.sort_unstable();
    let b: Vec<u8> = ids.iter().flat_map(|i| i.to_be_bytes()).collect();
    let h = digest(&SHA1, &b);
    let cluster_id = u64::from_be_bytes(h.as_ref()[..8].try_into().expect("8 bytes"));
    let (_, url) = members.iter().find(|(n, _)| n == name)?;
    Some(MemberIdentity {
        member_id: member_id(url),
        cluster_id,
    })
}

/// A deckhand cluster id: 32 lowercase hex digits (`<prefix>/backup/cluster-id`).
pub fn is_cluster_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What the node is asked to do.
#[derive(Debug, Clone)]
pub struct Request {
    /// The snapshot file (`<dir>/<cluster id>/<time>-rev<revision>.db`).
    pub snapshot: PathBuf,
    /// The deckhand cluster id the snapshot must be of; `None`: the name of
    /// the snapshot's folder, which must be one.
    pub cluster_id: Option<String>,
    /// Every member of the restored cluster, `(name, peer URL)`.
    pub members: Vec<(String, String)>,
    /// This node's member name (its node name).
    pub name: String,
    /// This node's peer URL, as the agent would advertise it.
    pub peer_url: String,
    /// The initial cluster token; `None`: [`default_token`].
    pub token: Option<String>,
    /// The member data dir (the agent's `etcd.data_dir`).
    pub data_dir: PathBuf,
    /// The agent's state dir (the marker [`MARKER`] goes there).
    pub state_dir: PathBuf,
}

/// A request that passed [`check`].
#[derive(Debug, Clone)]
pub struct Checked {
    /// The request.
    pub request: Request,
    /// What the file holds.
    pub verified: Verified,
    /// Its manifest.
    pub manifest: Manifest,
    /// The token used.
    pub token: String,
    /// `--initial-cluster`.
    pub initial_cluster: String,
    /// The member and etcd cluster ids the restore gives this node's
    /// member ([`expected_identity`]).
    pub identity: MemberIdentity,
    /// The marker of an earlier restore of this same snapshot on this node
    /// whose member is the data dir's member now: nothing is to be done.
    pub already: Option<Marker>,
}

/// [`MARKER`]'s content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// SHA-256 of the snapshot file.
    pub sha256: String,
    /// The deckhand cluster id.
    pub cluster_id: String,
    /// The snapshot's revision.
    pub revision: i64,
    /// The token the member was restored with.
    pub token: String,
    /// `--initial-cluster`.
    pub initial_cluster: String,
    /// The restored member's id, hex.
    pub member_id: String,
    /// The new etcd cluster id, hex.
    pub etcd_cluster_id: String,
    /// When, Unix seconds.
    pub restored_at: u64,
    /// Where the previous data dir was moved, if there was one.
    pub moved_aside: Option<String>,
}

/// Reads [`MARKER`] in `state_dir`, `None` when absent or unreadable.
pub fn read_marker(state_dir: &Path) -> Option<Marker> {
    let b = std::fs::read(state_dir.join(MARKER)).ok()?;
    serde_json::from_slice(&b).ok()
}

/// Writes [`MARKER`] in `state_dir` (temporary file, fsync, rename).
///
/// # Errors
/// The file cannot be written.
pub fn write_marker(state_dir: &Path, m: &Marker) -> Result<()> {
    let body = serde_json::to_vec_pretty(m)?;
    let path = state_dir.join(MARKER);
    deckhand_systemd::write_atomic(&path, &body, 0o644)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Every check before anything is changed: the members name this node
/// with its own peer URL; the snapshot has a manifest beside it
/// (`FILE.json`) whose deckhand cluster id is the one expected
/// ([`Request::cluster_id`], else the snapshot's folder name); the file
/// passes [`backup::verify`] against it (etcd's appended SHA-256,
/// `etcdctl snapshot status`, the manifest's revision, keys, size and
/// SHA-256); `etcdctl` is there. Reads only.
///
/// # Errors
/// [`Refused`], in words.
pub async fn check(request: Request) -> Result<Checked, Refused> {
    let usage = |s: String| Err(Refused::Usage(s));
    let snapshot_bad = |s: String| Err(Refused::Snapshot(s));
    let r = &request;
    match r.members.iter().find(|(n, _)| *n == r.name) {
        None => {
            return usage(format!(
                "--members does not name this node ({}): {}; run the restore on each member node, each named in the list",
                r.name,
                initial_cluster(&r.members)
            ));
        }
        Some((_, url)) if *url != r.peer_url => {
            return usage(format!(
                "--members gives {} the peer URL {url}, this node's is {}",
                r.name, r.peer_url
            ));
        }
        Some(_) => {}
    }
    let names: BTreeSet<&str> = r.members.iter().map(|(n, _)| n.as_str()).collect();
    if names.len() != r.members.len() {
        return usage("--members names a node twice".into());
    }
    if !r.snapshot.is_file() {
        return usage(format!("{} is not a file", r.snapshot.display()));
    }
    let mpath = backup::manifest_path(&r.snapshot);
    let manifest: Manifest = match std::fs::read(&mpath) {
        Err(e) => {
            return snapshot_bad(format!(
                "{}: no manifest beside it ({}: {e}); a restore needs the manifest to know the snapshot's deckhand cluster id",
                r.snapshot.display(),
                mpath.display()
            ));
        }
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(m) => m,
            Err(e) => {
                return snapshot_bad(format!("{} is not a manifest: {e}", mpath.display()));
            }
        },
    };
    let folder = r
        .snapshot
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .filter(|n| is_cluster_id(n));
    let expected = match (&r.cluster_id, folder) {
        (Some(c), _) => c.clone(),
        (None, Some(f)) => f.to_owned(),
        (None, None) => {
            return usage(format!(
                "{} is not in a folder named by a deckhand cluster id (<backup dir>/<cluster id>/): give the cluster id with --cluster-id",
                r.snapshot.display()
            ));
        }
    };
    if manifest.cluster_id != expected {
        return snapshot_bad(format!(
            "{}: its manifest names deckhand cluster {}, not {expected} (a snapshot of another cluster)",
            r.snapshot.display(),
            manifest.cluster_id
        ));
    }
    let verified = match backup::verify(&r.snapshot, Some(&manifest)).await {
        Ok(v) => v,
        Err(e) => return snapshot_bad(e.to_string()),
    };
    let token = r
        .token
        .clone()
        .unwrap_or_else(|| default_token(&verified.sha256));
    let initial_cluster = initial_cluster(&r.members);
    let identity = expected_identity(&r.members, &r.name, &token)
        .ok_or_else(|| Refused::Usage(format!("--members does not name {}", r.name)))?;
    let already = read_marker(&r.state_dir).filter(|m| {
        m.sha256 == verified.sha256
            && m.member_id == format!("{:x}", identity.member_id)
            && m.etcd_cluster_id == format!("{:x}", identity.cluster_id)
            && wal::read_identity(&r.data_dir).ok().flatten() == Some(identity)
    });
    Ok(Checked {
        request,
        verified,
        manifest,
        token,
        initial_cluster,
        identity,
        already,
    })
}

/// `<path>.<what>-<UTC time>`, e.g. `member.old-20261204T190629Z`; a
/// `-N` suffix when that exists already.
pub fn beside(path: &Path, what: &str, now: u64) -> PathBuf {
    let stamp = backup::file_name(now, 1)
        .trim_end_matches("-rev1.db")
        .to_owned();
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{what}-{stamp}"));
    let mut p = path.with_file_name(&name);
    let mut n = 1;
    while p.exists() || p.symlink_metadata().is_ok() {
        n += 1;
        let mut again = name.clone();
        again.push(format!("-{n}"));
        p = path.with_file_name(again);
    }
    p
}

/// Runs `etcdctl snapshot restore` for `c` into a new directory beside the
/// data dir (`<data dir>.restoring-<UTC time>`, which must not exist) and
/// reads the new member's identity from its WAL. Touches nothing else; a
/// failed run leaves what etcdctl wrote there (reported).
///
/// # Errors
/// etcdctl failed (its output quoted) or wrote no WAL.
pub async fn prepare(c: &Checked, now: u64) -> Result<(PathBuf, MemberIdentity)> {
    let r = &c.request;
    let target = beside(&r.data_dir, "restoring", now);
    let mut cmd = tokio::process::Command::new(ETCDCTL);
    cmd.env("ETCDCTL_API", "3")
        .arg("snapshot")
        .arg("restore")
        .arg(&r.snapshot)
        .arg(format!("--name={}", r.name))
        .arg(format!("--initial-cluster={}", c.initial_cluster))
        .arg(format!("--initial-cluster-token={}", c.token))
        .arg(format!("--initial-advertise-peer-urls={}", r.peer_url))
        .arg(format!("--data-dir={}", target.display()))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(RESTORE_TIMEOUT, cmd.output())
        .await
        .map_err(|_| anyhow!("`etcdctl snapshot restore` took over {RESTORE_TIMEOUT:?}"))?
        .with_context(|| format!("running {ETCDCTL} (etcd's package etcd-client)"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
        bail!(
            "`etcdctl snapshot restore` into {} failed ({}): {last}",
            target.display(),
            out.status
        );
    }
    let id = wal::read_identity(&target)?.ok_or_else(|| {
        anyhow!(
            "`etcdctl snapshot restore` wrote no WAL into {}",
            target.display()
        )
    })?;
    if id != c.identity {
        bail!(
            "`etcdctl snapshot restore` made member {:x} of cluster {:x} in {}, deckhand expected member {:x} of cluster {:x}: the other nodes may not agree; not using it",
            id.member_id,
            id.cluster_id,
            target.display(),
            c.identity.member_id,
            c.identity.cluster_id
        );
    }
    Ok((target, id))
}

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// Where the old data dir went.
    pub data_dir_aside: Option<PathBuf>,
    /// Where the old member environment went.
    pub env_aside: Option<PathBuf>,
}

/// Installs the prepared data dir `prepared` ([`prepare`]) for `c`, with
/// the units stopped: [`swap_in`]; the start check's old refusal moved
/// aside; the old member environment moved aside
/// (`etcd-member.env.old-<UTC time>`) and `member_env` (rendered by the
/// caller, recording the new member's identity) written in its place; the
/// agent's `bootstrapped` marker (this node never bootstraps a cluster of
/// its own again) and [`MARKER`] written.
///
/// # Errors
/// A file step failed; the steps before it stay done.
pub fn install(c: &Checked, prepared: &Path, member_env: &str, now: u64) -> Result<Installed> {
    let r = &c.request;
    let data_dir_aside = swap_in(prepared, &r.data_dir, now)?;
    let refusal = crate::member_check::refusal_path(&r.data_dir);
    if refusal.exists() {
        let aside = beside(&refusal, "old", now);
        std::fs::rename(&refusal, &aside)
            .with_context(|| format!("moving {} aside", refusal.display()))?;
    }
    let env = r.state_dir.join(crate::paths::MEMBER_ENV);
    let env_aside = if env.exists() {
        let aside = beside(&env, "old", now);
        std::fs::rename(&env, &aside).with_context(|| format!("moving {} aside", env.display()))?;
        Some(aside)
    } else {
        None
    };
    deckhand_systemd::write_atomic(&env, member_env.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", env.display()))?;
    let marker = r.state_dir.join(crate::paths::BOOTSTRAPPED);
    deckhand_systemd::write_atomic(&marker, b"1\n", 0o644)
        .with_context(|| format!("writing {}", marker.display()))?;
    write_marker(
        &r.state_dir,
        &Marker {
            sha256: c.verified.sha256.clone(),
            cluster_id: c.manifest.cluster_id.clone(),
            revision: c.verified.revision,
            token: c.token.clone(),
            initial_cluster: c.initial_cluster.clone(),
            member_id: format!("{:x}", c.identity.member_id),
            etcd_cluster_id: format!("{:x}", c.identity.cluster_id),
            restored_at: now,
            moved_aside: data_dir_aside.as_ref().map(|p| p.display().to_string()),
        },
    )?;
    Ok(Installed {
        data_dir_aside,
        env_aside,
    })
}

/// Puts the prepared dir `new` in place of `data_dir`: the old data dir
/// (if any) is renamed to `<data dir>.old-<UTC time>` (never deleted),
/// `new` renamed to `data_dir`, and everything in it given the owner of
/// the data dir's parent (`/var/lib/deckhand-etcd`, user etcd: the member
/// unit runs as etcd). Returns where the old one went.
///
/// # Errors
/// A rename or chown failed (what was done so far is said).
pub fn swap_in(new: &Path, data_dir: &Path, now: u64) -> Result<Option<PathBuf>> {
    let parent = data_dir
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent", data_dir.display()))?;
    let owner = std::fs::metadata(parent).with_context(|| format!("{}", parent.display()))?;
    let moved = if data_dir.symlink_metadata().is_ok() {
        let aside = beside(data_dir, "old", now);
        std::fs::rename(data_dir, &aside).with_context(|| {
            format!("moving {} aside to {}", data_dir.display(), aside.display())
        })?;
        Some(aside)
    } else {
        None
    };
    std::fs::rename(new, data_dir).with_context(|| {
        format!(
            "moving the restored {} to {}{}",
            new.display(),
            data_dir.display(),
            moved
                .as_ref()
                .map(|m| format!(" (the old data dir is at {})", m.display()))
                .unwrap_or_default()
        )
    })?;
    use std::os::unix::fs::MetadataExt;
    chown_tree(data_dir, owner.uid(), owner.gid())?;
    Ok(moved)
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", path.display()))?;
    if path.symlink_metadata()?.is_dir() {
        for e in std::fs::read_dir(path)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
