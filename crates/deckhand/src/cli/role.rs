//! `deckhand role set|get`: a node's role key, and waiting until the node
//! reports it converged.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Subcommand;
use deckhand_model::{EtcdRole, Plane, Role};

use super::session::Session;
use crate::exit::Failure;
use crate::store::NodeKeys;

/// `deckhand role ...`
#[derive(Subcommand)]
pub enum RoleCommand {
    /// Set a node's role: its etcd role and its planes.
    ///
    /// A part left out keeps its current value: `--planes` alone keeps the
    /// etcd role, `--etcd` alone keeps the planes (`--planes ""` clears
    /// them). A node without a valid role key yet needs `--etcd`. The
    /// write is conditional on the role key's revision read just before
    /// (no lost update when two operators change one node).
    ///
    /// Example: deckhand role set node4 --etcd member --wait
    #[command(after_long_help = ROLE_SET_EXIT)]
    Set {
        /// Node id (/etc/machine-id) or hostname.
        node: String,
        /// member: run a voting etcd member; proxy: run an etcd grpc-proxy.
        /// Left out: the current etcd role.
        #[arg(long, value_parser = ["member", "proxy"])]
        etcd: Option<String>,
        /// Comma-separated planes: control, data, router. The node runs the
        /// units of these planes (see `deckhand plane`) and stops those of
        /// planes it loses. Empty (`--planes ""`): no plane. Left out: the
        /// current planes.
        #[arg(long, value_delimiter = ',')]
        planes: Option<Vec<String>>,
        /// Wait until the node reports it converged to this role (or is blocked).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds.
        #[arg(long, default_value_t = 180)]
        timeout: u64,
    },
    /// Print a node's role key (its stored JSON value).
    Get {
        /// Node id (/etc/machine-id) or hostname.
        node: String,
        /// Accepted for scripts that pass it to every command: the output
        /// is JSON either way.
        #[arg(long)]
        json: bool,
    },
}

/// Exit statuses of `role set`, appended to its `--help`.
const ROLE_SET_EXIT: &str = "Exit status: 0 the role is written (with --wait: the node converged to it); \
1 etcd did not answer or the write failed; 2 bad arguments, or the node has no valid role \
to keep a part of (nothing written); 3 with --wait: the node reports the change blocked (the \
role key keeps asking for it); 4 with --wait: the node did not converge within --timeout.";

/// What `role set` changes: a part that is `None` keeps its current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleChange {
    /// `--etcd`, parsed.
    pub etcd: Option<EtcdRole>,
    /// `--planes`, parsed (empty: clear the planes).
    pub planes: Option<BTreeSet<Plane>>,
}

impl RoleChange {
    /// Parses `--etcd` and `--planes` (either may be left out, not both).
    ///
    /// # Errors
    /// Both left out, an unknown etcd role or plane, or a plane listed twice.
    pub fn parse(etcd: Option<&str>, planes: Option<&[String]>) -> Result<RoleChange> {
        if etcd.is_none() && planes.is_none() {
            bail!("give --etcd, --planes or both (a part left out keeps its current value)");
        }
        let etcd = etcd.map(str::parse::<EtcdRole>).transpose()?;
        let planes = match planes {
            Some(p) => Some(role_of("proxy", p)?.planes),
            None => None,
        };
        Ok(RoleChange { etcd, planes })
    }

    /// The role this change makes of `current` (the node's valid role key,
    /// if any).
    ///
    /// # Errors
    /// `--etcd` left out and no current role to keep it from.
    pub fn apply(&self, current: Option<&Role>) -> Result<Role> {
        let etcd = match (self.etcd, current) {
            (Some(e), _) => e,
            (None, Some(c)) => c.etcd,
            (None, None) => bail!(
                "the node has no valid role key to keep the etcd role of: give --etcd member|proxy"
            ),
        };
        let planes = match (&self.planes, current) {
            (Some(p), _) => p.clone(),
            (None, Some(c)) => c.planes.clone(),
            (None, None) => BTreeSet::new(),
        };
        Ok(Role { etcd, planes })
    }
}

/// The role `--etcd ETCD --planes PLANES` asks for.
///
/// # Errors
/// An unknown etcd role or plane, or a plane listed twice.
pub fn role_of(etcd: &str, planes: &[String]) -> Result<Role> {
    let mut role = Role::new(etcd.parse::<EtcdRole>()?);
    let mut seen = BTreeSet::new();
    for p in planes.iter().filter(|p| !p.is_empty()) {
        let plane: Plane = p.parse()?;
        if !seen.insert(plane) {
            bail!("plane {p:?} is listed twice");
        }
        role.planes.insert(plane);
    }
    Ok(role)
}

