//! The agent: a level-triggered reconcile loop. Each iteration observes the
//! desired role (watched), the cluster config (watched), the member list
//! (from a real member), the local units and files; asks the planner for
//! the next step; takes that one step; and rewrites the node's status when
//! it changed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use deckhand_etcd::{Cluster, KeyEvent, LeaseKeeper, LockOutcome, Member};
use deckhand_model::{ClusterConfig, EtcdMode, EtcdStatus, Keyspace, NodeStatus, Role};
use deckhand_plan::{ClusterView, LockView, MemberView, NodeView, Observation, Replacement, Step};
use deckhand_systemd::{Systemd, notify};
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use tokio::sync::mpsc;

use crate::config::Settings;
use crate::identity::{self, Identity};
use crate::local::{Local, STATE_DIR};
use crate::planes::{Fence, Planes, PlanesOutcome};

/// Timeout of one etcd request made by the loop.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a promotion is retried within one step before re-observing.
const PROMOTE_SLICE: Duration = Duration::from_secs(8);
/// Longest idle wait between two iterations (also bounds watchdog pings).
const IDLE_TICK: Duration = Duration::from_secs(5);
/// READY is sent after this long even if no voter answered yet, so that a
/// cluster whose members boot far apart still gets its agents started.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// How many notable events the status keeps.
const EVENTS_KEPT: usize = 5;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The planner's view of `members`, with the health of those in `health`
/// (member id, healthy) and unknown health for the others.
fn member_views(members: &[Member], health: &[(u64, bool)]) -> Vec<MemberView> {
    members
        .iter()
        .map(|m| MemberView {
            id: m.id,
            name: m.name.clone(),
            peer_urls: m.peer_urls.clone(),
            client_urls: m.client_urls.clone(),
            is_learner: m.is_learner,
            healthy: health.iter().find(|(id, _)| *id == m.id).map(|(_, h)| *h),
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Source {
    Role,
    Config,
    /// `config/planes/` (prefix).
    Planes,
    /// `elections/` (prefix): only wakes the loop up.
    Elections,
}

/// Runs the agent until SIGTERM or SIGINT.
///
/// # Errors
/// Start-up failures (no D-Bus, bad identity); the loop itself never returns
/// an error, it reports errors in the status.
pub async fn run(settings: Settings) -> Result<()> {
    let identity = identity::detect(&settings).context("detecting this node's identity")?;
    tracing::info!(
        "deckhand agent starting: node {} ({}) at {}",
        identity.name,
        identity.id,
        identity.address
    );
    let systemd = Systemd::connect()
        .await
        .context("connecting to systemd over D-Bus (is this a systemd host?)")?;
    let local = Local {
        systemd,
        identity: identity.clone(),
        settings: settings.clone(),
        state_dir: STATE_DIR.into(),
    };
    let cluster = Cluster::connect(&settings.endpoints, REQUEST_TIMEOUT)
        .await
        .context("setting up the etcd cluster client")?;
    // Keys, watches and the lease go through localhost:2379, which the
    // local member or proxy serves on every node; a restart of either
    // breaks a stream for a moment, and the watches resume from their
    // revision. Membership requests go to real members (`cluster`).
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(5), REQUEST_TIMEOUT);
    let kv = etcd_client::Client::connect([crate::local::LOCALHOST_CLIENT_URL], Some(opts))
        .await
        .context("setting up the local etcd client")?;
    let ks = Keyspace::new(&settings.key_prefix);
    let (wanted_tx, wanted_rx) = tokio::sync::watch::channel((BTreeSet::new(), 0));
    let (images_tx, images_rx) = tokio::sync::watch::channel(Default::default());
    let (socket, pull_options) = crate::images::pull_options(&settings);
    tokio::spawn(crate::images::run(
        socket,
        pull_options,
        wanted_rx,
        images_tx,
    ));
    let (_, no_renewals) = tokio::sync::watch::channel(None);
    let fence = Fence::spawn(local.systemd.clone(), no_renewals);
    let planes = Planes::new(
        local.systemd.clone(),
        ks.clone(),
        identity.name.clone(),
        std::path::Path::new(STATE_DIR),
        fence,
        wanted_tx,
        images_rx,
    );
    let mut agent = Agent::new(local, identity, ks, cluster, kv, planes);
    agent.start_background();

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut images = agent.planes.images_watch();
    let started = Instant::now();
    let mut ready = false;
    loop {
        let outcome = agent.iterate().await;
        let _ = notify::watchdog();
        if !ready && (outcome.observed_cluster || started.elapsed() > READY_DEADLINE) {
            let _ = notify::ready();
            ready = true;
        }
        let _ = notify::status(&agent.status_line());
        let pause = match &outcome.step {
            Some(step) if !step.is_idle() && outcome.step_ok => Duration::from_millis(100),
            Some(Step::Wait(_)) => Duration::from_secs(1),
            _ if !outcome.step_ok => Duration::from_secs(2),
            // Plane units starting or stopping: look again soon.
            _ if !agent.planes_outcome.settled => Duration::from_secs(1),
            _ => IDLE_TICK,
        };
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(pause) => {}
            ev = agent.events.recv() => {
                if let Some((src, ev)) = ev { agent.on_event(src, ev); }
            }
            // An image arrived or failed: its plane's units may start.
            Ok(()) = images.changed() => {}
        }
        // Drain whatever else arrived, so one iteration sees it all.
        while let Ok((src, ev)) = agent.events.try_recv() {
            agent.on_event(src, ev);
        }
    }
    let _ = notify::stopping();
    // Singletons first: revoking the lease lets another node start them.
    agent.planes.stop_singletons().await;
    tracing::info!("stopping; revoking the node lease");
    if let Some(k) = agent.keeper.take() {
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, k.revoke()).await;
    }
    Ok(())
}

