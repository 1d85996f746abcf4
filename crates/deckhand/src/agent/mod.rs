//! The agent: a level-triggered loop, observe → plan → act → report
//! (`docs/architecture.md`). Each iteration observes the desired role and
//! cluster config (watched), the member list (from a real member), the local
//! units and files; asks the planner for the next step; takes that one
//! step; runs the plane pass; and rewrites the node's status when it changed.
//!
//! The parts, one module each: [`desired`] (the role and cluster config
//! from watch events), [`watches`], [`observe`], [`act`] (one step),
//! [`local`] (the member and proxy units), [`sightings`] (first sightings
//! on the agent's monotonic clock),
//! [`replacer`], [`status`] (the status document), [`planes`] (plane units),
//! [`fence`] (singletons stopped before the lease can expire), [`lease`]
//! (the node lease, handed over when its TTL changes),
//! [`images`] (the preseed worker), [`checks`] (the node checks, in the
//! background), [`voters`] (voters in trouble, on the leader's agent),
//! [`voter_health`] (each voter's health, published by its own agent and
//! read by every agent through a watch) and
//! [`firewall`] (the nftables table `inet deckhand`, applied before the
//! step so that a joining node's 2380 is open before it asks to join).

pub mod act;
pub mod backup;
pub mod checks;
pub mod cluster_change;
pub mod context;
pub mod desired;
pub mod fence;
pub mod firewall;
pub mod images;
pub mod lease;
pub mod local;
pub mod member_identity;
pub mod metrics;
pub mod metrics_http;
pub mod observe;
pub mod planes;
pub mod renewal;
pub mod replacer;
pub mod sightings;
pub mod signing;
pub mod status;
pub mod tls_stage;
pub mod voter_health;
pub mod voters;
pub mod watches;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use deckhand_etcd::{Cluster, KeyEvent};
use deckhand_model::{EtcdMode, Role};
use deckhand_plan::{LockView, Observation, Step};
use deckhand_systemd::{Systemd, notify};

use self::context::{Context, REQUEST_TIMEOUT};
use self::desired::Desired;
use self::fence::Fence;
use self::firewall::Firewall;
use self::lease::NodeLease;
use self::local::Local;
use self::observe::Observer;
use self::planes::{Planes, PlanesOutcome};
use self::replacer::Replacer;
use self::status::{EventLog, StatusWriter};
use self::voters::VoterWatch;
use self::watches::{Source, Watches};
use crate::config::Settings;
use crate::identity::Identity;
use crate::store::Store;
use crate::{connect, paths};

