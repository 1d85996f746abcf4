//! `deckhand member remove NODE|MEMBER-ID [--force]`: removes an etcd
//! member (a voter or a learner) under the membership lock, the lock the
//! agents take for every membership change, refusing what would cost the
//! cluster its quorum.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow, bail};
use clap::Subcommand;
use deckhand_etcd::{LockOutcome, Member};
use deckhand_model::{EtcdRole, Role};
use deckhand_plan::check_removal;

use super::session::Session;
use crate::agent::observe::{HEALTH_TIMEOUT, member_views};
use crate::exit::Failure;
use crate::store::NodeKeys;

/// TTL of the lease the CLI holds the membership lock on: if the command
/// dies half-way, the lock frees itself after this long.
const LOCK_LEASE_TTL: i64 = 30;

/// `deckhand member ...`
#[derive(Subcommand)]
pub enum MemberCommand {
    /// Remove an etcd member (a voter or a learner) from the cluster, safely.
    ///
    /// NODE is a node id or hostname (its member is found by name, or by its
    /// address in the member's peer URLs); MEMBER-ID is the member id in hex,
    /// as `etcdctl member list` and `deckhand status` print it (for a member
    /// that never started and so has no name).
    ///
    /// The removal takes the membership lock (the agents' lock: no agent
    /// changes membership meanwhile). A learner is always removed (it has no
    /// vote). A voter is removed only when the started, healthy voters left
    /// hold quorum of the smaller cluster, the healthy voters now can commit
    /// the change, and, for a healthy voter, at least `min_voters` (cluster
    /// config) voters remain (a voter that is down or never started may go
    /// below it: it holds no usable vote, and it blocks every join); the
    /// last voter is never removed. etcd checks again itself
    /// (--strict-reconfig-check) and may still refuse.
    ///
    /// When the member belongs to a deckhand node whose role key says
    /// member, the role key is set to proxy (its planes kept): otherwise its
    /// agent would add it back as soon as it runs. To make it a member again
    /// later: `deckhand role set NODE --etcd member`.
    ///
    /// Use it for a voter that is down for good and blocks joins (etcd
    /// refuses to add even a learner while a voter is down), or for a voter
    /// that was added but never started.
    ///
    /// Examples: deckhand member remove node3;  deckhand member remove 8e9e05c52164694d
    ///
    /// Exit status: 0 removed; 1 refused (the reason is printed) or etcd
    /// failed; 2 no such node or member.
    #[command(verbatim_doc_comment)]
    Remove {
        /// Node id (/etc/machine-id), hostname, or member id (hex).
        #[arg(value_name = "NODE|MEMBER-ID")]
        target: String,
        /// Remove the voter even when the voters left would not hold quorum
        /// or would be fewer than min_voters. This risks the cluster: with
        /// too few healthy voters left, etcd stops taking writes (and every
        /// agent stops changing anything) until enough voters run again,
        /// and a lost quorum of a cluster whose voters are gone for good
        /// can only be regained by restoring a snapshot. The last voter is
        /// never removed, not even with --force.
        #[arg(long)]
        force: bool,
    },
}

/// `deckhand member remove`.
///
/// # Errors
/// [`crate::exit::USAGE`] for an unknown node or member (nothing is
/// written); [`crate::exit::FAILED`] for a refusal, a held lock, or etcd
/// not answering.
pub async fn member(target: crate::connect::Target, cmd: MemberCommand) -> Result<(), Failure> {
    let MemberCommand::Remove {
        target: what,
        force,
    } = cmd;
    if what.trim().is_empty() {
        return Err(Failure::usage(anyhow!("NODE|MEMBER-ID is empty")));
    }
    let mut session = Session::connect(target).await?;
    let nodes = session.store.nodes().await?;
    let (_, members) = session.member_list(&nodes).await?;
    let (member, node) = find(&nodes, &members, what.trim()).map_err(Failure::usage)?;
    remove(&mut session, &member, node.as_deref(), force)
        .await
        .map_err(Failure::failed)
}

