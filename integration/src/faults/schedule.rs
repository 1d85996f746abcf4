//! The fault schedule: a pure function of the seed. The same seed and op
//! count always give the same operations, targets, failpoints and pauses.

use std::collections::BTreeSet;
use std::fmt;

/// The harness nodes, in order.
pub const NODES: [&str; 5] = ["node1", "node2", "node3", "node4", "node5"];
/// At most this many nodes are killed or partitioned at the same time.
pub const MAX_DOWN: usize = 2;
/// Pause after each operation, in seconds (inclusive bounds).
pub const WAIT_S: (u64, u64) = (3, 8);

/// SplitMix64: small, seedable, stable across Rust and crate versions (the
/// schedule of a seed never changes under a dependency update).
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Which role change an `agent-kill` triggers on its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Set the node's role to member (the point is on the proxy → member path).
    Member,
    /// Set the node's role to proxy (the point is on the member → proxy path).
    Proxy,
    /// The opposite of the node's current desired role (decided at run time).
    Flip,
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Trigger::Member => "member",
            Trigger::Proxy => "proxy",
            Trigger::Flip => "flip",
        })
    }
}

/// One operation of the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `deckhand role set NODE --etcd ETCD`, run on `via`.
    Role {
        node: String,
        etcd: &'static str,
        via: String,
    },
    /// Arm failpoint `point` on `node`, then trigger a role change there.
    AgentKill {
        node: String,
        point: String,
        trigger: Trigger,
    },
    /// `integration/cluster kill NODE`.
    NodeKill { node: String },
    /// `integration/cluster start NODE`.
    NodeStart { node: String },
    /// `integration/cluster partition NODE`.
    Partition { node: String },
    /// `integration/cluster heal NODE`.
    Heal { node: String },
    /// Set `voters: 3` in the cluster config.
    VotersOn,
    /// Remove `voters` from the cluster config.
    VotersOff,
}

/// Every operation kind, in report order.
pub const KINDS: [&str; 8] = [
    "role",
    "agent-kill",
    "node-kill",
    "node-start",
    "partition",
    "heal",
    "voters-on",
    "voters-off",
];

impl Op {
    /// The kind, as in [`KINDS`].
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Role { .. } => "role",
            Op::AgentKill { .. } => "agent-kill",
            Op::NodeKill { .. } => "node-kill",
            Op::NodeStart { .. } => "node-start",
            Op::Partition { .. } => "partition",
            Op::Heal { .. } => "heal",
            Op::VotersOn => "voters-on",
            Op::VotersOff => "voters-off",
        }
    }

    /// Is it a fault (as opposed to an operator action or a repair)?
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            Op::AgentKill { .. } | Op::NodeKill { .. } | Op::Partition { .. }
        )
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Role { node, etcd, via } => write!(f, "role {node} -> {etcd} (via {via})"),
            Op::AgentKill {
                node,
                point,
                trigger,
            } => write!(f, "agent-kill {node} at {point} (trigger: {trigger})"),
            Op::NodeKill { node } => write!(f, "node-kill {node}"),
            Op::NodeStart { node } => write!(f, "node-start {node}"),
            Op::Partition { node } => write!(f, "partition {node}"),
            Op::Heal { node } => write!(f, "heal {node}"),
            Op::VotersOn => write!(f, "voters-on"),
            Op::VotersOff => write!(f, "voters-off"),
        }
    }
}

/// An operation and the pause after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub op: Op,
    /// Seconds to wait after the operation.
    pub wait_s: u64,
}

/// The whole schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub seed: u64,
    /// The cluster config starts with `voters: 3`.
    pub voters_initially: bool,
    pub ops: Vec<Planned>,
}

/// Failpoints on the proxy → member path only.
const MEMBER_PATH: [&str; 5] = [
    "add-learner",
    "start-learner",
    "promote",
    "serve-localhost-from-member",
    "localhost",
];
/// Failpoints on the member → proxy path only.
const PROXY_PATH: [&str; 4] = [
    "transfer-leadership",
    "remove-self",
    "stop-member",
    "start-proxy",
];

/// Every failpoint name the agent knows (see `crates/deckhand/src/failpoint.rs`).
pub fn failpoints() -> Vec<String> {
    let mut v: Vec<String> = deckhand_plan::Step::ACTING_KINDS
        .iter()
        .flat_map(|k| [format!("before-{k}"), format!("after-{k}")])
        .collect();
    v.push("mid-serve-localhost".into());
    v
}

/// The role change most likely to reach `point`.
pub fn trigger_for(point: &str) -> Trigger {
    let kind = point
        .strip_prefix("before-")
        .or_else(|| point.strip_prefix("after-"))
        .or_else(|| point.strip_prefix("mid-serve-"))
        .unwrap_or(point);
    if MEMBER_PATH.contains(&kind) {
        Trigger::Member
    } else if PROXY_PATH.contains(&kind) {
        Trigger::Proxy
    } else {
        Trigger::Flip
    }
}

