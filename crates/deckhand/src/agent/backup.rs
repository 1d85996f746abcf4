//! The backup taker's seat: on a node that may take snapshots
//! (`backup.nodes`, by default the nodes whose role is an etcd member), the
//! agent stands for the election `elections/backup` on its node lease; the
//! leader alone takes snapshots, on the schedule (`backup.interval_seconds`
//! on its own clock) and when `deckhand backup now` asks
//! (`<prefix>/backup/request`), each streamed from a healthy voter
//! ([`crate::backup::take`]), then applies retention to its local folder
//! and writes `<prefix>/backup/status`. With `backup.s3` set, each pass
//! that took a snapshot (and, while uploads are pending, one every
//! `min(60 s, interval)`) uploads the verified local snapshots not yet in
//! the bucket and applies retention there ([`crate::backup::s3::sync`]);
//! a local snapshot waiting for its upload is not pruned locally. A node
//! that may no longer take snapshots resigns.

use std::time::{Duration, Instant};

use deckhand_etcd::{Cluster, Member};
use deckhand_model::backup::{BackupConfig, BackupFailure, BackupStatus, Manifest, UploadStatus};
use deckhand_plan::Observation;
use tokio::sync::watch;

use crate::backup::take::{self, Take};
use crate::store::Store;

/// How often the taker looks at the schedule and for a request.
pub const PASS_EVERY: Duration = Duration::from_secs(3);
/// How often the leader rewrites its status when nothing happened (the
/// age of the newest snapshot in it is on its clock).
const STATUS_EVERY: Duration = Duration::from_secs(60);
/// The wait before another scheduled attempt after a failed one, at most.
const RETRY_AFTER: Duration = Duration::from_secs(60);
/// How often the uploads are looked at when none is pending (a snapshot
/// taken, or a change of `backup.s3.bucket`, looks at once).
const S3_EVERY: Duration = Duration::from_secs(600);
/// Bound on each voter's `Status` before a snapshot.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

/// What the agent's loop hands the taker each pass.
#[derive(Debug, Clone, Default)]
pub struct TakerInputs {
    /// The node lease (0 while none).
    pub lease: i64,
    /// The member list last observed; `None` before the first. (The
    /// voters' health is asked afresh before each snapshot: the loop
    /// observes it only when a step needs it.)
    pub members: Option<Vec<Member>>,
    /// The cluster config's `backup` section.
    pub config: BackupConfig,
    /// This node's desired role is an etcd member.
    pub is_member: bool,
}

/// The inputs of one pass, from the agent loop's observation.
pub fn inputs(o: &Observation, lease: i64, config: &BackupConfig, is_member: bool) -> TakerInputs {
    let members = o.cluster.as_ref().map(|c| {
        c.members
            .iter()
            .map(|m| Member {
                id: m.id,
                name: m.name.clone(),
                peer_urls: m.peer_urls.clone(),
                client_urls: m.client_urls.clone(),
                is_learner: m.is_learner,
            })
            .collect()
    });
    TakerInputs {
        lease,
        members,
        config: config.clone(),
        is_member,
    }
}

/// Whether a scheduled snapshot is due at `now` (Unix seconds, this
/// agent's clock): the schedule is on, and the newest good snapshot is an
/// interval old (or there is none), and no attempt failed less than
/// [`RETRY_AFTER`] (or the interval, if shorter) ago.
pub fn due(
    config: &BackupConfig,
    last_good: Option<&Manifest>,
    now: u64,
    since_failure: Option<Duration>,
) -> bool {
    if !config.enabled {
        return false;
    }
    let interval = Duration::from_secs(config.interval_seconds);
    if since_failure.is_some_and(|d| d < RETRY_AFTER.min(interval)) {
        return false;
    }
    last_good.is_none_or(|m| now.saturating_sub(m.taken_at) >= config.interval_seconds)
}

/// Starts the taker's task; the agent sends it [`TakerInputs`] each pass.
/// `cluster`: the agent's client of the members (its TLS material is used
/// for `https://` members).
pub fn spawn(store: Store, cluster: Cluster, name: String) -> watch::Sender<TakerInputs> {
    let (tx, rx) = watch::channel(TakerInputs::default());
    tokio::spawn(run(store, cluster, name, rx));
    tx
}

struct Leading {
    cluster_id: String,
    status: BackupStatus,
    written: Instant,
    failed: Option<Instant>,
    /// When the uploads are looked at next; `None`: at the next pass.
    s3_next: Option<Instant>,
}

