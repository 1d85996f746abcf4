//! `deckhand restore SNAPSHOT`: the disaster-recovery path, run as root on
//! each member node of a cluster that lost quorum or its data
//! (`docs/backup.md`, "Restore"). The files are [`crate::restore`]'s
//! work; here are the flags, the refusals' exit statuses and the units
//! around it: the agent, the proxy and the member are stopped (systemd,
//! as the agent does it) only once every check has passed and the new
//! data dir is ready beside the old one, and started again after.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use clap::Args;
use deckhand_etcd::Cluster;
use deckhand_systemd::Systemd;

use crate::agent::local::{JOB_TIMEOUT, MEMBER_UNIT, PROXY_UNIT, member_env};
use crate::exit::{self, Failure};
use crate::restore::{self, Checked, Refused, Request};
use crate::{config, paths, tls_enable};

/// The agent's unit (`units/deckhand.service`).
pub const AGENT_UNIT: &str = "deckhand.service";
/// How long each voter is asked whether a cluster still runs.
const LIVE_TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
/// Restore this node's etcd member from a snapshot into a new cluster (on each member node; docs/backup.md).
///
/// Run the same command, with the same SNAPSHOT (a copy of the same file)
/// and the same --members, on every member node, in any order; they need
/// no etcd and do not talk to each other. Each node:
///   1. checks, changing nothing on a refusal: the snapshot verifies
///      (etcd's appended SHA-256, `etcdctl snapshot status`, its
///      manifest FILE.json: revision, keys, size, SHA-256), the manifest
///      names the deckhand cluster expected (--cluster-id, else the
///      snapshot's folder name), --members names this node with its own
///      peer URL, and no voter on the config's endpoints still serves a
///      cluster with a leader (other than the one this restore makes);
///   2. restores the snapshot with `etcdctl snapshot restore` (--name,
///      --initial-cluster, --initial-advertise-peer-urls,
///      --initial-cluster-token) into <data dir>.restoring-<UTC time>;
///   3. stops deckhand.service, the proxy and the member unit; moves the
///      data dir aside to <data dir>.old-<UTC time> (never deleted) and
///      the new one into its place, owned as the data dir's parent;
///   4. writes the member environment with the new member's identity
///      (what the member unit's start check compares with when no other
///      voter answers), the agent's `bootstrapped` marker and
///      /var/lib/deckhand/restored.json; starts the member and the agent.
///
/// The first members started wait for the others (no quorum until a
/// majority runs). Re-running on a node restored from the same snapshot
/// says so and only starts what is stopped.
///
/// Exit status: 0 restored (or already); 2 bad arguments (--members, an
/// S3 key without --s3-settings); 65 the snapshot is refused (damaged,
/// truncated, not what its manifest says, another cluster's); 3 a voter
/// still serves a cluster with a leader (pass --force to restore anyway);
/// 78 the agent config cannot be used; 1 a step failed (printed, with
/// what was done so far).
pub struct RestoreArgs {
    /// The snapshot file (`<backup dir>/<cluster id>/<time>-rev<rev>.db`,
    /// its manifest beside it as FILE.json), or an S3 key
    /// (`s3://BUCKET/<prefix>/<cluster id>/<name>.db`, or `s3:<key>` for
    /// the bucket of --s3-settings), downloaded with its manifest to
    /// /var/lib/deckhand/restore/<cluster id>/ and verified first.
    pub snapshot: String,
    /// With an S3 key: the `backup.s3` settings as a JSON file
    /// (`{"bucket": ..., "endpoint": ..., "credentials_file": ...}`, as in
    /// the cluster config, which is gone with the cluster).
    #[arg(long)]
    pub s3_settings: Option<PathBuf>,
    /// Every member of the restored cluster, NAME=PEER_URL,... (the same on
    /// every node). Default: the agent config's etcd.initial_cluster.
    #[arg(long)]
    pub members: Option<String>,
    /// The deckhand cluster id the snapshot must be of (32 hex digits, the
    /// manifest's `cluster_id`). Default: the snapshot's folder name.
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// The new cluster's initial cluster token (the same on every node).
    /// Default: deckhand-restore-<first 16 hex digits of the snapshot's SHA-256>.
    #[arg(long)]
    pub initial_cluster_token: Option<String>,
    /// Restore even though a voter still serves a cluster with a leader.
    #[arg(long)]
    pub force: bool,
}

