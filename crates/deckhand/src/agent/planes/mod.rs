//! The agent's plane units: reads the plane configs (watched), asks the
//! planner ([`deckhand_plan::plan_units`]) which units run here, campaigns
//! in singleton elections, starts and stops units (ordering drop-ins
//! first), and reports each unit's state. Singletons are fenced by
//! [`super::fence::Fence`]; the status summary of a pass is
//! [`summary`]. A node whose Docker daemon does not answer ([`docker`]), or
//! on which a singleton failed to start or stay up
//! [`deckhand_plan::planes::FAILED_STARTS`] times within
//! [`deckhand_plan::planes::FAILED_STARTS_WINDOW`], resigns its candidacy
//! when another node stands.

pub mod docker;
pub mod summary;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use deckhand_etcd::KeyEvent;
use deckhand_etcd::election::{self, ElectionView};
use deckhand_model::{Keyspace, Plane, PlaneConfig, UnitMode};
use deckhand_plan::{Standing, StartFailures, UnitObservation, UnitPlan, plan_units};
use deckhand_systemd::{Systemd, write_atomic};
use tokio::sync::watch;
use tokio::time::Instant;

pub use self::summary::PlanesOutcome;
use self::summary::{Summary, summarize};
use super::fence::Fence;
use super::images::{ImagesState, Wanted};
use super::local::JOB_TIMEOUT;
use crate::paths::{DROPIN_NAME, DROPIN_ROOT, MANAGED_UNITS};
/// The drop-in's text for a global unit: it starts after the boot-time
/// preseed and after Docker.
pub const DROPIN_GLOBAL: &str = "# Written by deckhand: plane units start after the boot-time image preseed.\n\
[Unit]\nAfter=deckhand-preseed.service docker.service\n";
/// The drop-in's text for a singleton unit: the same ordering, and the unit
/// is bound to the agent (`BindsTo=deckhand.service`): when the agent is
/// stopped or ends up inactive or failed, nothing fences the unit any more,
/// so systemd stops it. (An agent that crashes and is restarted stops it
/// itself on its first pass: its new lease does not lead the election.)
pub const DROPIN_SINGLETON: &str = "# Written by deckhand: plane units start after the boot-time image preseed;\n\
# a singleton runs only while the agent that fences it runs.\n\
[Unit]\nAfter=deckhand-preseed.service docker.service\nBindsTo=deckhand.service\n";

/// Shortest time between two starts of a plane unit that does not stay up.
pub const START_BACKOFF: Duration = Duration::from_secs(10);

/// The agent's plane state.
pub struct Planes {
    systemd: Systemd,
    ks: Keyspace,
    node_name: String,
    state_dir: PathBuf,
    dropin_root: PathBuf,
    /// The last valid config of each plane.
    configs: BTreeMap<Plane, PlaneConfig>,
    /// Rejected plane configs, in words.
    errors: BTreeMap<Plane, String>,
    /// Keys under `config/planes/` that name no plane.
    unknown: BTreeSet<String>,
    managed: BTreeSet<String>,
    /// When this process last started each unit.
    last_start: BTreeMap<String, Instant>,
    /// Drop-ins written by this process: unit → text.
    dropins: BTreeMap<String, &'static str>,
    /// Failed starts of each unit in this process (a start again without
    /// a stop by deckhand in between).
    failures: BTreeMap<String, StartFailures>,
    /// Singleton elections this process entered (campaigned in) and has
    /// not withdrawn from since.
    entered: BTreeSet<String>,
    /// The Docker probe's verdict (why the daemon counts as sick), once
    /// [`Planes::probe_docker`] started it.
    docker: Option<docker::DockerProbe>,
    /// The fence of this node's singleton units.
    pub fence: Fence,
    images_tx: watch::Sender<Wanted>,
    images: watch::Receiver<ImagesState>,
}

impl Planes {
    /// Plane state for this node; `images_tx` feeds the preseed worker the
    /// wanted images and `images` is its report.
    pub fn new(
        systemd: Systemd,
        ks: Keyspace,
        node_name: String,
        state_dir: &Path,
        fence: Fence,
        images_tx: watch::Sender<Wanted>,
        images: watch::Receiver<ImagesState>,
    ) -> Planes {
        let managed = std::fs::read(state_dir.join(MANAGED_UNITS))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Planes {
            systemd,
            ks,
            node_name,
            state_dir: state_dir.to_path_buf(),
            dropin_root: PathBuf::from(DROPIN_ROOT),
            configs: BTreeMap::new(),
            errors: BTreeMap::new(),
            unknown: BTreeSet::new(),
            managed,
            dropins: BTreeMap::new(),
            last_start: BTreeMap::new(),
            failures: BTreeMap::new(),
            entered: BTreeSet::new(),
            docker: None,
            fence,
            images_tx,
            images,
        }
    }