/// The schedule of `ops` operations for `seed`.
pub fn generate(seed: u64, ops: usize) -> Schedule {
    let mut rng = Rng::new(seed);
    let points = failpoints();
    let voters_initially = rng.below(2) == 1;
    let mut voters = voters_initially;
    let mut killed: BTreeSet<&str> = BTreeSet::new();
    let mut parted: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::with_capacity(ops);
    for _ in 0..ops {
        let live: Vec<&str> = NODES
            .iter()
            .copied()
            .filter(|n| !killed.contains(n) && !parted.contains(n))
            .collect();
        let down = killed.len() + parted.len();
        let can_fault = down < MAX_DOWN;
        let weights: [(&str, usize); 8] = [
            ("role", 4),
            ("agent-kill", 4),
            ("node-kill", if can_fault { 2 } else { 0 }),
            ("node-start", 3 * killed.len()),
            ("partition", if can_fault { 2 } else { 0 }),
            ("heal", 3 * parted.len()),
            ("voters-on", usize::from(!voters)),
            ("voters-off", usize::from(voters)),
        ];
        let total: usize = weights.iter().map(|(_, w)| w).sum();
        let mut r = rng.below(total);
        let mut kind = "role";
        for (k, w) in weights {
            if r < w {
                kind = k;
                break;
            }
            r -= w;
        }
        let op = match kind {
            "role" => Op::Role {
                node: rng.pick(&live).to_string(),
                etcd: if rng.below(2) == 0 { "member" } else { "proxy" },
                via: rng.pick(&live).to_string(),
            },
            "agent-kill" => {
                let node = rng.pick(&live).to_string();
                let point = rng.pick(&points).clone();
                let trigger = trigger_for(&point);
                Op::AgentKill {
                    node,
                    point,
                    trigger,
                }
            }
            "node-kill" => {
                let n = *rng.pick(&live);
                killed.insert(n);
                Op::NodeKill { node: n.into() }
            }
            "partition" => {
                let n = *rng.pick(&live);
                parted.insert(n);
                Op::Partition { node: n.into() }
            }
            "node-start" => {
                let k: Vec<&str> = killed.iter().copied().collect();
                let n = *rng.pick(&k);
                killed.remove(n);
                Op::NodeStart { node: n.into() }
            }
            "heal" => {
                let p: Vec<&str> = parted.iter().copied().collect();
                let n = *rng.pick(&p);
                parted.remove(n);
                Op::Heal { node: n.into() }
            }
            "voters-on" => {
                voters = true;
                Op::VotersOn
            }
            _ => {
                voters = false;
                Op::VotersOff
            }
        };
        let wait_s = rng.range(WAIT_S.0, WAIT_S.1);
        out.push(Planned { op, wait_s });
    }
    Schedule {
        seed,
        voters_initially,
        ops: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_schedule() {
        for seed in 0..50 {
            assert_eq!(generate(seed, 40), generate(seed, 40));
        }
        assert_ne!(generate(1, 40), generate(2, 40));
    }

    #[test]
    fn never_more_than_max_down_and_ops_target_live_nodes() {
        for seed in 0..300 {
            let s = generate(seed, 60);
            let mut killed = BTreeSet::new();
            let mut parted = BTreeSet::new();
            for p in &s.ops {
                let live = |n: &String, k: &BTreeSet<String>, q: &BTreeSet<String>| {
                    !k.contains(n) && !q.contains(n)
                };
                match &p.op {
                    Op::Role { node, via, .. } => {
                        assert!(live(node, &killed, &parted) && live(via, &killed, &parted))
                    }
                    Op::AgentKill { node, .. } => assert!(live(node, &killed, &parted)),
                    Op::NodeKill { node } => {
                        assert!(live(node, &killed, &parted));
                        killed.insert(node.clone());
                    }
                    Op::Partition { node } => {
                        assert!(live(node, &killed, &parted));
                        parted.insert(node.clone());
                    }
                    Op::NodeStart { node } => assert!(killed.remove(node)),
                    Op::Heal { node } => assert!(parted.remove(node)),
                    Op::VotersOn | Op::VotersOff => {}
                }
                assert!(killed.len() + parted.len() <= MAX_DOWN);
                assert!((WAIT_S.0..=WAIT_S.1).contains(&p.wait_s));
            }
        }
    }

    #[test]
    fn failpoint_names() {
        let f = failpoints();
        assert_eq!(f.len(), 31);
        assert!(f.contains(&"before-add-learner".to_string()));
        assert!(f.contains(&"mid-serve-localhost".to_string()));
        assert_eq!(trigger_for("after-promote"), Trigger::Member);
        assert_eq!(trigger_for("mid-serve-localhost"), Trigger::Member);
        assert_eq!(trigger_for("before-remove-self"), Trigger::Proxy);
        assert_eq!(trigger_for("before-acquire-lock"), Trigger::Flip);
    }
}