fn refused(r: Refused) -> Failure {
    match r {
        Refused::Snapshot(s) => Failure {
            code: exit::BAD_SNAPSHOT,
            error: anyhow!("refused, nothing changed: {s}"),
        },
        Refused::Usage(s) => Failure::usage(anyhow!("refused, nothing changed: {s}")),
    }
}

/// Runs `deckhand restore` with the agent config at `config_path`.
///
/// # Errors
/// See the command's exit status.
pub async fn restore(config_path: &Path, args: RestoreArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let snapshot = match restore::s3_key(&args.snapshot) {
        None => restore::resolve_snapshot(&args.snapshot).map_err(refused)?,
        Some(key) => download(key, args.s3_settings.as_deref()).await?,
    };
    let settings = config::load(config_path).map_err(Failure::config)?;
    let state_dir = PathBuf::from(paths::STATE_DIR);
    let config_tls = settings.tls.is_some();
    let stage = if config_tls {
        tls_enable::Stage::Https
    } else {
        tls_enable::read_stage(&state_dir)
    };
    let settings = tls_enable::apply(settings, stage);
    let mut identity = crate::identity::detect(&settings).map_err(Failure::failed)?;
    identity.tls = tls_enable::urls_are_https(config_tls, stage);
    let members = match &args.members {
        Some(m) => restore::parse_members(m).map_err(refused)?,
        None if settings.initial_cluster.is_empty() => {
            return Err(refused(Refused::Usage(
                "no --members and the agent config has no etcd.initial_cluster".into(),
            )));
        }
        None => settings.initial_cluster.clone(),
    };
    let c = restore::check(Request {
        snapshot,
        cluster_id: args.cluster_id.clone(),
        members,
        name: identity.name.clone(),
        peer_url: identity.peer_url(),
        token: args.initial_cluster_token.clone(),
        data_dir: settings.data_dir.clone(),
        state_dir: state_dir.clone(),
    })
    .await
    .map_err(refused)?;
    outln!(
        "snapshot {}: good: revision {}, {} keys, sha256 {}, deckhand cluster {}",
        c.request.snapshot.display(),
        c.verified.revision,
        c.verified.keys,
        c.verified.sha256,
        c.manifest.cluster_id
    );
    let systemd = Systemd::connect()
        .await
        .map_err(|e| Failure::failed(anyhow!("systemd: {e}")))?;
    if let Some(m) = &c.already {
        outln!(
            "already restored from this snapshot at {}: member {} of etcd cluster {}; nothing moved",
            crate::tls::utc(m.restored_at),
            m.member_id,
            m.etcd_cluster_id
        );
        start_units(&systemd).await?;
        return Ok(());
    }
    let tls = match &settings.tls {
        Some(t) => Some(crate::tls::load_node(t).map_err(Failure::config)?.client),
        None => None,
    };
    if !args.force {
        live_check(
            &settings.endpoints,
            &identity.client_url(),
            &c,
            tls.as_ref(),
        )
        .await?;
    }
    let now = crate::agent::observe::unix_now();
    let (prepared, id) = restore::prepare(&c, now).await.map_err(Failure::failed)?;
    outln!(
        "restored into {}: member {:x} ({}) of new etcd cluster {:x}, token {}",
        prepared.display(),
        id.member_id,
        c.request.name,
        id.cluster_id,
        c.token
    );
    let env = member_env(
        &identity,
        &settings,
        &c.initial_cluster,
        "new",
        true,
        Some(id.member_id),
        Some(id.cluster_id),
    )
    .map_err(Failure::failed)?;
    for unit in [AGENT_UNIT, PROXY_UNIT, MEMBER_UNIT] {
        systemd.stop(unit, JOB_TIMEOUT).await.map_err(|e| {
            Failure::failed(anyhow!(
                "stopping {unit}: {e} (the restored data dir waits at {}; nothing was moved)",
                prepared.display()
            ))
        })?;
        outln!("stopped {unit}");
    }
    let done = restore::install(&c, &prepared, &env, now).map_err(|e| {
        Failure::failed(anyhow!(
            "{e:#} (deckhand.service, the proxy and the member are stopped)"
        ))
    })?;
    match &done.data_dir_aside {
        Some(p) => outln!(
            "moved the old data dir {} aside to {}",
            c.request.data_dir.display(),
            p.display()
        ),
        None => outln!("there was no data dir at {}", c.request.data_dir.display()),
    }
    outln!(
        "installed the restored data dir at {}",
        c.request.data_dir.display()
    );
    start_units(&systemd).await?;
    outln!(
        "restored in {:.1} s; the member waits for a majority of {} (run this on each of them); `deckhand status` shows the cluster converge",
        started.elapsed().as_secs_f64(),
        c.initial_cluster
    );
    Ok(())
}