async fn run(store: Store, cluster: Cluster, name: String, mut rx: watch::Receiver<TakerInputs>) {
    let election = store.keyspace().backup_election();
    let mut standing: Option<i64> = None;
    let mut leading: Option<Leading> = None;
    loop {
        tokio::time::sleep(PASS_EVERY).await;
        let inputs = rx.borrow_and_update().clone();
        let mut client = store.client();
        if !inputs.config.may_take(&name, inputs.is_member) {
            if let Some(lease) = standing.take() {
                tracing::info!("this node may not take snapshots: leaving {election}");
                let _ = deckhand_etcd::election::resign(&mut client, &election, lease).await;
            }
            leading = None;
            continue;
        }
        if inputs.lease == 0 {
            continue;
        }
        let view =
            match deckhand_etcd::election::campaign(&mut client, &election, inputs.lease, &name)
                .await
            {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!("backup election: {e}");
                    continue;
                }
            };
        standing = Some(inputs.lease);
        if !view.leads(inputs.lease) {
            leading = None;
            continue;
        }
        if leading.is_none() {
            match start_leading(&store, &name).await {
                Ok(l) => {
                    tracing::info!(
                        "taking the snapshots of cluster {} (elected in {election})",
                        l.cluster_id
                    );
                    leading = Some(l);
                }
                Err(e) => {
                    tracing::warn!("backup taker: {e:#}");
                    continue;
                }
            }
        }
        let Some(l) = leading.as_mut() else { continue };
        pass(&store, &cluster, &name, &inputs, l).await;
    }
}

async fn start_leading(store: &Store, name: &str) -> anyhow::Result<Leading> {
    let cluster_id = take::cluster_id(store).await?;
    let old = take::read_status(store).await.unwrap_or_else(|e| {
        tracing::warn!("the last backup status does not read ({e:#}): starting afresh");
        None
    });
    let now = super::observe::unix_now();
    let status = BackupStatus {
        node: name.to_owned(),
        checked_at: now,
        interval_seconds: 0,
        last_good: old.as_ref().and_then(|s| s.last_good.clone()),
        last_good_age_seconds: None,
        last_failure: old.as_ref().and_then(|s| s.last_failure.clone()),
        s3: old.and_then(|s| s.s3),
    };
    Ok(Leading {
        cluster_id,
        status,
        written: Instant::now() - STATUS_EVERY,
        failed: None,
        s3_next: None,
    })
}

async fn pass(store: &Store, cluster: &Cluster, name: &str, inputs: &TakerInputs, l: &mut Leading) {
    let request = match take::read_request(store).await {
        Ok(r) => r.map(|r| r.id),
        Err(e) => {
            tracing::debug!("backup request: {e:#}");
            None
        }
    };
    let now = super::observe::unix_now();
    let scheduled = due(
        &inputs.config,
        l.status.last_good.as_ref(),
        now,
        l.failed.map(|f| f.elapsed()),
    );
    let mut changed = false;
    if (request.is_some() || scheduled)
        && let Some(members) = &inputs.members
    {
        let result = snapshot(
            cluster,
            name,
            inputs,
            members,
            &l.cluster_id,
            request.clone(),
        )
        .await;
        let at = super::observe::unix_now();
        let mut taken = false;
        match result {
            Ok(m) => {
                l.status.last_good = Some(m);
                l.status.last_failure = None;
                l.failed = None;
                taken = true;
            }
            Err(e) => {
                let error = format!("{e:#}");
                tracing::error!("backup failed: {error}");
                l.status.last_failure = Some(BackupFailure {
                    at,
                    node: name.to_owned(),
                    error,
                    request: request.clone(),
                });
                l.failed = Some(Instant::now());
            }
        }
        if taken {
            upload(inputs, name, l, request.as_deref()).await;
            let keep: Vec<String> = l
                .status
                .s3
                .as_ref()
                .map(|s| s.pending.clone())
                .unwrap_or_default();
            let dir = std::path::Path::new(&inputs.config.dir);
            let at = super::observe::unix_now();
            match crate::backup::prune_keeping(
                dir,
                &l.cluster_id,
                at,
                &inputs.config.retention,
                &keep,
            ) {
                Ok(gone) => {
                    for p in gone {
                        tracing::info!("retention: deleted {}", p.display());
                    }
                }
                Err(e) => tracing::warn!("retention in {}: {e}", dir.display()),
            }
        }
        changed = true;
    }
    let s3_due = match &inputs.config.s3 {
        None => {
            changed |= l.status.s3.take().is_some();
            false
        }
        Some(s3) => {
            l.status.s3.as_ref().is_none_or(|s| s.bucket != s3.bucket)
                || l.s3_next.is_none_or(|t| Instant::now() >= t)
        }
    };
    if s3_due && !changed {
        upload(inputs, name, l, None).await;
        changed = true;
    }
    if changed || l.written.elapsed() >= STATUS_EVERY {
        let now = super::observe::unix_now();
        l.status.node = name.to_owned();
        l.status.checked_at = now;
        l.status.interval_seconds = if inputs.config.enabled {
            inputs.config.interval_seconds
        } else {
            0
        };
        l.status.last_good_age_seconds = l
            .status
            .last_good
            .as_ref()
            .map(|m| now.saturating_sub(m.taken_at));
        match take::write_status(store, &l.status).await {
            Ok(()) => l.written = Instant::now(),
            Err(e) => tracing::warn!("backup status: {e:#}"),
        }
    }
    // The answer is in the status before the request goes.
    if changed && let Some(id) = &request {
        let _ = take::clear_request(store, id).await;
    }
}

