//! `deckhand backup now|list|verify`: a snapshot asked of the elected
//! taker and waited for, the snapshots on this node's disk with their
//! manifests and the taker's status, and the check of one snapshot file
//! (`docs/backup.md`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use clap::Subcommand;
use deckhand_model::backup::{DEFAULT_BACKUP_DIR, Manifest};

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
    /// size and SHA-256. Works whether the schedule is on or off.
    ///
    /// Exit status: 0 written and verified; 1 the agent reported a
    /// failure (printed), no agent stands for backups, or no answer
    /// within --timeout.
    #[command(verbatim_doc_comment)]
    Now {
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// List the snapshots in this node's backup dir, with their manifests,
    /// and the taker's status (last good snapshot, last failure).
    ///
    /// Remote (S3) snapshots: not built yet (docs/backup.md).
    #[command(verbatim_doc_comment)]
    List {
        /// The backup dir; default: the cluster config's backup.dir, else
        /// /var/lib/deckhand/backups.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print JSON (an object with `local` and `status`).
        #[arg(long)]
        json: bool,
    },
    /// Check a snapshot file: etcd's appended SHA-256, that it opens as an
    /// etcd database (`etcdctl snapshot status`), and that its name's
    /// revision and its manifest (FILE.json, if present) match what it holds.
    ///
    /// Needs no etcd. Exit status: 0 good; 65 refused (the reason is
    /// printed: a changed byte, a truncated file, not an etcd database,
    /// not what its name or manifest claims); 1 it cannot be read.
    #[command(verbatim_doc_comment)]
    Verify {
        /// The snapshot file (`<dir>/<cluster id>/<time>-rev<revision>.db`).
        file: PathBuf,
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
        BackupCommand::Verify { file } => verify(&file).await,
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
                return Ok(());
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
    if let Some(s) = &session {
        status = take::read_status(&s.store).await.ok().flatten();
        config_dir = s
            .store
            .cluster_config()
            .await
            .ok()
            .map(|(c, _)| c.backup.dir);
    }
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
    outln!("remote: none (S3 upload is not built yet)");
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
    format!("backup: {good}{late}{failed}")
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
        };
        assert_eq!(
            backup_line(&st),
            "backup: newest snapshot 5m old (revision 77, /b/c/x.db on n2; age on n2's clock), OVERDUE"
        );
        st.last_good_age_seconds = Some(30);
        assert!(!backup_line(&st).contains("OVERDUE"));
    }
}
