//! The agent's TOML config (`/etc/deckhand/config.toml` and its drop-ins):
//! `parse_fragment` then `validate` must return `Ok` or `Err` for every file
//! content, never panic.
//! The parser is `deckhand::config`, imported from the `deckhand` library.
#![no_main]

use deckhand::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The agent reads each file with `read_to_string`: non-UTF-8 never reaches
    // the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(fragment) = config::parse_fragment(text) {
        let _ = config::validate(fragment);
    }
    // `initial_cluster` is also parsed on its own (`validate` reaches it only
    // after valid endpoints): give the fuzzer the direct path too.
    let _ = config::parse_initial_cluster(text);
});