/// Whether `member` is the member of the node with these keys: by name, or
/// by the node's address in its peer URLs.
pub fn is_node_member(keys: &NodeKeys, member: &Member) -> bool {
    let name = keys.display_name();
    (!name.is_empty() && member.name == name)
        || keys.status.as_ref().is_some_and(|s| {
            member
                .peer_urls
                .iter()
                .any(|u| url_host(u) == Some(s.address.as_str()))
        })
}

/// The host of a URL like `http://10.0.0.5:2380`.
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest.split('/').next()?;
    Some(match hostport.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => hostport,
    })
}

/// The member `what` names (a node id or name, else a member id in hex)
/// and the node it belongs to, if any.
///
/// # Errors
/// No such node or member, or the node has no member.
pub fn find(
    nodes: &BTreeMap<String, NodeKeys>,
    members: &[Member],
    what: &str,
) -> Result<(Member, Option<String>)> {
    let node_of = |m: &Member| {
        nodes
            .iter()
            .find(|(_, k)| is_node_member(k, m))
            .map(|(id, _)| id.clone())
    };
    if let Ok(id) = super::role::resolve(nodes, what)
        && let Some(keys) = nodes.get(&id)
    {
        return match members.iter().find(|m| is_node_member(keys, m)) {
            Some(m) => Ok((m.clone(), Some(id))),
            None => bail!(
                "node {what} ({id}) has no etcd member (it runs a proxy, or its member was removed already); `etcdctl member list` shows the members"
            ),
        };
    }
    let hex = what.trim_start_matches("0x");
    if let Ok(id) = u64::from_str_radix(hex, 16)
        && let Some(m) = members.iter().find(|m| m.id == id)
    {
        return Ok((m.clone(), node_of(m)));
    }
    // An etcd member name with no deckhand node of that name.
    if let Some(m) = members
        .iter()
        .find(|m| !m.name.is_empty() && m.name == what)
    {
        return Ok((m.clone(), node_of(m)));
    }
    let listed: Vec<String> = members
        .iter()
        .map(|m| {
            format!(
                "{:x} ({})",
                m.id,
                if m.name.is_empty() {
                    "unstarted"
                } else {
                    &m.name
                }
            )
        })
        .collect();
    bail!(
        "{what:?} is neither a known node (id or hostname) nor a member id; the members are: {}",
        listed.join(", ")
    )
}

/// Why removing `member` is refused, in words; `None` when it is safe
/// (`force` skips the quorum and `min_voters` rules, never the last-voter
/// rule). `members` carry the health just checked. `min_voters` applies
/// to a healthy voter only, as for the agents' own removals: a voter that
/// is down or never started holds no vote anyone can use, and keeping it
/// blocks every join (etcd refuses to add a member while a voter is down).
pub fn refusal(
    members: &[deckhand_plan::MemberView],
    member: u64,
    min_voters: usize,
    force: bool,
) -> Option<String> {
    let m = members.iter().find(|m| m.id == member)?;
    if m.is_learner {
        return None;
    }
    let voters = members.iter().filter(|m| !m.is_learner).count();
    if voters <= 1 {
        return Some(format!(
            "member {member:x} is the last voter: removing it would destroy the cluster (not even --force does this)"
        ));
    }
    let guard = (m.is_started() && m.healthy == Some(true)).then_some(min_voters);
    match check_removal(members, member, guard) {
        Ok(()) => None,
        Err(_) if force => None,
        Err(reason) => Some(format!(
            "removing voter {member:x} ({}) is not safe: {reason}. Bring back the voters that do not answer, or lower min_voters (`deckhand cluster set min_voters=N`) where min_voters is the rule; --force removes it anyway, at the risk of losing quorum",
            m.display_name()
        )),
    }
}