/// Longest idle wait between two iterations (also bounds watchdog pings).
const IDLE_TICK: Duration = Duration::from_secs(5);
/// READY is sent after this long even if no voter answered yet, so that a
/// cluster whose members boot far apart still gets its agents started.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// Runs the agent until SIGTERM or SIGINT, as `identity`
/// ([`crate::identity::detect`]). `tls`: the node's TLS files, checked
/// ([`crate::tls::load_node`], [`crate::tls::check_node_identity`]), when
/// `[tls]` is on; the cluster
/// client then speaks mutual TLS to the members (`https://` endpoints),
/// while keys, watches and the lease stay on plaintext `localhost:2379`.
///
/// # Errors
/// Start-up failures (no D-Bus, bad identity); the loop itself never returns
/// an error, it reports errors in the status.
pub async fn run(
    settings: Settings,
    identity: Identity,
    tls: Option<crate::tls::NodeTls>,
    stage: crate::tls_enable::Stage,
    config_tls: bool,
) -> Result<()> {
    tracing::info!(
        "deckhand agent {} starting: node {} ({}) at {}",
        env!("CARGO_PKG_VERSION"),
        identity.name,
        identity.id,
        identity.address
    );
    if let Some(t) = &tls {
        let now = observe::unix_now();
        for c in [&t.node, &t.proxy] {
            if let Err(e) = crate::tls::require_valid(c, now) {
                tracing::error!(
                    "{e:#}; the agent keeps running on localhost:2379 and reports it (check tls-certificate)"
                );
            }
        }
    }
    if let Some(addr) = settings.metrics {
        metrics_http::spawn(addr);
    }
    let systemd = Systemd::connect()
        .await
        .context("connecting to systemd over D-Bus (is this a systemd host?)")?;
    let local = Local {
        systemd: systemd.clone(),
        identity: identity.clone(),
        settings: settings.clone(),
        state_dir: paths::STATE_DIR.into(),
    };
    let cluster = Cluster::connect(
        &settings.endpoints,
        REQUEST_TIMEOUT,
        tls.as_ref().map(|t| &t.client),
    )
    .await
    .context("setting up the etcd cluster client")?;
    // Keys, watches and the lease go through localhost:2379, which the
    // local member or proxy serves on every node; a restart of either
    // breaks a stream for a moment, and the watches resume from their
    // revision. Membership requests go to real members (`cluster`).
    let kv = connect::localhost(REQUEST_TIMEOUT)
        .await
        .context("setting up the local etcd client")?;
    let store = Store::new(
        kv,
        deckhand_model::Keyspace::new(&settings.key_prefix),
        REQUEST_TIMEOUT,
    );
    let (wanted_tx, wanted_rx) = tokio::sync::watch::channel((BTreeSet::new(), 0));
    let (images_tx, images_rx) = tokio::sync::watch::channel(Default::default());
    tokio::spawn(images::run(
        settings.docker.clone(),
        paths::IMAGE_CACHE.into(),
        wanted_rx,
        images_tx,
    ));
    let (_, no_renewals) = tokio::sync::watch::channel(None);
    let fence = Fence::spawn(systemd.clone(), no_renewals);
    let mut planes = Planes::new(
        systemd,
        store.keyspace().clone(),
        identity.name.clone(),
        Path::new(paths::STATE_DIR),
        fence,
        wanted_tx,
        images_rx,
    );
    let (checks, certificate) = checks::spawn(
        store.clone(),
        &settings.docker,
        settings.checks.clone(),
        settings.data_dir.clone(),
        settings.tls.clone(),
        Some(crate::tls_enable::default_files()),
    );
    planes.probe_docker(&settings.docker);
    // Renewal of this node's certificates, and the signer's seat on a node
    // that holds the CA key (both with TLS on only).
    let renewal = settings
        .tls
        .clone()
        .map(|t| renewal::spawn(store.clone(), t, identity.clone()));
    let signer = settings
        .tls
        .clone()
        .map(|t| signing::spawn(store.clone(), t, identity.name.clone()));
    let ctx = Context {
        identity,
        settings,
        local,
        cluster,
        store,
    };
    let mut agent = Agent::new(ctx, planes, checks, certificate);
    agent.tls_stage = tls_stage::TlsStage {
        applied: stage,
        from_config: config_tls,
    };
    agent.renewal = renewal;
    agent.signer = signer;
    agent.backup_taker = Some(backup::spawn(
        agent.ctx.store.clone(),
        agent.ctx.cluster.clone(),
        agent.ctx.identity.name.clone(),
    ));
    agent.start_background();

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut images = agent.planes.images_watch();
    let mut checks_changed = agent.checks.clone();
    let started = Instant::now();
    let mut ready = false;
    loop {
        let outcome = agent.iterate().await;
        let _ = notify::watchdog();
        if !ready && (outcome.observed_cluster || started.elapsed() > READY_DEADLINE) {
            let _ = notify::ready();
            ready = true;
        }
        let _ = notify::status(&status::status_line(
            &agent.desired,
            agent.last_mode,
            agent.last_step.as_ref(),
        ));
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
            ev = agent.watches.events.recv() => {
                if let Some((src, ev)) = ev { agent.on_event(src, ev); }
            }
            // An image arrived or failed: its plane's units may start.
            Ok(()) = images.changed() => {}
            // A check's outcome changed: into the status now.
            Ok(()) = checks_changed.changed() => {}
        }
        // Drain whatever else arrived, so one iteration sees it all.
        while let Ok((src, ev)) = agent.watches.events.try_recv() {
            agent.on_event(src, ev);
        }
    }
    let _ = notify::stopping();
    // Singletons first: revoking the lease lets another node start them.
    agent.planes.stop_singletons().await;
    tracing::info!("stopping; revoking the node lease");
    agent.lease.revoke(REQUEST_TIMEOUT).await;
    Ok(())
}

