//! `deckhand check-member`: the member unit's start check. It runs as the
//! unit's main process at every start of `deckhand-etcd-member.service`
//! (the agent's starts and systemd's own `Restart=on-failure` restarts
//! alike), before etcd can bind any port, and `exec`s etcd only when the
//! data dir's member is the member the cluster knows
//! ([`deckhand_plan::identity::start_verdict`]). Otherwise it leaves its
//! reason in `<data dir>.start-refused` for the agent and exits with
//! [`exit::MEMBER_REFUSED`], which the unit's `RestartPreventExitStatus=`
//! keeps from looping.
//!
//! It is the main process rather than an `ExecStartPre=` because systemd
//! applies `RestartPreventExitStatus=` to the main process only
//! (<https://github.com/systemd/systemd/issues/11868>): a refusing
//! pre-start check would be restarted until the start limit.
//!
//! Also here: [`cluster_identity`], the cluster as its other voters report
//! it, which the agent asks on every observation too.

pub mod wal;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use deckhand_etcd::{Cluster, Tls};
use deckhand_plan::identity::{ClusterIdentity, RecordedIdentity, StartVerdict, start_verdict};
use deckhand_systemd::{parse_env_file, write_atomic};
use tokio::task::JoinSet;

use crate::connect::LOCALHOST_CLIENT_URL;
use crate::exit::{self, Failure};
use crate::{config, paths};

/// How long one voter may take to answer the start check (status, then
/// member list); the voters are asked at once.
pub const VOTER_TIMEOUT: Duration = Duration::from_millis(1500);

/// `deckhand check-member -- /usr/bin/etcd [ARGS...]` (hidden: run by the
/// member unit, not by operators).
#[derive(Args, Debug)]
pub struct CheckMemberArgs {
    /// The program to exec once the check passes (etcd), with its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub exec: Vec<String>,
}

/// Where the start check leaves its refusal: `<data dir>.start-refused`,
/// beside the data dir (in the member unit's `StateDirectory=`, the one
/// place it may write), one line of reason.
pub fn refusal_path(data_dir: &Path) -> PathBuf {
    let mut name = data_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".start-refused");
    data_dir.with_file_name(name)
}

/// Reads a member environment's recorded identity (`DECKHAND_MEMBER_ID`,
/// `DECKHAND_CLUSTER_ID`, hex).
pub fn recorded_identity(vars: &BTreeMap<String, String>) -> RecordedIdentity {
    let hex = |k: &str| vars.get(k).and_then(|v| u64::from_str_radix(v, 16).ok());
    RecordedIdentity {
        member_id: hex("DECKHAND_MEMBER_ID"),
        cluster_id: hex("DECKHAND_CLUSTER_ID"),
    }
}

/// The cluster as the members at `endpoints` report it: each is asked for
/// its status at once (`timeout` each); the cluster id most of the voters
/// that answered report (none on a tie), and the member list from one of
/// them. `None` when no voter answered (or the answers tie). `https://`
/// endpoints are asked with `tls` (mutual TLS).
pub async fn cluster_identity(
    endpoints: &[String],
    timeout: Duration,
    tls: Option<&Tls>,
) -> Option<ClusterIdentity> {
    let mut tasks = JoinSet::new();
    for ep in endpoints.iter().cloned() {
        let tls = tls.cloned();
        tasks.spawn(async move {
            let st = Cluster::endpoint_status(&ep, timeout, tls.as_ref()).await;
            (ep, st)
        });
    }
    let mut answers: Vec<(String, u64)> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok((ep, Ok(st))) = done
            && !st.is_learner
            && st.cluster_id != 0
        {
            answers.push((ep, st.cluster_id));
        }
    }
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for (_, id) in &answers {
        *counts.entry(*id).or_default() += 1;
    }
    let best = counts.values().copied().max()?;
    let mut top = counts.iter().filter(|(_, n)| **n == best);
    let (&cluster_id, _) = top.next()?;
    if top.next().is_some() {
        tracing::warn!("the voters asked disagree on the cluster id: {counts:x?}");
        return None;
    }
    answers.sort();
    for (ep, _) in answers.iter().filter(|(_, id)| *id == cluster_id) {
        let Ok(c) = Cluster::connect(std::slice::from_ref(ep), timeout, tls).await else {
            continue;
        };
        if let Ok(members) = c.member_list().await {
            return Some(ClusterIdentity {
                cluster_id,
                members: members.into_iter().map(|m| (m.id, m.peer_urls)).collect(),
            });
        }
    }
    None
}