/// `deckhand role set|get`.
///
/// # Errors
/// [`crate::exit::USAGE`] for a bad `--etcd` or `--planes` (checked before
/// connecting: nothing is written), or `--etcd` left out for a node
/// without a valid role; [`crate::exit::FAILED`] when no endpoint answers
/// or the node is unknown; with `--wait`, [`crate::exit::BLOCKED`] when
/// the node reports the change blocked and [`crate::exit::TIMED_OUT`] when
/// it did not converge within `--timeout`.
pub async fn role(target: crate::connect::Target, cmd: RoleCommand) -> Result<(), Failure> {
    let wanted = match &cmd {
        RoleCommand::Set { etcd, planes, .. } => {
            Some(RoleChange::parse(etcd.as_deref(), planes.as_deref()).map_err(Failure::usage)?)
        }
        RoleCommand::Get { .. } => None,
    };
    run(target, cmd, wanted).await
}

/// `role` once its arguments are valid (`wanted`: the change to make).
async fn run(
    target: crate::connect::Target,
    cmd: RoleCommand,
    wanted: Option<RoleChange>,
) -> Result<(), Failure> {
    let mut session = Session::connect(target).await?;
    let session = &mut session;
    let nodes = session.store.nodes().await?;
    match cmd {
        RoleCommand::Get { node, .. } => {
            let id = resolve(&nodes, &node)?;
            match nodes.get(&id).and_then(|k| k.role.as_ref()) {
                Some((v, rev)) => {
                    outln!("{}", String::from_utf8_lossy(v));
                    if let Err(e) = Role::parse(v) {
                        eprintln!(
                            "deckhand: warning: this role value is invalid (revision {rev}): {e}"
                        );
                    }
                }
                None => {
                    return Err(anyhow::anyhow!("node {node} ({id}) has no role key").into());
                }
            }
            Ok(())
        }
        RoleCommand::Set {
            node,
            wait,
            timeout,
            ..
        } => {
            let id = resolve(&nodes, &node)?;
            let change = wanted.expect("checked above");
            let keys = nodes.get(&id);
            let current = keys.and_then(NodeKeys::role);
            let expected = keys.and_then(|k| k.role.as_ref()).map_or(0, |(_, r)| *r);
            let role = change.apply(current.as_ref()).map_err(Failure::usage)?;
            let Some(rev) = session.store.put_role_if(&id, &role, expected).await? else {
                return Err(anyhow::anyhow!(
                    "node {node} ({id}): its role key changed while this command read it; nothing written (run it again)"
                )
                .into());
            };
            outln!("{node} ({id}): role set to {role} at revision {rev}");
            if wait {
                wait_converged(session, &id, rev, Duration::from_secs(timeout)).await?;
            }
            Ok(())
        }
    }
}