/// What one iteration did, for the loop's pacing.
struct Outcome {
    step: Option<Step>,
    step_ok: bool,
    observed_cluster: bool,
}

struct Agent {
    ctx: Context,
    watches: Watches,
    /// The node lease (status, locks and candidacies live on it).
    lease: NodeLease,
    desired: Desired,
    observer: Observer,
    replacer: Replacer,
    events: EventLog,
    status: StatusWriter,
    /// The `nodes/<id>/name` key has been written by this process.
    name_written: bool,
    step_error: Option<String>,
    last_step: Option<Step>,
    last_mode: EtcdMode,
    /// Plane units, elections, fence and images.
    planes: Planes,
    /// What the last plane pass found.
    planes_outcome: PlanesOutcome,
    /// The node checks' latest outcomes.
    checks: tokio::sync::watch::Receiver<Vec<deckhand_model::Check>>,
    /// The node certificate as the checks last read it (TLS on).
    certificate: tokio::sync::watch::Receiver<Option<deckhand_model::CertificateStatus>>,
    /// Voters in trouble (on the leader's agent).
    voters: VoterWatch,
    /// The TLS stage applied (`deckhand tls enable`).
    tls_stage: tls_stage::TlsStage,
    /// Why the last TLS stage could not be applied.
    tls_error: Option<String>,
    /// The renewal task's state (TLS on).
    renewal: Option<tokio::sync::watch::Receiver<renewal::RenewalState>>,
    /// Renewals installed that the cluster client has been rebuilt for.
    renewals_loaded: u64,
    /// The signer task's inputs (TLS on).
    signer: Option<tokio::sync::watch::Sender<signing::SignerInputs>>,
    /// The host firewall.
    firewall: Firewall,
    /// The backup taker task's inputs.
    backup_taker: Option<tokio::sync::watch::Sender<backup::TakerInputs>>,
    /// The etcd cluster ID last seen behind localhost:2379 (a restore
    /// changes it: [`cluster_change`]).
    cluster_id: cluster_change::ClusterIdWatch,
}

impl Agent {
    fn new(
        ctx: Context,
        planes: Planes,
        checks: tokio::sync::watch::Receiver<Vec<deckhand_model::Check>>,
        certificate: tokio::sync::watch::Receiver<Option<deckhand_model::CertificateStatus>>,
    ) -> Agent {
        Agent {
            ctx,
            watches: Watches::default(),
            lease: NodeLease::default(),
            desired: Desired::default(),
            observer: Observer::default(),
            replacer: Replacer::default(),
            events: EventLog::default(),
            status: StatusWriter::default(),
            name_written: false,
            step_error: None,
            last_step: None,
            last_mode: EtcdMode::None,
            planes,
            planes_outcome: PlanesOutcome::default(),
            checks,
            certificate,
            voters: VoterWatch::default(),
            tls_stage: tls_stage::TlsStage {
                applied: crate::tls_enable::Stage::Plain,
                from_config: false,
            },
            tls_error: None,
            renewal: None,
            renewals_loaded: 0,
            signer: None,
            firewall: Firewall::new(Path::new(paths::STATE_DIR)),
            backup_taker: None,
            cluster_id: cluster_change::ClusterIdWatch::default(),
        }
    }

    /// The node's lease, 0 while it has none.
    fn lease(&self) -> i64 {
        self.lease.id()
    }

    /// Starts the watches and the lease keeper (with the cluster config's
    /// TTL) on the local client.
    fn start_background(&mut self) {
        let client = self.ctx.store.client();
        self.watches
            .start(&client, self.ctx.store.keyspace(), &self.ctx.identity.id);
        self.lease.start(
            client,
            self.desired.config.lease_ttl_seconds,
            &self.planes.fence,
        );
        self.status.reset();
    }

