//! `deckhand tls enable`: turns TLS on for a running plaintext cluster,
//! node by node, without losing quorum ([`crate::tls_enable`] has the
//! procedure and its planning; each node's agent applies its stage).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, Subcommand};
use deckhand_etcd::{Cluster, LockOutcome, Member, Tls};
use deckhand_model::EtcdMode;

use crate::cli::session::Session;
use crate::connect::Target;
use crate::exit::Failure;
use crate::store::NodeKeys;
use crate::tls_enable::{self, Action, NodeView, Rollout, Stage, VoterView};

/// The membership lock's lease (kept alive while the command runs).
const LOCK_LEASE_TTL: i64 = 30;
/// How long one member may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// A voter counts as caught up when its raft index is at most this far
/// behind the highest one seen.
const CAUGHT_UP_ENTRIES: u64 = 1000;

/// `deckhand tls ...`.
#[derive(Subcommand, Debug)]
pub enum TlsCommand {
    /// Turn mutual TLS on for a running plaintext cluster, node by node,
    /// keeping a quorum of voters up throughout (docs/tls.md).
    ///
    /// Every node must have its certificates in /etc/deckhand/pki (from
    /// `deckhand pki issue --node NAME --address ADDR DIR`; its agent
    /// reports its node certificate), every voter must answer, and the
    /// cluster must have at least 3 voters. Phase 1: each node's agent takes
    /// the certificate files in; each member restarts with them, still
    /// listening plaintext. Phase 2, member by member: its peer URL becomes
    /// https://ADDR:2380 (`member update`), then it restarts listening
    /// https:// on ADDR:2380 and ADDR:2379 (http://127.0.0.1:2379 stays
    /// plaintext). Phase 3: the proxy nodes, then `done`. Each restart only
    /// while every voter answers and is caught up, under the membership
    /// lock. The state is the key <prefix>/config/tls: run the command again
    /// after an interruption and it goes on from there.
    Enable(EnableArgs),
}

/// `deckhand tls enable` options.
#[derive(Args, Debug)]
pub struct EnableArgs {
    /// Give up when one step (a node applying its stage, a voter coming
    /// back) takes longer than this many seconds; running the command again
    /// resumes.
    #[arg(long, default_value_t = 180)]
    pub step_timeout: u64,
}

/// Runs a `deckhand tls` command.
///
/// # Errors
/// Refusals and failures, with their reason.
pub async fn tls(mut target: Target, cmd: TlsCommand) -> Result<(), Failure> {
    match cmd {
        TlsCommand::Enable(args) => {
            if target.tls.is_none() {
                let f = tls_enable::default_files();
                let (t, _) = crate::tls::load_pair(&f.ca_file, &f.cert_file, &f.key_file)
                    .context(
                        "`deckhand tls enable` talks to members that serve https:// with a certificate: \
                         give --cacert/--cert/--key (an operator's) or run it on a node with its files in /etc/deckhand/pki",
                    )
                    .map_err(Failure::failed)?;
                target.tls = Some(t);
                target.tls_error = None;
            }
            enable(target, &args).await.map_err(Failure::failed)
        }
    }
}

async fn enable(target: Target, args: &EnableArgs) -> Result<()> {
    let tls = target
        .tls
        .clone()
        .ok_or_else(|| anyhow!("no TLS material"))?;
    let mut session = Session::connect(target).await?;
    let owner = format!(
        "deckhand tls enable (pid {} on {})",
        std::process::id(),
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "?".into())
    );
    let lock = session.store.keyspace().membership_lock();
    let mut lease = 0i64;
    let started = Instant::now();
    let result = run(&mut session, &tls, &owner, &lock, &mut lease, args).await;
    let mut kv = session.store.client();
    let _ = deckhand_etcd::unlock(&mut kv, &lock, &owner).await;
    if lease != 0 {
        let _ = kv.lease_revoke(lease).await;
    }
    result?;
    outln!(
        "TLS is on: every member's peer and client URLs are https://, localhost:2379 stays plaintext ({} s)",
        started.elapsed().as_secs()
    );
    Ok(())
}

/// Keeps the membership lock: refreshes its lease (a new one, and the lock
/// moved onto it, when the old one lapsed).
async fn hold_lock(session: &Session, owner: &str, lock: &str, lease: &mut i64) -> Result<()> {
    let mut kv = session.store.client();
    let mut alive = false;
    if *lease != 0
        && let Ok(Ok((mut keeper, mut stream))) =
            tokio::time::timeout(ASK_TIMEOUT, kv.lease_keep_alive(*lease)).await
        && keeper.keep_alive().await.is_ok()
        && let Ok(Ok(Some(r))) = tokio::time::timeout(ASK_TIMEOUT, stream.message()).await
    {
        alive = r.ttl() > 0;
    }
    if !alive {
        *lease = tokio::time::timeout(ASK_TIMEOUT, kv.lease_grant(LOCK_LEASE_TTL, None))
            .await
            .context("granting the lock's lease timed out")??
            .id();
    }
    match deckhand_etcd::try_lock(&mut kv, lock, owner, *lease).await? {
        LockOutcome::Acquired => Ok(()),
        LockOutcome::HeldBy(holder) => bail!(
            "the membership lock is held by {holder}: a membership change is under way; try again once it is done (`deckhand status`)"
        ),
    }
}

