//! Planes: which units a node runs and which images it keeps present.
//!
//! A pure function of the node's planes, the plane configs, the local unit
//! states and the node's standing in each singleton election, like the
//! membership planner: the agent observes, asks [`plan_units`], acts, and
//! observes again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use deckhand_model::{ClusterConfig, ImageRef, Plane, PlaneConfig, UnitMode};

/// The images a node keeps present: those of its planes (of every plane when
/// the cluster config says `preseed_all_planes`), plus the cluster config's
/// `upcoming` list. Planes without a (valid) config add nothing.
pub fn wanted_images(
    planes: &BTreeSet<Plane>,
    configs: &BTreeMap<Plane, PlaneConfig>,
    cluster: &ClusterConfig,
) -> BTreeSet<ImageRef> {
    configs
        .iter()
        .filter(|(p, _)| cluster.preseed_all_planes || planes.contains(p))
        .flat_map(|(_, c)| c.images.iter().cloned())
        .chain(cluster.upcoming.iter().cloned())
        .collect()
}

/// The images one plane's units need.
pub fn plane_images(plane: Plane, configs: &BTreeMap<Plane, PlaneConfig>) -> BTreeSet<ImageRef> {
    configs
        .get(&plane)
        .map(|c| c.images.iter().cloned().collect())
        .unwrap_or_default()
}

/// Mode of each unit named by any plane config; a unit listed with
/// different modes in two planes is a conflict, reported in the second map
/// with the planes involved.
pub fn unit_modes(
    configs: &BTreeMap<Plane, PlaneConfig>,
) -> (BTreeMap<String, UnitMode>, BTreeMap<String, String>) {
    let mut modes: BTreeMap<String, (UnitMode, Plane)> = BTreeMap::new();
    let mut conflicts = BTreeMap::new();
    for (plane, cfg) in configs {
        for u in &cfg.units {
            match modes.get(&u.name) {
                Some((mode, first)) if *mode != u.mode => {
                    conflicts.insert(
                        u.name.clone(),
                        format!(
                            "unit {} is {mode} in plane {first} but {} in plane {plane}; \
                             it runs nowhere until the plane configs agree",
                            u.name, u.mode
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    modes.insert(u.name.clone(), (u.mode, *plane));
                }
            }
        }
    }
    let modes = modes
        .into_iter()
        .filter(|(n, _)| !conflicts.contains_key(n))
        .map(|(n, (m, _))| (n, m))
        .collect();
    (modes, conflicts)
}

/// Where this node stands in a singleton unit's election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// This node's current lease leads the election.
    Leader,
    /// Another candidate leads (or nobody does yet, e.g. before campaigning).
    Follower,
    /// The election could not be read (etcd unreachable, no lease yet).
    Unknown,
}

/// What the agent observed about its planes.
#[derive(Debug, Clone, Default)]
pub struct UnitObservation {
    /// The node's planes (from its desired role).
    pub planes: BTreeSet<Plane>,
    /// The last valid config of each plane.
    pub configs: BTreeMap<Plane, PlaneConfig>,
    /// Units that are running (systemd `active`, `activating` or
    /// `reloading`) on this node, among those named by any plane config or
    /// in `managed`.
    pub running: BTreeSet<String>,
    /// Units deckhand has started on this node and not stopped since
    /// (persisted across agent restarts). Only these are ever stopped:
    /// deckhand never stops a unit it did not start.
    pub managed: BTreeSet<String>,
    /// Planes whose images are settled on this node: each present, or its
    /// pull failed after every attempt (the failure is in the status; the
    /// units start anyway, as they would have without deckhand).
    pub images_settled: BTreeSet<Plane>,
    /// This node's standing in the election of each singleton unit of its
    /// planes; a unit missing here is [`Standing::Unknown`].
    pub standing: BTreeMap<String, Standing>,
    /// The node's lease was renewed recently enough that it may run
    /// singleton units (false when fenced: see the agent's fence).
    pub may_lead: bool,
    /// Why this node should not hold singleton units now, if it should not
    /// (its Docker daemon does not answer: see [`ProbeJudge`]).
    pub sick: Option<String>,
    /// Singleton units that failed to start or stay up here several times
    /// in a row (see [`StartFailures`]), with why.
    pub failing: BTreeMap<String, String>,
    /// For each singleton election read this pass: how many other nodes are
    /// candidates in it (candidacies of this node, on any lease, not
    /// counted). A unit missing here: the election could not be read.
    pub other_candidates: BTreeMap<String, usize>,
}

/// What to do about the node's plane units, all at once (they are local and
/// independent): the agent stops, then withdraws, then campaigns, then
/// starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitPlan {
    /// Units to stop: managed units no plane of this node wants running
    /// here (a lost plane, a lost election, a removed unit, a conflict).
    pub stop: Vec<String>,
    /// Units to start: global units of the node's planes, and singletons it
    /// leads, whose images are settled.
    pub start: Vec<String>,
    /// Singleton units whose election this node should be a candidate in.
    pub campaign: Vec<String>,
    /// Singleton units this node should not be a candidate for (withdraw
    /// any candidacy, after the unit is stopped).
    pub withdraw: Vec<String>,
    /// Units waiting for their plane's images before they start.
    pub waiting_for_images: Vec<String>,
    /// Configuration conflicts, in words.
    pub errors: Vec<String>,
    /// Singleton units this node stands down from although it could hold
    /// them, or holds although unhealthy, with why (for the status).
    pub candidacy: BTreeMap<String, String>,
}

