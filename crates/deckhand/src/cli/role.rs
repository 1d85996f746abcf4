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
    /// Example: deckhand role set node4 --etcd member --wait
    Set {
        /// Node id (/etc/machine-id) or hostname.
        node: String,
        /// member: run a voting etcd member; proxy: run an etcd grpc-proxy.
        #[arg(long, value_parser = ["member", "proxy"])]
        etcd: String,
        /// Comma-separated planes: control, data, router. The node runs the
        /// units of these planes (see `deckhand plane`) and stops those of
        /// planes it loses. Empty: no plane.
        #[arg(long, value_delimiter = ',')]
        planes: Vec<String>,
        /// Wait until the node reports it converged to this role (or is blocked).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds.
        #[arg(long, default_value_t = 180)]
        timeout: u64,
    },
    /// Print a node's role key.
    Get {
        /// Node id (/etc/machine-id) or hostname.
        node: String,
    },
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
/// connecting: nothing is written); [`crate::exit::FAILED`] when no endpoint
/// answers, the node is unknown, or `--wait` times out.
pub async fn role(target: crate::connect::Target, cmd: RoleCommand) -> Result<(), Failure> {
    let wanted = match &cmd {
        RoleCommand::Set { etcd, planes, .. } => {
            Some(role_of(etcd, planes).map_err(Failure::usage)?)
        }
        RoleCommand::Get { .. } => None,
    };
    run(target, cmd, wanted).await.map_err(Failure::failed)
}

/// `role` once its arguments are valid (`wanted`: the role to set).
async fn run(target: crate::connect::Target, cmd: RoleCommand, wanted: Option<Role>) -> Result<()> {
    let mut session = Session::connect(target).await?;
    let session = &mut session;
    let nodes = session.store.nodes().await?;
    match cmd {
        RoleCommand::Get { node } => {
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
                None => bail!("node {node} ({id}) has no role key"),
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
            let role = wanted.expect("checked above");
            let rev = session.store.put_role(&id, &role).await?;
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
) -> Result<()> {
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
                    return Err(e.context(format!(
                        "node {id} did not report convergence within {} s",
                        timeout.as_secs()
                    )));
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
                bail!(
                    "{} cannot apply this role now: {b}.\nThe role key keeps asking for it: the node applies it by itself once it is safe. To cancel, set the role back (deckhand role set {} --etcd ...).",
                    s.name,
                    s.name
                );
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
            bail!(
                "node {id} did not converge within {} s{why}; see `deckhand status`",
                timeout.as_secs()
            );
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
