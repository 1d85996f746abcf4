//! Failpoints for crash tests: with the `failpoints` cargo feature, the agent
//! aborts (no cleanup, no lease revoke, like SIGKILL) at the named point when
//! the file [`crate::paths::FAILPOINT`] holds that name. The file is removed first, so
//! the point fires once; the name is written to [`crate::paths::FAILPOINT_HIT`] so a test can
//! tell it fired. systemd then restarts the agent, which must resume from
//! what it observes.
//!
//! Points: `before-<kind>` and `after-<kind>` of every acting step kind
//! (`deckhand_plan::Step::ACTING_KINDS`), and `mid-serve-localhost` (member
//! environment rewritten, proxy not yet stopped). Without the feature every
//! call compiles to nothing; release builds for users never carry it.

#[cfg(feature = "failpoints")]
use crate::paths::{FAILPOINT as FAILPOINT_FILE, FAILPOINT_HIT as HIT_FILE};

/// Dies here if the failpoint file names `name` (feature `failpoints` only).
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    let Ok(want) = std::fs::read_to_string(FAILPOINT_FILE) else {
        return;
    };
    if want.trim() != name {
        return;
    }
    let _ = std::fs::remove_file(FAILPOINT_FILE);
    let _ = std::fs::write(HIT_FILE, name);
    tracing::error!("failpoint {name}: aborting now");
    std::process::abort();
}

/// Does nothing: built without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}
