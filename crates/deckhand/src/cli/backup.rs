//! `deckhand backup now|list|verify`: a snapshot asked of the elected
//! taker and waited for, the snapshots on this node's disk with their
//! manifests and the taker's status, and the check of one snapshot file
//! (`docs/backup.md`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use clap::Subcommand;
use deckhand_model::backup::{DEFAULT_BACKUP_DIR, Manifest, S3Config, UploadStatus};

use super::session::Session;
use crate::backup::{self, take};
use crate::connect::Target;
use crate::exit::Failure;

/// `deckhand backup ...`
#[derive(Subcommand)]
pub enum BackupCommand {
    /// Ask the elected backup agent for a snapshot now and wait for it.
    ///
    /// Writes <prefix>/backup/request; the agent elected in
    /// <prefix>/elections/backup streams a snapshot from a healthy voter,
    /// verifies it, writes it to backup.dir on its node and answers in
    /// <prefix>/backup/status. Prints the file, its revision, key count,
    /// size and SHA-256; with backup.s3 set, also the key it was uploaded
    /// to (with its manifest). Works whether the schedule is on or off.
    ///
    /// Exit status: 0 written and verified (and uploaded, with backup.s3);
    /// 1 the agent reported a failure (printed; a failed upload leaves the
    /// snapshot on the taker's disk, retried), no agent stands for
    /// backups, or no answer within --timeout.
    #[command(verbatim_doc_comment)]
    Now {
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// List the snapshots in this node's backup dir, with their manifests,
    /// those in the bucket of backup.s3 (when set) with theirs, and the
    /// taker's status (last good snapshot, last failure, uploads).
    #[command(verbatim_doc_comment)]
    List {
        /// The backup dir; default: the cluster config's backup.dir, else
        /// /var/lib/deckhand/backups.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print JSON (an object with `local`, `remote` and `status`).
        #[arg(long)]
        json: bool,
    },
    /// Check a snapshot file: etcd's appended SHA-256, that it opens as an
    /// etcd database (`etcdctl snapshot status`), and that its name's
    /// revision and its manifest (FILE.json, if present) match what it holds.
    ///
    /// An argument that is not a file (nor starts with / or .) is an S3 key
    /// of backup.s3's bucket
    /// (`<prefix>/<cluster id>/<time>-rev<revision>.db`, or
    /// `s3://<bucket>/<key>`): it is downloaded to a temporary directory
    /// and checked against its manifest (`<key>.json`), then removed.
    ///
    /// A file needs no etcd; a key reads backup.s3 from the cluster config,
    /// or from --s3-settings. Exit status: 0 good; 65 refused (the reason
    /// is printed: a changed byte, a truncated file, not an etcd database,
    /// not what its name or manifest claims, a key that does not exist or
    /// has no manifest); 1 it cannot be read (or the bucket not reached).
    #[command(verbatim_doc_comment)]
    Verify {
        /// The snapshot file (`<dir>/<cluster id>/<time>-rev<revision>.db`)
        /// or S3 key.
        file: PathBuf,
        /// A JSON file holding the `backup.s3` object (bucket, prefix,
        /// endpoint, region, credentials_file), for when etcd is gone.
        #[arg(long, value_name = "FILE")]
        s3_settings: Option<PathBuf>,
    },
}

/// Runs a `deckhand backup` command; `target` is only worked out by the
/// commands that talk to etcd.
///
/// # Errors
/// See each command's exit status.
pub async fn backup(
    cmd: BackupCommand,
    target: impl Fn() -> Result<Target, Failure>,
) -> Result<(), Failure> {
    match cmd {
        // A key: not an existing file, nor a path (absolute or ./relative).
        BackupCommand::Verify { file, s3_settings }
            if !file.is_file() && !file.starts_with("/") && !file.starts_with(".") =>
        {
            verify_key(&file.to_string_lossy(), s3_settings, target).await
        }
        BackupCommand::Verify { file, .. } => verify(&file).await,
        BackupCommand::Now { timeout } => now(target()?, Duration::from_secs(timeout)).await,
        BackupCommand::List { dir, json } => list(target, dir, json).await,
    }
}

async fn verify(file: &Path) -> Result<(), Failure> {
    if !file.is_file() {
        return Err(Failure::failed(anyhow!("{} is not a file", file.display())));
    }
    let mpath = backup::manifest_path(file);
    let manifest: Option<Manifest> = match std::fs::read(&mpath) {
        Err(_) => None,
        Ok(b) => Some(serde_json::from_slice(&b).map_err(|e| Failure {
            code: crate::exit::BAD_SNAPSHOT,
            error: anyhow!("{} is not a manifest: {e}", mpath.display()),
        })?),
    };
    match backup::verify(file, manifest.as_ref()).await {
        Ok(v) => {
            outln!(
                "{}: good: revision {}, {} keys, {} bytes, sha256 {}{}",
                file.display(),
                v.revision,
                v.keys,
                v.size,
                v.sha256,
                if manifest.is_some() {
                    ", as its manifest says"
                } else {
                    " (no manifest beside it)"
                }
            );
            Ok(())
        }
        Err(r) => Err(Failure {
            code: crate::exit::BAD_SNAPSHOT,
            error: anyhow!("refused: {r}"),
        }),
    }
}

/// `backup.s3` settings from a JSON file (`--s3-settings FILE` of
/// `backup verify` and `restore`: the cluster config's `backup.s3` value).
///
/// # Errors
/// [`crate::exit::CONFIG`] when the file cannot be read, is not that JSON,
/// or fails the same validation as the cluster config.
pub fn s3_settings_file(f: &std::path::Path) -> Result<S3Config, Failure> {
    let b =
        std::fs::read(f).map_err(|e| Failure::config(anyhow!("reading {}: {e}", f.display())))?;
    let c: S3Config = serde_json::from_slice(&b)
        .map_err(|e| Failure::config(anyhow!("{}: not backup.s3 settings: {e}", f.display())))?;
    c.validate()
        .map_err(|e| Failure::config(anyhow!("{}: {e}", f.display())))?;
    Ok(c)
}

/// backup.s3: from `--s3-settings FILE` (JSON), else the cluster config.
async fn s3_settings(
    file: Option<PathBuf>,
    target: impl Fn() -> Result<Target, Failure>,
) -> Result<S3Config, Failure> {
    if let Some(f) = file {
        return s3_settings_file(&f);
    }
    let session = Session::connect(target()?).await?;
    let (cfg, _) = session
        .store
        .cluster_config()
        .await
        .map_err(|e| anyhow!("reading the cluster config for backup.s3: {e:#}"))?;
    cfg.backup.s3.ok_or_else(|| {
        Failure::failed(anyhow!(
            "not a file, and backup.s3 is not set in the cluster config (nor --s3-settings given) to look it up as an S3 key"
        ))
    })
}

async fn verify_key(
    key: &str,
    settings: Option<PathBuf>,
    target: impl Fn() -> Result<Target, Failure>,
) -> Result<(), Failure> {
    let cfg = s3_settings(settings, target).await?;
    let tmp = tempdir()?;
    let r = backup::s3::fetch_snapshot_from_s3(&cfg, key, tmp.path()).await;
    let result = match r {
        Ok(path) => {
            let m: Option<Manifest> = std::fs::read(backup::manifest_path(&path))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            match m {
                Some(m) => outln!(
                    "{key}: good: revision {}, {} keys, {} bytes, sha256 {}, as its manifest says (cluster {}, from member {}, taken {})",
                    m.revision,
                    m.keys,
                    m.size,
                    m.sha256,
                    m.cluster_id,
                    m.member,
                    crate::tls::utc(m.taken_at)
                ),
                None => outln!("{key}: good"),
            }
            Ok(())
        }
        Err(e) if e.downcast_ref::<backup::Refusal>().is_some() => Err(Failure {
            code: crate::exit::BAD_SNAPSHOT,
            error: anyhow!("refused: {e:#}"),
        }),
        Err(e) => Err(Failure::failed(e)),
    };
    let _ = std::fs::remove_dir_all(tmp.path());
    result
}

/// A private temporary directory (0700) under $TMPDIR, removed by the caller.
fn tempdir() -> Result<TempDir, Failure> {
    use std::os::unix::fs::DirBuilderExt as _;
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| anyhow!("no random bytes from the system"))?;
    let p = std::env::temp_dir().join(format!("deckhand-verify-{}", backup::hex(&b)));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&p)
        .map_err(|e| anyhow!("making {}: {e}", p.display()))?;
    Ok(TempDir(p))
}

struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The snapshots in the bucket with their manifests (read one by one).
async fn remote_list(
    cfg: &S3Config,
) -> Result<Vec<(backup::s3::RemoteSnapshot, Option<Manifest>)>> {
    let bucket = backup::s3::Bucket::open(cfg)?;
    let objects = bucket.list(None).await?;
    let mut out = Vec::new();
    for s in backup::s3::snapshots_in(&cfg.prefix, &objects) {
        let m = if s.has_manifest {
            bucket.manifest(&s.key).await?
        } else {
            None
        };
        out.push((s, m));
    }
    Ok(out)
}

fn describe(m: &Manifest) -> String {
    format!(
        "{} on {}: revision {}, {} keys, {} bytes, sha256 {}, from member {}, taken {}",
        m.path,
        m.node,
        m.revision,
        m.keys,
        m.size,
        m.sha256,
        m.member,
        crate::tls::utc(m.taken_at)
    )
}

async fn now(target: Target, timeout: Duration) -> Result<(), Failure> {
    let session = Session::connect(target).await?;
    let store = &session.store;
    let election = store.keyspace().backup_election();
    let view = deckhand_etcd::election::leader(&mut store.client(), &election)
        .await
        .map_err(|e| anyhow!("reading {election}: {e}"))?;
    let Some(taker) = view.leader() else {
        return Err(Failure::failed(anyhow!(
            "no agent stands for backups ({election} is empty): no node may take snapshots (backup.nodes, by default the etcd members' nodes), or their agents are down"
        )));
    };
    let taker = taker.value.clone();
    let id = take::put_request(store).await?;
    outln!("asked {taker} for a snapshot (request {id})");
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(Some(s)) = take::read_status(store).await {
            if let Some(m) = s
                .last_good
                .as_ref()
                .filter(|m| m.request.as_deref() == Some(&id))
            {
                outln!(
                    "written and verified in {:.1} s: {}",
                    started.elapsed().as_secs_f64(),
                    describe(m)
                );
                let Some(u) = &s.s3 else {
                    return Ok(());
                };
                if let Some(x) = u
                    .last_uploaded
                    .as_ref()
                    .filter(|x| x.request.as_deref() == Some(&id))
                {
                    outln!(
                        "uploaded to s3://{}/{} with its manifest ({}.json)",
                        u.bucket,
                        x.key,
                        x.key
                    );
                    return Ok(());
                }
                return Err(Failure::failed(anyhow!(
                    "the upload to s3://{} failed (the snapshot stays on {}'s disk and is retried): {}",
                    u.bucket,
                    m.node,
                    u.last_failure
                        .as_ref()
                        .map(|f| f.error.as_str())
                        .unwrap_or("not uploaded")
                )));
            }
            if let Some(f) = s
                .last_failure
                .as_ref()
                .filter(|f| f.request.as_deref() == Some(&id))
            {
                return Err(Failure::failed(anyhow!(
                    "{} could not take the snapshot: {}",
                    f.node,
                    f.error
                )));
            }
        }
        if started.elapsed() > timeout {
            return Err(Failure::failed(anyhow!(
                "no answer from {taker} within {} s (request {id} stays; the taker answers it when it can)",
                timeout.as_secs()
            )));
        }
    }
}

