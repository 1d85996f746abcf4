//! The errors of this crate: each says what failed and what the operator can do.

use std::fmt;
use std::time::Duration;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The kind of systemd job a [`Systemd`](crate::Systemd) method queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobType {
    /// `StartUnit`
    Start,
    /// `StopUnit`
    Stop,
    /// `RestartUnit`
    Restart,
}

impl JobType {
    /// The lower-case verb, as `systemctl` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::Start => "start",
            JobType::Stop => "stop",
            JobType::Restart => "restart",
        }
    }
}

impl fmt::Display for JobType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The system bus could not be reached, or the manager refused us.
    #[error(
        "cannot talk to systemd over the system D-Bus; check that systemd runs as PID 1 \
         and that the bus is up (`systemctl status dbus.socket dbus.service`)"
    )]
    Connect {
        /// The D-Bus error.
        #[source]
        source: zbus_systemd::zbus::Error,
    },

    /// systemd has no such unit: no unit file and not loaded
    /// (D-Bus error `org.freedesktop.systemd1.NoSuchUnit`).
    #[error(
        "cannot {job} unit {unit}: systemd has no such unit; install its unit file \
         (see `systemctl cat {unit}`) and run `systemctl daemon-reload`"
    )]
    NoSuchUnit {
        /// The unit name.
        unit: String,
        /// What we tried to do.
        job: JobType,
    },

    /// The job finished with a result other than `done`.
    #[error(
        "{job} job for unit {unit} finished with result \"{result}\"; \
         see `systemctl status {unit}` and `journalctl -u {unit}`"
    )]
    JobFailed {
        /// The unit name.
        unit: String,
        /// What we tried to do.
        job: JobType,
        /// The job result from the `JobRemoved` signal: `failed`, `timeout`,
        /// `dependency`, `canceled`, `skipped`, or any future value systemd adds.
        result: String,
    },

    /// The job did not finish in time. It may still be queued or running in systemd.
    #[error(
        "{job} job for unit {unit} did not finish within {}s; it may still be running: \
         see `systemctl list-jobs`, `systemctl status {unit}` and `journalctl -u {unit}`",
        timeout.as_secs_f64()
    )]
    JobTimeout {
        /// The unit name.
        unit: String,
        /// What we tried to do.
        job: JobType,
        /// How long we waited.
        timeout: Duration,
    },

    /// The D-Bus connection closed while we waited for a job's `JobRemoved` signal.
    #[error(
        "lost the D-Bus connection to systemd while waiting for the {job} job of unit {unit}; \
         reconnect and check `systemctl status {unit}`"
    )]
    Disconnected {
        /// The unit name.
        unit: String,
        /// What we tried to do.
        job: JobType,
    },

    /// Any other failed D-Bus call about a unit.
    #[error(
        "D-Bus call {call} for unit {unit} failed; see `systemctl status {unit}` \
         and `journalctl -b -u {unit}`"
    )]
    Dbus {
        /// The unit name.
        unit: String,
        /// The systemd method or property, e.g. `StartUnit`, `ActiveState`.
        call: &'static str,
        /// The D-Bus error.
        #[source]
        source: zbus_systemd::zbus::Error,
    },

    /// `Reload` (what `systemctl daemon-reload` does) failed.
    #[error(
        "systemd daemon-reload failed; run `systemd-analyze verify` on the changed unit files \
         and see `journalctl -b -u init.scope`"
    )]
    DaemonReload {
        /// The D-Bus error.
        #[source]
        source: zbus_systemd::zbus::Error,
    },

    /// A unit name systemd would refuse (systemd.unit(5)).
    #[error("invalid unit name {name:?}: {reason} (see systemd.unit(5) for the rules)")]
    InvalidUnitName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// An environment variable name outside `[A-Za-z_][A-Za-z0-9_]*`.
    #[error(
        "invalid environment variable name {key:?}: use letters, digits and '_', not starting with a digit"
    )]
    InvalidEnvKey {
        /// The name as given.
        key: String,
    },

    /// A value that an `EnvironmentFile=` cannot carry.
    #[error("invalid value for environment variable {key}: {reason}")]
    InvalidEnvValue {
        /// The variable name.
        key: String,
        /// Why it cannot be written.
        reason: &'static str,
    },

    /// The same variable given twice; systemd would silently keep the last one.
    #[error("environment variable {key} is given twice; keep only one")]
    DuplicateEnvKey {
        /// The variable name.
        key: String,
    },
}
