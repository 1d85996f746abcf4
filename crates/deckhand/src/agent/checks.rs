//! The node checks, in this fixed order: `local-etcd` (the local member or
//! proxy answers on `localhost:2379`), `docker` (the Docker daemon answers
//! on its socket), `disk-docker` (free bytes on Docker's root dir) and
//! `disk-etcd` (free bytes on the etcd data dir's file system), against the
//! `[checks]` floors of the agent config; with TLS on, `tls-certificate`
//! last (the node's and the proxy's certificate files, read again each
//! round: expired, not valid yet or unreadable fails, under
//! [`crate::tls::WARN_DAYS`] days left warns).
//!
//! A background task runs them every `checks.interval_seconds`, each one
//! bounded by [`CHECK_TIMEOUT`], and publishes the outcomes on a watch
//! channel only when one changed; the status document carries the latest.
//! A detail never holds a value that drifts while the outcome stays the
//! same (no byte counts), so checks add no status writes of their own. A
//! check that cannot run fails and says why; it never passes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use deckhand_images::{Preseeder, PullOptions};
use deckhand_model::{CertificateStatus, Check, CheckState};
use tokio::sync::watch;

use super::local::{MEMBER_UNIT, PROXY_UNIT};
use crate::config::{ChecksSettings, DockerSettings, TlsSettings};
use crate::store::Store;

/// Longest time one check may take before it fails as "no answer".
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The check names, in the order the status document lists them
/// (`tls-certificate` follows with TLS on).
pub const NAMES: [&str; 4] = ["local-etcd", "docker", "disk-docker", "disk-etcd"];
/// The certificate check's name, after [`NAMES`] when TLS is on.
pub const TLS_CERTIFICATE: &str = "tls-certificate";

