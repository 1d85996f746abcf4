//! deckhand's systemd side: units over D-Bus, atomic file writes, env files and sd_notify.
//!
//! - [`Systemd`] talks to the system manager (PID 1) over the system D-Bus:
//!   start, stop and restart units and wait for their jobs, read unit state,
//!   reset failed units, reload unit files.
//!   See <https://www.freedesktop.org/software/systemd/man/latest/org.freedesktop.systemd1.html>.
//! - [`validate_unit_name`] checks a unit name before it goes anywhere near systemd.
//! - [`write_atomic`] writes env files and drop-ins so that a crash never leaves
//!   a half-written file behind.
//! - [`render_env_file`] / [`parse_env_file`] write and read `EnvironmentFile=`
//!   files (systemd.exec(5)).
//! - [`notify`] tells systemd the agent is ready, alive (watchdog) or stopping.

mod env_file;
mod error;
mod fs;
mod manager;
pub mod notify;
mod unit_name;

pub use env_file::{parse_env_file, render_env_file};
pub use error::{Error, JobType, Result};
pub use fs::write_atomic;
pub use manager::{Systemd, UnitState};
pub use unit_name::validate_unit_name;