/// The voters the start check asks: the agent config's endpoints and the
/// proxy environment's (the voters when the node last ran the proxy),
/// without this node's own client URLs (`own`) and `localhost:2379`.
fn voter_candidates(config_path: &Path, own: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    match config::load_optional(config_path) {
        // Both schemes of each: while `deckhand tls enable` runs, some
        // voters serve http:// and some https:// (each is asked on its own).
        Ok(Some(s)) => {
            for e in crate::tls_enable::effective(s).endpoints {
                out.push(crate::tls_enable::to_https(&e));
                out.push(e.replacen("https://", "http://", 1));
            }
        }
        Ok(None) => {}
        Err(e) => eprintln!("deckhand check-member: warning: agent config not used: {e:#}"),
    }
    let proxy_env = Path::new(paths::STATE_DIR).join(paths::PROXY_ENV);
    if let Ok(text) = std::fs::read_to_string(proxy_env)
        && let Some(v) = parse_env_file(&text).get("PROXY_ENDPOINTS")
    {
        out.extend(v.split(',').filter(|s| !s.is_empty()).map(String::from));
    }
    out.sort();
    out.dedup();
    out.retain(|u| u != LOCALHOST_CLIENT_URL && !own.contains(u));
    out
}

/// The start check's TLS client material: the member's own files from its
/// environment (`ETCD_TRUSTED_CA_FILE`, `ETCD_CERT_FILE`, `ETCD_KEY_FILE`,
/// which the agent writes with `[tls]` on and which user `etcd` can read),
/// so the check asks the voters as the member itself would. `None`
/// without them (a plaintext member).
///
/// # Errors
/// The files fail their checks ([`crate::tls::load_pair`]).
pub fn env_tls(vars: &BTreeMap<String, String>) -> anyhow::Result<Option<Tls>> {
    let get = |k: &str| vars.get(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    match (
        get("ETCD_TRUSTED_CA_FILE"),
        get("ETCD_CERT_FILE"),
        get("ETCD_KEY_FILE"),
    ) {
        (Some(ca), Some(cert), Some(key)) => Ok(Some(crate::tls::load_pair(&ca, &cert, &key)?.0)),
        _ => Ok(None),
    }
}

fn split_urls(v: Option<&String>) -> Vec<String> {
    v.map(|v| {
        v.split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    })
    .unwrap_or_default()
}

/// Runs the check with the member environment in this process's
/// environment (the unit's `EnvironmentFile=`), then execs `args.exec`.
///
/// # Errors
/// [`exit::MEMBER_REFUSED`] when the data dir's member is not the member
/// the cluster knows (the reason is also left in [`refusal_path`]);
/// [`exit::FAILED`] when the program cannot be executed. A WAL that cannot
/// be read is left to etcd (a warning is printed): etcd refuses a corrupt
/// WAL itself, and the check never guesses.
pub async fn run(config_path: &Path, args: CheckMemberArgs) -> Result<(), Failure> {
    let vars: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("ETCD_") || k.starts_with("DECKHAND_"))
        .collect();
    let say = |m: &str| eprintln!("deckhand check-member: {m}");
    if let Some(dir) = vars.get("ETCD_DATA_DIR").map(PathBuf::from) {
        let wal = match wal::read_identity(&dir) {
            Ok(w) => w,
            Err(e) => {
                say(&format!(
                    "warning: {e:#}; leaving the data dir to etcd, which checks its WAL itself"
                ));
                None
            }
        };
        let peer = split_urls(vars.get("ETCD_INITIAL_ADVERTISE_PEER_URLS"))
            .into_iter()
            .next()
            .unwrap_or_default();
        let mut own = split_urls(vars.get("ETCD_ADVERTISE_CLIENT_URLS"));
        own.extend(split_urls(vars.get("ETCD_LISTEN_CLIENT_URLS")));
        let live = match wal {
            Some(_) => {
                let candidates = voter_candidates(config_path, &own);
                let tls = match env_tls(&vars) {
                    Ok(t) => t,
                    Err(e) => {
                        say(&format!("warning: {e:#}; asking the voters without TLS"));
                        None
                    }
                };
                tokio::time::timeout(
                    VOTER_TIMEOUT * 3,
                    cluster_identity(&candidates, VOTER_TIMEOUT, tls.as_ref()),
                )
                .await
                .ok()
                .flatten()
            }
            None => None,
        };
        let refusal = refusal_path(&dir);
        match start_verdict(wal, &peer, live.as_ref(), recorded_identity(&vars)) {
            StartVerdict::Start(why) => {
                say(&why);
                match std::fs::remove_file(&refusal) {
                    Ok(()) => say(&format!("removed the old refusal {}", refusal.display())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => say(&format!(
                        "warning: cannot remove {}: {e}",
                        refusal.display()
                    )),
                }
            }
            StartVerdict::Refuse(m) => {
                let reason = m.to_string();
                if let Err(e) = write_atomic(&refusal, format!("{reason}\n").as_bytes(), 0o644) {
                    say(&format!("warning: cannot write {}: {e}", refusal.display()));
                }
                return Err(Failure {
                    code: exit::MEMBER_REFUSED,
                    error: anyhow!(
                        "not starting etcd: {reason}; the agent moves the data dir aside and rejoins"
                    ),
                });
            }
        }
    } else {
        say("warning: no ETCD_DATA_DIR in the environment; nothing to check");
    }
    let (program, rest) = args
        .exec
        .split_first()
        .ok_or_else(|| Failure::usage(anyhow!("no program to exec")))?;
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(program).args(rest).exec();
    Err(Failure::failed(anyhow!("cannot execute {program}: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Etcd;

    #[tokio::test]
    async fn the_cluster_is_what_most_voters_say_and_a_tie_says_nothing() {
        let (a, b) = (Etcd::start().await, Etcd::start().await);
        let a_id = a.client().await.status().await.unwrap();
        let a_id = a_id.header().unwrap().cluster_id();
        let got = cluster_identity(std::slice::from_ref(&a.url), VOTER_TIMEOUT, None)
            .await
            .unwrap();
        assert_eq!(got.cluster_id, a_id);
        assert_eq!(got.members.len(), 1);
        // Two clusters, one voter each: no majority, no answer.
        assert_eq!(
            cluster_identity(&[a.url.clone(), b.url.clone()], VOTER_TIMEOUT, None).await,
            None
        );
        // A voter that does not answer counts for nothing.
        let dead = "http://127.0.0.1:9".to_string();
        let got = cluster_identity(&[dead.clone(), a.url.clone()], VOTER_TIMEOUT, None).await;
        assert_eq!(got.map(|c| c.cluster_id), Some(a_id));
        assert_eq!(cluster_identity(&[dead], VOTER_TIMEOUT, None).await, None);
    }

    #[tokio::test]
    async fn the_start_check_asks_the_voters_over_tls_with_the_members_files() {
        let etcd = Etcd::start_tls().await;
        let t = etcd.tls.clone().unwrap();
        let vars: BTreeMap<String, String> = [
            ("ETCD_TRUSTED_CA_FILE", &t.ca_file),
            ("ETCD_CERT_FILE", &t.cert_file),
            ("ETCD_KEY_FILE", &t.key_file),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.display().to_string()))
        .collect();
        let tls = env_tls(&vars).unwrap().expect("TLS from the member env");
        let eps = std::slice::from_ref(&etcd.url);
        let got = cluster_identity(eps, VOTER_TIMEOUT, Some(&tls))
            .await
            .expect("the voter answers over TLS");
        assert_eq!(got.members.len(), 1);
        assert!(got.members[0].1[0].starts_with("https://"), "{got:?}");
        // Without the member's files the TLS voter cannot be asked.
        assert_eq!(cluster_identity(eps, VOTER_TIMEOUT, None).await, None);
        // A plaintext member's env has none; a broken file is an error.
        assert_eq!(env_tls(&BTreeMap::new()).unwrap(), None);
        let mut bad = vars.clone();
        bad.insert("ETCD_KEY_FILE".into(), "/nonexistent/node.key".into());
        assert!(format!("{:#}", env_tls(&bad).unwrap_err()).contains("/nonexistent/node.key"));
    }

    #[test]
    fn the_refusal_sits_beside_the_data_dir_and_records_parse_as_hex() {
        assert_eq!(
            refusal_path(Path::new("/var/lib/deckhand-etcd/member")),
            Path::new("/var/lib/deckhand-etcd/member.start-refused")
        );
        let vars = parse_env_file("DECKHAND_MEMBER_ID=ab\nDECKHAND_CLUSTER_ID=zz\n");
        assert_eq!(
            recorded_identity(&vars),
            RecordedIdentity {
                member_id: Some(0xab),
                cluster_id: None
            }
        );
    }
}
