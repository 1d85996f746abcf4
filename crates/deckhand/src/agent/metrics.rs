//! The agent's Prometheus metrics (`docs/metrics.md`): one registry for the
//! process, filled by small calls from the agent's code paths and served
//! by [`crate::agent::metrics_http`] on [`deckhand_model::METRICS_PORT`].
//!
//! Conventions (<https://prometheus.io/docs/practices/naming/>): the
//! `deckhand_` prefix, base units (seconds, bytes), `_total` on counters
//! (added by the OpenMetrics encoder of `prometheus-client`), and label
//! values from small fixed sets only: step kinds, outcomes, check names,
//! modes. No label carries a key, a unit name, an image or a node name.
//!
//! Gauges of the cluster as a whole (`deckhand_cluster_*`,
//! `deckhand_etcd_alarm`) come from one agent only: the one whose member is
//! the raft leader, the same agent that watches the voters
//! ([`super::voters`]). Every other agent exports none of them.

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use deckhand_model::{CertificateStatus, Check, CheckState, EtcdMode, FirewallStatus};
use deckhand_plan::{Observation, Step};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

type Labels = Vec<(&'static str, String)>;
type FGauge = Gauge<f64, AtomicU64>;

/// How often the leader's agent asks etcd for its alarms.
const ALARM_EVERY: Duration = Duration::from_secs(10);

/// Every metric of the process, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    transitions: Family<Labels, Counter>,
    transition_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    role_change_seconds: Histogram,
    blocked: Family<Labels, Gauge>,
    blocked_total: Counter,
    converged: Gauge,
    observation_failures: Counter,
    mode: Family<Labels, Gauge>,
    lease_renewals: Counter,
    lease_renewal_age: FGauge,
    status_writes: Family<Labels, Counter>,
    cert_renewals: Family<Labels, Counter>,
    watch_restarts: Family<Labels, Counter>,
    unit_starts: Counter,
    unit_stops: Counter,
    unit_failures: Family<Labels, Counter>,
    singletons_held: Gauge,
    pulls: Family<Labels, Counter>,
    pull_bytes: Counter,
    pull_seconds: Histogram,
    checks: Family<Labels, Gauge>,
    node_time: FGauge,
    cert_expiry: Family<Labels, FGauge>,
    firewall: Family<Labels, Gauge>,
    cluster: Family<Labels, Gauge>,
    alarms: Family<Labels, Gauge>,
    state: Mutex<State>,
}

/// What the recording calls remember between calls.
#[derive(Default)]
struct State {
    /// When the current role change took its first step.
    change_started: Option<Instant>,
    /// The last answered lease renewal (monotonic clock).
    last_renewal: Option<Instant>,
    /// Watch restarts already counted (from [`deckhand_etcd::watch::restarts`]).
    restarts_seen: (u64, u64),
    /// When the leader's agent last asked for the alarms.
    alarms_asked: Option<Instant>,
    was_blocked: bool,
}

fn histogram_of_steps() -> Histogram {
    // 10 ms .. about 170 s: a step is one request or one unit job.
    Histogram::new(exponential_buckets(0.01, 2.0, 15))
}

