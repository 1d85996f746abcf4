//! Turning TLS on for a running plaintext cluster (`deckhand tls enable`,
//! `docs/tls.md`): the stages a node goes through, the cluster key that
//! tells each agent its stage (`config/tls`), the local file that records
//! the stage applied (so that the agent, the CLI and the member's start
//! check use it from the next start on, without etcd), the settings a
//! stage gives, and the pure planning of the procedure.
//!
//! The procedure, one node at a time, each step only while every voter
//! answers and knows a leader (so a restart never leaves fewer than a
//! quorum of voters up), under the membership lock:
//!
//! 1. **certs**: every node's agent loads the node certificate files at
//!    the default paths; a member is restarted with its peer and client
//!    certificate files configured while still listening `http://` (etcd
//!    then dials `https://` peers with its certificate, and `http://` ones
//!    in plaintext); a proxy node only takes the files in (its proxy gets
//!    `--cacert/--cert/--key` at its next endpoint change).
//! 2. **https**, member by member: `member update` of its peer URL to
//!    `https://ADDR:2380`, then its agent restarts it listening
//!    `https://ADDR:2380` and `https://ADDR:2379` (plus
//!    `http://127.0.0.1:2379`); the next member only once it answers over
//!    TLS with its `https://` client URL published and every voter healthy.
//! 3. the proxy nodes take **https** (their proxies already point at the
//!    members' `https://` client URLs), then `done`: every node, also one
//!    that joins later, runs with TLS.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::config::{self, Settings, TlsSettings};

/// The file in the agent's state dir that records the TLS stage applied.
pub const STAGE_FILE: &str = "tls-stage";

/// A node's TLS stage, in the order the procedure takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Plaintext, no certificate files in use.
    Plain,
    /// The certificate files in use; the node's etcd still listens
    /// plaintext on its address.
    Certs,
    /// Mutual TLS on every hop between hosts.
    Https,
}

