//! Planes: which units a node runs and which images it keeps present.
//!
//! A pure function of the node's planes, the plane configs, the local unit
//! states and the node's standing in each singleton election, like the
//! membership planner: the agent observes, asks [`plan_units`], acts, and
//! observes again.

use std::collections::{BTreeMap, BTreeSet};

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