impl UnitPlan {
    /// True when nothing is left to start or stop: the planes are converged
    /// as far as this node can tell.
    pub fn settled(&self) -> bool {
        self.stop.is_empty() && self.start.is_empty() && self.waiting_for_images.is_empty()
    }
}

/// Decides which plane units run on this node.
///
/// - A `global` unit of one of the node's planes runs once every plane of
///   the node that lists it has its images settled.
/// - A `singleton` unit of one of the node's planes: the node campaigns once
///   the images are settled, and runs the unit only while it leads and
///   `may_lead`. With an unknown standing the unit keeps its current state
///   (the fence stops it if the lease cannot be renewed).
/// - Every other unit deckhand started (`managed`) and that is running is
///   stopped; singleton units not wanted are withdrawn from.
/// - A node that is `sick`, or on which a singleton is `failing`, resigns
///   that singleton's candidacy (stopping its copy first) when another node
///   is a candidate, so that node takes the unit over; it campaigns again
///   once healthy. It never resigns while no other node is a candidate, nor
///   while the election could not be read: someone has to hold the unit.
///   The reason goes to [`UnitPlan::candidacy`].
/// - A unit listed with two modes runs nowhere ([`unit_modes`]).
pub fn plan_units(o: &UnitObservation) -> UnitPlan {
    let (modes, conflicts) = unit_modes(&o.configs);
    let mut plan = UnitPlan {
        errors: conflicts.values().cloned().collect(),
        ..UnitPlan::default()
    };
    // Units of this node's planes: name → settled (all listing planes settled).
    let mut mine: BTreeMap<&str, bool> = BTreeMap::new();
    for (plane, cfg) in &o.configs {
        if !o.planes.contains(plane) {
            continue;
        }
        let settled = o.images_settled.contains(plane);
        for u in &cfg.units {
            if modes.contains_key(&u.name) {
                let e = mine.entry(u.name.as_str()).or_insert(true);
                *e = *e && settled;
            }
        }
    }
    let mut keep: BTreeSet<&str> = BTreeSet::new();
    for (&name, &settled) in &mine {
        let running = o.running.contains(name);
        match modes[name] {
            UnitMode::Global => {
                if running {
                    keep.insert(name);
                } else if settled {
                    keep.insert(name);
                    plan.start.push(name.to_string());
                } else {
                    plan.waiting_for_images.push(name.to_string());
                }
            }
            UnitMode::Singleton => {
                let unhealthy = o.failing.get(name).or(o.sick.as_ref());
                match (unhealthy, o.other_candidates.get(name)) {
                    (Some(why), Some(&n)) if n > 0 => {
                        plan.candidacy.insert(
                            name.to_string(),
                            format!(
                                "resigned: {why}; another candidate takes the unit over \
                                 (this node campaigns again once healthy)"
                            ),
                        );
                        // Not kept, not campaigned for: stopped, then withdrawn.
                        continue;
                    }
                    (Some(why), Some(_)) => {
                        plan.candidacy.insert(
                            name.to_string(),
                            format!("{why}, but no other node is a candidate: not resigning"),
                        );
                    }
                    _ => {}
                }
                let standing = o.standing.get(name).copied().unwrap_or(Standing::Unknown);
                // A running leader stays in while a new image is pulled:
                // handing over would only move the wait elsewhere.
                let holding = running && standing != Standing::Follower;
                if settled || holding {
                    plan.campaign.push(name.to_string());
                } else {
                    plan.waiting_for_images.push(name.to_string());
                }
                match standing {
                    Standing::Leader if o.may_lead && (settled || running) => {
                        keep.insert(name);
                        if !running {
                            plan.start.push(name.to_string());
                        }
                    }
                    Standing::Unknown if running && o.may_lead => {
                        keep.insert(name);
                    }
                    _ => {}
                }
            }
        }
    }
    for name in o.managed.iter().chain(o.running.iter()) {
        if !keep.contains(name.as_str())
            && o.managed.contains(name)
            && o.running.contains(name)
            && !plan.stop.contains(name)
        {
            plan.stop.push(name.clone());
        }
    }
    // Withdraw from every singleton election this node should not be in.
    for (name, mode) in &modes {
        if *mode == UnitMode::Singleton && !plan.campaign.contains(name) {
            plan.withdraw.push(name.clone());
        }
    }
    plan
}