    /// Starts probing the local Docker daemon ([`docker::spawn`]) with the
    /// agent's `[docker]` settings: while it does not answer, this node
    /// resigns its singleton candidacies where another node stands.
    pub fn probe_docker(&mut self, settings: &crate::config::DockerSettings) {
        self.docker = Some(docker::DockerProbe::spawn(settings));
    }

    /// The ports the valid configs of `planes` open (the firewall's plane
    /// rules), in plane order.
    pub fn ports_for(&self, planes: &BTreeSet<Plane>) -> Vec<deckhand_model::PlanePort> {
        planes
            .iter()
            .filter_map(|p| self.configs.get(p))
            .flat_map(|c| c.ports.iter().copied())
            .collect()
    }

    /// A receiver of the preseed worker's reports, to wake the loop up when
    /// an image arrives.
    pub fn images_watch(&self) -> watch::Receiver<ImagesState> {
        self.images.clone()
    }

    /// The plane configs' watch event (`config/planes/` prefix).
    pub fn on_event(&mut self, ev: KeyEvent) {
        match ev {
            KeyEvent::Snapshot { kvs, .. } => {
                self.unknown.clear();
                let mut seen = BTreeSet::new();
                for (key, value, rev) in kvs {
                    if let Some(p) = self.plane_of(&key) {
                        seen.insert(p);
                        self.apply(p, Some(&value), rev);
                    }
                }
                let gone: Vec<Plane> = Plane::ALL
                    .into_iter()
                    .filter(|p| !seen.contains(p))
                    .collect();
                for p in gone {
                    self.apply(p, None, 0);
                }
            }
            KeyEvent::Put {
                key,
                value,
                mod_revision,
                ..
            } => {
                if let Some(p) = self.plane_of(&key) {
                    self.apply(p, Some(&value), mod_revision);
                }
            }
            KeyEvent::Delete { key, .. } => {
                self.unknown.remove(&key);
                if let Some(p) = self.plane_of(&key) {
                    self.apply(p, None, 0);
                }
            }
        }
    }

    fn plane_of(&mut self, key: &str) -> Option<Plane> {
        let name = key.strip_prefix(&self.ks.planes())?;
        match name.parse() {
            Ok(p) => {
                self.unknown.remove(key);
                Some(p)
            }
            Err(_) => {
                tracing::warn!("ignoring {key}: {name:?} is not a plane");
                self.unknown.insert(key.to_string());
                None
            }
        }
    }

    fn apply(&mut self, plane: Plane, value: Option<&[u8]>, rev: i64) {
        match value {
            None => {
                self.configs.remove(&plane);
                self.errors.remove(&plane);
            }
            Some(v) => match PlaneConfig::parse(plane, v) {
                Ok(cfg) => {
                    tracing::info!(
                        "plane {plane} config (revision {rev}): {} units, {} images",
                        cfg.units.len(),
                        cfg.images.len()
                    );
                    self.configs.insert(plane, cfg);
                    self.errors.remove(&plane);
                }
                Err(e) => {
                    tracing::warn!("ignoring invalid plane config (revision {rev}): {e}");
                    let keeping = if self.configs.contains_key(&plane) {
                        "keeping the previous config"
                    } else {
                        "nothing of it runs"
                    };
                    self.errors.insert(
                        plane,
                        format!(
                            "plane config {} (revision {rev}) rejected: {e}; {keeping}",
                            self.ks.plane(plane)
                        ),
                    );
                }
            },
        }
    }

    fn save_managed(&self) {
        match serde_json::to_vec(&self.managed) {
            Ok(json) => {
                if let Err(e) = write_atomic(&self.state_dir.join(MANAGED_UNITS), &json, 0o644) {
                    tracing::warn!("cannot record the managed units: {e}");
                }
            }
            Err(e) => tracing::warn!("cannot serialize the managed units: {e}"),
        }
    }