async fn list(
    target: impl Fn() -> Result<Target, Failure>,
    dir: Option<PathBuf>,
    json: bool,
) -> Result<(), Failure> {
    // etcd is asked for the status and backup.dir; the local list works
    // without it.
    let session = match target() {
        Ok(t) => Session::connect(t).await.ok(),
        Err(_) => None,
    };
    let mut status = None;
    let mut config_dir = None;
    let mut s3 = None;
    if let Some(s) = &session {
        status = take::read_status(&s.store).await.ok().flatten();
        if let Ok((c, _)) = s.store.cluster_config().await {
            config_dir = Some(c.backup.dir);
            s3 = c.backup.s3;
        }
    }
    let remote = match &s3 {
        None => None,
        Some(cfg) => Some(remote_list(cfg).await.map_err(|e| format!("{e:#}"))),
    };
    let dir = dir
        .or(config_dir.map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BACKUP_DIR));
    let local =
        backup::list_local(&dir, None).map_err(|e| anyhow!("reading {}: {e}", dir.display()))?;
    if json {
        let v = serde_json::json!({
            "dir": dir.display().to_string(),
            "local": local.iter().map(|s| serde_json::json!({
                "path": s.path.display().to_string(),
                "manifest": s.manifest,
            })).collect::<Vec<_>>(),
            "remote": match &remote {
                None => serde_json::Value::Null,
                Some(Err(e)) => serde_json::json!({"error": e}),
                Some(Ok(l)) => serde_json::json!({
                    "bucket": s3.as_ref().map(|c| c.bucket.clone()),
                    "snapshots": l.iter().map(|(s, m)| serde_json::json!({
                        "key": s.key,
                        "size": s.size,
                        "manifest": m,
                    })).collect::<Vec<_>>(),
                }),
            },
            "status": status,
        });
        outln!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(anyhow::Error::from)?
        );
        return Ok(());
    }
    outln!("local ({}):", dir.display());
    if local.is_empty() {
        outln!("  none");
    }
    for s in &local {
        match &s.manifest {
            Some(m) => outln!(
                "  {}  revision {}, {} keys, {} bytes, sha256 {}, from {}",
                s.path.display(),
                m.revision,
                m.keys,
                m.size,
                m.sha256,
                m.member
            ),
            None => outln!("  {}  (no manifest: not verified)", s.path.display()),
        }
    }
    match (&s3, &remote) {
        (Some(cfg), Some(Ok(l))) => {
            outln!("remote (s3://{}/{}):", cfg.bucket, cfg.prefix);
            if l.is_empty() {
                outln!("  none");
            }
            for (s, m) in l {
                match m {
                    Some(m) => outln!(
                        "  {}  revision {}, {} keys, {} bytes, sha256 {}, cluster {}, from {} on {}, taken {}",
                        s.key,
                        m.revision,
                        m.keys,
                        m.size,
                        m.sha256,
                        m.cluster_id,
                        m.member,
                        m.node,
                        crate::tls::utc(m.taken_at)
                    ),
                    None => outln!(
                        "  {}  {} bytes (no manifest: upload not finished)",
                        s.key,
                        s.size
                    ),
                }
            }
        }
        (Some(cfg), Some(Err(e))) => outln!("remote (s3://{}): cannot list: {e}", cfg.bucket),
        _ if session.is_none() => {
            outln!("remote: unknown (etcd did not answer: backup.s3 unknown)")
        }
        _ => outln!("remote: none (backup.s3 is not set)"),
    }
    match (&session, &status) {
        (None, _) => outln!("status: etcd did not answer"),
        (Some(_), None) => outln!("status: no snapshot taken yet"),
        (Some(_), Some(s)) => {
            match &s.last_good {
                Some(m) => outln!(
                    "last good: {} ({} s old as {} last reported)",
                    describe(m),
                    s.last_good_age_seconds.unwrap_or(0),
                    s.node
                ),
                None => outln!("last good: none"),
            }
            if let Some(f) = &s.last_failure {
                outln!(
                    "last failure: {} on {}: {}",
                    crate::tls::utc(f.at),
                    f.node,
                    f.error
                );
            }
            if let Some(u) = &s.s3 {
                outln!("{}", upload_line(u));
            }
        }
    }
    Ok(())
}