impl Metrics {
    fn new() -> Metrics {
        let mut r = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            transitions: Family::default(),
            transition_seconds: Family::new_with_constructor(histogram_of_steps),
            // 1 s .. about 68 min: a whole role change (lock, learner,
            // promotion, release; or the demotion's steps).
            role_change_seconds: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            blocked: Family::default(),
            blocked_total: Counter::default(),
            converged: Gauge::default(),
            observation_failures: Counter::default(),
            mode: Family::default(),
            lease_renewals: Counter::default(),
            lease_renewal_age: FGauge::default(),
            status_writes: Family::default(),
            cert_renewals: Family::default(),
            watch_restarts: Family::default(),
            unit_starts: Counter::default(),
            unit_stops: Counter::default(),
            unit_failures: Family::default(),
            singletons_held: Gauge::default(),
            pulls: Family::default(),
            pull_bytes: Counter::default(),
            // 0.5 s .. about 68 min.
            pull_seconds: Histogram::new(exponential_buckets(0.5, 2.0, 14)),
            checks: Family::default(),
            node_time: FGauge::default(),
            cert_expiry: Family::default(),
            firewall: Family::default(),
            cluster: Family::default(),
            alarms: Family::default(),
            state: Mutex::new(State::default()),
        };
        let build: Family<Labels, Gauge> = Family::default();
        build
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
            .set(1);
        r.register(
            "deckhand_build_info",
            "The agent's version (value 1)",
            build,
        );
        r.register(
            "deckhand_role_transitions",
            "Role-changing steps taken, by step kind and outcome (ok, failed)",
            m.transitions.clone(),
        );
        r.register_with_unit(
            "deckhand_role_transition_duration",
            "Duration of one role-changing step, by step kind",
            Unit::Seconds,
            m.transition_seconds.clone(),
        );
        r.register_with_unit(
            "deckhand_role_change_duration",
            "From a role change's first step to converged again",
            Unit::Seconds,
            m.role_change_seconds.clone(),
        );
        r.register(
            "deckhand_step_blocked",
            "1 while the planner refuses the next step (change: demotion or other)",
            m.blocked.clone(),
        );
        r.register(
            "deckhand_steps_blocked",
            "Times the planner started refusing the next step",
            m.blocked_total.clone(),
        );
        r.register(
            "deckhand_converged",
            "1 when the node runs its target etcd role, 0 while a change is under way, waiting or blocked",
            m.converged.clone(),
        );
        r.register(
            "deckhand_observation_failures",
            "Iterations whose observation failed (no step taken)",
            m.observation_failures.clone(),
        );
        r.register(
            "deckhand_etcd_mode",
            "1 for what serves localhost:2379 here (mode: member, learner, proxy, none)",
            m.mode.clone(),
        );
        r.register(
            "deckhand_lease_renewals",
            "Node lease keep-alives etcd answered",
            m.lease_renewals.clone(),
        );
        r.register_with_unit(
            "deckhand_lease_renewal_age",
            "Seconds since the node lease's last answered keep-alive (monotonic clock; at scrape)",
            Unit::Seconds,
            m.lease_renewal_age.clone(),
        );
        r.register(
            "deckhand_status_writes",
            "Writes of the node's status document, by outcome (ok, failed)",
            m.status_writes.clone(),
        );
        r.register(
            "deckhand_certificate_renewals",
            "Renewals of this node's certificates through etcd, by outcome (ok, failed)",
            m.cert_renewals.clone(),
        );
        r.register(
            "deckhand_watch_restarts",
            "Watch streams the agent opened again, by reason (broken, compacted)",
            m.watch_restarts.clone(),
        );
        r.register(
            "deckhand_plane_unit_starts",
            "Plane unit starts queued",
            m.unit_starts.clone(),
        );
        r.register(
            "deckhand_plane_unit_stops",
            "Plane units stopped",
            m.unit_stops.clone(),
        );
        r.register(
            "deckhand_plane_unit_failures",
            "Plane unit failures, by reason (start-job, stop-job, did-not-stay-up)",
            m.unit_failures.clone(),
        );
        r.register(
            "deckhand_singletons_held",
            "Singleton plane units this node leads and runs",
            m.singletons_held.clone(),
        );
        r.register(
            "deckhand_image_pulls",
            "Image pulls of the agent's preseed worker, by outcome (ok, failed)",
            m.pulls.clone(),
        );
        r.register_with_unit(
            "deckhand_image_pull",
            "Bytes the agent's image pulls downloaded",
            Unit::Bytes,
            m.pull_bytes.clone(),
        );
        r.register_with_unit(
            "deckhand_image_pull_duration",
            "Duration of one successful image pull",
            Unit::Seconds,
            m.pull_seconds.clone(),
        );
        r.register(
            "deckhand_check",
            "1 for each node check's current state (check, state: pass, warn, fail), else 0",
            m.checks.clone(),
        );
        r.register_with_unit(
            "deckhand_node_time",
            "The node's wall clock at scrape (Unix time): compare with the scrape's timestamp",
            Unit::Seconds,
            m.node_time.clone(),
        );
        r.register_with_unit(
            "deckhand_certificate_expiry_timestamp",
            "When the node certificate expires (Unix time; TLS on only)",
            Unit::Seconds,
            m.cert_expiry.clone(),
        );
        r.register(
            "deckhand_firewall",
            "The host firewall (state: enabled, applied, matches-role), 1 or 0",
            m.firewall.clone(),
        );
        r.register(
            "deckhand_cluster",
            "Cluster-wide figures, from the raft leader's agent only (figure: voters, voters-healthy, learners, fault-tolerance)",
            m.cluster.clone(),
        );
        r.register(
            "deckhand_etcd_alarm",
            "1 for each etcd alarm raised (alarm: nospace, corrupt), from the raft leader's agent only",
            m.alarms.clone(),
        );
        Metrics { registry: r, ..m }
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

fn m() -> &'static Metrics {
    &METRICS
}

fn state() -> std::sync::MutexGuard<'static, State> {
    m().state.lock().unwrap_or_else(|p| p.into_inner())
}

fn l1(k: &'static str, v: &str) -> Labels {
    vec![(k, v.to_string())]
}

/// The exposition in the OpenMetrics text format
/// (<https://prometheus.io/docs/specs/om/open_metrics_spec/>), with the
/// scrape-time gauges (node time, lease renewal age, watch restarts)
/// brought up to date first.
pub fn render() -> String {
    refresh_at_scrape();
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &m().registry);
    out
}

