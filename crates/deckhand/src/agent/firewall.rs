//! The host firewall on this node: keeps the nftables table
//! `inet deckhand` equal to the rule set the planner computes
//! ([`deckhand_plan::firewall::ruleset`]) from this pass's observation,
//! or removes it when the cluster config turns the firewall off. Only
//! that table is ever touched (`docs/firewall.md`).
//!
//! `nft` runs as a child process at the absolute path found at start-up
//! (it needs CAP_NET_ADMIN and an AF_NETLINK socket: keep both allowed in
//! `deckhand.service`). A rule set is applied with one `nft -f -`
//! transaction, then read back with `nft list table inet deckhand`; each
//! later pass (at most every [`READBACK_EVERY`]) lists the table again and
//! re-applies when the listing changed (someone flushed or edited it).
//! The addresses of the nodes seen are remembered in the state dir
//! ([`KNOWN_NODES`]) so that a node whose status expired (rebooting, or
//! cut off for a while) is still let in on 2379 to report again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use deckhand_model::{EtcdRole, FirewallConfig, FirewallStatus, PlanePort};
use deckhand_plan::firewall::{
    self as rules, FirewallInputs, KnownNode, REMOVE_SCRIPT, RuleSet, firewall_role,
};
use deckhand_plan::{Observation, Step};
use tokio::io::AsyncWriteExt as _;

use crate::store::NodeKeys;

/// Where `nft` is looked for at start-up, in order (Debian's `nftables`
/// package installs `/usr/sbin/nft`).
pub const NFT_PATHS: [&str; 3] = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"];
/// The file in the state dir holding the node addresses seen: a JSON map
/// of node id to address.
pub const KNOWN_NODES: &str = "firewall-nodes.json";
/// Longest time one `nft` run may take.
pub const NFT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often, at most, the table is listed to notice outside changes (and
/// the node keys re-read) when nothing else changed.
pub const READBACK_EVERY: Duration = Duration::from_secs(2);

/// The first of [`NFT_PATHS`] that exists, or why none does.
pub fn find_nft() -> Result<PathBuf, String> {
    NFT_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "nft was not found at {}: install Debian's nftables package to use the firewall",
                NFT_PATHS.join(", ")
            )
        })
}