/// `deckhand status`'s backup line: the newest good snapshot's age as the
/// taker last reported it (its clock), and a failure newer than it.
/// `None` when nothing was ever taken and the schedule is off, or etcd did
/// not answer.
pub async fn status_line(store: &crate::store::Store) -> Option<String> {
    let st = take::read_status(store).await.ok().flatten()?;
    Some(backup_line(&st))
}

/// [`status_line`] of a status document (pure).
pub fn backup_line(st: &deckhand_model::backup::BackupStatus) -> String {
    let good = match (&st.last_good, st.last_good_age_seconds) {
        (Some(m), Some(age)) => format!(
            "newest snapshot {} old (revision {}, {} on {}; age on {}'s clock)",
            age_words(age),
            m.revision,
            m.path,
            m.node,
            st.node
        ),
        _ => "no good snapshot".to_owned(),
    };
    let late = if st.overdue() { ", OVERDUE" } else { "" };
    let failed = st
        .last_failure
        .as_ref()
        .map(|f| format!("; last attempt failed on {}: {}", f.node, f.error))
        .unwrap_or_default();
    let upload = st
        .s3
        .as_ref()
        .and_then(|u| {
            u.last_failure.as_ref().map(|f| {
                format!(
                    "; S3 upload failing ({} pending on {}): {}",
                    u.pending.len(),
                    f.node,
                    f.error
                )
            })
        })
        .unwrap_or_default();
    format!("backup: {good}{late}{failed}{upload}")
}

