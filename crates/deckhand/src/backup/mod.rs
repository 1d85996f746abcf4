//! Snapshots on local disk: their names, the check that makes one count
//! (etcd's appended SHA-256, then `etcdctl snapshot status`), their
//! manifests, listing and retention. Shared by the agent's taker
//! ([`crate::agent::backup`]) and `deckhand backup` ([`crate::cli::backup`]).
//!
//! A snapshot is `<dir>/<cluster id>/<UTC time>-rev<revision>.db`, e.g.
//! `20261202T192716Z-rev1234.db`, with its [`Manifest`] beside it as
//! `<same name>.json`; a file being written is `.tmp-<name>` in the same
//! folder (renamed once verified, so a name without the prefix is whole).

pub mod s3;
pub mod take;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use deckhand_model::backup::{Manifest, RetentionConfig};

/// The program that opens a snapshot as an etcd database: etcd's own
/// reader of its format (the node image's `etcd-client` package).
pub const ETCDCTL: &str = "etcdctl";
/// How long `etcdctl snapshot status` may take on one file.
const STATUS_TIMEOUT: Duration = Duration::from_secs(120);

/// `<UTC time>-rev<revision>.db` for a snapshot of `revision` taken at
/// `taken_at` (Unix seconds).
pub fn file_name(taken_at: u64, revision: i64) -> String {
    let digits: String = crate::tls::utc(taken_at)
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    format!("{}T{}Z-rev{revision}.db", &digits[..8], &digits[8..])
}

/// The revision a snapshot's file name claims, `None` for another name.
pub fn revision_of_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".db")?;
    let (time, rev) = stem.split_once("-rev")?;
    if time.len() != 16 || !time.ends_with('Z') {
        return None;
    }
    rev.parse().ok().filter(|r: &i64| *r > 0)
}

/// The manifest's path beside snapshot `db`: `<db>.json`.
pub fn manifest_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

/// What a snapshot file holds, as checked by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// File size in bytes, etcd's appended SHA-256 included.
    pub size: u64,
    /// SHA-256 of the whole file, lowercase hex (what the manifest carries).
    pub sha256: String,
    /// The store revision (`etcdctl snapshot status`'s `revision`).
    pub revision: i64,
    /// Keys in every bucket (`totalKey`).
    pub keys: u64,
}

/// Why a snapshot does not count, in words (`deckhand backup verify` exits
/// [`crate::exit::BAD_SNAPSHOT`] with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub why: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.why)
    }
}

impl std::error::Error for Refusal {}

/// Checks snapshot `path`, which must be etcd's stream as written
/// ([`take`]; what `etcdctl snapshot save` writes):
/// 1. its size is a whole number of 512-byte blocks plus 32 and the last
///    32 bytes are the SHA-256 of the rest (etcd appends it,
///    `maintenanceServer.Snapshot`): a flipped byte or a truncated file
///    stops here. (A bbolt database is whole pages, so `size % 512 == 32`
///    is also how `etcdctl snapshot restore` tells a hash is there.)
/// 2. `etcdctl snapshot status -w json` opens it as a bbolt database of
///    etcd and reads its revision and key count (etcd's own reader: a
///    reader of our own would be a second, untested copy of bbolt's
///    format). It alone would not catch a truncation (it reads what is
///    there), hence step 1 first.
/// 3. what `claims` says (a manifest: revision, keys, size, SHA-256) and
///    the file name's revision ([`revision_of_name`]) match.
///
/// # Errors
/// [`Refusal`] naming the first check that failed.
pub async fn verify(path: &Path, claims: Option<&Manifest>) -> Result<Verified, Refusal> {
    let refuse = |why: String| Refusal {
        path: path.display().to_string(),
        why,
    };
    let p = path.to_owned();
    let (size, sha256) = tokio::task::spawn_blocking(move || hash_check(&p))
        .await
        .map_err(|e| refuse(format!("hashing failed: {e}")))?
        .map_err(refuse)?;
    let (revision, keys) = etcdctl_status(path).await.map_err(refuse)?;
    let v = Verified {
        size,
        sha256,
        revision,
        keys,
    };
    if let Some(rev) = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix(".tmp-").or(Some(n)))
        .and_then(revision_of_name)
        && rev != v.revision
    {
        return Err(refuse(format!(
            "its name claims revision {rev}, the database holds revision {}",
            v.revision
        )));
    }
    if let Some(m) = claims {
        for (what, claimed, found) in [
            ("revision", m.revision.to_string(), v.revision.to_string()),
            ("key count", m.keys.to_string(), v.keys.to_string()),
            ("size", m.size.to_string(), v.size.to_string()),
            ("SHA-256", m.sha256.clone(), v.sha256.clone()),
        ] {
            if claimed != found {
                return Err(refuse(format!(
                    "its manifest claims {what} {claimed}, the file has {found}"
                )));
            }
        }
    }
    Ok(v)
}