/// How many failed starts in a row make a singleton unit `failing` on a
/// node ([`UnitObservation::failing`]).
pub const FAILED_STARTS: usize = 3;
/// The window those failed starts must fall in; the node stands for the
/// unit again once fewer than [`FAILED_STARTS`] remain in it.
pub const FAILED_STARTS_WINDOW: Duration = Duration::from_secs(300);

/// Failed starts of one unit on this node: a start counts as failed when
/// the unit is started again without having been stopped by deckhand in
/// between (it did not start, or did not stay up). Pure: `now` is passed in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartFailures {
    at: VecDeque<Instant>,
}

impl StartFailures {
    /// Records a failed start at `now`.
    pub fn record(&mut self, now: Instant) {
        self.at.push_back(now);
        while self.at.len() > FAILED_STARTS {
            self.at.pop_front();
        }
    }

    /// Failed starts within [`FAILED_STARTS_WINDOW`] before `now`.
    pub fn recent(&self, now: Instant) -> usize {
        self.at
            .iter()
            .filter(|t| now.saturating_duration_since(**t) < FAILED_STARTS_WINDOW)
            .count()
    }

    /// Whether the unit failed [`FAILED_STARTS`] times within the window.
    pub fn failing(&self, now: Instant) -> bool {
        self.recent(now) >= FAILED_STARTS
    }
}

/// A daemon probed on a cadence (the Docker daemon's `GET /_ping`), judged
/// with hysteresis so one slow answer does not move a singleton: sick once
/// it has not answered for [`ProbeJudge::SICK_AFTER`] (several probes in a
/// row), healthy again once it has answered every probe for
/// [`ProbeJudge::HEALTHY_AFTER`]. Pure: `now` is passed in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeJudge {
    /// Since when every probe failed (None: the last one answered).
    failing_since: Option<Instant>,
    /// Since when every probe answered (None: the last one failed).
    answering_since: Option<Instant>,
    /// The verdict, with the first failure's reason since it became sick.
    sick: Option<String>,
}