    fn on_event(&mut self, src: Source, ev: KeyEvent) {
        let ks = self.ctx.store.keyspace();
        match src {
            Source::Planes => self.planes.on_event(ev),
            Source::Elections => {}
            Source::VoterHealth => self.observer.reports.on_event(ks, ev),
            Source::Role => self
                .desired
                .on_role_event(&ks.role(&self.ctx.identity.id), ev),
            Source::Config => self.desired.on_config_event(&ks.cluster_config(), ev),
        }
    }

    /// Points the membership client at the current voters.
    async fn refresh_endpoints(&mut self, o: &Observation) {
        let Some(c) = &o.cluster else {
            // No member answered. While `deckhand tls enable` runs, every
            // member this client knows may have turned https:// since the
            // last look (or the other way round after a failed stage):
            // with the files, try the other scheme next time.
            if self.ctx.cluster.tls().is_some() {
                let now = self.ctx.cluster.endpoints();
                let to_https = now.iter().any(|u| u.starts_with("http://"));
                let other: Vec<String> = now
                    .iter()
                    .map(|u| {
                        if to_https {
                            crate::tls_enable::to_https(u)
                        } else {
                            u.replacen("https://", "http://", 1)
                        }
                    })
                    .collect();
                tracing::info!("no member answered; trying {}", other.join(","));
                if let Err(e) = self.ctx.cluster.set_endpoints(&other).await {
                    tracing::warn!("could not switch endpoints: {e}");
                }
            }
            return;
        };
        let mut voters = c.voter_client_urls();
        // While `deckhand tls enable` runs, some voters serve http:// and
        // some https://: one client speaks one kind, so take the larger
        // group (https:// on a tie, when this agent has the files).
        let https = voters.iter().filter(|u| u.starts_with("https://")).count();
        if https > 0 && https < voters.len() {
            let tls = self.ctx.cluster.tls().is_some();
            let pick_https = tls && 2 * https >= voters.len();
            voters.retain(|u| u.starts_with("https://") == pick_https);
        }
        if voters.is_empty() {
            return;
        }
        let mut current = self.ctx.cluster.endpoints();
        current.sort();
        if current != voters {
            tracing::info!("voter set changed; reconnecting to {}", voters.join(","));
            if let Err(e) = self.ctx.cluster.set_endpoints(&voters).await {
                tracing::warn!("could not switch endpoints: {e}");
            }
        }
    }

