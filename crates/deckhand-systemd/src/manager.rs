//! Units over D-Bus: jobs (start, stop, restart) and their results, unit state.
//!
//! Relies on the `org.freedesktop.systemd1.Manager` interface of PID 1:
//! <https://www.freedesktop.org/software/systemd/man/latest/org.freedesktop.systemd1.html>.

use std::time::Duration;

use futures_util::StreamExt;
use zbus_systemd::systemd1::{ManagerProxy, UnitProxy};
use zbus_systemd::zbus::proxy::CacheProperties;
use zbus_systemd::zbus::{self, Connection, OwnedObjectPath};

use crate::{Error, JobType, Result, validate_unit_name};

/// How long a single D-Bus method call may take before it fails with a
/// timed-out I/O error, in seconds: the D-Bus reference implementation's default.
const METHOD_TIMEOUT: Duration = Duration::from_secs(25);

/// D-Bus error systemd returns when a unit is neither loaded nor has a unit file.
const NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";
/// D-Bus error systemd returns when `Subscribe` is called twice on one connection.
const ALREADY_SUBSCRIBED: &str = "org.freedesktop.systemd1.AlreadySubscribed";

/// A connection to the system manager (PID 1) over the system D-Bus, using
/// the `org.freedesktop.systemd1.Manager` and `org.freedesktop.systemd1.Unit`
/// interfaces:
/// <https://www.freedesktop.org/software/systemd/man/latest/org.freedesktop.systemd1.html>.
///
/// Cheap to clone; clones share one connection. Every D-Bus method call fails
/// after 25 seconds without an answer. If the bus goes away (dbus restarted),
/// calls fail with [`Error::Dbus`] or [`Error::Disconnected`]: connect again.
#[derive(Clone, Debug)]
pub struct Systemd {
    conn: Connection,
    manager: ManagerProxy<'static>,
}

/// The state of one unit, as systemd reports it (`systemctl show -p LoadState,ActiveState,SubState`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UnitState {
    /// `loaded`, `not-found`, `bad-setting`, `error`, `masked`, ...
    pub load_state: String,
    /// `active`, `reloading`, `inactive`, `failed`, `activating`, `deactivating`, ...
    pub active_state: String,
    /// Type-specific, e.g. `running`, `dead`, `exited`, `auto-restart` for services.
    pub sub_state: String,
}

impl UnitState {
    /// True while the unit is up or on its way up: `ActiveState` is `active`,
    /// `activating`, `reloading` or `refreshing` (systemd 256+). False for
    /// `inactive`, `failed`, `deactivating` and anything else.
    pub fn is_active(&self) -> bool {
        matches!(
            self.active_state.as_str(),
            "active" | "activating" | "reloading" | "refreshing"
        )
    }

    /// True when `LoadState` is `not-found`: there is no unit file for it.
    pub fn is_not_found(&self) -> bool {
        self.load_state == "not-found"
    }

    /// True when `ActiveState` is `failed`; [`Systemd::reset_failed`] clears it.
    pub fn is_failed(&self) -> bool {
        self.active_state == "failed"
    }
}