/// Starts the checks task and returns its outcomes, one [`Check`] per name
/// of [`NAMES`] (then [`TLS_CERTIFICATE`] with `tls`), empty until the
/// first round is done, and the node certificate as last read (`None`
/// without TLS, or while it cannot be read). The task runs until every
/// receiver of the checks is dropped.
///
/// `store` must be the local client's (`localhost:2379`); `docker` is the
/// agent config's `[docker]` (its socket); `data_dir` the etcd data dir;
/// `tls` the agent config's `[tls]`; `certificate_only` (without `tls`)
/// the files whose node certificate is reported all the same, without the
/// check (a plaintext node's, for `deckhand tls enable`).
pub fn spawn(
    store: Store,
    docker: &DockerSettings,
    checks: ChecksSettings,
    data_dir: PathBuf,
    tls: Option<TlsSettings>,
    certificate_only: Option<TlsSettings>,
) -> (
    watch::Receiver<Vec<Check>>,
    watch::Receiver<Option<CertificateStatus>>,
) {
    let (tx, rx) = watch::channel(Vec::new());
    let (cert_tx, cert_rx) = watch::channel(None);
    // A connection of its own, with a short request timeout: the preseed
    // worker's pulls may keep its own busy.
    let daemon = Preseeder::new(
        &docker.socket,
        PullOptions {
            request_timeout: CHECK_TIMEOUT,
            ..PullOptions::default()
        },
    );
    let socket = docker.socket.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(checks.interval_seconds));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mut round = run_once(&store, &daemon, &socket, &checks, &data_dir).await;
            if let Some(tls) = &tls {
                let (check, cert) = tls_round(tls, super::observe::unix_now());
                round.push(check);
                cert_tx.send_if_modified(|old| {
                    let changed = *old != cert;
                    *old = cert;
                    changed
                });
            } else if let Some(files) = &certificate_only {
                // A plaintext node with certificates installed: report the
                // node certificate (for `deckhand tls enable`), no check.
                let cert = crate::tls::read_cert(&files.cert_file)
                    .ok()
                    .map(|c| c.status());
                cert_tx.send_if_modified(|old| {
                    let changed = *old != cert;
                    *old = cert;
                    changed
                });
            }
            tx.send_if_modified(|old| {
                if *old == round {
                    return false;
                }
                for (i, now) in round.iter().enumerate() {
                    if old.get(i) != Some(now) {
                        tracing::info!("check {}: {} ({})", now.name, now.state, now.detail);
                    }
                }
                *old = round;
                true
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    (rx, cert_rx)
}

/// The `tls-certificate` check ([`crate::tls::certificate_check`]) on the
/// node's and the proxy's certificate files at `now_unix`, and the node
/// certificate for the status.
pub fn tls_round(tls: &TlsSettings, now_unix: u64) -> (Check, Option<CertificateStatus>) {
    let read = |p: &Path| crate::tls::read_cert(p).map_err(|e| format!("{e:#}"));
    let node = read(&tls.cert_file);
    let proxy = read(&tls.proxy_cert_file);
    let status = node.as_ref().ok().map(crate::tls::CertFile::status);
    let check =
        crate::tls::certificate_check(&[("cert_file", node), ("proxy_cert_file", proxy)], now_unix);
    (check, status)
}

/// One round of every check, run at once.
async fn run_once(
    store: &Store,
    daemon: &Preseeder,
    socket: &Path,
    floors: &ChecksSettings,
    data_dir: &Path,
) -> Vec<Check> {
    let etcd = bounded(async {
        store
            .answers()
            .await
            .map(drop)
            .map_err(|e| format!("{e:#}"))
    });
    let docker = bounded(async { daemon.ping().await.map_err(|e| e.to_string()) });
    let docker_disk = async {
        match bounded(async {
            daemon
                .root_dir()
                .await
                .map(Path::to_path_buf)
                .map_err(|e| e.to_string())
        })
        .await
        {
            Ok(root) => (root.clone(), free_bytes(root).await),
            Err(e) => (
                PathBuf::new(),
                Err(format!(
                    "Docker's root dir (DockerRootDir) is not known until the daemon answers: {e}"
                )),
            ),
        }
    };
    let etcd_disk = free_bytes(data_dir.to_path_buf());
    let (etcd, docker, (root, docker_free), etcd_free) =
        tokio::join!(etcd, docker, docker_disk, etcd_disk);
    vec![
        local_etcd_check(etcd),
        docker_check(socket, docker),
        disk_check(
            Disk::Docker,
            &root,
            docker_free,
            floors.docker_warn_free_bytes,
            floors.docker_fail_free_bytes,
        ),
        disk_check(
            Disk::Etcd,
            data_dir,
            etcd_free,
            floors.etcd_warn_free_bytes,
            floors.etcd_fail_free_bytes,
        ),
    ]
}

/// `f`, failing with "no answer within 5 s" when it takes longer than
/// [`CHECK_TIMEOUT`].
async fn bounded<T>(f: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::time::timeout(CHECK_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())))
}

/// Free bytes (`f_bavail × f_frsize` of statvfs(3): what an unprivileged
/// writer may still use) on the file system of `path`, or of its nearest
/// existing ancestor when `path` does not exist (an etcd data dir before
/// the member's first start). Bounded by [`CHECK_TIMEOUT`] (a hung network
/// file system blocks statvfs).
async fn free_bytes(path: PathBuf) -> Result<u64, String> {
    let stat = tokio::task::spawn_blocking(move || {
        let at = path
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(Path::new("/"))
            .to_path_buf();
        rustix::fs::statvfs(&at)
            .map(|st| st.f_bavail.saturating_mul(st.f_frsize))
            .map_err(|e| format!("statvfs of {}: {e}", at.display()))
    });
    bounded(async { stat.await.map_err(|e| format!("statvfs task: {e}"))? }).await
}