async fn run(
    session: &mut Session,
    tls: &Tls,
    owner: &str,
    lock: &str,
    lease: &mut i64,
    args: &EnableArgs,
) -> Result<()> {
    let key = session.store.keyspace().tls_rollout();
    let mut waiting: Option<(String, Instant)> = None;
    let mut last_error: Option<(String, Instant)> = None;
    let timeout = Duration::from_secs(args.step_timeout);
    loop {
        let round = async {
            hold_lock(session, owner, lock, lease).await?;
            let mut kv = session.store.client();
            let got = tokio::time::timeout(ASK_TIMEOUT, kv.get(key.clone(), None))
                .await
                .context("reading config/tls timed out")??;
            let rollout = match got.kvs().first() {
                Some(kv) => Rollout::parse(kv.value())?,
                None => Rollout::default(),
            };
            let nodes = session.store.nodes().await?;
            let (cluster, members) = member_list(session, &nodes, tls).await?;
            let voters = voter_views(&cluster, &members).await;
            let learners = members.iter().filter(|m| m.is_learner).count();
            let views = node_views(&nodes, &members);
            Ok::<_, anyhow::Error>((rollout, views, voters, learners, cluster, members))
        }
        .await;
        let (mut rollout, views, voters, learners, cluster, members) = match round {
            Ok(r) => {
                last_error = None;
                r
            }
            Err(e) => {
                // The local member restarting, a voter between two states:
                // look again, for at most a step's time.
                let msg = format!("{e:#}");
                if msg.contains("membership lock is held") {
                    return Err(e);
                }
                let since = match &last_error {
                    Some((_, t)) => *t,
                    None => {
                        eprintln!("deckhand: {msg} (trying again)");
                        Instant::now()
                    }
                };
                if since.elapsed() > timeout {
                    bail!(
                        "{msg}; gave up after {} s: run the command again to go on",
                        timeout.as_secs()
                    );
                }
                last_error = Some((msg, since));
                session.reconnect().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let action = tls_enable::next(&rollout, &views, &voters, learners);
        match &action {
            Action::Finished => return Ok(()),
            Action::Refuse(why) => bail!("{why}"),
            Action::Wait(what) => {
                let since = match &waiting {
                    Some((w, t)) if w == what => *t,
                    _ => {
                        outln!("waiting: {what}");
                        Instant::now()
                    }
                };
                if since.elapsed() > timeout {
                    bail!(
                        "gave up after {} s waiting: {what}; run the command again to go on (the state is in {key})",
                        timeout.as_secs()
                    );
                }
                waiting = Some((what.clone(), since));
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Action::SetStage { node, name, stage } => {
                rollout.nodes.insert(node.clone(), *stage);
                put_rollout(session, &key, &rollout).await?;
                outln!(
                    "{name}: TLS stage {stage}{}",
                    match stage {
                        Stage::Certs =>
                            " (its member, if any, restarts with the certificate files, still plaintext)",
                        Stage::Https => " (its member, if any, restarts listening https://)",
                        Stage::Plain => "",
                    }
                );
            }
            Action::UpdatePeerUrl { member, name } => {
                let m = members
                    .iter()
                    .find(|m| m.id == *member)
                    .ok_or_else(|| anyhow!("member {member:x} is gone"))?;
                let urls: Vec<String> = m
                    .peer_urls
                    .iter()
                    .map(|u| tls_enable::to_https(u))
                    .collect();
                cluster.update_peer_urls(*member, &urls).await?;
                outln!("{name}: peer URL now {}", urls.join(","));
            }
            Action::MarkDone => {
                rollout.done = true;
                put_rollout(session, &key, &rollout).await?;
                outln!("every node at https: {key} says done");
            }
        }
        waiting = None;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn put_rollout(session: &Session, key: &str, rollout: &Rollout) -> Result<()> {
    let mut kv = session.store.client();
    let value = serde_json::to_vec(rollout)?;
    tokio::time::timeout(ASK_TIMEOUT, kv.put(key, value, None))
        .await
        .context("writing config/tls timed out")??;
    Ok(())
}

/// The member list from the first member that answers, asking each known
/// client URL on its own (some serve http://, some https:// while the
/// procedure runs): the ones the nodes' statuses name, in both schemes,
/// then the configured endpoints.
async fn member_list(
    session: &Session,
    nodes: &BTreeMap<String, NodeKeys>,
    tls: &Tls,
) -> Result<(Cluster, Vec<Member>)> {
    let mut urls: Vec<String> = Vec::new();
    for s in nodes.values().filter_map(|k| k.status.as_ref()) {
        if s.etcd.mode != EtcdMode::Member {
            continue;
        }
        if let Ok(a) = s.address.parse() {
            urls.push(crate::identity::client_url_of(a, true));
            urls.push(crate::identity::client_url_of(a, false));
        }
    }
    urls.extend(session.target.config_endpoints.iter().cloned());
    urls.extend(session.target.cli_endpoints.iter().cloned());
    let mut tried = Vec::new();
    for url in urls {
        let Ok(c) = Cluster::connect(std::slice::from_ref(&url), ASK_TIMEOUT, Some(tls)).await
        else {
            continue;
        };
        match c.member_list().await {
            Ok(list) if !list.is_empty() && list.iter().all(|m| m.id != 0) => {
                // Ask the cluster over every voter from now on.
                return Ok((c, list));
            }
            Ok(_) => tried.push(format!("{url}: not a member")),
            Err(e) => tried.push(format!("{url}: {e}")),
        }
    }
    bail!("no member answered a member list: {}", tried.join("; "))
}

/// Each voter: its URLs' schemes, and healthy when it answered, knows a
/// leader and is caught up.
async fn voter_views(cluster: &Cluster, members: &[Member]) -> Vec<VoterView> {
    let mut answers: Vec<(u64, u64, bool)> = Vec::new();
    for m in members.iter().filter(|m| !m.is_learner) {
        let mut got = None;
        for url in &m.client_urls {
            if let Ok(st) = Cluster::endpoint_status(url, ASK_TIMEOUT, cluster.tls()).await {
                got = Some((st.raft_index, st.leader != 0));
                break;
            }
        }
        if let Some((index, leader)) = got {
            answers.push((m.id, index, leader));
        }
    }
    let top = answers.iter().map(|a| a.1).max().unwrap_or(0);
    members
        .iter()
        .filter(|m| !m.is_learner)
        .map(|m| {
            let healthy = answers.iter().any(|(id, index, leader)| {
                *id == m.id && *leader && index + CAUGHT_UP_ENTRIES >= top
            });
            VoterView {
                id: m.id,
                name: m.name.clone(),
                peer_https: !m.peer_urls.is_empty()
                    && m.peer_urls.iter().all(|u| u.starts_with("https://")),
                client_https: !m.client_urls.is_empty()
                    && m.client_urls.iter().all(|u| u.starts_with("https://")),
                healthy,
            }
        })
        .collect()
}

/// The nodes as their keys show them: alive, their member (by the member
/// id in the status, else the address in a peer URL), the stage applied,
/// and what is wrong with the certificate they report.
fn node_views(nodes: &BTreeMap<String, NodeKeys>, members: &[Member]) -> Vec<NodeView> {
    let now = crate::agent::observe::unix_now();
    nodes
        .iter()
        .map(|(id, k)| {
            let name = k.display_name();
            let status = k.status.as_ref();
            let member = status.and_then(|s| {
                let by_id = s
                    .etcd
                    .member_id
                    .as_deref()
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
                    .filter(|i| members.iter().any(|m| m.id == *i && !m.is_learner));
                by_id.or_else(|| {
                    (s.etcd.mode == EtcdMode::Member)
                        .then(|| {
                            members.iter().find(|m| {
                                !m.is_learner
                                    && m.peer_urls.iter().any(|u| {
                                        tls_enable::to_https(u)
                                            == format!("https://{}:2380", s.address)
                                    })
                            })
                        })
                        .flatten()
                        .map(|m| m.id)
                })
            });
            let certificate_problem = status.and_then(|s| match &s.certificate {
                None => Some(
                    "its agent reports no node certificate (none readable at /etc/deckhand/pki/node.crt)".to_string(),
                ),
                Some(c) if c.days_left(now) < 0 => Some(format!(
                    "its node certificate expired {} days ago",
                    -c.days_left(now)
                )),
                Some(c) if c.common_name != format!("node:{name}") => Some(format!(
                    "its node certificate's CN is {:?}, not \"node:{name}\"",
                    c.common_name
                )),
                Some(_) => None,
            });
            NodeView {
                id: id.clone(),
                name,
                alive: status.is_some(),
                member,
                applied: status
                    .and_then(|s| s.tls_stage.as_deref())
                    .and_then(Stage::parse)
                    .unwrap_or(Stage::Plain),
                certificate_problem,
            }
        })
        .collect()
}