struct Outcome {
    step: Option<Step>,
    step_ok: bool,
    observed_cluster: bool,
}

struct Agent {
    local: Local,
    identity: Identity,
    ks: Keyspace,
    cluster: Cluster,
    /// Client of localhost:2379 for keys, watches and the lease.
    kv: etcd_client::Client,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    events: mpsc::Receiver<(Source, KeyEvent)>,
    events_tx: mpsc::Sender<(Source, KeyEvent)>,
    keeper: Option<LeaseKeeper>,
    keeper_ttl: u64,
    /// Last valid desired role and the mod revision of its key.
    desired: Option<(Role, i64)>,
    /// The role key has been read at least once (absent or present).
    role_seen: bool,
    role_error: Option<String>,
    config: ClusterConfig,
    config_error: Option<String>,
    step_error: Option<String>,
    last_step: Option<Step>,
    last_mode: EtcdMode,
    written: Option<(NodeStatus, i64)>,
    /// The `nodes/<id>/name` key has been written by this process.
    name_written: bool,
    /// While this agent holds the replacer lock: what the replacer did last.
    replacer_note: Option<String>,
    /// Nodes the replacer saw dead, since when (node id → first seen).
    dead_since: std::collections::HashMap<String, Instant>,
    /// Consecutive failed health checks per voter (member id → count).
    unhealthy_streak: std::sync::Mutex<std::collections::HashMap<u64, u32>>,
    /// Learner records were present at the last look.
    learner_records_seen: bool,
    /// Notable events (reaped learners, removed stale entries), newest last,
    /// at most `EVENTS_KEPT`; shown in status.
    events_log: Vec<String>,
    /// Plane units, elections, fence and images.
    planes: Planes,
    /// What the last plane pass found.
    planes_outcome: PlanesOutcome,
}

impl Agent {
    fn new(
        local: Local,
        identity: Identity,
        ks: Keyspace,
        cluster: Cluster,
        kv: etcd_client::Client,
        planes: Planes,
    ) -> Agent {
        let (events_tx, events) = mpsc::channel(64);
        Agent {
            local,
            identity,
            ks,
            cluster,
            kv,
            tasks: Vec::new(),
            events,
            events_tx,
            keeper: None,
            keeper_ttl: 0,
            desired: None,
            role_seen: false,
            role_error: None,
            config: ClusterConfig::default(),
            config_error: None,
            step_error: None,
            last_step: None,
            last_mode: EtcdMode::None,
            written: None,
            name_written: false,
            learner_records_seen: false,
            unhealthy_streak: Default::default(),
            replacer_note: None,
            dead_since: Default::default(),
            events_log: Vec::new(),
            planes,
            planes_outcome: PlanesOutcome::default(),
        }
    }