    async fn iterate(&mut self) -> Outcome {
        match self.tls_stage.follow(&mut self.ctx).await {
            Ok(Some(what)) => {
                tracing::info!("{what}");
                self.events.push(what);
                self.tls_error = None;
            }
            Ok(None) => self.tls_error = None,
            Err(e) => {
                let msg = format!("TLS stage: {e:#}");
                if self.tls_error.as_deref() != Some(msg.as_str()) {
                    tracing::error!("{msg}");
                }
                self.tls_error = Some(msg);
            }
        }
        let o = match self.observer.observe(&self.ctx, &self.desired).await {
            Ok(o) => o,
            Err(e) => {
                self.step_error = Some(format!("{e:#}"));
                tracing::error!("observation failed: {e:#}");
                metrics::observation_failed();
                return Outcome {
                    step: None,
                    step_ok: false,
                    observed_cluster: false,
                };
            }
        };
        self.refresh_endpoints(&o).await;
        self.follow_cluster_change(&o).await;
        self.follow_certificates(&o).await;
        if let Some(tx) = &self.backup_taker {
            let is_member = self
                .desired
                .role()
                .is_some_and(|r| r.etcd == deckhand_model::EtcdRole::Member);
            tx.send_replace(backup::inputs(
                &o,
                self.lease(),
                &self.desired.config.backup,
                is_member,
            ));
        }
        // A TTL change: the new lease takes every key over before the old
        // one is revoked (see lease.rs), so no status read misses this node.
        self.lease
            .follow_ttl(
                &self.ctx.store.client(),
                self.desired.config.lease_ttl_seconds,
                &self.planes.fence,
                REQUEST_TIMEOUT,
            )
            .await;
        // The firewall before the step: a node about to join opens its
        // 2380 to the members first, and the join waits for the members'
        // firewalls to let it in (Firewall::gate).
        let ports = self.planes.ports_for(&self.desired.planes());
        let store = self.ctx.store.clone();
        self.firewall
            .reconcile(&o, &self.desired.config.firewall, &ports, || async move {
                store.nodes().await
            })
            .await;
        let address = self.ctx.identity.address.to_string();
        let step = self.firewall.gate(deckhand_plan::plan(&o), &o, &address);
        if !step.is_idle() {
            tracing::info!("taking step: {step}");
        } else if Some(&step) != self.last_step.as_ref() {
            tracing::info!("{step}");
        }
        let began = Instant::now();
        let result = act::take(&self.ctx, &step, &o, self.lease(), &mut self.events).await;
        let took = began.elapsed();
        let step_ok = match result {
            Ok(()) => {
                if !step.is_idle() || step == Step::Converged {
                    self.step_error = None;
                }
                true
            }
            Err(e) => {
                let msg = format!("{step} failed on node {}: {e:#}", self.ctx.identity.name);
                tracing::error!("{msg}");
                self.step_error = Some(msg);
                false
            }
        };
        self.last_mode = deckhand_plan::etcd_mode(&o);
        let demotion = self.last_mode == EtcdMode::Member
            && deckhand_plan::target_role(&o) != deckhand_model::EtcdRole::Member;
        metrics::step(&step, step_ok, took, demotion);
        metrics::etcd_mode(self.last_mode);
        metrics::firewall(self.firewall.status());
        let mut kv = self.ctx.store.client();
        self.planes_outcome = self
            .planes
            .reconcile(
                &mut kv,
                self.lease(),
                &self.desired.planes(),
                &self.desired.config,
            )
            .await;
        let observed_cluster = o.cluster.is_some();
        if observed_cluster {
            self.ensure_role_key(&o).await;
            let voter_problems = self.voters.refresh(&self.ctx, &o).await.to_vec();
            let checks = self.checks.borrow_and_update().clone();
            let mut certificate = self.certificate.borrow().clone();
            let troubled: BTreeSet<&str> = voter_problems
                .iter()
                .map(|p| p.member_id.as_str())
                .collect();
            let leads = metrics::cluster(&o, troubled.len());
            metrics::ask_alarms(&self.ctx.store.client(), leads, REQUEST_TIMEOUT);
            metrics::checks(&checks);
            metrics::certificate(certificate.as_ref());
            metrics::singletons_held(self.planes.fence.running_units().len());
            if let (Some(c), Some(r)) = (certificate.as_mut(), &self.renewal) {
                c.renewal = r.borrow().note.clone();
            }
            let errors = match (self.step_error.as_deref(), self.tls_error.as_deref()) {
                (Some(a), Some(b)) => Some(format!("{a}; {b}")),
                (a, b) => a.or(b).map(str::to_string),
            };
            let mut doc = status::document(&status::Inputs {
                identity: &self.ctx.identity,
                failure_domain: self.ctx.settings.failure_domain.as_deref(),
                desired: &self.desired,
                observation: &o,
                step: &step,
                step_error: errors.as_deref(),
                planes: &self.planes_outcome,
                replacer: self.replacer.note.as_deref(),
                events: self.events.all(),
                checks: &checks,
                voter_problems: &voter_problems,
                certificate: certificate.as_ref(),
                tls_stage: self.tls_stage.reported(),
                firewall: self.firewall.status(),
            });
            doc.metrics_listen = self.ctx.settings.metrics.map(|a| a.to_string());
            let lease = self.lease();
            self.status.write(&self.ctx.store, doc, lease).await;
        }
        if observed_cluster && o.lock != LockView::Mine {
            let lease = self.lease();
            let config = &self.desired.config;
            self.replacer
                .run(
                    &self.ctx,
                    config.voters,
                    config.dead_grace_seconds,
                    lease,
                    &mut self.events,
                )
                .await;
        }
        self.last_step = Some(step.clone());
        Outcome {
            step: Some(step),
            step_ok,
            observed_cluster,
        }
    }

