//! `PlaneConfig::parse` must return `Ok` or `Err` for every byte string,
//! never panic; a config it accepts must survive serialization unchanged
//! (image references normalize to a fixed point), and every unit name it
//! accepts must pass the systemd-side check too.
#![no_main]

use deckhand_model::{Plane, PlaneConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cfg) = PlaneConfig::parse(Plane::Router, data) {
        let json = serde_json::to_vec(&cfg).expect("a PlaneConfig serializes");
        let again = PlaneConfig::parse(Plane::Router, &json).unwrap_or_else(|e| {
            panic!(
                "JSON {:?} of an accepted config rejected: {e}",
                String::from_utf8_lossy(&json)
            )
        });
        assert_eq!(again, cfg, "round trip changed the config");
        for u in &cfg.units {
            assert!(!u.name.contains('/'), "accepted a unit name with a path: {}", u.name);
        }
    }
});