/// The exposition in Prometheus's text format 0.0.4
/// (<https://prometheus.io/docs/instrumenting/exposition_formats/>), for
/// clients that do not ask for OpenMetrics (curl, `promtool check
/// metrics`): [`render`] with each counter's `# HELP` and `# TYPE` named
/// after its `_total` samples, and without OpenMetrics' `# UNIT` and
/// `# EOF` lines.
pub fn render_text() -> String {
    to_text_format(&render())
}

fn to_text_format(open_metrics: &str) -> String {
    let counters: std::collections::BTreeSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{p}{name}_total {tail}\n"));
                } else {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

fn refresh_at_scrape() {
    let m = m();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    m.node_time.set(now);
    let mut s = state();
    if let Some(t) = s.last_renewal {
        m.lease_renewal_age.set(t.elapsed().as_secs_f64());
    }
    let (broken, compacted) = deckhand_etcd::watch::restarts();
    let (b0, c0) = s.restarts_seen;
    m.watch_restarts
        .get_or_create(&l1("reason", "broken"))
        .inc_by(broken.saturating_sub(b0));
    m.watch_restarts
        .get_or_create(&l1("reason", "compacted"))
        .inc_by(compacted.saturating_sub(c0));
    s.restarts_seen = (broken, compacted);
}

/// Records one iteration's step: `ok` its outcome, `took` how long
/// [`super::act::take`] ran; `demotion` that the node's etcd role goes
/// down (member to proxy), for the blocked gauge's `change` label.
pub fn step(step: &Step, ok: bool, took: Duration, demotion: bool) {
    let m = m();
    let mut s = state();
    let blocked = matches!(step, Step::Blocked(_));
    for change in ["demotion", "other"] {
        let on = blocked && (change == "demotion") == demotion;
        m.blocked
            .get_or_create(&l1("change", change))
            .set(on as i64);
    }
    if blocked && !s.was_blocked {
        m.blocked_total.inc();
    }
    s.was_blocked = blocked;
    m.converged.set((*step == Step::Converged && ok) as i64);
    if step.is_idle() {
        if *step == Step::Converged
            && let Some(t) = s.change_started.take()
        {
            m.role_change_seconds.observe(t.elapsed().as_secs_f64());
        }
        return;
    }
    s.change_started.get_or_insert_with(Instant::now);
    let kind = step.kind().to_string();
    let outcome = if ok { "ok" } else { "failed" };
    m.transitions
        .get_or_create(&vec![("kind", kind.clone()), ("outcome", outcome.into())])
        .inc();
    m.transition_seconds
        .get_or_create(&vec![("kind", kind)])
        .observe(took.as_secs_f64());
}

/// An iteration whose observation failed.
pub fn observation_failed() {
    m().observation_failures.inc();
}

/// What serves `localhost:2379` here.
pub fn etcd_mode(mode: EtcdMode) {
    for (k, v) in [
        (EtcdMode::Member, "member"),
        (EtcdMode::Learner, "learner"),
        (EtcdMode::Proxy, "proxy"),
        (EtcdMode::None, "none"),
    ] {
        m().mode
            .get_or_create(&l1("mode", v))
            .set((k == mode) as i64);
    }
}

/// Counts every answered keep-alive published on `renewals` (a
/// [`deckhand_etcd::LeaseKeeper::renewals`] receiver), until its keeper
/// is dropped.
pub fn follow_renewals(mut renewals: tokio::sync::watch::Receiver<Option<deckhand_etcd::Renewal>>) {
    tokio::spawn(async move {
        while renewals.changed().await.is_ok() {
            let answered = renewals.borrow_and_update().is_some();
            if answered {
                m().lease_renewals.inc();
                state().last_renewal = Some(Instant::now());
            }
        }
    });
}

/// A status write, `ok` or failed.
pub fn status_write(ok: bool) {
    let outcome = if ok { "ok" } else { "failed" };
    m().status_writes
        .get_or_create(&l1("outcome", outcome))
        .inc();
}

/// A renewal of the node's certificates (agent/renewal.rs) installed
/// (`ok`) or given up for this pass (the next pass asks again).
pub fn certificate_renewal(ok: bool) {
    let outcome = if ok { "ok" } else { "failed" };
    m().cert_renewals
        .get_or_create(&l1("outcome", outcome))
        .inc();
}

/// A plane unit start queued (`ok`) or refused by systemd.
pub fn unit_start(ok: bool) {
    if ok {
        m().unit_starts.inc();
    } else {
        unit_failure("start-job");
    }
}

/// A plane unit stopped (`ok`) or whose stop job failed.
pub fn unit_stop(ok: bool) {
    if ok {
        m().unit_stops.inc();
    } else {
        unit_failure("stop-job");
    }
}

/// A plane unit failure: `start-job`, `stop-job` or `did-not-stay-up`.
pub fn unit_failure(reason: &'static str) {
    m().unit_failures.get_or_create(&l1("reason", reason)).inc();
}

/// Singleton units this node leads and runs.
pub fn singletons_held(n: usize) {
    m().singletons_held.set(n as i64);
}

/// An image pulled: `bytes` downloaded in `took`.
pub fn image_pulled(bytes: u64, took: Duration) {
    let m = m();
    m.pulls.get_or_create(&l1("outcome", "ok")).inc();
    m.pull_bytes.inc_by(bytes);
    m.pull_seconds.observe(took.as_secs_f64());
}

/// An image that could not be made present.
pub fn image_pull_failed() {
    m().pulls.get_or_create(&l1("outcome", "failed")).inc();
}

/// The node checks' latest outcomes; each check gets one series per state.
pub fn checks(checks: &[Check]) {
    for c in checks {
        for (state, v) in [
            (CheckState::Pass, "pass"),
            (CheckState::Warn, "warn"),
            (CheckState::Fail, "fail"),
        ] {
            m().checks
                .get_or_create(&vec![("check", c.name.clone()), ("state", v.into())])
                .set((c.state == state) as i64);
        }
    }
}

/// The node certificate as the checks last read it (`None`: TLS off).
pub fn certificate(c: Option<&CertificateStatus>) {
    let f = &m().cert_expiry;
    match c {
        Some(c) => {
            f.get_or_create(&l1("certificate", "node"))
                .set(c.not_after_unix as f64);
        }
        None => f.clear(),
    }
}

/// The host firewall's state.
pub fn firewall(s: &FirewallStatus) {
    for (k, v) in [
        ("enabled", s.enabled),
        ("applied", s.applied),
        ("matches-role", s.matches_role),
    ] {
        m().firewall.get_or_create(&l1("state", k)).set(v as i64);
    }
}

/// The cluster-wide figures, from `o` and the voter watch's `troubled`
/// voter count, on the raft leader's agent only (cleared on every other).
/// Fault tolerance: voters that answer, less the quorum (`voters / 2 + 1`);
/// 0 means one more lost voter loses the quorum.
/// Returns whether this agent leads.
pub fn cluster(o: &Observation, troubled: usize) -> bool {
    let m = m();
    let Some(c) = &o.cluster else { return false };
    let leads = o
        .me()
        .is_some_and(|me| !me.is_learner && c.leader == Some(me.id));
    if !leads {
        m.cluster.clear();
        m.alarms.clear();
        return false;
    }
    let voters = c.members.iter().filter(|x| !x.is_learner).count() as i64;
    let learners = c.members.len() as i64 - voters;
    let healthy = (voters - troubled as i64).max(0);
    let quorum = voters / 2 + 1;
    for (k, v) in [
        ("voters", voters),
        ("voters-healthy", healthy),
        ("learners", learners),
        ("fault-tolerance", healthy - quorum),
    ] {
        m.cluster.get_or_create(&l1("figure", k)).set(v);
    }
    true
}

/// On the raft leader's agent (`leads`), asks etcd for its alarms at most
/// every [`ALARM_EVERY`] (etcd's `Maintenance.Alarm` with `GET`,
/// <https://etcd.io/docs/v3.4/op-guide/maintenance/#space-quota>), in the
/// background, each request bounded by `timeout`.
pub fn ask_alarms(client: &etcd_client::Client, leads: bool, timeout: Duration) {
    if !leads {
        return;
    }
    {
        let mut s = state();
        if s.alarms_asked.is_some_and(|t| t.elapsed() < ALARM_EVERY) {
            return;
        }
        s.alarms_asked = Some(Instant::now());
    }
    let mut client = client.clone();
    tokio::spawn(async move {
        use etcd_client::{AlarmAction, AlarmType};
        let r = tokio::time::timeout(
            timeout,
            client.alarm(AlarmAction::Get, AlarmType::None, None),
        )
        .await;
        let Ok(Ok(r)) = r else {
            tracing::debug!("cannot read etcd's alarms");
            return;
        };
        let (mut nospace, mut corrupt) = (0, 0);
        for a in r.alarms() {
            match a.alarm() {
                AlarmType::Nospace => nospace = 1,
                AlarmType::Corrupt => corrupt = 1,
                AlarmType::None => {}
            }
        }
        let f = &m().alarms;
        f.get_or_create(&l1("alarm", "nospace")).set(nospace);
        f.get_or_create(&l1("alarm", "corrupt")).set(corrupt);
    });
}

#[cfg(test)]
mod tests;