/// Removes `member` (found in `members`, of `node` when a deckhand node's)
/// under the membership lock. Everything is decided under the lock, on what
/// is read there: the member list, the voters' health, the cluster config
/// and the node's role key (an agent's change made just before cannot slip
/// between the check and the removal). A role key that says member is set
/// to proxy BEFORE the member is removed, with a compare on its revision,
/// so the node's agent never adds the member back in between.
async fn remove(
    session: &mut Session,
    member: &Member,
    node: Option<&str>,
    force: bool,
) -> Result<()> {
    let label = format!(
        "{} {:x} ({})",
        if member.is_learner {
            "learner"
        } else {
            "voter"
        },
        member.id,
        if member.name.is_empty() {
            member.peer_urls.join(",")
        } else {
            member.name.clone()
        }
    );
    // The membership lock, on a lease of our own: a command killed
    // half-way frees it after LOCK_LEASE_TTL seconds.
    let mut kv = session.store.client();
    let lease = kv.lease_grant(LOCK_LEASE_TTL, None).await?.id();
    let owner = format!(
        "deckhand member remove (pid {} on {})",
        std::process::id(),
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "?".into())
    );
    let lock = session.store.keyspace().membership_lock();
    let result = async {
        match deckhand_etcd::try_lock(&mut kv, &lock, &owner, lease).await? {
            LockOutcome::Acquired => {}
            LockOutcome::HeldBy(holder) => bail!(
                "the membership lock is held by {holder}: a membership change is under way; try again once it is done (`deckhand status`)"
            ),
        }
        let nodes = session.store.nodes().await?;
        let (cluster, members) = session.member_list(&nodes).await?;
        if !members.iter().any(|m| m.id == member.id) {
            bail!("{label} is no longer a member: nothing to remove");
        }
        let health = cluster.voter_health(&members, HEALTH_TIMEOUT).await;
        let views = member_views(&members, &health);
        let (config, _) = session.store.cluster_config().await?;
        if let Some(why) = refusal(&views, member.id, config.min_voters, force) {
            bail!("{why}");
        }
        if force
            && !member.is_learner
            && let Err(why) = check_removal(&views, member.id, Some(config.min_voters))
        {
            eprintln!(
                "deckhand: --force: removing {label} although {why}; if too few healthy voters are left, etcd takes no writes until enough voters run again"
            );
        }
        if let Some(node) = node {
            demote_role_key(session, &nodes, node).await?;
        }
        cluster.remove(member.id).await?;
        Ok(())
    }
    .await;
    let _ = deckhand_etcd::unlock(&mut kv, &lock, &owner).await;
    let _ = kv.lease_revoke(lease).await;
    result?;
    outln!("removed {label} from the etcd cluster");
    Ok(())
}

