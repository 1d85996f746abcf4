//! `ClusterConfig::parse` must return `Ok` or `Err` for every byte string,
//! never panic; and a config it accepts must survive serialization unchanged.
#![no_main]

use deckhand_model::ClusterConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cfg) = ClusterConfig::parse(data) {
        let json = serde_json::to_vec(&cfg).expect("a ClusterConfig serializes");
        let again = ClusterConfig::parse(&json).unwrap_or_else(|e| {
            panic!(
                "JSON {:?} of an accepted config rejected: {e}",
                String::from_utf8_lossy(&json)
            )
        });
        assert_eq!(again, cfg, "round trip changed the config");
    }
});