/// Starts the member (waited for: `Type=exec`) and queues the agent's
/// start without waiting (`Type=notify`: it is ready once it observed a
/// cluster, which needs a majority of the members restored).
async fn start_units(systemd: &Systemd) -> Result<(), Failure> {
    let _ = systemd.reset_failed(MEMBER_UNIT).await;
    systemd
        .start(MEMBER_UNIT, JOB_TIMEOUT)
        .await
        .map_err(|e| Failure::failed(anyhow!("starting {MEMBER_UNIT}: {e}")))?;
    outln!("started {MEMBER_UNIT}");
    let _ = systemd.reset_failed(AGENT_UNIT).await;
    systemd
        .queue_start(AGENT_UNIT)
        .await
        .map_err(|e| Failure::failed(anyhow!("starting {AGENT_UNIT}: {e}")))?;
    outln!("asked systemd to start {AGENT_UNIT}");
    Ok(())
}

/// Refuses ([`exit::BLOCKED`]) when a voter at `endpoints` (or this node's
/// own client URL) still serves a cluster with a leader that is not the
/// one this restore makes: restoring would split it.
async fn live_check(
    endpoints: &[String],
    own: &str,
    c: &Checked,
    tls: Option<&deckhand_etcd::Tls>,
) -> Result<(), Failure> {
    let mut eps: Vec<String> = endpoints.to_vec();
    eps.push(own.to_owned());
    eps.sort();
    eps.dedup();
    let mut asks = tokio::task::JoinSet::new();
    for ep in eps {
        let tls = tls.cloned();
        asks.spawn(async move {
            let st = Cluster::endpoint_status(&ep, LIVE_TIMEOUT, tls.as_ref()).await;
            (ep, st)
        });
    }
    while let Some(done) = asks.join_next().await {
        if let Ok((ep, Ok(st))) = done
            && st.leader != 0
            && st.cluster_id != c.identity.cluster_id
        {
            return Err(Failure {
                code: exit::BLOCKED,
                error: anyhow!(
                    "refused, nothing changed: {ep} still serves etcd cluster {:x} with leader {:x}: a restore replaces a cluster that lost quorum or its data, and would split this one (stop its members first, or pass --force)",
                    st.cluster_id,
                    st.leader
                ),
            });
        }
    }
    Ok(())
}

/// Downloads S3 snapshot `key` with its manifest into
/// `/var/lib/deckhand/restore/<cluster id>/` (the cluster id is the key's
/// folder, as the taker names them), verified
/// ([`crate::backup::s3::fetch_snapshot_from_s3`]).
///
/// # Errors
/// Usage (exit 2) without `--s3-settings` or for a key without a cluster
/// id folder; config (78) for bad settings; [`exit::BAD_SNAPSHOT`] when the
/// key or its manifest is missing or the object fails verification.
async fn download(key: &str, settings: Option<&Path>) -> Result<PathBuf, Failure> {
    let Some(settings) = settings else {
        return Err(Failure::usage(anyhow!(
            "refused, nothing changed: {key} is an S3 key: give --s3-settings FILE (the backup.s3 settings as JSON; the cluster config is gone with the cluster)"
        )));
    };
    let cfg = super::backup::s3_settings_file(settings)?;
    let path = key
        .strip_prefix("s3://")
        .map_or(key, |rest| rest.split_once('/').map_or(rest, |(_, k)| k));
    let cluster_id = path
        .rsplit('/')
        .nth(1)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            Failure::usage(anyhow!(
                "refused, nothing changed: S3 key {key} has no <cluster id>/ folder (keys are <prefix>/<cluster id>/<time>-rev<revision>.db)"
            ))
        })?;
    let dest = Path::new(paths::STATE_DIR).join("restore").join(cluster_id);
    std::fs::create_dir_all(&dest)
        .map_err(|e| Failure::failed(anyhow!("creating {}: {e}", dest.display())))?;
    let fetched = crate::backup::s3::fetch_snapshot_from_s3(&cfg, key, &dest).await;
    match fetched {
        Ok(p) => {
            outln!("downloaded {key} to {} and verified it", p.display());
            Ok(p)
        }
        Err(e) if e.downcast_ref::<crate::backup::Refusal>().is_some() => Err(Failure {
            code: exit::BAD_SNAPSHOT,
            error: anyhow!("refused, nothing changed: {e:#}"),
        }),
        Err(e) => Err(Failure::failed(e.context(format!("downloading {key}")))),
    }
}
