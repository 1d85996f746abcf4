//! The summary of one plane pass for the status: each unit of this node's
//! planes with its state and holder, whether the node is settled, and what
//! it waits for (pure).

use std::collections::{BTreeMap, BTreeSet};

use deckhand_model::{ImagesStatus, Plane, PlaneConfig, PlaneStatus, UnitMode, UnitStatus};
use deckhand_plan::UnitPlan;

/// What one reconcile pass found, for the status.
#[derive(Debug, Clone, Default)]
pub struct PlanesOutcome {
    /// Per plane of this node, its units.
    pub planes: Vec<PlaneStatus>,
    /// The images.
    pub images: ImagesStatus,
    /// Nothing left to start or stop.
    pub settled: bool,
    /// Errors in words: rejected plane configs, conflicts, failed jobs.
    pub error: Option<String>,
    /// What the planes wait for, in words, if anything.
    pub step: Option<String>,
}

/// What [`summarize`] is made of: one plane pass, after acting.
pub struct Summary<'a> {
    /// The last valid config of each plane.
    pub configs: &'a BTreeMap<Plane, PlaneConfig>,
    /// Planes whose current config was rejected.
    pub rejected: &'a BTreeMap<Plane, String>,
    /// This node's planes.
    pub my_planes: &'a BTreeSet<Plane>,
    /// The active state of each unit of this node's planes, after acting
    /// (`active`, `activating`, `inactive`, `failed`, `not-found`, ...).
    pub states: &'a BTreeMap<String, String>,
    /// Each singleton's election leader (unit → node name).
    pub holders: &'a BTreeMap<String, String>,
    /// The unit plan of this pass.
    pub plan: &'a UnitPlan,
    /// A stop or start of this pass failed.
    pub act_failed: bool,
    /// A unit of this node's planes has conflicting modes in two planes.
    pub mine_conflict: bool,
    /// Every error of this pass, in words.
    pub errors: Vec<String>,
    /// The preseed worker's report.
    pub images: ImagesStatus,
}

/// The summary of the plane units for the status: per plane of this node
/// its units with their state (and a singleton's holder), whether the node
/// is settled (nothing to start or stop, no unit still activating or
/// deactivating, no failed job, and no conflict or rejected config of its
/// own planes: those elsewhere are reported, not waited on), and what it
/// waits for. A plane of the node without a config shows with no units.
pub fn summarize(s: &Summary<'_>) -> PlanesOutcome {
    let mut planes = Vec::new();
    let mut in_transition = false;
    for (plane, cfg) in s.configs {
        if !s.my_planes.contains(plane) {
            continue;
        }
        let mut units = Vec::new();
        for u in &cfg.units {
            let state = s
                .states
                .get(&u.name)
                .cloned()
                .unwrap_or_else(|| "unknown".into());
            // A queued start or stop is not done yet.
            in_transition |= matches!(state.as_str(), "activating" | "deactivating" | "reloading");
            let holder = (u.mode == UnitMode::Singleton)
                .then(|| s.holders.get(&u.name).cloned())
                .flatten();
            units.push(UnitStatus {
                name: u.name.clone(),
                mode: u.mode,
                state,
                holder,
                candidacy: s.plan.candidacy.get(&u.name).cloned(),
            });
        }
        planes.push(PlaneStatus {
            plane: *plane,
            units,
        });
    }
    for p in s.my_planes {
        if !s.configs.contains_key(p) && !s.rejected.contains_key(p) {
            planes.push(PlaneStatus {
                plane: *p,
                units: Vec::new(),
            });
        }
    }
    let mine_rejected = s.rejected.keys().any(|p| s.my_planes.contains(p));
    let step = if !s.plan.waiting_for_images.is_empty() {
        Some(format!(
            "waiting for images before starting {}",
            s.plan.waiting_for_images.join(", ")
        ))
    } else if !s.plan.settled() || in_transition {
        Some("starting and stopping plane units".to_string())
    } else {
        None
    };
    PlanesOutcome {
        planes,
        images: s.images.clone(),
        settled: s.plan.settled()
            && !in_transition
            && !s.act_failed
            && !s.mine_conflict
            && !mine_rejected,
        error: (!s.errors.is_empty()).then(|| s.errors.join("; ")),
        step,
    }
}