impl Systemd {
    /// Connects to the system bus and calls `Subscribe` on the manager, so
    /// that systemd emits the `JobRemoved` signals the job methods wait for
    /// (systemd sends most signals only while at least one client is subscribed;
    /// the subscription ends when this connection closes).
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] if the bus is unreachable (no `/run/dbus/system_bus_socket`),
    /// or the manager does not answer (systemd not PID 1, or permission denied:
    /// starting units needs root or a polkit rule).
    pub async fn connect() -> Result<Systemd> {
        let conn = zbus::connection::Builder::system()
            .method_timeout(METHOD_TIMEOUT)
            .build()
            .await
            .map_err(|source| Error::Connect { source })?;
        // No property cache: we read no manager properties, and a cache would
        // fetch them all and subscribe to their changes.
        let manager = ManagerProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|source| Error::Connect { source })?;
        match manager.subscribe().await {
            Ok(()) => {}
            Err(e) if error_name(&e) == Some(ALREADY_SUBSCRIBED) => {}
            Err(source) => return Err(Error::Connect { source }),
        }
        Ok(Systemd { conn, manager })
    }

    /// Starts `unit` (`StartUnit(unit, "replace")`) and waits up to `timeout`
    /// for the job to finish.
    ///
    /// Waiting means: subscribe to the manager's `JobRemoved` signal *before*
    /// queuing the job (so a job that completes at once is not missed), then
    /// take the signal whose job object path is the one `StartUnit` returned.
    /// Success means systemd finished the job with result `done`: for
    /// `Type=simple` services that is as soon as the process is forked, for
    /// `Type=notify` once it sent `READY=1`. Starting an active unit is `Ok`.
    /// A job may be merged with or replace an already queued job for the unit
    /// (mode `replace`).
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidUnitName`] before anything is sent;
    /// - [`Error::NoSuchUnit`] if systemd has no such unit;
    /// - [`Error::JobFailed`] with the job result (`failed`, `timeout`,
    ///   `dependency`, `canceled`, `skipped`, ...);
    /// - [`Error::JobTimeout`] if no result came within `timeout` (the job is
    ///   left in systemd's queue and may still finish);
    /// - [`Error::Disconnected`] if the bus connection closed while waiting;
    /// - [`Error::Dbus`] for other D-Bus failures (e.g. permission denied,
    ///   unit masked, transaction conflicts).
    pub async fn start(&self, unit: &str, timeout: Duration) -> Result<()> {
        self.run_job(unit, JobType::Start, timeout).await
    }

    /// Stops `unit` (`StopUnit(unit, "replace")`) and waits up to `timeout`
    /// for the job to finish, as [`Systemd::start`] does.
    ///
    /// Stopping an inactive unit, or a unit systemd does not know at all
    /// (`NoSuchUnit`), is `Ok`: the goal, "not running", holds.
    ///
    /// # Errors
    ///
    /// As [`Systemd::start`], except that [`Error::NoSuchUnit`] is never returned.
    pub async fn stop(&self, unit: &str, timeout: Duration) -> Result<()> {
        match self.run_job(unit, JobType::Stop, timeout).await {
            Err(Error::NoSuchUnit { .. }) => {
                tracing::debug!(unit, "stop: unit not loaded, nothing to stop");
                Ok(())
            }
            other => other,
        }
    }

    /// Restarts `unit` (`RestartUnit(unit, "replace")`: stops it if running,
    /// then starts it) and waits up to `timeout` for the job to finish, as
    /// [`Systemd::start`] does. Restarting an inactive unit starts it.
    ///
    /// # Errors
    ///
    /// As [`Systemd::start`].
    pub async fn restart(&self, unit: &str, timeout: Duration) -> Result<()> {
        self.run_job(unit, JobType::Restart, timeout).await
    }

    /// Reads `LoadState`, `ActiveState` and `SubState` of `unit`
    /// (`LoadUnit`, then the `org.freedesktop.systemd1.Unit` properties).
    ///
    /// `LoadUnit` loads the unit if it is not in memory, so a unit without a
    /// unit file reads as `load_state` `not-found`, `active_state` `inactive`,
    /// `sub_state` `dead` rather than as an error.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUnitName`], or [`Error::Dbus`] if a call fails.
    pub async fn unit_state(&self, unit: &str) -> Result<UnitState> {
        validate_unit_name(unit)?;
        let dbus = |call| {
            move |source| Error::Dbus {
                unit: unit.to_owned(),
                call,
                source,
            }
        };
        let path = self
            .manager
            .load_unit(unit.to_owned())
            .await
            .map_err(dbus("LoadUnit"))?;
        let proxy = UnitProxy::builder(&self.conn)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(dbus("LoadUnit"))?;
        let (load_state, active_state, sub_state) = tokio::try_join!(
            async { proxy.load_state().await.map_err(dbus("LoadState")) },
            async { proxy.active_state().await.map_err(dbus("ActiveState")) },
            async { proxy.sub_state().await.map_err(dbus("SubState")) },
        )?;
        Ok(UnitState {
            load_state,
            active_state,
            sub_state,
        })
    }

    /// Clears the `failed` state of `unit` and its restart counter
    /// (`ResetFailedUnit`, what `systemctl reset-failed UNIT` does), so that
    /// start-rate limits no longer block a start.
    ///
    /// A unit systemd does not know (`NoSuchUnit`) is `Ok`: nothing to reset.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUnitName`], or [`Error::Dbus`] if the call fails otherwise.
    pub async fn reset_failed(&self, unit: &str) -> Result<()> {
        validate_unit_name(unit)?;
        match self.manager.reset_failed_unit(unit.to_owned()).await {
            Ok(()) => Ok(()),
            Err(e) if error_name(&e) == Some(NO_SUCH_UNIT) => Ok(()),
            Err(source) => Err(Error::Dbus {
                unit: unit.to_owned(),
                call: "ResetFailedUnit",
                source,
            }),
        }
    }

    /// Queues a start job for `unit` (`StartUnit` with mode `fail`) and
    /// returns without waiting for it: for units whose start may wait on
    /// others (ordering) longer than a caller can block. Read the outcome
    /// later with [`Systemd::unit_state`]. Mode `fail`: the start is refused
    /// when it would reverse a queued or running stop job of the unit or of
    /// a unit it requires (an operator's `systemctl stop docker.service` is
    /// not undone through a unit's `Requires=docker.service`), see
    /// <https://www.freedesktop.org/software/systemd/man/latest/systemctl.html#--job-mode=>.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUnitName`], [`Error::NoSuchUnit`], or [`Error::Dbus`]
    /// if the job cannot be queued (e.g. the unit is masked, or the start
    /// conflicts with a pending stop job: "Transaction is destructive").
    pub async fn queue_start(&self, unit: &str) -> Result<()> {
        validate_unit_name(unit)?;
        match self
            .manager
            .start_unit(unit.to_owned(), "fail".to_owned())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if error_name(&e) == Some(NO_SUCH_UNIT) => Err(Error::NoSuchUnit {
                unit: unit.to_owned(),
                job: JobType::Start,
            }),
            Err(source) => Err(Error::Dbus {
                unit: unit.to_owned(),
                call: "StartUnit",
                source,
            }),
        }
    }

    /// Sends `signal` (e.g. 9 for SIGKILL) to every process of `unit`
    /// (`KillUnit` with `whom` = `all`, what `systemctl kill -s SIGNAL UNIT`
    /// does). Used to fence a unit whose stop job would outlast its lease.
    /// A unit systemd does not know, or one with no process, is `Ok`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUnitName`], or [`Error::Dbus`] if the call fails otherwise.
    pub async fn kill(&self, unit: &str, signal: i32) -> Result<()> {
        validate_unit_name(unit)?;
        match self
            .manager
            .kill_unit(unit.to_owned(), "all".to_owned(), signal)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if error_name(&e) == Some(NO_SUCH_UNIT) => Ok(()),
            Err(source) => Err(Error::Dbus {
                unit: unit.to_owned(),
                call: "KillUnit",
                source,
            }),
        }
    }

    /// Reloads all unit files (`Reload`, what `systemctl daemon-reload` does),
    /// needed after writing or removing a unit file or drop-in, not after
    /// changing an `EnvironmentFile=` (read at each start). systemd answers
    /// once the reload is complete.
    ///
    /// # Errors
    ///
    /// [`Error::DaemonReload`] if the call fails or takes longer than 25 seconds.
    pub async fn daemon_reload(&self) -> Result<()> {
        self.manager
            .reload()
            .await
            .map_err(|source| Error::DaemonReload { source })
    }

    /// Queues a job for `unit` and waits for its `JobRemoved` signal.
    async fn run_job(&self, unit: &str, job: JobType, timeout: Duration) -> Result<()> {
        validate_unit_name(unit)?;
        let wait = async {
            // Subscribe first: the job can finish before the method call returns.
            let mut removed =
                self.manager
                    .receive_job_removed()
                    .await
                    .map_err(|source| Error::Dbus {
                        unit: unit.to_owned(),
                        call: "AddMatch(JobRemoved)",
                        source,
                    })?;
            let (name, mode) = (unit.to_owned(), "replace".to_owned());
            let queued = match job {
                JobType::Start => self.manager.start_unit(name, mode).await,
                JobType::Stop => self.manager.stop_unit(name, mode).await,
                JobType::Restart => self.manager.restart_unit(name, mode).await,
            };
            let job_path: OwnedObjectPath = match queued {
                Ok(path) => path,
                Err(e) if error_name(&e) == Some(NO_SUCH_UNIT) => {
                    return Err(Error::NoSuchUnit {
                        unit: unit.to_owned(),
                        job,
                    });
                }
                Err(source) => {
                    return Err(Error::Dbus {
                        unit: unit.to_owned(),
                        call: match job {
                            JobType::Start => "StartUnit",
                            JobType::Stop => "StopUnit",
                            JobType::Restart => "RestartUnit",
                        },
                        source,
                    });
                }
            };
            tracing::debug!(unit, %job, job_path = %job_path.as_str(), "job queued");
            while let Some(signal) = removed.next().await {
                let args = match signal.args() {
                    Ok(args) => args,
                    Err(e) => {
                        tracing::warn!(error = %e, "ignoring a malformed JobRemoved signal");
                        continue;
                    }
                };
                if *args.job() == job_path {
                    return Ok(args.result().clone());
                }
            }
            Err(Error::Disconnected {
                unit: unit.to_owned(),
                job,
            })
        };
        let result =
            tokio::time::timeout(timeout, wait)
                .await
                .map_err(|_| Error::JobTimeout {
                    unit: unit.to_owned(),
                    job,
                    timeout,
                })??;
        if result == "done" {
            tracing::debug!(unit, %job, "job done");
            Ok(())
        } else {
            tracing::warn!(unit, %job, result = %result, "job did not succeed");
            Err(Error::JobFailed {
                unit: unit.to_owned(),
                job,
                result,
            })
        }
    }
}