/// Runs `nft ARGS`, feeding `stdin` when given; its stdout.
///
/// # Errors
/// nft could not be started, did not finish within [`NFT_TIMEOUT`], or
/// exited non-zero (its stderr in the error).
pub async fn nft(path: &Path, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut cmd = tokio::process::Command::new(path);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", path.display()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await?;
        drop(pipe);
    }
    let out = tokio::time::timeout(NFT_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| anyhow!("nft {} took longer than {NFT_TIMEOUT:?}", args.join(" ")))??;
    if !out.status.success() {
        bail!(
            "nft {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The rules in the kernel, as this agent put them there.
#[derive(Debug, Clone)]
struct InPlace {
    role: EtcdRole,
    hash: String,
    peers: Vec<String>,
    /// The `nft -f` script that applied them.
    script: String,
    /// `nft list table inet deckhand` right after applying.
    listing: String,
}

/// The agent's firewall state.
pub struct Firewall {
    nft: Result<PathBuf, String>,
    state_dir: PathBuf,
    /// Node id → last address seen in its status.
    known: BTreeMap<String, String>,
    in_place: Option<InPlace>,
    /// The table was removed (or found absent) since the firewall was
    /// last on, in this process.
    removed: bool,
    last_check: Option<Instant>,
    /// The node keys last read: (address, firewall) of each live node.
    statuses: Vec<(String, FirewallStatus)>,
    /// Node ids whose role key asks for a member.
    wants_member: Vec<String>,
    status: FirewallStatus,
}

impl Firewall {
    /// The firewall state of an agent starting with `state_dir`; `nft` is
    /// looked for now.
    pub fn new(state_dir: &Path) -> Firewall {
        let known = std::fs::read(state_dir.join(KNOWN_NODES))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Firewall {
            nft: find_nft(),
            state_dir: state_dir.to_path_buf(),
            known,
            in_place: None,
            removed: false,
            last_check: None,
            statuses: Vec::new(),
            wants_member: Vec::new(),
            status: FirewallStatus::default(),
        }
    }

    /// What the status document says about the firewall.
    pub fn status(&self) -> &FirewallStatus {
        &self.status
    }

    /// One pass: with the firewall on, computes the rule set and applies it
    /// when it differs from what is in place (or the table was changed by
    /// someone else); with it off, removes deckhand's table once. `nodes`
    /// is read through `read_nodes` at most every [`READBACK_EVERY`].
    pub async fn reconcile<F, Fut>(
        &mut self,
        o: &Observation,
        config: &FirewallConfig,
        ports: &[PlanePort],
        read_nodes: F,
    ) where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<BTreeMap<String, NodeKeys>>>,
    {
        if !config.enabled {
            self.in_place = None;
            self.status = FirewallStatus::default();
            self.statuses.clear();
            if !self.removed
                && let Ok(nft) = &self.nft
            {
                match nft_remove(nft).await {
                    Ok(()) => self.removed = true,
                    Err(e) => {
                        tracing::warn!("removing the firewall table: {e:#}");
                        self.status.reason = Some(format!(
                            "the firewall is off, but deckhand's table could not be removed: {e:#}"
                        ));
                    }
                }
            } else if self.nft.is_err() {
                self.removed = true;
            }
            return;
        }
        self.removed = false;
        let role = firewall_role(o);
        let due = self
            .last_check
            .is_none_or(|t| t.elapsed() >= READBACK_EVERY);
        let nft_path = match &self.nft {
            Ok(p) => p.clone(),
            Err(e) => {
                self.set_status(role, None, Some(e.clone()));
                return;
            }
        };
        // The node keys: re-read when due, else the last ones.
        let mut nodes_error = None;
        if due || self.statuses.is_empty() {
            match read_nodes().await {
                Ok(nodes) => self.learn(&nodes),
                Err(e) => nodes_error = Some(format!("{e:#}")),
            }
        }
        let known: Vec<KnownNode> = self.known_nodes();
        let members = o.cluster.as_ref().map(|c| c.members.as_slice());
        let computed = rules::ruleset(&FirewallInputs {
            config,
            role,
            members,
            nodes: &known,
            ports,
        });
        let rs = match computed {
            Ok(rs) => rs,
            Err(refusal) => {
                let reason = format!("not applied: {refusal}");
                if self.status.reason.as_ref() != Some(&reason) {
                    tracing::warn!("firewall rule set refused: {refusal}");
                }
                // The previous rules stay, and are kept as they were: a
                // table flushed by hand with policy drop cuts this node off
                // (loopback and replies included), which is itself a reason
                // the member list is unknown, so only restoring what was
                // applied can end it.
                if due && self.in_place.is_some() {
                    self.last_check = Some(Instant::now());
                    self.restore(&nft_path).await;
                }
                self.set_status(role, None, Some(reason));
                return;
            }
        };
        if let Some(e) = nodes_error
            && self.in_place.is_none()
        {
            self.set_status(
                role,
                None,
                Some(format!("not applied: the node keys could not be read: {e}")),
            );
            return;
        }
        let same = self.in_place.as_ref().is_some_and(|p| p.hash == rs.hash);
        if same && !due {
            self.set_status(role, Some(&rs), None);
            return;
        }
        self.last_check = Some(Instant::now());
        if same {
            // Read back: the table as listed now against the listing
            // taken right after applying.
            let listed = nft(&nft_path, &["list", "table", "inet", "deckhand"], None).await;
            let unchanged = match (&listed, &self.in_place) {
                (Ok(now), Some(p)) => *now == p.listing,
                _ => false,
            };
            if unchanged {
                self.set_status(role, Some(&rs), None);
                return;
            }
            tracing::warn!(
                "the nftables table inet deckhand was changed or removed outside deckhand; applying it again"
            );
        }
        match self.apply(&nft_path, &rs).await {
            Ok(()) => {
                tracing::info!(
                    "firewall: applied the {} rules {} ({} peer, {} cluster entries, default {})",
                    rs.role,
                    rs.hash,
                    rs.peers.len(),
                    rs.cluster.len(),
                    rs.default
                );
                self.set_status(role, Some(&rs), None);
            }
            Err(e) => {
                tracing::error!("applying the firewall rules: {e:#}");
                self.set_status(role, None, Some(format!("not applied: {e:#}")));
            }
        }
    }

    async fn apply(&mut self, nft_path: &Path, rs: &RuleSet) -> Result<()> {
        let script = rs.apply_script();
        nft(nft_path, &["-f", "-"], Some(&script)).await?;
        let listing = nft(nft_path, &["list", "table", "inet", "deckhand"], None).await?;
        self.in_place = Some(InPlace {
            role: rs.role,
            hash: rs.hash.clone(),
            peers: rs.peer_strings(),
            script,
            listing,
        });
        Ok(())
    }

    /// Reads the table back and, when it was changed or removed outside
    /// deckhand, applies the rules in place again (one transaction, as
    /// [`Firewall::apply`]).
    async fn restore(&mut self, nft_path: &Path) {
        let Some(p) = &self.in_place else { return };
        let listed = nft(nft_path, &["list", "table", "inet", "deckhand"], None).await;
        if listed.as_ref().is_ok_and(|now| *now == p.listing) {
            return;
        }
        tracing::warn!(
            "the nftables table inet deckhand was changed or removed outside deckhand; \
             applying the previous rules {} again (the current rule set is refused)",
            p.hash
        );
        let script = p.script.clone();
        let relisted = match nft(nft_path, &["-f", "-"], Some(&script)).await {
            Ok(_) => nft(nft_path, &["list", "table", "inet", "deckhand"], None).await,
            Err(e) => Err(e),
        };
        match relisted {
            Ok(listing) => {
                if let Some(p) = &mut self.in_place {
                    p.listing = listing;
                }
            }
            Err(e) => tracing::error!("applying the previous firewall rules again: {e:#}"),
        }
    }

    /// Sets the status: `applied` when `current` (the computed rule set) is
    /// the one in place; `reason` when not.
    fn set_status(&mut self, role: EtcdRole, current: Option<&RuleSet>, reason: Option<String>) {
        let p = self.in_place.as_ref();
        self.status = FirewallStatus {
            enabled: true,
            applied: current.is_some_and(|rs| p.is_some_and(|p| p.hash == rs.hash)),
            matches_role: p.is_some_and(|p| p.role == role),
            role: p.map(|p| p.role.to_string()),
            hash: p.map(|p| p.hash.clone()),
            peers: p.map(|p| p.peers.clone()).unwrap_or_default(),
            reason,
        };
    }

    /// Notes the addresses of the nodes in `nodes` (and forgets nodes whose
    /// keys are gone), saving them when they changed.
    fn learn(&mut self, nodes: &BTreeMap<String, NodeKeys>) {
        let mut known = self.known.clone();
        known.retain(|id, _| nodes.contains_key(id));
        self.statuses.clear();
        for (id, keys) in nodes {
            if let Some(s) = &keys.status {
                known.insert(id.clone(), s.address.clone());
                self.statuses.push((s.address.clone(), s.firewall.clone()));
            }
        }
        self.wants_member = nodes
            .iter()
            .filter(|(_, k)| k.role().is_some_and(|r| r.etcd == EtcdRole::Member))
            .map(|(id, _)| id.clone())
            .collect();
        if known != self.known {
            self.known = known;
            let path = self.state_dir.join(KNOWN_NODES);
            match serde_json::to_vec(&self.known) {
                Ok(bytes) => {
                    if let Err(e) = deckhand_systemd::write_atomic(&path, &bytes, 0o644) {
                        tracing::warn!("saving {}: {e}", path.display());
                    }
                }
                Err(e) => tracing::warn!("encoding the known node addresses: {e}"),
            }
        }
    }

    fn known_nodes(&self) -> Vec<KnownNode> {
        self.known
            .iter()
            .map(|(id, address)| KnownNode {
                address: address.clone(),
                wants_member: self.wants_member.iter().any(|w| w == id),
            })
            .collect()
    }

    /// The planner's `step`, or a wait when it would join this node to
    /// the cluster (take the lock for it, or add the learner) before the
    /// firewalls let it in ([`rules::join_wait`]).
    pub fn gate(&self, step: Step, o: &Observation, my_address: &str) -> Step {
        let joining = deckhand_plan::target_role(o) == EtcdRole::Member && o.me().is_none();
        if !joining || !matches!(step, Step::AcquireLock | Step::AddLearner) {
            return step;
        }
        let members = o
            .cluster
            .as_ref()
            .map(|c| c.members.as_slice())
            .unwrap_or_default();
        match rules::join_wait(&self.status, my_address, members, &self.statuses) {
            Some(why) => Step::Wait(why),
            None => step,
        }
    }
}

/// Removes deckhand's table (and nothing else) in one transaction.
async fn nft_remove(nft_path: &Path) -> Result<()> {
    nft(nft_path, &["-f", "-"], Some(REMOVE_SCRIPT)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use deckhand_model::{EtcdMode, FirewallDefault, PortFrom, PortProtocol, Role};
    use deckhand_plan::{ClusterView, LocalView, LockView, MemberView};

    /// node`k` at 10.0.0.k, a started voter.
    fn voter(k: u64) -> MemberView {
        MemberView {
            id: k,
            name: format!("node{k}"),
            peer_urls: vec![format!("http://10.0.0.{k}:2380")],
            client_urls: vec![format!("http://10.0.0.{k}:2379")],
            is_learner: false,
            healthy: Some(true),
        }
    }

    /// Node 1's observation: a running member of three voters.
    fn member_observation(cluster: bool) -> Observation {
        Observation {
            node_name: "node1".into(),
            peer_url: "http://10.0.0.1:2380".into(),
            desired: Some(Role::new(EtcdRole::Member)),
            in_initial_cluster: true,
            config_endpoints: vec![],
            min_voters: 3,
            local: LocalView {
                member_unit_active: true,
                data_dir_exists: true,
                bootstrapped: true,
                ..LocalView::default()
            },
            cluster: cluster.then(|| ClusterView {
                members: (1..=3).map(voter).collect(),
                leader: Some(1),
            }),
            lock: LockView::Free,
            learner_timeout: 300,
            voter_start_timeout: 300,
            pending: Default::default(),
            down: Default::default(),
            identity: Default::default(),
        }
    }

    fn nodes() -> BTreeMap<String, NodeKeys> {
        (1..=5)
            .map(|k| {
                let mut st = crate::testing::node_status(&format!("node{k}"), EtcdMode::Member);
                st.address = format!("10.0.0.{k}");
                let etcd = if k <= 3 || k == 5 { "member" } else { "proxy" };
                (
                    format!("id{k}"),
                    NodeKeys {
                        name: Some(format!("node{k}")),
                        role: Some((format!(r#"{{"etcd":"{etcd}"}}"#).into_bytes(), 1)),
                        status: Some(st),
                    },
                )
            })
            .collect()
    }

    const IN_NETNS: &str = "DECKHAND_TEST_IN_NETNS";

    /// The agent's firewall pass against the real kernel, in a network
    /// namespace of its own (this test runs its inner half again under
    /// `unshare -n`, so the host's rules are never touched): applied,
    /// flushed by hand and applied again, a refused rule set that keeps
    /// the previous rules, and the table removed when the firewall is
    /// turned off. Skipped, saying why, without root, nft or unshare.
    #[test]
    fn the_agent_applies_reapplies_refuses_and_removes_in_a_private_netns() {
        if let Err(e) = find_nft() {
            println!("SKIPPED: {e}");
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new("unshare")
            .args(["-n", "--"])
            .arg(&exe)
            .args([
                "--exact",
                "agent::firewall::tests::inner_netns_pass",
                "--include-ignored",
                "--nocapture",
            ])
            .env(IN_NETNS, "1")
            .output();
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                println!("SKIPPED: unshare could not run: {e}");
                return;
            }
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() && text.contains("unshare failed") {
            println!("SKIPPED: no network namespace here: {text}");
            return;
        }
        println!("{text}");
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("1 passed"),
            "the inner test did not run: {text}"
        );
    }

    #[tokio::test]
    #[ignore = "run by the_agent_applies_reapplies_refuses_and_removes_in_a_private_netns, in a private netns"]
    async fn inner_netns_pass() {
        assert_eq!(
            std::env::var(IN_NETNS).as_deref(),
            Ok("1"),
            "only run inside a private network namespace"
        );
        let nft_path = find_nft().unwrap();
        let list = || nft(&nft_path, &["list", "table", "inet", "deckhand"], None);
        let dir = tempfile::tempdir().unwrap();
        let mut fw = Firewall::new(dir.path());
        let mut config = FirewallConfig {
            enabled: true,
            default: FirewallDefault::Drop,
            cluster_networks: vec![],
        };
        let ports = [PlanePort {
            port: 8080,
            protocol: PortProtocol::Tcp,
            from: PortFrom::Any,
        }];
        let o = member_observation(true);
        fw.reconcile(&o, &config, &ports, || async { Ok(nodes()) })
            .await;
        let st = fw.status().clone();
        assert!(st.enabled && st.applied && st.matches_role, "{st:?}");
        assert_eq!(st.role.as_deref(), Some("member"));
        assert!(
            st.peers.contains(&"10.0.0.5".to_string()),
            "node5 wants to be a member: let in on 2380: {st:?}"
        );
        assert!(!st.peers.contains(&"10.0.0.4".to_string()), "{st:?}");
        let listed = list().await.unwrap();
        assert!(
            listed.contains("tcp dport 2380 ip saddr @peers4 accept"),
            "{listed}"
        );
        assert!(listed.contains("policy drop"), "{listed}");
        // The addresses seen are remembered.
        let known = std::fs::read_to_string(dir.path().join(KNOWN_NODES)).unwrap();
        assert!(known.contains("10.0.0.4"), "{known}");

        // Flushed by hand: the next read-back applies it again.
        nft(&nft_path, &["flush", "table", "inet", "deckhand"], None)
            .await
            .unwrap();
        assert!(!list().await.unwrap().contains("dport 2380"));
        fw.last_check = None;
        fw.reconcile(&o, &config, &ports, || async { Ok(nodes()) })
            .await;
        assert_eq!(list().await.unwrap(), listed, "re-applied as before");
        assert!(fw.status().applied);

        // The member list unknown: refused, the previous rules stay.
        let blind = member_observation(false);
        fw.last_check = None;
        config.default = FirewallDefault::Accept;
        fw.reconcile(&blind, &config, &ports, || async { Ok(nodes()) })
            .await;
        let st = fw.status().clone();
        assert!(!st.applied, "{st:?}");
        assert!(
            st.reason
                .as_deref()
                .unwrap_or("")
                .contains("member list is unknown"),
            "{st:?}"
        );
        assert_eq!(st.hash, fw.in_place.as_ref().map(|p| p.hash.clone()));
        assert_eq!(list().await.unwrap(), listed, "the previous rules stay");
        // Flushed by hand while refused (with policy drop that cuts the
        // node off, so the member list stays unknown): the previous rules
        // are applied again all the same.
        nft(&nft_path, &["flush", "table", "inet", "deckhand"], None)
            .await
            .unwrap();
        fw.last_check = None;
        fw.reconcile(&blind, &config, &ports, || async { Ok(nodes()) })
            .await;
        assert_eq!(list().await.unwrap(), listed, "the previous rules restored");
        assert!(!fw.status().applied, "{:?}", fw.status());

        // Off: the table goes, and only it.
        nft(
            &nft_path,
            &["-f", "-"],
            Some("table inet other {\n\tchain c {\n\t}\n}\n"),
        )
        .await
        .unwrap();
        config.enabled = false;
        fw.reconcile(&o, &config, &ports, || async { Ok(nodes()) })
            .await;
        assert_eq!(fw.status(), &FirewallStatus::default());
        assert!(list().await.is_err(), "table inet deckhand removed");
        nft(&nft_path, &["list", "table", "inet", "other"], None)
            .await
            .expect("another table is never touched");
    }

    /// The generated scripts parse and type-check in the kernel's eyes:
    /// `nft -c -f -` (check mode: nothing is applied) on this host. Skipped,
    /// saying why, where nft is missing or may not talk to the kernel.
    #[tokio::test]
    async fn generated_scripts_pass_nft_check_mode() {
        let path = match find_nft() {
            Ok(p) => p,
            Err(e) => {
                println!("SKIPPED: {e}");
                return;
            }
        };
        if let Err(e) = nft(
            &path,
            &["-c", "-f", "-"],
            Some("table inet deckhand_probe {}\n"),
        )
        .await
        {
            println!("SKIPPED: nft check mode does not work here: {e:#}");
            return;
        }
        let members: Vec<MemberView> = (1..=3)
            .map(|i| MemberView {
                id: i,
                name: format!("node{i}"),
                peer_urls: vec![format!("http://172.29.77.1{i}:2380")],
                client_urls: vec![format!("http://172.29.77.1{i}:2379")],
                is_learner: false,
                healthy: Some(true),
            })
            .chain(std::iter::once(MemberView {
                id: 9,
                name: String::new(),
                peer_urls: vec!["http://[fd00::9]:2380".into()],
                client_urls: vec![],
                is_learner: true,
                healthy: None,
            }))
            .collect();
        let nodes = [
            KnownNode {
                address: "172.29.77.14".into(),
                wants_member: true,
            },
            KnownNode {
                address: "172.29.77.15".into(),
                wants_member: false,
            },
        ];
        let ports = [
            PlanePort {
                port: 8080,
                protocol: PortProtocol::Tcp,
                from: PortFrom::Any,
            },
            PlanePort {
                port: 53,
                protocol: PortProtocol::Udp,
                from: PortFrom::Cluster,
            },
        ];
        for default in [FirewallDefault::Accept, FirewallDefault::Drop] {
            for role in [EtcdRole::Member, EtcdRole::Proxy] {
                let config = FirewallConfig {
                    enabled: true,
                    default,
                    cluster_networks: vec!["172.29.77.0/24".into(), "fd00::/64".into()],
                };
                let rs = rules::ruleset(&FirewallInputs {
                    config: &config,
                    role,
                    members: Some(&members),
                    nodes: &nodes,
                    ports: &ports,
                })
                .unwrap();
                nft(&path, &["-c", "-f", "-"], Some(&rs.apply_script()))
                    .await
                    .unwrap_or_else(|e| panic!("{role} {default}: {e:#}\n{}", rs.apply_script()));
            }
        }
        nft(&path, &["-c", "-f", "-"], Some(REMOVE_SCRIPT))
            .await
            .unwrap();
        // And a broken script is refused: the check is a real one.
        assert!(
            nft(
                &path,
                &["-c", "-f", "-"],
                Some("table inet deckhand { chain x { tcp dport 99999 accept } }\n")
            )
            .await
            .is_err()
        );
    }
}