    /// One pass: hand the wanted images to the preseed worker, read unit
    /// states, read (or enter) the singleton elections through `kv`, plan,
    /// and stop / withdraw / start. `lease` is the node's current lease (0
    /// when it has none). Never fails: errors go to the outcome.
    pub async fn reconcile(
        &mut self,
        kv: &mut etcd_client::Client,
        lease: i64,
        my_planes: &BTreeSet<Plane>,
        cluster: &deckhand_model::ClusterConfig,
    ) -> PlanesOutcome {
        let wanted = deckhand_plan::wanted_images(my_planes, &self.configs, cluster);
        let want = (wanted.clone(), cluster.preseed_concurrency);
        self.images_tx.send_if_modified(|w| {
            let changed = *w != want;
            *w = want;
            changed
        });
        let images = self.images.borrow().clone();
        let images_current = images.checked && images.wanted == wanted;
        let images_settled: BTreeSet<Plane> = my_planes
            .iter()
            .copied()
            .filter(|p| {
                let need = deckhand_plan::planes::plane_images(*p, &self.configs);
                need.is_empty() || (images_current && images.settled(&need))
            })
            .collect();

        // Every unit a config names, and every unit deckhand started.
        let (modes, conflicts) = deckhand_plan::planes::unit_modes(&self.configs);
        let mut states: BTreeMap<String, String> = BTreeMap::new();
        let mut running = BTreeSet::new();
        for name in modes.keys().chain(self.managed.iter()) {
            if states.contains_key(name) {
                continue;
            }
            let state = match self.systemd.unit_state(name).await {
                Ok(s) if s.is_not_found() => "not-found".to_string(),
                Ok(s) => {
                    if s.is_active() {
                        running.insert(name.clone());
                    }
                    s.active_state
                }
                Err(e) => {
                    tracing::warn!("cannot read the state of {name}: {e}");
                    "unknown".to_string()
                }
            };
            states.insert(name.clone(), state);
        }

        let may_lead = self.fence.may_lead() == Some(lease) && lease != 0;
        let now = Instant::now().into_std();
        let sick = self.docker.as_ref().and_then(|d| d.verdict());
        let failing: BTreeMap<String, String> = self
            .failures
            .iter()
            .filter(|(_, f)| f.failing(now))
            .map(|(u, f)| {
                (
                    u.clone(),
                    format!(
                        "{u} failed to start or stay up {} times within {} s here \
                         (see journalctl -u {u})",
                        f.recent(now),
                        deckhand_plan::planes::FAILED_STARTS_WINDOW.as_secs()
                    ),
                )
            })
            .collect();
        let mut obs = UnitObservation {
            planes: my_planes.clone(),
            configs: self.configs.clone(),
            running: running.clone(),
            managed: self.managed.clone(),
            images_settled,
            standing: BTreeMap::new(),
            may_lead,
            sick,
            failing,
            other_candidates: BTreeMap::new(),
        };
        let mut views: BTreeMap<String, ElectionView> = BTreeMap::new();
        let singletons_of_mine: BTreeSet<String> = self
            .configs
            .iter()
            .filter(|(p, _)| my_planes.contains(p))
            .flat_map(|(_, c)| c.units.iter())
            .filter(|u| modes.get(&u.name) == Some(&UnitMode::Singleton))
            .map(|u| u.name.clone())
            .collect();
        // Elections: read each singleton's candidates (to count the other
        // nodes standing), plan, enter those the plan campaigns for, and
        // plan again with the standing that gives.
        for name in &singletons_of_mine {
            match election::leader(kv, &self.ks.election(name)).await {
                Ok(view) => {
                    self.observe_election(&mut obs, name, lease, &view);
                    views.insert(name.clone(), view);
                }
                Err(e) => tracing::debug!("cannot read the election of {name}: {e}"),
            }
        }
        let dry = plan_units(&obs);
        let mut errors: Vec<String> = dry.errors.clone();
        for name in &dry.campaign {
            if lease == 0
                || views
                    .get(name)
                    .is_some_and(|v| v.candidates.iter().any(|c| c.lease == lease))
            {
                continue;
            }
            // Marked before the request: one that timed out may still have
            // entered.
            self.entered.insert(name.clone());
            match election::campaign(kv, &self.ks.election(name), lease, &self.node_name).await {
                Ok(view) => {
                    self.observe_election(&mut obs, name, lease, &view);
                    views.insert(name.clone(), view);
                }
                Err(e) => tracing::debug!("cannot enter the election of {name}: {e}"),
            }
        }
        let plan = plan_units(&obs);
        let errors_before_act = errors.len();
        // Every singleton deckhand runs here is fenced, also one it did not
        // start in this process (an agent restart while it ran).
        for name in &singletons_of_mine {
            if running.contains(name) && self.managed.contains(name) {
                self.fence.begin(name);
            }
        }
        self.act(kv, lease, &plan, &views, &mut errors).await;
        let act_failed = errors.len() > errors_before_act;
        // Only this node's planes decide whether it is settled: a rejected
        // config or a mode conflict elsewhere is reported, not waited on.
        let mine_conflict = self
            .configs
            .iter()
            .filter(|(p, _)| my_planes.contains(p))
            .flat_map(|(_, c)| c.units.iter())
            .any(|u| conflicts.contains_key(&u.name));

        // Status: the state of each unit of this node's planes, after acting.
        let mut after = BTreeMap::new();
        for (plane, cfg) in &self.configs {
            if !my_planes.contains(plane) {
                continue;
            }
            for u in &cfg.units {
                let state = match self.systemd.unit_state(&u.name).await {
                    Ok(s) if s.is_not_found() => "not-found".to_string(),
                    Ok(s) => s.active_state,
                    Err(_) => states
                        .get(&u.name)
                        .cloned()
                        .unwrap_or_else(|| "unknown".into()),
                };
                after.insert(u.name.clone(), state);
            }
        }
        let holders = views
            .iter()
            .filter_map(|(unit, v)| Some((unit.clone(), v.leader()?.value.clone())))
            .collect();
        errors.extend(self.errors.values().cloned());
        errors.extend(
            self.unknown
                .iter()
                .map(|k| format!("{k} ignored: not a plane (control, data or router)")),
        );
        summarize(&Summary {
            configs: &self.configs,
            rejected: &self.errors,
            my_planes,
            states: &after,
            holders: &holders,
            plan: &plan,
            act_failed,
            mine_conflict,
            errors,
            images: images.status(),
        })
    }