/// Sets the role key of `node` to proxy when it says member (planes kept,
/// compare on the revision read), so that its agent does not add the
/// removed member back; says what it did.
///
/// # Errors
/// The role key changed since it was read, or could not be written:
/// nothing is removed then (the caller stops).
async fn demote_role_key(
    session: &Session,
    nodes: &BTreeMap<String, NodeKeys>,
    node: &str,
) -> Result<()> {
    let Some(keys) = nodes.get(node) else {
        return Ok(());
    };
    let name = keys.display_name();
    let Some(role) = keys.role().filter(|r| r.etcd == EtcdRole::Member) else {
        return Ok(());
    };
    let proxy = Role {
        etcd: EtcdRole::Proxy,
        planes: role.planes.clone(),
    };
    match session
        .store
        .put_role_if(node, &proxy, keys.role_revision())
        .await
    {
        Ok(Some(rev)) => {
            outln!(
                "{name} ({node}): role key set to {proxy} at revision {rev}, so that its agent does not add it back; `deckhand role set {name} --etcd member` makes it a member again"
            );
            Ok(())
        }
        Ok(None) => bail!(
            "{name}'s role key changed while it was read; nothing was removed: run the command again"
        ),
        Err(e) => Err(e.context(format!(
            "could not set {name}'s role key to proxy, so nothing was removed (its agent would add it back)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Etcd, node_status};
    use deckhand_etcd::Cluster;
    use deckhand_plan::MemberView;
    use std::time::Duration;

    fn view(id: u64, learner: bool, healthy: bool) -> MemberView {
        MemberView {
            id,
            name: format!("node{id}"),
            peer_urls: vec![format!("http://10.0.0.{id}:2380")],
            client_urls: vec![format!("http://10.0.0.{id}:2379")],
            is_learner: learner,
            healthy: Some(healthy),
        }
    }

    #[test]
    fn refusals_name_the_rule_and_force_never_removes_the_last_voter() {
        // Three voters, one dead: removing the dead one leaves 2 healthy of
        // 2; min_voters = 3 guards healthy voters only.
        let v = [
            view(1, false, true),
            view(2, false, true),
            view(3, false, false),
        ];
        assert_eq!(refusal(&v, 3, 3, false), None);
        // Removing a healthy one while another is dead loses quorum.
        assert!(
            refusal(&v, 1, 1, false).is_some_and(|r| r.contains("quorum") && r.contains("--force"))
        );
        assert_eq!(refusal(&v, 1, 1, true), None);
        // A healthy voter of three, all healthy: min_voters = 3 refuses.
        let h = [
            view(1, false, true),
            view(2, false, true),
            view(3, false, true),
        ];
        assert!(refusal(&h, 3, 3, false).is_some_and(|r| r.contains("min_voters")));
        assert_eq!(refusal(&h, 3, 2, false), None);
        assert_eq!(refusal(&h, 3, 3, true), None);
        // A learner always goes; the last voter never.
        let l = [view(1, false, true), view(9, true, false)];
        assert_eq!(refusal(&l, 9, 3, false), None);
        assert!(refusal(&l, 1, 0, true).is_some_and(|r| r.contains("last voter")));
    }

    #[test]
    fn members_are_found_by_node_name_address_or_member_id() {
        let m = |id: u64, name: &str, host: &str| Member {
            id,
            name: name.into(),
            peer_urls: vec![format!("http://{host}:2380")],
            client_urls: vec![],
            is_learner: false,
        };
        let members = [m(0xa1, "node1", "10.0.0.1"), m(0xb2, "", "10.0.0.2")];
        let mut nodes = BTreeMap::new();
        let k1 = NodeKeys {
            name: Some("node1".into()),
            ..Default::default()
        };
        nodes.insert("1".repeat(32), k1);
        let mut s = node_status("node2", deckhand_model::EtcdMode::Member);
        s.address = "10.0.0.2".into();
        let k2 = NodeKeys {
            status: Some(s),
            ..Default::default()
        };
        nodes.insert("2".repeat(32), k2);
        let k4 = NodeKeys {
            name: Some("node4".into()),
            ..Default::default()
        };
        nodes.insert("4".repeat(32), k4);
        assert_eq!(find(&nodes, &members, "node1").unwrap().0.id, 0xa1);
        let (by_addr, node) = find(&nodes, &members, "node2").unwrap();
        assert_eq!((by_addr.id, node), (0xb2, Some("2".repeat(32))));
        assert_eq!(find(&nodes, &members, "b2").unwrap().0.id, 0xb2);
        assert!(
            find(&nodes, &members, "node4")
                .unwrap_err()
                .to_string()
                .contains("no etcd member")
        );
        assert!(
            find(&nodes, &members, "node9")
                .unwrap_err()
                .to_string()
                .contains("neither")
        );
        assert!(find(&nodes, &members, "ff").is_err());
    }

    #[tokio::test]
    async fn against_etcd_unknown_targets_are_usage_errors_and_the_last_voter_stays() {
        let etcd = Etcd::start().await;
        let remove = |what: &str, force: bool| MemberCommand::Remove {
            target: what.into(),
            force,
        };
        let e = member(etcd.target(), remove("nosuch", false))
            .await
            .unwrap_err();
        assert_eq!(e.code, crate::exit::USAGE, "{:#}", e.error);
        let e = member(etcd.target(), remove("", false)).await.unwrap_err();
        assert_eq!(e.code, crate::exit::USAGE);
        // The one member of this etcd, by id: refused even with --force,
        // and nothing changed (still listed, no lock left behind).
        let c = Cluster::connect(
            std::slice::from_ref(&etcd.url),
            Duration::from_secs(2),
            None,
        )
        .await
        .unwrap();
        let id = c.member_list().await.unwrap()[0].id;
        let e = member(etcd.target(), remove(&format!("{id:x}"), true))
            .await
            .unwrap_err();
        assert_eq!(e.code, crate::exit::FAILED);
        assert!(
            format!("{:#}", e.error).contains("last voter"),
            "{:#}",
            e.error
        );
        assert_eq!(c.member_list().await.unwrap().len(), 1);
        let mut kv = etcd.client().await;
        assert!(
            kv.get("/t/locks/membership", None)
                .await
                .unwrap()
                .kvs()
                .is_empty()
        );
    }
}
