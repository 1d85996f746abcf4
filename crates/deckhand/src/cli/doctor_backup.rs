//! `deckhand doctor`'s **backups** check: the taker's status
//! (`<prefix>/backup/status`) and who stands for the election
//! `elections/backup`; pure, on what [`gather`] read.

use deckhand_model::CheckState;
use deckhand_model::backup::BackupStatus;

use super::doctor::{Finding, Snapshot};
use crate::store::Store;

/// What the check reads of the backup keys.
#[derive(Debug, Clone, Default)]
pub struct BackupView {
    /// The taker's status, if one was written.
    pub status: Option<BackupStatus>,
    /// The nodes standing for `elections/backup`, the leader first.
    pub candidates: Vec<String>,
}

/// Reads the backup keys for the check.
///
/// # Errors
/// In words: etcd did not answer, or the status does not parse.
pub async fn gather(store: &Store) -> Result<BackupView, String> {
    let status = crate::backup::take::read_status(store)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let election = store.keyspace().backup_election();
    let view = deckhand_etcd::election::leader(&mut store.client(), &election)
        .await
        .map_err(|e| format!("reading {election}: {e}"))?;
    Ok(BackupView {
        status,
        candidates: view.candidates.into_iter().map(|c| c.value).collect(),
    })
}

/// **backups**: with `backup.enabled`, fails when no node stands for
/// taking snapshots, when there is no good snapshot, or when the newest
/// good one is older than twice `backup.interval_seconds` (its age as the
/// taker computed it on its own clock, [`BackupStatus::overdue`]); warns
/// when the last attempt failed. Warns while the schedule is off.
pub fn check(s: &Snapshot, view: &Result<BackupView, String>) -> Finding {
    const NAME: &str = "backups";
    let cfg = match &s.cluster {
        Ok(c) => &c.backup,
        Err(e) => return Finding::cannot_run(NAME, e),
    };
    let view = match view {
        Ok(v) => v,
        Err(e) => return Finding::cannot_run(NAME, e),
    };
    if !cfg.enabled {
        return Finding::new(
            NAME,
            CheckState::Warn,
            "not configured: the schedule is off (cluster config backup.enabled = false)".into(),
            "deckhand cluster set 'backup={\"enabled\":true}' (docs/backup.md); copy snapshots off the cluster",
        );
    }
    let Some(taker) = view.candidates.first() else {
        return Finding::new(
            NAME,
            CheckState::Fail,
            "no node stands for taking snapshots (elections/backup is empty)".into(),
            "list nodes in backup.nodes, or give a live node an etcd member role; check their agents",
        );
    };
    let Some(st) = &view.status else {
        return Finding::new(
            NAME,
            CheckState::Fail,
            format!("{taker} takes snapshots, but none was taken yet"),
            "run deckhand backup now and read its error",
        );
    };
    let failure = st
        .last_failure
        .as_ref()
        .map(|f| format!("; the last attempt on {} failed: {}", f.node, f.error))
        .unwrap_or_default();
    // backup.s3: a failing upload warns (the snapshot is kept on disk).
    let failure = match st
        .s3
        .as_ref()
        .and_then(|u| u.last_failure.as_ref().map(|f| (u, f)))
    {
        Some((u, f)) => format!(
            "{failure}; the upload to s3://{} on {} failed ({} pending): {}",
            u.bucket,
            f.node,
            u.pending.len(),
            f.error
        ),
        None => failure,
    };
    let status = BackupStatus {
        interval_seconds: cfg.interval_seconds,
        ..st.clone()
    };
    match (&st.last_good, st.last_good_age_seconds) {
        (Some(m), Some(age)) if !status.overdue() => Finding::new(
            NAME,
            if failure.is_empty() {
                CheckState::Pass
            } else {
                CheckState::Warn
            },
            format!(
                "newest good snapshot {age} s old on {}'s clock (revision {}, {} bytes, {} on {}){failure}",
                st.node, m.revision, m.size, m.path, m.node
            ),
            if failure.is_empty() {
                ""
            } else {
                "see deckhand backup list; the taker retries"
            },
        ),
        (Some(m), age) => Finding::new(
            NAME,
            CheckState::Fail,
            format!(
                "newest good snapshot is {} s old on {}'s clock, over twice backup.interval_seconds = {} (revision {}, {}){failure}",
                age.unwrap_or(0),
                st.node,
                cfg.interval_seconds,
                m.revision,
                m.path
            ),
            "read the last failure (deckhand backup list), fix it, then deckhand backup now",
        ),
        (None, _) => Finding::new(
            NAME,
            CheckState::Fail,
            format!("no good snapshot yet{failure}"),
            "read the failure, fix it, then deckhand backup now",
        ),
    }
}

#[cfg(test)]
mod tests {
    use deckhand_model::ClusterConfig;
    use deckhand_model::backup::{BackupFailure, Manifest};

    use super::*;

    fn snap(enabled: bool) -> Snapshot {
        let mut s = Snapshot::unreachable("/deckhand", vec![], "x");
        let mut c = ClusterConfig::default();
        c.backup.enabled = enabled;
        c.backup.interval_seconds = 60;
        s.cluster = Ok(c);
        s
    }

    fn status(age: Option<u64>, failed: bool) -> BackupStatus {
        BackupStatus {
            node: "n1".into(),
            checked_at: 5000,
            interval_seconds: 60,
            last_good: age.map(|a| Manifest {
                cluster_id: "c".into(),
                revision: 9,
                keys: 3,
                size: 24608,
                sha256: "ab".into(),
                taken_at: 5000 - a,
                member: "n1".into(),
                member_id: "1".into(),
                node: "n1".into(),
                path: "/var/lib/deckhand/backups/c/x.db".into(),
                request: None,
            }),
            last_good_age_seconds: age,
            last_failure: failed.then(|| BackupFailure {
                at: 4990,
                node: "n1".into(),
                error: "no healthy voter".into(),
                request: None,
            }),
            s3: None,
        }
    }

    fn view(st: Option<BackupStatus>) -> Result<BackupView, String> {
        Ok(BackupView {
            status: st,
            candidates: vec!["n1".into()],
        })
    }

    #[test]
    fn levels() {
        let lvl = |s: &Snapshot, v: &Result<BackupView, String>| check(s, v).level;
        assert_eq!(lvl(&snap(false), &view(None)), CheckState::Warn);
        let on = snap(true);
        assert_eq!(
            lvl(&on, &Ok(BackupView::default())),
            CheckState::Fail,
            "nobody stands"
        );
        assert_eq!(lvl(&on, &view(None)), CheckState::Fail, "none taken");
        assert_eq!(
            lvl(&on, &view(Some(status(Some(120), false)))),
            CheckState::Pass
        );
        let f = check(&on, &view(Some(status(Some(121), false))));
        assert_eq!(f.level, CheckState::Fail, "over twice the interval");
        assert!(f.saw.contains("121 s old on n1's clock"), "{}", f.saw);
        assert_eq!(
            lvl(&on, &view(Some(status(Some(10), true)))),
            CheckState::Warn
        );
        assert_eq!(lvl(&on, &view(Some(status(None, true)))), CheckState::Fail);
        assert!(check(&on, &Err("down".into())).saw.contains("cannot run"));
    }
}