#[cfg(test)]
mod tests {
    use deckhand_model::PlaneUnit;

    use super::*;

    fn config(units: &[(&str, UnitMode)]) -> PlaneConfig {
        PlaneConfig {
            units: units
                .iter()
                .map(|(n, m)| PlaneUnit {
                    name: n.to_string(),
                    mode: *m,
                })
                .collect(),
            images: vec![],
            ports: vec![],
        }
    }

    struct Case {
        configs: BTreeMap<Plane, PlaneConfig>,
        rejected: BTreeMap<Plane, String>,
        mine: BTreeSet<Plane>,
        states: BTreeMap<String, String>,
        holders: BTreeMap<String, String>,
        plan: UnitPlan,
    }

    impl Case {
        fn new() -> Case {
            Case {
                configs: BTreeMap::from([
                    (
                        Plane::Router,
                        config(&[("router.service", UnitMode::Global)]),
                    ),
                    (
                        Plane::Control,
                        config(&[("sched.service", UnitMode::Singleton)]),
                    ),
                ]),
                rejected: BTreeMap::new(),
                mine: BTreeSet::from([Plane::Router, Plane::Control, Plane::Data]),
                states: BTreeMap::from([
                    ("router.service".into(), "active".into()),
                    ("sched.service".into(), "inactive".into()),
                ]),
                holders: BTreeMap::from([("sched.service".into(), "node2".into())]),
                plan: UnitPlan::default(),
            }
        }

        fn run(&self) -> PlanesOutcome {
            summarize(&Summary {
                configs: &self.configs,
                rejected: &self.rejected,
                my_planes: &self.mine,
                states: &self.states,
                holders: &self.holders,
                plan: &self.plan,
                act_failed: false,
                mine_conflict: false,
                errors: vec![],
                images: ImagesStatus::default(),
            })
        }
    }

    #[test]
    fn units_with_their_state_and_holder_and_empty_planes_of_the_node() {
        let out = Case::new().run();
        assert!(out.settled && out.step.is_none() && out.error.is_none());
        let names: Vec<Plane> = out.planes.iter().map(|p| p.plane).collect();
        assert_eq!(names, [Plane::Control, Plane::Router, Plane::Data]);
        let sched = &out.planes[0].units[0];
        assert_eq!(
            (sched.state.as_str(), sched.holder.as_deref()),
            ("inactive", Some("node2"))
        );
        let router = &out.planes[1].units[0];
        assert_eq!(
            (router.state.as_str(), router.holder.as_deref()),
            ("active", None)
        );
        assert!(out.planes[2].units.is_empty(), "data: no config yet");
    }

    #[test]
    fn not_settled_while_a_unit_moves_or_waits_or_its_config_is_rejected() {
        let mut c = Case::new();
        c.states
            .insert("router.service".into(), "activating".into());
        let out = c.run();
        assert!(!out.settled);
        assert_eq!(
            out.step.as_deref(),
            Some("starting and stopping plane units")
        );

        let mut c = Case::new();
        c.plan.waiting_for_images = vec!["router.service".into()];
        let out = c.run();
        assert!(!out.settled);
        assert_eq!(
            out.step.as_deref(),
            Some("waiting for images before starting router.service")
        );

        let mut c = Case::new();
        c.rejected.insert(Plane::Data, "bad".into());
        assert!(!c.run().settled, "a rejected config of its own plane");
        // Another plane's rejected config does not unsettle it.
        c.mine.remove(&Plane::Data);
        assert!(c.run().settled);
        // Units of other planes are not shown.
        c.mine = BTreeSet::from([Plane::Router]);
        let out = c.run();
        assert_eq!(out.planes.len(), 1);
    }
}