/// The uploads' line of `backup list` and `deckhand status`.
pub fn upload_line(u: &UploadStatus) -> String {
    let last = match &u.last_uploaded {
        Some(x) => format!(
            "last uploaded s3://{}/{} (revision {})",
            u.bucket, x.key, x.revision
        ),
        None => format!("nothing uploaded to s3://{} yet", u.bucket),
    };
    let pending = if u.pending.is_empty() {
        String::new()
    } else {
        format!(
            ", {} pending (kept on disk): {}",
            u.pending.len(),
            u.pending.join(" ")
        )
    };
    let failed = u
        .last_failure
        .as_ref()
        .map(|f| {
            format!(
                "; upload FAILED {} on {}: {}",
                crate::tls::utc(f.at),
                f.node,
                f.error
            )
        })
        .unwrap_or_default();
    format!("s3: {last}{pending}{failed}")
}

fn age_words(s: u64) -> String {
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use deckhand_model::backup::BackupStatus;

    use super::*;

    #[test]
    fn the_status_line_says_age_and_lateness() {
        let mut st = BackupStatus {
            node: "n2".into(),
            checked_at: 10_000,
            interval_seconds: 60,
            last_good: Some(Manifest {
                cluster_id: "c".into(),
                revision: 77,
                keys: 1,
                size: 1,
                sha256: String::new(),
                taken_at: 9_700,
                member: "n1".into(),
                member_id: "1".into(),
                node: "n2".into(),
                path: "/b/c/x.db".into(),
                request: None,
            }),
            last_good_age_seconds: Some(300),
            last_failure: None,
            s3: None,
        };
        assert_eq!(
            backup_line(&st),
            "backup: newest snapshot 5m old (revision 77, /b/c/x.db on n2; age on n2's clock), OVERDUE"
        );
        st.last_good_age_seconds = Some(30);
        assert!(!backup_line(&st).contains("OVERDUE"));
    }
}