/// Runs [`crate::backup::s3::sync`] when `backup.s3` is set and puts its
/// outcome in the status; `request`: the `backup now` request of the
/// snapshot just taken, named in the failure if that snapshot is left
/// pending.
async fn upload(inputs: &TakerInputs, name: &str, l: &mut Leading, request: Option<&str>) {
    let Some(s3) = &inputs.config.s3 else {
        return;
    };
    let dir = std::path::Path::new(&inputs.config.dir);
    let now = super::observe::unix_now();
    let out = crate::backup::s3::sync(s3, dir, &l.cluster_id, now, &inputs.config.retention).await;
    for k in &out.pruned {
        tracing::info!("retention: deleted s3://{}/{k}", s3.bucket);
    }
    let st = l.status.s3.get_or_insert_with(UploadStatus::default);
    if st.bucket != s3.bucket {
        *st = UploadStatus {
            bucket: s3.bucket.clone(),
            ..Default::default()
        };
    }
    if out.newest.as_ref().map(|n| &n.key) != st.last_uploaded.as_ref().map(|n| &n.key) {
        st.last_uploaded = out.newest;
    }
    let newest_pending = l
        .status
        .last_good
        .as_ref()
        .and_then(|m| std::path::Path::new(&m.path).file_name())
        .is_some_and(|n| out.pending.iter().any(|p| std::ffi::OsStr::new(p) == n));
    st.pending = out.pending;
    let retry = RETRY_AFTER.min(Duration::from_secs(inputs.config.interval_seconds));
    match out.error {
        Some(error) => {
            tracing::error!(
                "S3 upload failed ({} snapshot(s) kept on disk, pending): {error}",
                st.pending.len()
            );
            st.last_failure = Some(BackupFailure {
                at: super::observe::unix_now(),
                node: name.to_owned(),
                error,
                request: request.filter(|_| newest_pending).map(str::to_owned),
            });
            l.s3_next = Some(Instant::now() + retry);
        }
        None => {
            st.last_failure = None;
            l.s3_next = Some(
                Instant::now()
                    + if st.pending.is_empty() {
                        S3_EVERY
                    } else {
                        retry
                    },
            );
        }
    }
}

async fn snapshot(
    cluster: &Cluster,
    name: &str,
    inputs: &TakerInputs,
    members: &[Member],
    cluster_id: &str,
    request: Option<String>,
) -> anyhow::Result<Manifest> {
    let health = cluster.voter_health(members, HEALTH_TIMEOUT).await;
    let Some(member) = take::pick_voter(members, &health, name) else {
        anyhow::bail!("no healthy voter with a client URL to stream a snapshot from");
    };
    take::take(Take {
        cluster_id,
        dir: std::path::Path::new(&inputs.config.dir),
        member,
        tls: cluster.tls(),
        node: name,
        now: super::observe::unix_now,
        request,
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(taken_at: u64) -> Manifest {
        Manifest {
            cluster_id: "c".into(),
            revision: 1,
            keys: 1,
            size: 1,
            sha256: String::new(),
            taken_at,
            member: "m".into(),
            member_id: "1".into(),
            node: "n".into(),
            path: "/x".into(),
            request: None,
        }
    }

    #[test]
    fn due_on_the_interval_and_not_straight_after_a_failure() {
        let mut c = BackupConfig {
            enabled: true,
            interval_seconds: 600,
            ..Default::default()
        };
        assert!(due(&c, None, 1000, None));
        assert!(!due(&c, Some(&manifest(1000)), 1599, None));
        assert!(due(&c, Some(&manifest(1000)), 1600, None));
        assert!(!due(&c, None, 1000, Some(Duration::from_secs(59))));
        assert!(due(&c, None, 1000, Some(Duration::from_secs(60))));
        c.interval_seconds = 10;
        assert!(
            due(&c, None, 1000, Some(Duration::from_secs(10))),
            "a short interval retries sooner"
        );
        assert!(
            !due(&c, Some(&manifest(5000)), 1000, None),
            "a snapshot from the future is recent"
        );
        c.enabled = false;
        assert!(!due(&c, None, 1000, None));
    }
}