    /// (Re)starts the watches and the lease keeper on the cluster's client.
    fn start_background(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let client = self.kv.clone();
        for (src, key, prefix) in [
            (Source::Role, self.ks.role(&self.identity.id), false),
            (Source::Config, self.ks.cluster_config(), false),
            (Source::Planes, self.ks.planes(), true),
            (Source::Elections, self.ks.elections(), true),
        ] {
            let mut rx = deckhand_etcd::watch_key(client.clone(), key, prefix);
            let tx = self.events_tx.clone();
            self.tasks.push(tokio::spawn(async move {
                while let Some(ev) = rx.recv().await {
                    if tx.send((src, ev)).await.is_err() {
                        break;
                    }
                }
            }));
        }
        let keeper = LeaseKeeper::spawn(client, self.config.lease_ttl_seconds as i64);
        self.planes.fence.follow(keeper.renewals());
        self.keeper = Some(keeper);
        self.keeper_ttl = self.config.lease_ttl_seconds;
        self.written = None;
    }

    fn on_event(&mut self, src: Source, ev: KeyEvent) {
        match src {
            Source::Planes => return self.planes.on_event(ev),
            Source::Elections => return,
            Source::Role | Source::Config => {}
        }
        let value = match ev {
            KeyEvent::Snapshot { kvs, .. } => kvs.into_iter().next().map(|(_, v, rev)| (v, rev)),
            KeyEvent::Put {
                value,
                mod_revision,
                ..
            } => Some((value, mod_revision)),
            KeyEvent::Delete { .. } => None,
        };
        match src {
            Source::Role => {
                self.role_seen = true;
                match value {
                    None => {
                        self.desired = None;
                        self.role_error = None;
                    }
                    Some((v, rev)) => match Role::parse(&v) {
                        Ok(role) => {
                            tracing::info!("desired role {role} (revision {rev})");
                            self.desired = Some((role, rev));
                            self.role_error = None;
                        }
                        Err(e) => {
                            tracing::warn!("ignoring malformed role key (revision {rev}): {e}");
                            self.role_error = Some(format!(
                                "role key {} (revision {rev}) rejected: {e}; keeping the previous role",
                                self.ks.role(&self.identity.id)
                            ));
                        }
                    },
                }
            }
            Source::Config => match value {
                None => {
                    self.config = ClusterConfig::default();
                    self.config_error = None;
                }
                Some((v, rev)) => match ClusterConfig::parse(&v) {
                    Ok(c) => {
                        self.config = c;
                        self.config_error = None;
                    }
                    Err(e) => {
                        tracing::warn!("ignoring invalid cluster config (revision {rev}): {e}");
                        self.config_error = Some(format!(
                            "cluster config {} (revision {rev}) rejected: {e}; keeping the previous config",
                            self.ks.cluster_config()
                        ));
                    }
                },
            },
            Source::Planes | Source::Elections => {}
        }
    }

    async fn observe_cluster(&self, members: &[Member], need_health: bool) -> ClusterView {
        let mut leader = None;
        let mut candidates: Vec<String> = vec![self.identity.client_url()];
        candidates.extend(
            members
                .iter()
                .filter(|m| !m.is_learner)
                .flat_map(|m| m.client_urls.clone()),
        );
        for ep in candidates {
            if let Ok(st) = Cluster::endpoint_status(&ep, Duration::from_secs(1)).await
                && st.leader != 0
                && !st.is_learner
            {
                leader = Some(st.leader);
                break;
            }
        }
        let health = if need_health {
            self.cluster
                .voter_health(members, Duration::from_secs(2))
                .await
        } else {
            Vec::new()
        };
        // A proxy drops a voter from its endpoints only after two failed
        // checks in a row, so that a member's restart does not bounce every
        // proxy twice; until then its health counts as unknown.
        let damp = !members
            .iter()
            .any(|m| m.has_peer_url(&self.identity.peer_url()));
        let mut streak = self
            .unhealthy_streak
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        streak.retain(|id, _| members.iter().any(|m| m.id == *id));
        let mut views = member_views(members, &health);
        for v in &mut views {
            let count = streak.entry(v.id).or_default();
            if v.healthy == Some(false) {
                *count += 1;
                if damp && *count < 2 {
                    v.healthy = None;
                }
            } else {
                *count = 0;
            }
        }
        drop(streak);
        ClusterView {
            members: views,
            leader,
        }
    }