impl ProbeJudge {
    /// Failing this long makes the daemon sick.
    pub const SICK_AFTER: Duration = Duration::from_secs(5);
    /// Answering this long after being sick makes it healthy again.
    pub const HEALTHY_AFTER: Duration = Duration::from_secs(30);

    /// Records a probe's outcome at `now` (`Err`: why it failed).
    pub fn record(&mut self, outcome: Result<(), String>, now: Instant) {
        match outcome {
            Ok(()) => {
                self.failing_since = None;
                let since = *self.answering_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= Self::HEALTHY_AFTER {
                    self.sick = None;
                }
            }
            Err(why) => {
                self.answering_since = None;
                let since = *self.failing_since.get_or_insert(now);
                // The first reason is kept while sick: a reason that changed
                // with every probe would rewrite the status every probe.
                if self.sick.is_none() && now.saturating_duration_since(since) >= Self::SICK_AFTER {
                    self.sick = Some(why);
                }
            }
        }
    }

    /// The verdict: why the daemon counts as sick, or None.
    pub fn sick(&self) -> Option<&str> {
        self.sick.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deckhand_model::PlaneUnit;

    fn cfg(units: &[(&str, UnitMode)], images: &[&str]) -> PlaneConfig {
        PlaneConfig {
            units: units
                .iter()
                .map(|(n, m)| PlaneUnit {
                    name: n.to_string(),
                    mode: *m,
                })
                .collect(),
            images: images.iter().map(|i| ImageRef::parse(i).unwrap()).collect(),
            ports: vec![],
        }
    }

    fn obs() -> UnitObservation {
        let mut configs = BTreeMap::new();
        configs.insert(
            Plane::Router,
            cfg(&[("router.service", UnitMode::Global)], &["r/router:1"]),
        );
        configs.insert(
            Plane::Control,
            cfg(&[("sched.service", UnitMode::Singleton)], &["r/sched:1"]),
        );
        UnitObservation {
            configs,
            images_settled: [Plane::Router, Plane::Control].into(),
            may_lead: true,
            ..Default::default()
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn global_units_start_on_plane_nodes_only_after_images() {
        let mut o = obs();
        o.planes = [Plane::Router].into();
        o.images_settled.clear();
        let p = plan_units(&o);
        assert!(p.start.is_empty());
        assert_eq!(p.waiting_for_images, vec!["router.service"]);
        assert!(!p.settled());
        o.images_settled.insert(Plane::Router);
        let p = plan_units(&o);
        assert_eq!(p.start, vec!["router.service"]);
        o.running = set(&["router.service"]);
        o.managed = set(&["router.service"]);
        let p = plan_units(&o);
        assert!(p.settled(), "{p:?}");
        assert_eq!(p.withdraw, vec!["sched.service"]);
    }

    #[test]
    fn losing_a_plane_stops_its_managed_units_only() {
        let mut o = obs();
        o.planes = BTreeSet::new();
        o.running = set(&["router.service", "sched.service"]);
        o.managed = set(&["router.service"]);
        let p = plan_units(&o);
        assert_eq!(
            p.stop,
            vec!["router.service"],
            "never stops what it did not start"
        );
        assert!(p.start.is_empty());
    }

    #[test]
    fn a_unit_removed_from_every_config_is_stopped() {
        let mut o = obs();
        o.planes = [Plane::Router].into();
        o.running = set(&["old.service", "router.service"]);
        o.managed = set(&["old.service", "router.service"]);
        assert_eq!(plan_units(&o).stop, vec!["old.service"]);
    }

    #[test]
    fn singleton_runs_only_on_the_leader_while_it_may_lead() {
        let mut o = obs();
        o.planes = [Plane::Control].into();
        let p = plan_units(&o);
        assert_eq!(p.campaign, vec!["sched.service"]);
        assert!(p.start.is_empty(), "unknown standing: do not start");

        o.standing.insert("sched.service".into(), Standing::Leader);
        assert_eq!(plan_units(&o).start, vec!["sched.service"]);

        o.running = set(&["sched.service"]);
        o.managed = set(&["sched.service"]);
        assert!(plan_units(&o).settled());

        // Fenced: stop even though the last read said leader.
        o.may_lead = false;
        assert_eq!(plan_units(&o).stop, vec!["sched.service"]);
        o.may_lead = true;

        // Lost the election: stop.
        o.standing
            .insert("sched.service".into(), Standing::Follower);
        assert_eq!(plan_units(&o).stop, vec!["sched.service"]);

        // Unknown (etcd unreachable) while the lease is fresh: keep running.
        o.standing.insert("sched.service".into(), Standing::Unknown);
        assert!(plan_units(&o).stop.is_empty());
        o.may_lead = false;
        assert_eq!(plan_units(&o).stop, vec!["sched.service"]);
    }

    #[test]
    fn singleton_waits_for_images_before_campaigning() {
        let mut o = obs();
        o.planes = [Plane::Control].into();
        o.images_settled.clear();
        o.standing.insert("sched.service".into(), Standing::Leader);
        let p = plan_units(&o);
        assert!(p.campaign.is_empty());
        assert!(p.start.is_empty());
        assert_eq!(p.withdraw, vec!["sched.service"]);
        // Already running as leader when a new image appears: keep it.
        o.running = set(&["sched.service"]);
        o.managed = set(&["sched.service"]);
        let p = plan_units(&o);
        assert!(p.stop.is_empty() && p.withdraw.is_empty(), "{p:?}");
    }

    #[test]
    fn conflicting_modes_run_nowhere() {
        let mut o = obs();
        o.configs.insert(
            Plane::Data,
            cfg(&[("sched.service", UnitMode::Global)], &[]),
        );
        o.planes = [Plane::Control, Plane::Data].into();
        o.images_settled.insert(Plane::Data);
        o.standing.insert("sched.service".into(), Standing::Leader);
        o.running = set(&["sched.service"]);
        o.managed = set(&["sched.service"]);
        let p = plan_units(&o);
        assert_eq!(p.stop, vec!["sched.service"]);
        assert!(
            p.errors[0].contains("global in plane data"),
            "{:?}",
            p.errors
        );
    }

    #[test]
    fn wanted_images_follow_planes_and_upcoming() {
        let o = obs();
        let mut cluster = ClusterConfig::default();
        let mine = wanted_images(&[Plane::Router].into(), &o.configs, &cluster);
        assert_eq!(mine.len(), 1);
        cluster.upcoming = vec![ImageRef::parse("r/next:2").unwrap()];
        assert_eq!(
            wanted_images(&[Plane::Router].into(), &o.configs, &cluster).len(),
            2
        );
        cluster.preseed_all_planes = true;
        assert_eq!(
            wanted_images(&BTreeSet::new(), &o.configs, &cluster).len(),
            3
        );
    }

    /// A node leading `sched.service` and running it.
    fn leading() -> UnitObservation {
        let mut o = obs();
        o.planes = [Plane::Control].into();
        o.standing.insert("sched.service".into(), Standing::Leader);
        o.running = set(&["sched.service"]);
        o.managed = set(&["sched.service"]);
        o
    }

    #[test]
    fn a_sick_leader_stops_its_copy_and_resigns_when_another_node_is_a_candidate() {
        let mut o = leading();
        o.other_candidates.insert("sched.service".into(), 1);
        assert!(plan_units(&o).settled(), "healthy: keeps the unit");
        o.sick = Some("the Docker daemon does not answer".into());
        let p = plan_units(&o);
        assert_eq!(p.stop, vec!["sched.service"], "its own copy first");
        assert_eq!(p.withdraw, vec!["sched.service"]);
        assert!(p.campaign.is_empty() && p.start.is_empty(), "{p:?}");
        assert!(
            p.candidacy["sched.service"].starts_with("resigned: the Docker daemon"),
            "{p:?}"
        );
        // Stopped, not a candidate: stays out while sick.
        o.running.clear();
        o.managed.clear();
        o.standing
            .insert("sched.service".into(), Standing::Follower);
        let p = plan_units(&o);
        assert!(p.campaign.is_empty() && p.stop.is_empty(), "{p:?}");
        // Healthy again: campaigns.
        o.sick = None;
        assert_eq!(plan_units(&o).campaign, vec!["sched.service"]);
    }

    #[test]
    fn a_sick_node_never_resigns_as_the_only_candidate_or_blind() {
        let mut o = leading();
        o.sick = Some("the Docker daemon does not answer".into());
        o.other_candidates.insert("sched.service".into(), 0);
        let p = plan_units(&o);
        assert!(p.stop.is_empty() && p.withdraw.is_empty(), "{p:?}");
        assert_eq!(p.campaign, vec!["sched.service"]);
        assert!(
            p.candidacy["sched.service"].contains("no other node is a candidate"),
            "{p:?}"
        );
        // The election could not be read: it cannot count, so it stays.
        o.other_candidates.clear();
        o.standing.insert("sched.service".into(), Standing::Unknown);
        let p = plan_units(&o);
        assert!(p.stop.is_empty() && p.withdraw.is_empty(), "{p:?}");
        // A sick node with nobody else standing campaigns: someone must hold it.
        let mut o = obs();
        o.planes = [Plane::Control].into();
        o.sick = Some("x".into());
        o.other_candidates.insert("sched.service".into(), 0);
        assert_eq!(plan_units(&o).campaign, vec!["sched.service"]);
    }

    #[test]
    fn a_failing_singleton_is_resigned_but_a_global_unit_is_not() {
        let mut o = leading();
        o.planes = [Plane::Control, Plane::Router].into();
        o.running.clear();
        o.other_candidates.insert("sched.service".into(), 2);
        o.failing.insert(
            "sched.service".into(),
            "sched.service failed to start or stay up 3 times in a row".into(),
        );
        let p = plan_units(&o);
        assert_eq!(p.withdraw, vec!["sched.service"], "{p:?}");
        assert!(p.stop.is_empty(), "not running: nothing to stop");
        assert_eq!(
            p.start,
            vec!["router.service"],
            "global units are not affected"
        );
        // Another failing unit name does not move this one.
        o.failing.clear();
        o.failing.insert("other.service".into(), "x".into());
        assert_eq!(plan_units(&o).campaign, vec!["sched.service"]);
    }

    #[test]
    fn start_failures_count_within_the_window() {
        let t0 = Instant::now();
        let mut f = StartFailures::default();
        for i in 0..FAILED_STARTS as u64 - 1 {
            f.record(t0 + Duration::from_secs(10 * i));
        }
        let t = t0 + Duration::from_secs(30);
        assert!(!f.failing(t));
        f.record(t);
        assert!(f.failing(t));
        assert!(
            !f.failing(t0 + FAILED_STARTS_WINDOW + Duration::from_secs(1)),
            "aged out"
        );
    }

    #[test]
    fn the_probe_judge_has_hysteresis_and_keeps_its_first_reason() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut j = ProbeJudge::default();
        j.record(Err("refused".into()), at(0));
        j.record(Ok(()), at(2));
        j.record(Err("refused".into()), at(4));
        assert_eq!(j.sick(), None, "one failure at a time is not sick");
        j.record(Err("refused".into()), at(6));
        j.record(Err("refused".into()), at(9));
        assert_eq!(j.sick(), Some("refused"), "failing for 5 s");
        j.record(Err("timeout".into()), at(11));
        assert_eq!(
            j.sick(),
            Some("refused"),
            "the reason does not change while sick"
        );
        j.record(Ok(()), at(12));
        j.record(Ok(()), at(40));
        assert!(j.sick().is_some(), "answering 28 s only");
        j.record(Err("refused".into()), at(41));
        j.record(Ok(()), at(42));
        j.record(Ok(()), at(72));
        assert_eq!(j.sick(), None, "answering for 30 s: healthy");
    }
}