/// `local-etcd` from the outcome of a serializable read on `localhost:2379`.
pub fn local_etcd_check(outcome: Result<(), String>) -> Check {
    match outcome {
        Ok(()) => check(
            "local-etcd",
            CheckState::Pass,
            "localhost:2379 answers".into(),
        ),
        Err(e) => check(
            "local-etcd",
            CheckState::Fail,
            format!(
                "localhost:2379 does not answer ({e}): see `systemctl status {MEMBER_UNIT} {PROXY_UNIT}` and `journalctl -u deckhand`"
            ),
        ),
    }
}

/// `docker` from the outcome of `GET /_ping` on `socket`.
pub fn docker_check(socket: &Path, outcome: Result<(), String>) -> Check {
    match outcome {
        Ok(()) => check(
            "docker",
            CheckState::Pass,
            format!("the Docker daemon answers on {}", socket.display()),
        ),
        Err(e) => check(
            "docker",
            CheckState::Fail,
            format!(
                "the Docker daemon does not answer ({e}): plane units and image pulls need it; see `systemctl status docker docker.socket`"
            ),
        ),
    }
}

/// Which disk a disk check looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disk {
    /// Docker's root dir: `disk-docker`, floors `checks.docker_*`.
    Docker,
    /// The etcd data dir's file system: `disk-etcd`, floors `checks.etcd_*`.
    Etcd,
}

/// A disk check from the free bytes found on `path` (or why they could not
/// be read) against a warn and a fail floor (0: that level off). The detail
/// names the floor crossed, never the free bytes, which drift.
pub fn disk_check(
    disk: Disk,
    path: &Path,
    free: Result<u64, String>,
    warn: u64,
    fail: u64,
) -> Check {
    let (name, key, what_to_do) = match disk {
        Disk::Docker => (
            "disk-docker",
            "docker",
            "remove unused images and containers (`docker image prune`, `docker system prune`) or grow the file system; image pulls stop below docker.min_free_bytes",
        ),
        Disk::Etcd => (
            "disk-etcd",
            "etcd",
            "free space on that file system or grow it; etcd stops when a WAL or snapshot write fails",
        ),
    };
    let free = match free {
        Ok(free) => free,
        Err(e) => return check(name, CheckState::Fail, format!("cannot run: {e}")),
    };
    let at = path.display();
    if fail != 0 && free < fail {
        check(
            name,
            CheckState::Fail,
            format!(
                "{at}: less than {} free (checks.{key}_fail_free_bytes): {what_to_do}",
                human(fail)
            ),
        )
    } else if warn != 0 && free < warn {
        check(
            name,
            CheckState::Warn,
            format!(
                "{at}: less than {} free (checks.{key}_warn_free_bytes): {what_to_do}",
                human(warn)
            ),
        )
    } else if warn == 0 && fail == 0 {
        check(name, CheckState::Pass, format!("{at}: no floor set"))
    } else {
        check(
            name,
            CheckState::Pass,
            format!("{at}: at least {} free", human(warn.max(fail))),
        )
    }
}

fn check(name: &str, state: CheckState, detail: String) -> Check {
    Check {
        name: name.into(),
        state,
        detail,
    }
}