    async fn lock_view(&self) -> LockView {
        let mut client = self.kv.clone();
        match tokio::time::timeout(REQUEST_TIMEOUT, client.get(self.ks.membership_lock(), None))
            .await
        {
            Ok(Ok(resp)) => match resp.kvs().first() {
                None => LockView::Free,
                Some(kv) if kv.value() == self.identity.id.as_bytes() => LockView::Mine,
                Some(kv) => LockView::Other(String::from_utf8_lossy(kv.value()).into_owned()),
            },
            _ => LockView::Other(
                "? (the lock could not be read: localhost:2379 did not answer)".into(),
            ),
        }
    }

    async fn observe(&mut self) -> Result<Observation> {
        let local = self
            .local
            .observe()
            .await
            .context("reading local unit states over D-Bus")?;
        // No outer timeout: each attempt is bounded, and the list moves on to
        // the next member when one does not answer.
        let members = match self.cluster.member_list().await {
            Ok(m) if !m.is_empty() => Some(m),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!("member list failed: {e}");
                None
            }
        };
        let me_peer = self.identity.peer_url();
        let cluster = match &members {
            Some(members) => {
                let me = members.iter().find(|m| m.has_peer_url(&me_peer));
                let wants_proxy = self
                    .desired
                    .as_ref()
                    .is_some_and(|(r, _)| r.etcd == deckhand_model::EtcdRole::Proxy);
                let lost_data = !local.member_unit_active
                    && local.member_env.is_none()
                    && !local.data_dir_exists;
                let namesake = members
                    .iter()
                    .any(|m| m.name == self.identity.name && !m.has_peer_url(&me_peer));
                // Proxies check the voters too: they point only at healthy ones.
                let need_health = namesake
                    || me.is_none()
                    || me.is_some_and(|m| m.is_learner || wants_proxy || lost_data);
                Some(self.observe_cluster(members, need_health).await)
            }
            None => None,
        };
        let lock = if cluster.is_some() {
            self.lock_view().await
        } else {
            LockView::Free
        };
        let now = unix_now();
        let learner_since = match &members {
            Some(m) => self.learner_records(m, now).await,
            None => Default::default(),
        };
        let s = &self.local.settings;
        Ok(Observation {
            node_name: self.identity.name.clone(),
            peer_url: me_peer,
            desired: self.desired.as_ref().map(|(r, _)| r.clone()),
            in_initial_cluster: s
                .initial_cluster
                .iter()
                .any(|(n, u)| *n == self.identity.name || *u == self.identity.peer_url()),
            config_endpoints: s.endpoints.clone(),
            min_voters: self.config.min_voters,
            local,
            cluster,
            lock,
            now,
            learner_timeout: self.config.learner_timeout_seconds,
            learner_since,
        })
    }

    /// When each pending learner was first seen, from the `learners/` keys:
    /// records a learner that has none (create-if-absent, so the earliest
    /// sighting wins) and deletes the records of members that are no longer
    /// learners. Reads nothing while no learner is pending and no record is
    /// known.
    async fn learner_records(&mut self, members: &[Member], now: u64) -> BTreeMap<u64, u64> {
        let learners: Vec<u64> = members
            .iter()
            .filter(|m| m.is_learner)
            .map(|m| m.id)
            .collect();
        if learners.is_empty() && !self.learner_records_seen {
            return BTreeMap::new();
        }
        let mut client = self.kv.clone();
        let prefix = self.ks.learners();
        let get = client.get(
            prefix.clone(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        );
        let Ok(Ok(resp)) = tokio::time::timeout(REQUEST_TIMEOUT, get).await else {
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        for kv in resp.kvs() {
            let Some(id) = kv
                .key_str()
                .ok()
                .and_then(|k| k.strip_prefix(prefix.as_str()))
                .and_then(|h| u64::from_str_radix(h, 16).ok())
            else {
                continue;
            };
            let since = String::from_utf8_lossy(kv.value())
                .trim()
                .parse()
                .unwrap_or(now);
            if learners.contains(&id) {
                out.insert(id, since);
            } else {
                let _ =
                    tokio::time::timeout(REQUEST_TIMEOUT, client.delete(kv.key().to_vec(), None))
                        .await;
            }
        }
        let missing: Vec<u64> = learners
            .iter()
            .copied()
            .filter(|id| !out.contains_key(id))
            .collect();
        for id in &missing {
            let key = self.ks.learner(*id);
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, now.to_string(), None)]);
            if let Ok(Ok(_)) = tokio::time::timeout(REQUEST_TIMEOUT, client.txn(txn)).await {
                out.insert(*id, now);
            }
        }
        self.learner_records_seen = !learners.is_empty();
        out
    }

    async fn refresh_endpoints(&mut self, o: &Observation) {
        let Some(c) = &o.cluster else { return };
        let voters = c.voter_client_urls();
        if voters.is_empty() {
            return;
        }
        let mut current = self.cluster.endpoints();
        current.sort();
        if current != voters {
            tracing::info!("voter set changed; reconnecting to {}", voters.join(","));
            if let Err(e) = self.cluster.set_endpoints(&voters).await {
                tracing::warn!("could not switch endpoints: {e}");
            }
        }
    }

    async fn iterate(&mut self) -> Outcome {
        let o = match self.observe().await {
            Ok(o) => o,
            Err(e) => {
                self.step_error = Some(format!("{e:#}"));
                tracing::error!("observation failed: {e:#}");
                return Outcome {
                    step: None,
                    step_ok: false,
                    observed_cluster: false,
                };
            }
        };
        self.refresh_endpoints(&o).await;
        if self.keeper_ttl != self.config.lease_ttl_seconds {
            tracing::info!(
                "lease TTL changed to {} s; granting a new lease",
                self.config.lease_ttl_seconds
            );
            if let Some(k) = self.keeper.take() {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, k.revoke()).await;
            }
            self.start_background();
        }
        let step = deckhand_plan::plan(&o);
        if !step.is_idle() {
            tracing::info!("taking step: {step}");
        } else if Some(&step) != self.last_step.as_ref() {
            tracing::info!("{step}");
        }
        if !step.is_idle() {
            crate::failpoint::hit(&format!("before-{}", step.kind()));
        }
        let result = self.act(&step, &o).await;
        if result.is_ok() && !step.is_idle() {
            crate::failpoint::hit(&format!("after-{}", step.kind()));
        }
        let step_ok = match result {
            Ok(()) => {
                if !step.is_idle() || step == Step::Converged {
                    self.step_error = None;
                }
                true
            }
            Err(e) => {
                let msg = format!("{step} failed on node {}: {e:#}", self.identity.name);
                tracing::error!("{msg}");
                self.step_error = Some(msg);
                false
            }
        };
        self.last_mode = deckhand_plan::etcd_mode(&o);
        let lease = self
            .keeper
            .as_ref()
            .map(|k| *k.lease().borrow())
            .unwrap_or(0);
        let my_planes: BTreeSet<_> = self
            .desired
            .as_ref()
            .map(|(r, _)| r.planes.clone())
            .unwrap_or_default();
        let mut kv = self.kv.clone();
        self.planes_outcome = self
            .planes
            .reconcile(&mut kv, lease, &my_planes, &self.config)
            .await;
        let observed_cluster = o.cluster.is_some();
        if observed_cluster {
            self.ensure_role_key(&o).await;
            self.write_status(&o, &step).await;
        }
        if observed_cluster && o.lock != LockView::Mine {
            self.replacer().await;
        }
        self.last_step = Some(step.clone());
        Outcome {
            step: Some(step),
            step_ok,
            observed_cluster,
        }
    }

    /// Writes the node's current etcd role into an absent role key, so that
    /// operators see every node's role in one place. Never overwrites.
    async fn ensure_role_key(&mut self, o: &Observation) {
        if !self.name_written {
            let mut client = self.kv.clone();
            let put = client.put(
                self.ks.name(&self.identity.id),
                self.identity.name.clone(),
                None,
            );
            self.name_written =
                matches!(tokio::time::timeout(REQUEST_TIMEOUT, put).await, Ok(Ok(_)));
        }
        if !self.role_seen || self.desired.is_some() || self.role_error.is_some() {
            return;
        }
        let mode = deckhand_plan::etcd_mode(o);
        if !matches!(mode, EtcdMode::Member | EtcdMode::Proxy) {
            return;
        }
        let role = Role::new(deckhand_plan::target_role(o));
        let key = self.ks.role(&self.identity.id);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, role.to_json(), None)]);
        let mut client = self.kv.clone();
        if let Ok(Ok(r)) = tokio::time::timeout(REQUEST_TIMEOUT, client.txn(txn)).await
            && r.succeeded()
        {
            tracing::info!("wrote the initial role key: {role}");
        }
    }

    async fn act(&mut self, step: &Step, o: &Observation) -> Result<()> {
        let lease = self
            .keeper
            .as_ref()
            .map(|k| *k.lease().borrow())
            .unwrap_or(0);
        match step {
            Step::Converged | Step::Wait(_) | Step::Blocked(_) => Ok(()),
            Step::BootstrapMember => self.local.bootstrap_member().await,
            Step::StartMember => self.local.start_member().await,
            Step::StartProxy { endpoints } => self.local.start_proxy(endpoints, false).await,
            Step::UpdateProxy { endpoints } => self.local.start_proxy(endpoints, true).await,
            Step::AcquireLock => {
                anyhow::ensure!(lease != 0, "no lease yet to attach the membership lock to");
                let mut client = self.kv.clone();
                match deckhand_etcd::try_lock(
                    &mut client,
                    &self.ks.membership_lock(),
                    &self.identity.id,
                    lease,
                )
                .await?
                {
                    LockOutcome::Acquired => Ok(()),
                    LockOutcome::HeldBy(owner) => {
                        tracing::info!("membership lock is held by node {owner}");
                        Ok(())
                    }
                }
            }
            Step::ReleaseLock => {
                let mut client = self.kv.clone();
                Ok(deckhand_etcd::unlock(
                    &mut client,
                    &self.ks.membership_lock(),
                    &self.identity.id,
                )
                .await?)
            }
            Step::AddLearner => {
                let added = self.cluster.add_learner(&self.identity.peer_url()).await?;
                tracing::info!(
                    "learner {:x} registered{}",
                    added.member.id,
                    if added.reused {
                        " (reused the existing entry)"
                    } else {
                        ""
                    }
                );
                Ok(())
            }
            Step::StartLearner {
                id,
                initial_cluster,
                move_aside,
            } => {
                self.local
                    .start_learner(*id, initial_cluster, *move_aside)
                    .await
            }
            Step::Promote { id } => {
                match self.cluster.promote_until_in_sync(*id, PROMOTE_SLICE).await {
                    Ok(()) => {
                        tracing::info!("learner {id:x} promoted to voter");
                        Ok(())
                    }
                    Err(deckhand_etcd::Error::LearnerNotInSync { .. }) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            Step::ServeLocalhostFromMember { .. } => self.local.serve_localhost_from_member().await,
            Step::TransferLeadership { to, .. } => Ok(self.cluster.move_leader(*to).await?),
            Step::RemoveSelf { id } => {
                let others: Vec<String> = o
                    .cluster
                    .as_ref()
                    .map(|c| c.voter_client_urls())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|u| *u != self.identity.client_url())
                    .collect();
                anyhow::ensure!(!others.is_empty(), "no other voter to send the removal to");
                let via = Cluster::connect(&others, REQUEST_TIMEOUT).await?;
                via.member_list().await?; // settles on a member that answers
                via.remove(*id).await?;
                tracing::warn!("removed this node's member {id:x} from the cluster");
                Ok(())
            }
            Step::RemoveMember { id, why } => {
                self.cluster.remove(*id).await?;
                tracing::warn!("removed member {id:x}: {why}");
                self.event(format!("removed member {id:x}: {why}"));
                Ok(())
            }
            Step::StopMember => {
                // The member list is not linearizable: confirm once more
                // that this node's member is gone before stopping it.
                let members = self.cluster.member_list().await?;
                if members
                    .iter()
                    .any(|m| m.has_peer_url(&self.identity.peer_url()))
                {
                    tracing::info!("member is listed again; not stopping it");
                    return Ok(());
                }
                self.local.stop_member().await
            }
            Step::MoveDataDirAside => {
                self.local.move_data_dir_aside()?;
                Ok(())
            }
        }
    }

    /// The replacer: with `voters` set in the cluster config, the agent
    /// holding the replacer lock keeps that many healthy voters (see
    /// `deckhand_plan::plan_replacement`). Skipped while this node's own
    /// membership change holds the membership lock.
    async fn replacer(&mut self) {
        let lease = self
            .keeper
            .as_ref()
            .map(|k| *k.lease().borrow())
            .unwrap_or(0);
        let key = self.ks.replacer_lock();
        let mut kv = self.kv.clone();
        let Some(target) = self.config.voters else {
            if self.replacer_note.take().is_some() {
                let _ = deckhand_etcd::unlock(&mut kv, &key, &self.identity.id).await;
            }
            return;
        };
        if lease == 0 {
            return;
        }
        match deckhand_etcd::try_lock(&mut kv, &key, &self.identity.id, lease).await {
            Ok(LockOutcome::Acquired) => {}
            _ => {
                self.replacer_note = None;
                self.dead_since.clear();
                return;
            }
        }
        let nodes = match crate::nodes::read_nodes(&mut kv, &self.ks).await {
            Ok(n) => n,
            Err(e) => {
                self.replacer_note = Some(format!("cannot read the nodes: {e:#}"));
                return;
            }
        };
        let members: Vec<Member> = match self.cluster.member_list().await {
            Ok(m) => m,
            Err(e) => {
                self.replacer_note = Some(format!("cannot read the member list: {e}"));
                return;
            }
        };
        let health = self
            .cluster
            .voter_health(&members, Duration::from_secs(2))
            .await;
        let member_views = member_views(&members, &health);
        let now = Instant::now();
        self.dead_since
            .retain(|id, _| nodes.get(id).is_some_and(|k| k.status.is_none()));
        let node_views: Vec<NodeView> = nodes
            .iter()
            .map(|(id, k)| {
                let alive = k.status.is_some();
                let dead_for = if alive {
                    0
                } else {
                    now.duration_since(*self.dead_since.entry(id.clone()).or_insert(now))
                        .as_secs()
                };
                let role = k.role();
                NodeView {
                    id: id.clone(),
                    name: k.display_name(),
                    alive,
                    dead_for,
                    mode: k
                        .status
                        .as_ref()
                        .map(|s| s.etcd.mode)
                        .unwrap_or(EtcdMode::None),
                    desired: role.as_ref().map(|r| r.etcd),
                    converged: k.status.as_ref().is_some_and(|s| s.converged),
                    blocked: k.status.as_ref().is_some_and(|s| s.blocked.is_some()),
                    control_plane: role
                        .as_ref()
                        .is_some_and(|r| r.planes.contains(&deckhand_model::Plane::Control)),
                    failure_domain: k.status.as_ref().and_then(|s| s.failure_domain.clone()),
                }
            })
            .collect();
        let action = deckhand_plan::plan_replacement(
            target,
            self.config.dead_grace_seconds,
            &member_views,
            &node_views,
        );
        let note = match action {
            Replacement::Idle => format!("keeping {target} voters: nothing to do"),
            Replacement::Wait(w) => w,
            Replacement::Blocked(b) => format!("blocked: {b}"),
            Replacement::RemoveDead {
                member_id,
                node,
                why,
            } => {
                let lock = self.ks.membership_lock();
                match deckhand_etcd::try_lock(&mut kv, &lock, &self.identity.id, lease).await {
                    Ok(LockOutcome::Acquired) => {}
                    Ok(LockOutcome::HeldBy(owner)) => {
                        self.replacer_note = Some(format!(
                            "waiting for the membership lock held by node {owner}"
                        ));
                        return;
                    }
                    Err(e) => {
                        self.replacer_note = Some(format!("cannot take the membership lock: {e}"));
                        return;
                    }
                }
                let result = self.cluster.remove(member_id).await;
                if result.is_ok()
                    && let Some(node) = &node
                {
                    let planes = nodes
                        .get(node)
                        .and_then(|k| k.role())
                        .map(|r| r.planes)
                        .unwrap_or_default();
                    let role = Role {
                        etcd: deckhand_model::EtcdRole::Proxy,
                        planes,
                    };
                    let _ = kv.put(self.ks.role(node), role.to_json(), None).await;
                }
                let _ = deckhand_etcd::unlock(&mut kv, &lock, &self.identity.id).await;
                match result {
                    Ok(()) => {
                        let msg = format!(
                            "replacer removed member {member_id:x}: {why}; its role key now says proxy"
                        );
                        tracing::warn!("{msg}");
                        self.event(msg.clone());
                        msg
                    }
                    Err(e) => format!("removing dead member {member_id:x} failed: {e}"),
                }
            }
            Replacement::Promote { node, why } => {
                let planes = nodes
                    .get(&node)
                    .and_then(|k| k.role())
                    .map(|r| r.planes)
                    .unwrap_or_default();
                let role = Role {
                    etcd: deckhand_model::EtcdRole::Member,
                    planes,
                };
                match kv.put(self.ks.role(&node), role.to_json(), None).await {
                    Ok(_) => {
                        let msg = format!("replacer set node {node}'s role to member: {why}");
                        tracing::warn!("{msg}");
                        self.event(msg.clone());
                        msg
                    }
                    Err(e) => format!("setting node {node}'s role failed: {e}"),
                }
            }
        };
        if self.replacer_note.as_ref() != Some(&note) {
            tracing::info!("replacer: {note}");
        }
        self.replacer_note = Some(note);
    }

    /// Records a notable event for the status (the newest `EVENTS_KEPT`).
    fn event(&mut self, what: String) {
        self.events_log.push(what);
        let extra = self.events_log.len().saturating_sub(EVENTS_KEPT);
        self.events_log.drain(..extra);
    }

    fn status_line(&self) -> String {
        let desired = self
            .desired
            .as_ref()
            .map(|(r, _)| r.to_string())
            .unwrap_or_else(|| "-".into());
        match &self.last_step {
            Some(step) => format!("desired {desired}; etcd {}; {step}", self.last_mode),
            None => format!("desired {desired}; starting"),
        }
    }

    async fn write_status(&mut self, o: &Observation, step: &Step) {
        let Some(keeper) = &self.keeper else { return };
        let lease = *keeper.lease().borrow();
        if lease == 0 {
            return;
        }
        let mode = deckhand_plan::etcd_mode(o);
        let me = o.me();
        let applied = match mode {
            EtcdMode::Member => Some(Role::new(deckhand_model::EtcdRole::Member)),
            EtcdMode::Proxy => Some(Role::new(deckhand_model::EtcdRole::Proxy)),
            _ => None,
        };
        let desired_etcd = self.desired.as_ref().map(|(r, _)| r.etcd);
        let planes = &self.planes_outcome;
        let converged = *step == Step::Converged
            && planes.settled
            && applied.as_ref().map(|a| a.etcd) == Some(deckhand_plan::target_role(o))
            && desired_etcd.is_none_or(|d| Some(d) == applied.as_ref().map(|a| a.etcd));
        let applied = applied.map(|mut a| {
            // The planes applied: those whose units are settled.
            if planes.settled {
                a.planes = self
                    .desired
                    .as_ref()
                    .map(|(r, _)| r.planes.clone())
                    .unwrap_or_default();
            }
            a
        });
        let errors: Vec<String> = [
            self.role_error.clone(),
            self.config_error.clone(),
            self.step_error.clone(),
            planes.error.clone(),
        ]
        .into_iter()
        .flatten()
        .collect();
        let status = NodeStatus {
            id: self.identity.id.clone(),
            name: self.identity.name.clone(),
            address: self.identity.address.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            desired: self.desired.as_ref().map(|(r, _)| r.clone()),
            desired_revision: self.desired.as_ref().map(|(_, rev)| *rev).unwrap_or(0),
            applied,
            converged,
            etcd: EtcdStatus {
                mode,
                member_id: me.map(|m| format!("{:x}", m.id)),
                leader: me.is_some_and(|m| o.cluster.as_ref().and_then(|c| c.leader) == Some(m.id)),
            },
            step: if matches!(step, Step::Converged | Step::Blocked(_)) {
                planes.step.clone()
            } else {
                Some(step.to_string())
            },
            blocked: match step {
                Step::Blocked(r) => Some(r.clone()),
                _ => None,
            },
            error: (!errors.is_empty()).then(|| errors.join("; ")),
            failure_domain: self.local.settings.failure_domain.clone(),
            replacer: self.replacer_note.clone(),
            events: self.events_log.clone(),
            planes: planes.planes.clone(),
            images: planes.images.clone(),
        };
        if self.written.as_ref() == Some(&(status.clone(), lease)) {
            return;
        }
        let Ok(json) = serde_json::to_string(&status) else {
            return;
        };
        let mut client = self.kv.clone();
        let put = client.put(
            self.ks.status(&self.identity.id),
            json,
            Some(PutOptions::new().with_lease(lease)),
        );
        match tokio::time::timeout(REQUEST_TIMEOUT, put).await {
            Ok(Ok(_)) => self.written = Some((status, lease)),
            Ok(Err(e)) => tracing::warn!("writing status failed: {e}"),
            Err(_) => tracing::warn!("writing status timed out"),
        }
    }
}