impl Stage {
    /// Its name in the key, the status and the stage file.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Plain => "plain",
            Stage::Certs => "certs",
            Stage::Https => "https",
        }
    }

    /// From [`Stage::as_str`].
    pub fn parse(s: &str) -> Option<Stage> {
        match s.trim() {
            "plain" => Some(Stage::Plain),
            "certs" => Some(Stage::Certs),
            "https" => Some(Stage::Https),
            _ => None,
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The value of `config/tls`: each node's stage (by node id), and `done`
/// once every node is at `https` (then every agent, also a new node's,
/// runs with TLS).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// Node id → the stage its agent is to apply.
    #[serde(default)]
    pub nodes: BTreeMap<String, Stage>,
    /// Every node is at `https`.
    #[serde(default)]
    pub done: bool,
}

impl Rollout {
    /// The stage the node `id` is to apply.
    pub fn stage_of(&self, id: &str) -> Stage {
        if self.done {
            return Stage::Https;
        }
        self.nodes.get(id).copied().unwrap_or(Stage::Plain)
    }

    /// Parses the key's value.
    ///
    /// # Errors
    /// Invalid JSON or an unknown field or stage.
    pub fn parse(value: &[u8]) -> Result<Rollout> {
        serde_json::from_slice(value).context("invalid config/tls value")
    }
}

/// The stage recorded in `dir`'s [`STAGE_FILE`]; `Plain` when absent.
pub fn read_stage(dir: &Path) -> Stage {
    std::fs::read_to_string(dir.join(STAGE_FILE))
        .ok()
        .and_then(|t| Stage::parse(&t))
        .unwrap_or(Stage::Plain)
}

/// Records `stage` in `dir`'s [`STAGE_FILE`] (atomically).
///
/// # Errors
/// The file cannot be written.
pub fn write_stage(dir: &Path, stage: Stage) -> Result<()> {
    let path = dir.join(STAGE_FILE);
    deckhand_systemd::write_atomic(&path, format!("{stage}\n").as_bytes(), 0o644)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The `[tls]` files at their default paths (`/etc/deckhand/pki/...`):
/// what a stage turns on for a config without `[tls]`.
pub fn default_files() -> TlsSettings {
    TlsSettings {
        ca_file: config::DEFAULT_CA_FILE.into(),
        cert_file: config::DEFAULT_CERT_FILE.into(),
        key_file: config::DEFAULT_KEY_FILE.into(),
        proxy_cert_file: config::DEFAULT_PROXY_CERT_FILE.into(),
        proxy_key_file: config::DEFAULT_PROXY_KEY_FILE.into(),
        join: None,
        ca_key_file: config::DEFAULT_CA_KEY_FILE.into(),
    }
}

/// `url` with `https://` for `http://`.
pub fn to_https(url: &str) -> String {
    match url.strip_prefix("http://") {
        Some(rest) => format!("https://{rest}"),
        None => url.to_string(),
    }
}

/// `name=url,...` with every URL `https://`.
pub fn initial_cluster_to_https(raw: &str) -> String {
    raw.split(',')
        .map(|part| match part.split_once('=') {
            Some((n, u)) => format!("{n}={}", to_https(u.trim())),
            None => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The settings at `stage` for a config whose own `[tls]` is off: from
/// `certs` on, the files at the default paths; at `https` also every
/// `http://` URL of `etcd.endpoints` and `etcd.initial_cluster` as
/// `https://`. A config with `[tls]` on is returned as it is (it is
/// `https` already), and so is every config at `plain`.
pub fn apply(mut s: Settings, stage: Stage) -> Settings {
    if s.tls.is_some() || stage == Stage::Plain {
        return s;
    }
    s.tls = Some(default_files());
    if stage == Stage::Https {
        s.endpoints = s.endpoints.iter().map(|e| to_https(e)).collect();
        s.initial_cluster_raw = initial_cluster_to_https(&s.initial_cluster_raw);
        s.initial_cluster = s
            .initial_cluster
            .iter()
            .map(|(n, u)| (n.clone(), to_https(u)))
            .collect();
    }
    s
}

/// Whether the node's own URLs are `https://` with `settings` read from the
/// config and `stage` applied.
pub fn urls_are_https(config_tls: bool, stage: Stage) -> bool {
    config_tls || stage == Stage::Https
}

/// `s` with the stage recorded in [`crate::paths::STATE_DIR`] applied
/// (when its own `[tls]` is off): what the CLI and the member's start
/// check use.
pub fn effective(s: Settings) -> Settings {
    if s.tls.is_some() {
        return s;
    }
    let stage = read_stage(Path::new(crate::paths::STATE_DIR));
    apply(s, stage)
}

/// [`config::load`], then the stage recorded in `state_dir` applied
/// ([`apply`]), with the stage.
///
/// # Errors
/// As [`config::load`].
pub fn load_effective(path: &Path, state_dir: &Path) -> Result<(Settings, Stage)> {
    let s = config::load(path)?;
    let stage = if s.tls.is_some() {
        Stage::Https
    } else {
        read_stage(state_dir)
    };
    Ok((apply(s, stage), stage))
}

// ------------------------------------------------------------- planning

/// One node as the procedure sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Node id.
    pub id: String,
    /// Node name.
    pub name: String,
    /// Its status key is alive.
    pub alive: bool,
    /// Its member id, when it runs a voter.
    pub member: Option<u64>,
    /// The stage its agent reports applied.
    pub applied: Stage,
    /// Why its certificate cannot be used (none reported, expired, not
    /// this node's), if so.
    pub certificate_problem: Option<String>,
}

/// One voter as the procedure sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoterView {
    /// Member id.
    pub id: u64,
    /// Member name.
    pub name: String,
    /// Its peer URLs are `https://`.
    pub peer_https: bool,
    /// Its client URLs (as it published them at its last start) are
    /// `https://`.
    pub client_https: bool,
    /// It answered `Status` and knows a leader.
    pub healthy: bool,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop: the procedure cannot go on (the reason in words).
    Refuse(String),
    /// Wait, then look again (what for).
    Wait(String),
    /// Write `config/tls` with this node at this stage; its agent applies
    /// it (for a member: a restart).
    SetStage {
        /// Node id.
        node: String,
        /// Node name, for messages.
        name: String,
        /// The stage.
        stage: Stage,
    },
    /// `member update` of this voter's peer URL to `https://`.
    UpdatePeerUrl {
        /// Member id.
        member: u64,
        /// Member name.
        name: String,
    },
    /// Write `config/tls` with `done`.
    MarkDone,
    /// Nothing left to do.
    Finished,
}

/// The fewest voters the procedure runs with: with one or two voters, any
/// member restart leaves fewer than a quorum up.
pub const MIN_VOTERS: usize = 3;

/// The next action of the procedure, from what is read now: the key
/// (`rollout`), every node, the voters (with their health) and whether
/// there are learners. Pure; called again after each action, so a
/// procedure interrupted anywhere resumes from what etcd holds.
///
/// Never more than one node is between its key's stage and its applied
/// stage, and nothing that restarts a member is chosen unless every voter
/// is healthy.
pub fn next(
    rollout: &Rollout,
    nodes: &[NodeView],
    voters: &[VoterView],
    learners: usize,
) -> Action {
    let all_https = !voters.is_empty() && voters.iter().all(|v| v.peer_https && v.client_https);
    if rollout.done && all_https && nodes.iter().all(|n| !n.alive || n.applied == Stage::Https) {
        return Action::Finished;
    }
    // A node still applying its stage: wait for it (one at a time).
    if let Some(n) = nodes
        .iter()
        .find(|n| n.alive && rollout.stage_of(&n.id) > n.applied && !rollout.done)
    {
        return Action::Wait(format!(
            "{} applies stage {} (it reports {})",
            n.name,
            rollout.stage_of(&n.id),
            n.applied
        ));
    }
    // A node that took part and no longer reports (its agent, or its
    // localhost:2379, is down): wait for it rather than leave it behind.
    if let Some(n) = nodes
        .iter()
        .find(|n| !n.alive && rollout.nodes.contains_key(&n.id) && !rollout.done)
    {
        return Action::Wait(format!(
            "{} took part and reports no status now (its agent or its localhost:2379 is down)",
            n.name
        ));
    }
    if voters.len() < MIN_VOTERS {
        return Action::Refuse(format!(
            "the cluster has {} voter(s): restarting any member one at a time would leave fewer than a quorum up; run at least {MIN_VOTERS} voters first",
            voters.len()
        ));
    }
    if learners > 0 {
        return Action::Wait(format!(
            "{learners} learner(s) in the member list: a membership change is under way"
        ));
    }
    if let Some(v) = voters.iter().find(|v| !v.healthy) {
        return Action::Wait(format!(
            "voter {} ({:x}) does not answer or knows no leader",
            v.name, v.id
        ));
    }
    // Every voter's node must be a deckhand node that takes part.
    for v in voters {
        if !nodes.iter().any(|n| n.member == Some(v.id)) {
            return Action::Refuse(format!(
                "voter {} ({:x}) runs on no deckhand node that reports it: its certificates and restarts are not deckhand's",
                v.name, v.id
            ));
        }
    }
    let alive: Vec<&NodeView> = nodes.iter().filter(|n| n.alive).collect();
    if let Some(n) = alive
        .iter()
        .find(|n| n.certificate_problem.is_some() && n.applied < Stage::Https)
    {
        return Action::Refuse(format!(
            "{}: {}; install its certificates (`deckhand pki issue --node {} --address ADDR DIR`, docs/pki.md) and run again",
            n.name,
            n.certificate_problem.as_deref().unwrap_or_default(),
            n.name
        ));
    }
    // Where a node is: its key's stage, or further when its agent is (a
    // node with `[tls]` in its config is at https from its first boot).
    let at = |n: &NodeView| rollout.stage_of(&n.id).max(n.applied);
    // Phase 1: every live node takes the certificate files, members first.
    let mut order: Vec<&&NodeView> = alive.iter().collect();
    order.sort_by_key(|n| (n.member.is_none(), n.name.clone()));
    if let Some(n) = order.iter().find(|n| at(n) < Stage::Certs) {
        return Action::SetStage {
            node: n.id.clone(),
            name: n.name.clone(),
            stage: Stage::Certs,
        };
    }
    // Phase 2: member by member, its peer URL, then its listeners.
    let mut members: Vec<&&NodeView> = order
        .iter()
        .filter(|n| n.member.is_some())
        .copied()
        .collect();
    members.sort_by_key(|n| n.name.clone());
    for n in &members {
        let Some(v) = voters.iter().find(|v| Some(v.id) == n.member) else {
            continue;
        };
        if at(n) == Stage::Https {
            if !v.client_https {
                return Action::Wait(format!(
                    "{} restarted with TLS, its https:// client URL is not published yet",
                    n.name
                ));
            }
            continue;
        }
        if !v.peer_https {
            return Action::UpdatePeerUrl {
                member: v.id,
                name: n.name.clone(),
            };
        }
        return Action::SetStage {
            node: n.id.clone(),
            name: n.name.clone(),
            stage: Stage::Https,
        };
    }
    if let Some(v) = voters.iter().find(|v| !v.peer_https || !v.client_https) {
        return Action::Wait(format!("voter {} is not all https:// yet", v.name));
    }
    // Phase 3: the other nodes (proxies).
    if let Some(n) = order.iter().find(|n| at(n) < Stage::Https) {
        return Action::SetStage {
            node: n.id.clone(),
            name: n.name.clone(),
            stage: Stage::Https,
        };
    }
    if !rollout.done {
        return Action::MarkDone;
    }
    Action::Finished
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulated cluster: nodes 1..=members are voters, the rest proxies.
    struct Sim {
        rollout: Rollout,
        nodes: Vec<NodeView>,
        voters: Vec<VoterView>,
        /// Nodes between their key's stage and the stage applied.
        restarting: Vec<String>,
    }

    impl Sim {
        fn new(members: usize, proxies: usize) -> Sim {
            let mut nodes = Vec::new();
            let mut voters = Vec::new();
            for i in 1..=members + proxies {
                let member = (i <= members).then_some(i as u64);
                nodes.push(NodeView {
                    id: format!("id{i}"),
                    name: format!("node{i}"),
                    alive: true,
                    member,
                    applied: Stage::Plain,
                    certificate_problem: None,
                });
                if let Some(m) = member {
                    voters.push(VoterView {
                        id: m,
                        name: format!("node{i}"),
                        peer_https: false,
                        client_https: false,
                        healthy: true,
                    });
                }
            }
            Sim {
                rollout: Rollout::default(),
                nodes,
                voters,
                restarting: Vec::new(),
            }
        }

        fn next(&self) -> Action {
            next(&self.rollout, &self.nodes, &self.voters, 0)
        }

        /// Carries an action out; a member's stage change takes it down
        /// until `settle`.
        fn act(&mut self, a: &Action) {
            match a {
                Action::SetStage { node, stage, .. } => {
                    self.rollout.nodes.insert(node.clone(), *stage);
                    let n = self.nodes.iter().find(|n| &n.id == node).unwrap();
                    if let Some(m) = n.member {
                        self.voters.iter_mut().find(|v| v.id == m).unwrap().healthy = false;
                    }
                    self.restarting.push(node.clone());
                }
                Action::UpdatePeerUrl { member, .. } => {
                    self.voters
                        .iter_mut()
                        .find(|v| v.id == *member)
                        .unwrap()
                        .peer_https = true;
                }
                Action::MarkDone => self.rollout.done = true,
                Action::Wait(_) | Action::Refuse(_) | Action::Finished => {}
            }
        }

        /// The restarting nodes come back with their stage.
        fn settle(&mut self) {
            for id in std::mem::take(&mut self.restarting) {
                let stage = self.rollout.stage_of(&id);
                let n = self.nodes.iter_mut().find(|n| n.id == id).unwrap();
                n.applied = stage;
                if let Some(m) = n.member {
                    let v = self.voters.iter_mut().find(|v| v.id == m).unwrap();
                    v.healthy = true;
                    v.client_https = stage == Stage::Https;
                }
            }
        }

        fn down(&self) -> usize {
            self.voters.iter().filter(|v| !v.healthy).count()
        }
    }

    #[test]
    fn the_procedure_restarts_one_member_at_a_time_and_ends_all_https() {
        let mut s = Sim::new(5, 2);
        let mut actions = Vec::new();
        for _ in 0..100 {
            let a = s.next();
            if a == Action::Finished {
                break;
            }
            assert!(!matches!(a, Action::Refuse(_)), "{a:?}");
            s.act(&a);
            // Never two voters down: 5 voters, quorum 3, at most one restarts.
            assert!(s.down() <= 1, "after {a:?}: {} down", s.down());
            // What the planner says while a restart is under way: wait.
            if !s.restarting.is_empty() {
                assert!(matches!(s.next(), Action::Wait(_)), "{:?}", s.next());
            }
            s.settle();
            actions.push(a);
        }
        assert_eq!(s.next(), Action::Finished);
        assert!(s.rollout.done);
        assert!(s.voters.iter().all(|v| v.peer_https && v.client_https));
        assert!(s.nodes.iter().all(|n| n.applied == Stage::Https));
        // 7 nodes to certs, 5 peer updates, 5 members and 2 proxies to https, done.
        assert_eq!(actions.len(), 7 + 5 + 5 + 2 + 1, "{actions:#?}");
        // Phase 1 before any peer URL changes, and every member to certs
        // before the first update.
        let first_update = actions
            .iter()
            .position(|a| matches!(a, Action::UpdatePeerUrl { .. }))
            .unwrap();
        assert!(actions[..first_update].iter().all(|a| matches!(
            a,
            Action::SetStage {
                stage: Stage::Certs,
                ..
            }
        )));
        // A member's peer URL changes right before its own https restart.
        for (i, a) in actions.iter().enumerate() {
            if let Action::UpdatePeerUrl { name, .. } = a {
                assert!(
                    matches!(&actions[i + 1], Action::SetStage { name: n, stage: Stage::Https, .. } if n == name),
                    "{:?}",
                    actions[i + 1]
                );
            }
        }
    }

    #[test]
    fn a_node_that_took_part_and_went_silent_is_waited_for() {
        let mut s = Sim::new(3, 2);
        for _ in 0..5 {
            let a = s.next();
            s.act(&a);
            s.settle();
        }
        assert!(s.nodes.iter().all(|n| n.applied == Stage::Certs));
        s.nodes[4].alive = false;
        assert!(
            matches!(s.next(), Action::Wait(w) if w.contains("node5")),
            "{:?}",
            s.next()
        );
        // A node that never took part and is dead is not waited for.
        let mut s = Sim::new(3, 2);
        s.nodes[4].alive = false;
        assert!(matches!(s.next(), Action::SetStage { .. }));
    }

    #[test]
    fn a_cluster_that_is_tls_already_only_gets_marked_done() {
        let mut s = Sim::new(3, 2);
        for n in &mut s.nodes {
            n.applied = Stage::Https;
        }
        for v in &mut s.voters {
            (v.peer_https, v.client_https) = (true, true);
        }
        assert_eq!(s.next(), Action::MarkDone);
        s.act(&Action::MarkDone);
        assert_eq!(s.next(), Action::Finished);
    }

    #[test]
    fn nothing_restarts_while_a_voter_is_down_and_small_clusters_are_refused() {
        let mut s = Sim::new(3, 0);
        s.voters[2].healthy = false;
        assert!(matches!(s.next(), Action::Wait(w) if w.contains("node3")));
        let s = Sim::new(2, 1);
        assert!(matches!(s.next(), Action::Refuse(r) if r.contains("quorum")));
        let mut s = Sim::new(3, 0);
        assert!(
            matches!(next(&s.rollout, &s.nodes, &s.voters, 1), Action::Wait(w) if w.contains("learner"))
        );
        // A node without a usable certificate: refused, naming it.
        s.nodes[1].certificate_problem = Some("reports no certificate".into());
        assert!(
            matches!(s.next(), Action::Refuse(r) if r.contains("node2") && r.contains("pki issue"))
        );
    }

    #[test]
    fn an_interrupted_procedure_resumes_from_what_etcd_holds() {
        // Stop after every prefix of the run, rebuild the planner's view
        // from the simulated cluster alone (a fresh CLI), and go on: it
        // always finishes with the same end and never two voters down.
        for stop in 0..20 {
            let mut s = Sim::new(3, 1);
            for _ in 0..stop {
                let a = s.next();
                s.act(&a);
                s.settle();
            }
            // A peer URL updated, then the CLI died: the key still says certs.
            for _ in 0..100 {
                let a = s.next();
                if a == Action::Finished {
                    break;
                }
                s.act(&a);
                assert!(s.down() <= 1);
                s.settle();
            }
            assert_eq!(s.next(), Action::Finished, "stopped after {stop}");
            assert!(s.voters.iter().all(|v| v.peer_https && v.client_https));
        }
        // Crashed right after a member update: that member goes https next.
        let mut s = Sim::new(3, 0);
        for id in ["id1", "id2", "id3"] {
            s.rollout.nodes.insert(id.into(), Stage::Certs);
        }
        for n in &mut s.nodes {
            n.applied = Stage::Certs;
        }
        s.voters[1].peer_https = true;
        assert!(
            matches!(s.next(), Action::UpdatePeerUrl { ref name, .. } if name == "node1"),
            "{:?}",
            s.next()
        );
    }

    #[test]
    fn settings_follow_the_stage() {
        let s = config::parse_fragment(
            "[tls]\nenabled = false\n[etcd]\nendpoints = [\"http://10.0.0.1:2379\"]\ninitial_cluster = \"a=http://10.0.0.1:2380,b=http://10.0.0.2:2380\"\n",
        )
        .and_then(config::validate)
        .unwrap();
        assert!(apply(s.clone(), Stage::Plain).tls.is_none());
        let c = apply(s.clone(), Stage::Certs);
        assert_eq!(c.tls, Some(default_files()));
        assert_eq!(c.endpoints, ["http://10.0.0.1:2379"]);
        let h = apply(s, Stage::Https);
        assert_eq!(h.endpoints, ["https://10.0.0.1:2379"]);
        assert_eq!(
            h.initial_cluster_raw,
            "a=https://10.0.0.1:2380,b=https://10.0.0.2:2380"
        );
        assert_eq!(h.initial_cluster[1].1, "https://10.0.0.2:2380");
        let r = Rollout::parse(br#"{"nodes":{"x":"certs"}}"#).unwrap();
        assert_eq!(
            (r.stage_of("x"), r.stage_of("y")),
            (Stage::Certs, Stage::Plain)
        );
        assert!(Rollout::parse(br#"{"nodes":{"x":"tls"}}"#).is_err());
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_stage(d.path()), Stage::Plain);
        write_stage(d.path(), Stage::Https).unwrap();
        assert_eq!(read_stage(d.path()), Stage::Https);
    }
}