    /// After a restore ([`cluster_change`]): a new etcd cluster ID behind
    /// localhost:2379 restarts the proxy, the watches and the lease, and
    /// the status is written again.
    async fn follow_cluster_change(&mut self, o: &Observation) {
        let key = self.ctx.store.keyspace().cluster_config();
        let now = cluster_change::cluster_id(&self.ctx.store.client(), &key).await;
        let Some(old) = self.cluster_id.see(now) else {
            return;
        };
        let msg = format!(
            "etcd cluster changed from {old:x} to {:x} (restored from a snapshot?): restarting the proxy, the watches from the current revision and the node lease",
            now.unwrap_or(0)
        );
        tracing::warn!("{msg}");
        self.events.push(msg);
        if o.local.proxy_unit_active
            && let Err(e) = self
                .ctx
                .local
                .systemd
                .restart(local::PROXY_UNIT, local::JOB_TIMEOUT)
                .await
        {
            tracing::warn!("restarting the proxy after the cluster change: {e}");
        }
        // Revoked in the new cluster: the snapshot holds the old lease and
        // the keys on it (this node's old status and candidacies).
        std::mem::take(&mut self.lease)
            .revoke(REQUEST_TIMEOUT)
            .await;
        self.name_written = false;
        self.start_background();
    }

    /// Hands the signer task its inputs, and after a renewal rebuilds the
    /// client of the members with the new files (etcd itself re-reads
    /// them on each new connection).
    async fn follow_certificates(&mut self, o: &Observation) {
        if let Some(tx) = &self.signer {
            let members = o.cluster.as_ref().map(|c| {
                c.members
                    .iter()
                    .map(|m| deckhand_etcd::Member {
                        id: m.id,
                        name: m.name.clone(),
                        peer_urls: m.peer_urls.clone(),
                        client_urls: m.client_urls.clone(),
                        is_learner: m.is_learner,
                    })
                    .collect()
            });
            let lease = self.lease();
            let auto_sign = self.desired.config.pki.auto_sign;
            tx.send_modify(|i| {
                i.lease = lease;
                i.auto_sign = auto_sign;
                if members.is_some() {
                    i.members = members;
                }
            });
        }
        let Some(r) = &self.renewal else { return };
        let installed = r.borrow().installed;
        if installed == self.renewals_loaded {
            return;
        }
        let Some(t) = &self.ctx.settings.tls else {
            return;
        };
        match crate::tls::load_node(t) {
            Ok(new) => {
                let eps = self.ctx.cluster.endpoints();
                match Cluster::connect(&eps, REQUEST_TIMEOUT, Some(&new.client)).await {
                    Ok(c) => {
                        self.ctx.cluster = c;
                        self.renewals_loaded = installed;
                        tracing::info!("the members' client now uses the renewed certificate");
                    }
                    Err(e) => tracing::warn!("cannot rebuild the members' client yet: {e}"),
                }
            }
            Err(e) => tracing::error!("the renewed files do not load: {e:#}"),
        }
    }

    /// Writes the node's name key once per process, and its current etcd
    /// role into an absent role key, so that operators see every node's
    /// role in one place. Never overwrites a role key.
    async fn ensure_role_key(&mut self, o: &Observation) {
        let id = &self.ctx.identity.id;
        if !self.name_written {
            self.name_written = self
                .ctx
                .store
                .put_name(id, &self.ctx.identity.name)
                .await
                .is_ok();
        }
        let d = &self.desired;
        if !d.role_seen || d.role.is_some() || d.role_error.is_some() {
            return;
        }
        if !matches!(
            deckhand_plan::etcd_mode(o),
            EtcdMode::Member | EtcdMode::Proxy
        ) {
            return;
        }
        let role = Role::new(deckhand_plan::target_role(o));
        if let Ok(Some(_)) = self.ctx.store.put_role_if(id, &role, 0).await {
            tracing::info!("wrote the initial role key: {role}");
        }
    }
}