/// The D-Bus error name of a method error reply, if `e` is one.
fn error_name(e: &zbus::Error) -> Option<&str> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.as_str()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(load: &str, active: &str) -> UnitState {
        UnitState {
            load_state: load.to_owned(),
            active_state: active.to_owned(),
            sub_state: String::new(),
        }
    }

    #[test]
    fn active_states() {
        for active in ["active", "activating", "reloading", "refreshing"] {
            assert!(state("loaded", active).is_active(), "{active}");
        }
        for inactive in ["inactive", "failed", "deactivating", "maintenance", ""] {
            assert!(!state("loaded", inactive).is_active(), "{inactive}");
        }
        assert!(state("not-found", "inactive").is_not_found());
        assert!(state("loaded", "failed").is_failed());
    }

    #[test]
    fn error_messages_say_what_to_do() {
        let e = Error::JobFailed {
            unit: "etcd-member.service".into(),
            job: JobType::Start,
            result: "failed".into(),
        };
        assert_eq!(
            e.to_string(),
            "start job for unit etcd-member.service finished with result \"failed\"; \
             see `systemctl status etcd-member.service` and `journalctl -u etcd-member.service`"
        );
        let e = Error::JobTimeout {
            unit: "x.service".into(),
            job: JobType::Stop,
            timeout: Duration::from_millis(1500),
        };
        assert!(
            e.to_string()
                .starts_with("stop job for unit x.service did not finish within 1.5s")
        );
    }
}