    /// Notes what an election `view` says of `name` in `obs`: this node's
    /// standing, and how many other nodes stand.
    fn observe_election(
        &self,
        obs: &mut UnitObservation,
        name: &str,
        lease: i64,
        view: &ElectionView,
    ) {
        let standing = if view.leads(lease) {
            Standing::Leader
        } else {
            Standing::Follower
        };
        obs.standing.insert(name.to_string(), standing);
        let others: BTreeSet<&str> = view
            .candidates
            .iter()
            .map(|c| c.value.as_str())
            .filter(|v| *v != self.node_name)
            .collect();
        obs.other_candidates.insert(name.to_string(), others.len());
    }

    async fn act(
        &mut self,
        kv: &mut etcd_client::Client,
        lease: i64,
        plan: &UnitPlan,
        views: &BTreeMap<String, ElectionView>,
        errors: &mut Vec<String>,
    ) {
        let mut managed_changed = false;
        // Stops run at once (each bounded by JOB_TIMEOUT) and are waited
        // for: a candidacy is withdrawn only after its unit stopped.
        let mut stops = tokio::task::JoinSet::new();
        for unit in plan.stop.clone() {
            tracing::info!("stopping plane unit {unit}");
            let systemd = self.systemd.clone();
            stops.spawn(async move {
                let r = systemd.stop(&unit, JOB_TIMEOUT).await;
                (unit, r)
            });
        }
        for (unit, r) in stops.join_all().await {
            match r {
                Ok(()) => {
                    self.fence.end(&unit);
                    self.managed.remove(&unit);
                    self.last_start.remove(&unit);
                    managed_changed = true;
                    super::metrics::unit_stop(true);
                }
                Err(e) => {
                    errors.push(format!("stopping {unit} failed: {e}"));
                    super::metrics::unit_stop(false);
                }
            }
        }
        if managed_changed {
            self.save_managed();
        }
        // Withdraw only once the unit is stopped here: the next candidate
        // may start it as soon as the candidacy is gone.
        let still_running = |u: &str| plan.stop.iter().any(|s| s == u) && self.managed.contains(u);
        for unit in &plan.withdraw {
            // Only elections this process entered can hold a candidacy on
            // its lease (a moved one included): no request for the others.
            if still_running(unit) || !self.entered.contains(unit) {
                continue;
            }
            match election::resign(kv, &self.ks.election(unit), lease).await {
                Ok(()) => {
                    tracing::info!("withdrew from the election of {unit}");
                    self.entered.remove(unit);
                }
                Err(e) => tracing::debug!("cannot withdraw from the election of {unit}: {e}"),
            }
        }
        // Candidacies this node left behind on an older lease (an earlier
        // run of the agent): withdraw them once the unit is not running
        // here, so the next candidate need not wait for that lease to expire.
        for (unit, view) in views {
            if self.managed.contains(unit) && !view.leads(lease) {
                continue;
            }
            for c in &view.candidates {
                if c.value == self.node_name && c.lease != lease {
                    match election::remove_candidate(kv, &c.key, c.lease).await {
                        Ok(true) => tracing::info!(
                            "withdrew this node's stale candidacy {} (lease {:x})",
                            c.key,
                            c.lease
                        ),
                        Ok(false) => {}
                        Err(e) => tracing::debug!("cannot remove stale candidacy {}: {e}", c.key),
                    }
                }
            }
        }
        // A stopped Docker daemon is not started again through a unit's
        // Requires=docker.service: no start while it does not answer.
        let docker_down = match &self.docker {
            Some(d) if !plan.start.is_empty() => d.ping_now().await.err(),
            _ => None,
        };
        if let Some(why) = docker_down {
            errors.push(format!(
                "not starting {}: {why} (a unit requiring docker.service would start it again)",
                plan.start.join(", ")
            ));
            return;
        }
        for unit in &plan.start {
            let singleton = views.contains_key(unit);
            if let Err(e) = self.ensure_dropin(unit, singleton).await {
                tracing::warn!("cannot write the ordering drop-in of {unit}: {e:#}");
            }
            if singleton {
                self.fence.begin(unit);
                if self.fence.may_lead() != Some(lease) {
                    self.fence.end(unit);
                    continue;
                }
            }
            // A unit that does not stay up is started again at most every
            // START_BACKOFF, not on every pass.
            if self
                .last_start
                .get(unit)
                .is_some_and(|t| t.elapsed() < START_BACKOFF)
            {
                errors.push(format!(
                    "plane unit {unit} is not running after its start (see journalctl -u {unit}); \
                     starting it again within {} s",
                    START_BACKOFF.as_secs()
                ));
                continue;
            }
            tracing::info!(
                "starting plane unit {unit}{}",
                if singleton {
                    " (this node leads its election)"
                } else {
                    ""
                }
            );
            // Started before by this process and not stopped by deckhand
            // since: that start did not stay up.
            if self.last_start.contains_key(unit) {
                let now = Instant::now().into_std();
                let f = self.failures.entry(unit.clone()).or_default();
                f.record(now);
                super::metrics::unit_failure("did-not-stay-up");
                tracing::warn!(
                    "plane unit {unit} did not stay up: {} failed starts within {} s",
                    f.recent(now),
                    deckhand_plan::planes::FAILED_STARTS_WINDOW.as_secs()
                );
            }
            self.managed.insert(unit.clone());
            self.save_managed();
            self.last_start.insert(unit.clone(), Instant::now());
            let _ = self.systemd.reset_failed(unit).await;
            // Queued, not waited for: at boot the start waits for
            // deckhand-preseed.service (the drop-in's After=), longer than
            // the loop may block under its watchdog; the next pass reads
            // the unit's state.
            let queued = self.systemd.queue_start(unit).await;
            super::metrics::unit_start(queued.is_ok());
            if let Err(e) = queued {
                errors.push(format!("starting {unit} failed: {e}"));
            }
        }
    }

