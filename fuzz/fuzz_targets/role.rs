//! `Role::parse` must return `Ok` or `Err` for every byte string, never panic;
//! and a role it accepts must survive its own canonical JSON unchanged.
#![no_main]

use deckhand_model::Role;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(role) = Role::parse(data) {
        let json = role.to_json();
        let again = Role::parse(json.as_bytes()).unwrap_or_else(|e| {
            panic!("canonical JSON {json:?} of an accepted role rejected: {e}")
        });
        assert_eq!(again, role, "round trip through {json:?} changed the role");
        let _ = role.to_string();
    }
});