/// Step 1 of [`verify`]: `(size, SHA-256 of the whole file in hex)`.
fn hash_check(path: &Path) -> Result<(u64, String), String> {
    use ring::digest::{Context, SHA256};
    let mut f = std::fs::File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let size = f
        .metadata()
        .map_err(|e| format!("cannot stat it: {e}"))?
        .len();
    if size < 32 + 512 || size % 512 != 32 {
        return Err(format!(
            "{size} bytes is not a database of whole pages followed by etcd's 32-byte SHA-256 (truncated, or not from etcd's snapshot stream)"
        ));
    }
    let body = size - 32;
    let (mut db, mut whole) = (Context::new(&SHA256), Context::new(&SHA256));
    let mut buf = vec![0u8; 1 << 16];
    let mut read = 0u64;
    let mut tail = Vec::with_capacity(32);
    loop {
        let n = f.read(&mut buf).map_err(|e| format!("reading it: {e}"))?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        whole.update(chunk);
        let in_body = body.saturating_sub(read).min(n as u64) as usize;
        db.update(&chunk[..in_body]);
        tail.extend_from_slice(&chunk[in_body..]);
        read += n as u64;
    }
    if read != size {
        return Err(format!("it changed while read ({read} of {size} bytes)"));
    }
    if db.finish().as_ref() != tail.as_slice() {
        return Err(
            "etcd's appended SHA-256 does not match the database (a changed or damaged byte)"
                .to_owned(),
        );
    }
    Ok((size, hex(whole.finish().as_ref())))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Step 2 of [`verify`]: `(revision, totalKey)`.
async fn etcdctl_status(path: &Path) -> Result<(i64, u64), String> {
    let mut cmd = tokio::process::Command::new(ETCDCTL);
    cmd.env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(path)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(STATUS_TIMEOUT, cmd.output()).await {
        Err(_) => {
            return Err(format!(
                "`etcdctl snapshot status` took over {STATUS_TIMEOUT:?}"
            ));
        }
        Ok(Err(e)) => {
            return Err(format!(
                "cannot run {ETCDCTL} (etcd's package etcd-client) to open it: {e}"
            ));
        }
        Ok(Ok(o)) => o,
    };
    if !out.status.success() {
        // A damaged bbolt file can make etcdctl panic with pages of Go
        // stack: its first and last lines say what happened.
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        let said = match lines.as_slice() {
            [] => String::new(),
            [one] => one.to_string(),
            [first, .., last] => format!("{first} … {last}"),
        };
        return Err(format!(
            "it does not open as an etcd database (`etcdctl snapshot status` {}: {said})",
            out.status
        ));
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Status {
        revision: i64,
        total_key: u64,
    }
    let s: Status = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!("`etcdctl snapshot status -w json` answered something unexpected: {e}")
    })?;
    Ok((s.revision, s.total_key))
}

/// One snapshot found on local disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSnapshot {
    /// The `.db` file.
    pub path: PathBuf,
    /// Its manifest, when one is beside it and reads.
    pub manifest: Option<Manifest>,
}

/// The snapshots in `<dir>/<cluster id>/` for every cluster id in `dir`
/// (or only `cluster_id`), oldest first by name. Temporary files are left
/// out. A missing `dir` is an empty list.
///
/// # Errors
/// A directory that exists but cannot be read.
pub fn list_local(dir: &Path, cluster_id: Option<&str>) -> std::io::Result<Vec<LocalSnapshot>> {
    let mut out = Vec::new();
    let clusters = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        r => r?,
    };
    let mut dirs: Vec<PathBuf> = clusters
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .filter(|p| cluster_id.is_none_or(|c| p.file_name().is_some_and(|n| n == c)))
        .collect();
    dirs.sort();
    for d in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&d)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| revision_of_name(n).is_some())
            })
            .collect();
        files.sort();
        for path in files {
            let manifest = std::fs::read(manifest_path(&path))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            out.push(LocalSnapshot { path, manifest });
        }
    }
    Ok(out)
}

/// Deletes the snapshots of `<dir>/<cluster_id>/` (with their manifests)
/// that retention does not keep at `now` ([`deckhand_plan::retention::keep`]),
/// counting only those with a manifest (verified); a snapshot without one
/// is never deleted here. Returns the deleted files.
///
/// # Errors
/// The folder cannot be read, or a file cannot be removed.
pub fn prune(
    dir: &Path,
    cluster_id: &str,
    now: u64,
    policy: &RetentionConfig,
) -> std::io::Result<Vec<PathBuf>> {
    prune_keeping(dir, cluster_id, now, policy, &[])
}

/// [`prune`], but the files named in `keep` (file names, e.g. the
/// snapshots still waiting for their S3 upload) are never deleted (they
/// are counted).
///
/// # Errors
/// As [`prune`].
pub fn prune_keeping(
    dir: &Path,
    cluster_id: &str,
    now: u64,
    policy: &RetentionConfig,
    keep_names: &[String],
) -> std::io::Result<Vec<PathBuf>> {
    let verified: Vec<(PathBuf, u64)> = list_local(dir, Some(cluster_id))?
        .into_iter()
        .filter_map(|s| s.manifest.map(|m| (s.path, m.taken_at)))
        .collect();
    let times: Vec<u64> = verified.iter().map(|(_, t)| *t).collect();
    let keep = deckhand_plan::retention::keep(now, &times, policy);
    let mut deleted = Vec::new();
    for ((path, _), kept) in verified.into_iter().zip(keep) {
        let pinned = path
            .file_name()
            .is_some_and(|n| keep_names.iter().any(|k| std::ffi::OsStr::new(k) == n));
        if !kept && !pinned {
            std::fs::remove_file(&path)?;
            let _ = std::fs::remove_file(manifest_path(&path));
            deleted.push(path);
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests;