    /// Stops every singleton unit this node runs, before the agent exits
    /// and revokes its lease (which ends its candidacies: another node may
    /// start them at once). Each stop is bounded by the job timeout.
    pub async fn stop_singletons(&mut self) {
        let units = self.fence.running_units();
        for unit in units {
            tracing::info!("stopping singleton unit {unit}: the agent is stopping");
            match self.systemd.stop(&unit, JOB_TIMEOUT).await {
                Ok(()) => {
                    self.fence.end(&unit);
                    self.managed.remove(&unit);
                }
                Err(e) => tracing::error!("stopping {unit} failed: {e}"),
            }
        }
        self.save_managed();
    }

    /// Writes `<unit>.d/50-deckhand.conf` under [`DROPIN_ROOT`] and reloads
    /// systemd when it changed.
    async fn ensure_dropin(&mut self, unit: &str, singleton: bool) -> anyhow::Result<()> {
        let text = if singleton {
            DROPIN_SINGLETON
        } else {
            DROPIN_GLOBAL
        };
        if self.dropins.get(unit) == Some(&text) {
            return Ok(());
        }
        let dir = self.dropin_root.join(format!("{unit}.d"));
        std::fs::create_dir_all(&dir)?;
        if write_atomic(&dir.join(DROPIN_NAME), text.as_bytes(), 0o644)? {
            self.systemd.daemon_reload().await?;
        }
        self.dropins.insert(unit.to_string(), text);
        Ok(())
    }
}