/// Bytes in binary units, e.g. `4 GiB`, `512 MiB`, `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn disk_floors_warn_and_fail_without_drifting_details() {
        let p = Path::new("/var/lib/docker");
        let at = |free| disk_check(Disk::Docker, p, Ok(free), 4 * GIB, GIB);
        assert_eq!(at(10 * GIB).state, CheckState::Pass);
        // The detail does not move with the free bytes while the outcome stays.
        assert_eq!(at(10 * GIB), at(5 * GIB));
        assert_eq!(at(10 * GIB).detail, "/var/lib/docker: at least 4 GiB free");
        let w = at(3 * GIB);
        assert_eq!(w.state, CheckState::Warn);
        assert!(
            w.detail
                .contains("less than 4 GiB free (checks.docker_warn_free_bytes)"),
            "{w:?}"
        );
        assert_eq!(w, at(2 * GIB));
        let f = at(GIB - 1);
        assert_eq!(
            (f.name.as_str(), f.state),
            ("disk-docker", CheckState::Fail)
        );
        assert!(
            f.detail
                .contains("less than 1 GiB free (checks.docker_fail_free_bytes)"),
            "{f:?}"
        );
        // Floors off.
        let e = Path::new("/var/lib/deckhand-etcd/member");
        let off = disk_check(Disk::Etcd, e, Ok(0), 0, 0);
        assert_eq!(
            (off.name.as_str(), off.state),
            ("disk-etcd", CheckState::Pass)
        );
        // Only a fail floor.
        assert_eq!(
            disk_check(Disk::Etcd, e, Ok(10), 0, 100).state,
            CheckState::Fail
        );
        assert_eq!(
            disk_check(Disk::Etcd, e, Ok(100), 0, 100).state,
            CheckState::Pass
        );
    }

    #[test]
    fn a_check_that_cannot_run_fails_and_says_why() {
        let c = disk_check(
            Disk::Etcd,
            Path::new("/x"),
            Err("statvfs of /x: EIO".into()),
            0,
            0,
        );
        assert_eq!(c.state, CheckState::Fail);
        assert_eq!(c.detail, "cannot run: statvfs of /x: EIO");
        let d = docker_check(
            Path::new("/var/run/docker.sock"),
            Err("no such file".into()),
        );
        assert_eq!((d.name.as_str(), d.state), ("docker", CheckState::Fail));
        assert!(d.detail.contains("does not answer (no such file)"), "{d:?}");
        let ok = docker_check(Path::new("/var/run/docker.sock"), Ok(()));
        assert_eq!(ok.state, CheckState::Pass);
        let l = local_etcd_check(Err("no answer within 5 s".into()));
        assert_eq!((l.name.as_str(), l.state), ("local-etcd", CheckState::Fail));
        assert!(l.detail.contains(MEMBER_UNIT), "{l:?}");
        assert_eq!(local_etcd_check(Ok(())).state, CheckState::Pass);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(GIB), "1 GiB");
        assert_eq!(human(4 * GIB), "4 GiB");
        assert_eq!(human(512 << 20), "512 MiB");
        assert_eq!(human(3 * GIB / 2), "1.5 GiB");
        assert_eq!(human(100), "100 B");
    }

    #[tokio::test]
    async fn free_bytes_of_an_absent_dir_is_its_parents() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("member/not/yet");
        let free = free_bytes(absent).await.unwrap();
        assert!(free > 0);
        let broken = free_bytes(PathBuf::from("relative/nowhere")).await;
        // A relative path with no existing ancestor falls back to "/".
        assert!(broken.is_ok(), "{broken:?}");
    }

    #[tokio::test]
    async fn checks_against_a_real_etcd_and_no_docker() {
        let dir = tempfile::tempdir().unwrap();
        // Nothing listens on this Docker socket.
        let socket = dir.path().join("docker.sock");
        let daemon = Preseeder::new(&socket, PullOptions::default());
        let etcd = crate::testing::Etcd::start().await;
        let store = Store::new(
            etcd.client().await,
            deckhand_model::Keyspace::new("/t"),
            Duration::from_secs(1),
        );
        let floors = ChecksSettings::default();
        let round = run_once(&store, &daemon, &socket, &floors, dir.path()).await;
        let names: Vec<&str> = round.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, NAMES);
        assert_eq!(round[0].state, CheckState::Pass, "{round:#?}");
        assert_eq!(round[1].state, CheckState::Fail, "{round:#?}");
        assert!(
            round[2].detail.starts_with("cannot run: Docker's root dir"),
            "{round:#?}"
        );
        assert_eq!(round[2].state, CheckState::Fail);
        // The etcd stopped: local-etcd fails, with the reason.
        drop(etcd);
        let round = run_once(&store, &daemon, &socket, &floors, dir.path()).await;
        assert_eq!(round[0].state, CheckState::Fail, "{round:#?}");
        assert!(
            round[0]
                .detail
                .starts_with("localhost:2379 does not answer ("),
            "{round:#?}"
        );
    }
}