async fn wait_converged(
    session: &mut Session,
    id: &str,
    rev: i64,
    timeout: Duration,
) -> Result<(), Failure> {
    let timed_out = |e: anyhow::Error| Failure {
        code: crate::exit::TIMED_OUT,
        error: e,
    };
    let start = Instant::now();
    let mut last_step = String::new();
    let mut last_error: Option<String> = None;
    loop {
        // The local etcd restarts when this very node (or, for a proxy, the
        // voter set) changes: ride over read errors and reconnect.
        let nodes = match session.store.nodes().await {
            Ok(n) => n,
            Err(e) => {
                if start.elapsed() > timeout {
                    return Err(timed_out(e.context(format!(
                        "node {id} did not report convergence within {} s",
                        timeout.as_secs()
                    ))));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                session.reconnect().await;
                continue;
            }
        };
        if let Some(s) = nodes.get(id).and_then(|k| k.status.as_ref())
            && s.desired_revision >= rev
        {
            if let Some(b) = &s.blocked {
                return Err(Failure {
                    code: crate::exit::BLOCKED,
                    error: anyhow::anyhow!(
                        "{} cannot apply this role now: {b}.\nThe role key keeps asking for it: the node applies it by itself once it is safe. To cancel, set the role back (deckhand role set {} --etcd ...).",
                        s.name,
                        s.name
                    ),
                });
            }
            if s.converged {
                outln!(
                    "{}: converged in {:.1} s",
                    s.name,
                    start.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            let step = s.step.clone().unwrap_or_default();
            if step != last_step {
                outln!("{}: {step}", s.name);
                last_step = step;
            }
            if s.error != last_error {
                if let Some(e) = &s.error {
                    outln!("{}: error: {e}", s.name);
                }
                last_error.clone_from(&s.error);
            }
        }
        if start.elapsed() > timeout {
            let why = match (&last_error, last_step.is_empty()) {
                (Some(e), _) => format!(" (its error: {e})"),
                (None, false) => format!(" (its step: {last_step})"),
                (None, true) => String::new(),
            };
            return Err(timed_out(anyhow::anyhow!(
                "node {id} did not converge within {} s{why}; see `deckhand status`",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The node id `node` names: a node id, or the hostname of exactly one
/// node (of several namesakes, the one alive), or an id not seen yet (32
/// hex characters: a role may be set before the node first boots).
///
/// # Errors
/// No node of that name, or several.
pub fn resolve(nodes: &BTreeMap<String, NodeKeys>, node: &str) -> Result<String> {
    if nodes.contains_key(node) {
        return Ok(node.to_string());
    }
    let by_name: Vec<&String> = nodes
        .iter()
        .filter(|(_, k)| {
            k.name.as_deref() == Some(node) || k.status.as_ref().is_some_and(|s| s.name == node)
        })
        .map(|(id, _)| id)
        .collect();
    // A host reprovisioned under its old name leaves a dead namesake:
    // prefer the one live node of that name.
    let alive: Vec<&String> = by_name
        .iter()
        .copied()
        .filter(|id| nodes.get(*id).is_some_and(|k| k.status.is_some()))
        .collect();
    if by_name.len() > 1 && alive.len() == 1 {
        return Ok(alive[0].clone());
    }
    match by_name.as_slice() {
        [id] => Ok((*id).clone()),
        [] if node.len() == 32 && node.chars().all(|c| c.is_ascii_hexdigit()) => {
            Ok(node.to_string())
        }
        [] => {
            bail!("no node named {node:?}: not a known node id or hostname (see `deckhand status`)")
        }
        _ => bail!(
            "{} nodes are named {node:?}; use the node id instead",
            by_name.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use deckhand_model::EtcdMode;

    use super::*;
    use crate::testing::node_status;

    fn alive(name: &str) -> NodeKeys {
        NodeKeys {
            name: Some(name.into()),
            role: None,
            status: Some(node_status(name, EtcdMode::Proxy)),
        }
    }

    #[test]
    fn role_flags_are_checked() {
        let r = role_of("member", &["router".into(), "control".into()]).unwrap();
        assert_eq!(r.to_string(), "member+control,router");
        assert!(
            role_of("proxy", &[String::new()])
                .unwrap()
                .planes
                .is_empty()
        );
        assert!(role_of("voter", &[]).is_err());
        assert!(
            role_of("proxy", &["routr".into()])
                .unwrap_err()
                .to_string()
                .contains("unknown plane")
        );
        let twice = role_of("proxy", &["router".into(), "router".into()]).unwrap_err();
        assert!(twice.to_string().contains("listed twice"));
    }

    #[test]
    fn a_part_left_out_keeps_its_current_value() {
        let current = Role::parse(br#"{"etcd":"member","planes":["control","router"]}"#).unwrap();
        let planes_only = RoleChange::parse(None, Some(&["data".into()])).unwrap();
        assert_eq!(
            planes_only.apply(Some(&current)).unwrap().to_string(),
            "member+data"
        );
        let etcd_only = RoleChange::parse(Some("proxy"), None).unwrap();
        assert_eq!(
            etcd_only.apply(Some(&current)).unwrap().to_string(),
            "proxy+control,router"
        );
        let clear = RoleChange::parse(None, Some(&[String::new()])).unwrap();
        assert_eq!(clear.apply(Some(&current)).unwrap().to_string(), "member");
        let both = RoleChange::parse(Some("proxy"), Some(&["router".into()])).unwrap();
        assert_eq!(both.apply(None).unwrap().to_string(), "proxy+router");
        assert!(RoleChange::parse(None, None).is_err());
        assert!(RoleChange::parse(Some("voter"), None).is_err());
        assert!(RoleChange::parse(None, Some(&["routr".into()])).is_err());
        let e = planes_only.apply(None).unwrap_err().to_string();
        assert!(e.contains("give --etcd"), "{e}");
    }

    /// Against a real etcd: `role set` writes what a part left out keeps.
    #[tokio::test]
    async fn role_set_keeps_what_is_left_out_in_etcd() {
        let etcd = crate::testing::Etcd::start().await;
        let id = "f".repeat(32);
        let set = |etcd: Option<&str>, planes: Option<&str>| RoleCommand::Set {
            node: id.clone(),
            etcd: etcd.map(str::to_string),
            planes: planes.map(|p| p.split(',').map(str::to_string).collect()),
            wait: false,
            timeout: 1,
        };
        let store = Session::connect(etcd.target()).await.unwrap().store;
        let read = || async { store.role(&id).await.unwrap().unwrap().to_string() };
        let e = role(etcd.target(), set(None, Some("router")))
            .await
            .unwrap_err();
        assert_eq!(e.code, crate::exit::USAGE, "no role yet: --etcd is needed");
        assert!(store.role(&id).await.unwrap().is_none(), "nothing written");
        role(etcd.target(), set(Some("member"), Some("control,router")))
            .await
            .unwrap();
        assert_eq!(read().await, "member+control,router");
        role(etcd.target(), set(None, Some("data"))).await.unwrap();
        assert_eq!(read().await, "member+data");
        role(etcd.target(), set(Some("proxy"), None)).await.unwrap();
        assert_eq!(read().await, "proxy+data");
        role(etcd.target(), set(None, Some(""))).await.unwrap();
        assert_eq!(read().await, "proxy");
    }

    /// Against a real etcd, no agent: `--wait` ends with [`crate::exit::TIMED_OUT`]
    /// when no status answers, and with [`crate::exit::BLOCKED`] when the
    /// node's status reports the change blocked.
    #[tokio::test]
    async fn wait_tells_a_blocked_change_from_a_timeout() {
        let etcd = crate::testing::Etcd::start().await;
        let id = "e".repeat(32);
        let set = || RoleCommand::Set {
            node: id.clone(),
            etcd: Some("member".into()),
            planes: None,
            wait: true,
            timeout: 1,
        };
        let e = role(etcd.target(), set()).await.unwrap_err();
        assert_eq!(e.code, crate::exit::TIMED_OUT, "{:#}", e.error);
        let store = Session::connect(etcd.target()).await.unwrap().store;
        let lease = store.client().lease_grant(60, None).await.unwrap().id();
        let mut st = node_status("blockednode", EtcdMode::Proxy);
        st.id = id.clone();
        st.converged = false;
        st.desired_revision = i64::MAX;
        st.blocked = Some("it would leave the cluster without quorum".into());
        store.put_status(&st, lease).await.unwrap();
        let e = role(etcd.target(), set()).await.unwrap_err();
        assert_eq!(e.code, crate::exit::BLOCKED, "{:#}", e.error);
        assert!(format!("{:#}", e.error).contains("without quorum"));
    }

    #[test]
    fn names_resolve_to_ids_preferring_the_live_namesake() {
        let (a, b, c) = ("a".repeat(32), "b".repeat(32), "c".repeat(32));
        let mut nodes = BTreeMap::new();
        nodes.insert(a.clone(), alive("node1"));
        nodes.insert(
            b.clone(),
            NodeKeys {
                name: Some("node2".into()),
                ..Default::default()
            },
        );
        assert_eq!(resolve(&nodes, "node1").unwrap(), a);
        assert_eq!(resolve(&nodes, &a).unwrap(), a);
        assert_eq!(
            resolve(&nodes, "node2").unwrap(),
            b,
            "a dead node by its name key"
        );
        // node2 reprovisioned: a live namesake wins over the dead one.
        nodes.insert(c.clone(), alive("node2"));
        assert_eq!(resolve(&nodes, "node2").unwrap(), c);
        // A node id not seen yet may be named (to pre-assign a role).
        let d = "d".repeat(32);
        assert_eq!(resolve(&nodes, &d).unwrap(), d);
        let e = resolve(&nodes, "node9").unwrap_err().to_string();
        assert!(e.contains("no node named \"node9\""), "{e}");
        // Two live namesakes: ambiguous.
        nodes.insert("e".repeat(32), alive("node1"));
        let e = resolve(&nodes, "node1").unwrap_err().to_string();
        assert!(e.contains("2 nodes are named"), "{e}");
    }
}
