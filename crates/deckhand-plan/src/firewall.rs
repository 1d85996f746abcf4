//! The host firewall's rule set: a pure function from what the agent
//! observed (its role, the member list, the nodes' addresses, its planes'
//! ports, the cluster config's `firewall` section) to the nftables table
//! `inet deckhand`, with the guard that refuses a rule set that would cut
//! the node off from the voters (`docs/firewall.md`).
//!
//! The rules are built as data ([`Rule`]), judged by [`RuleSet::verdict`]
//! (the same first-match semantics as an nftables chain: the first rule
//! whose matches all hold gives the verdict, else the chain's policy;
//! <https://wiki.nftables.org/wiki-nftables/index.php/Configuring_chains>),
//! and rendered to the text `nft -f` reads. Applying is atomic: one file
//! creates the table if absent, deletes it and defines it again, and
//! `nft -f` runs a file as one transaction
//! (<https://wiki.nftables.org/wiki-nftables/index.php/Atomic_rule_replacement>).

use std::collections::BTreeSet;
use std::net::IpAddr;

use deckhand_model::{
    EtcdRole, FirewallConfig, FirewallDefault, FirewallStatus, METRICS_PORT, Network, PlanePort,
    PortFrom, PortProtocol,
};

use crate::observation::{MemberView, Observation};

/// nftables family and name of deckhand's table: deckhand touches no other.
pub const TABLE: &str = "inet deckhand";
/// etcd's client port.
pub const CLIENT_PORT: u16 = 2379;
/// etcd's peer port.
pub const PEER_PORT: u16 = 2380;
/// SSH, always open.
pub const SSH_PORT: u16 = 22;
/// ICMP and ICMPv6 packets per second accepted when the default is drop
/// (neighbour discovery is never limited).
pub const ICMP_RATE_PER_SECOND: u32 = 10;

/// The `nft -f` script that removes deckhand's table if it exists, in one
/// transaction (creating an empty table first makes the delete succeed
/// when there is none).
pub const REMOVE_SCRIPT: &str = "table inet deckhand {}\ndelete table inet deckhand\n";

/// A node deckhand knows, as the firewall sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownNode {
    /// Its address (from its status document, or the agent's memory of it).
    pub address: String,
    /// Its role key asks for an etcd member: a joining node, let in on
    /// 2380 before its learner is added.
    pub wants_member: bool,
}

/// What the rule set is computed from.
#[derive(Debug, Clone, Copy)]
pub struct FirewallInputs<'a> {
    /// The cluster config's `firewall` section.
    pub config: &'a FirewallConfig,
    /// Whose rules: [`firewall_role`] of the observation.
    pub role: EtcdRole,
    /// The member list from a real member; `None` when no voter answered.
    pub members: Option<&'a [MemberView]>,
    /// The nodes deckhand knows (this one included).
    pub nodes: &'a [KnownNode],
    /// The ports of this node's planes.
    pub ports: &'a [PlanePort],
}

/// Which sources a rule admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Any source.
    Any,
    /// The addresses allowed on 2380 (the `peers4`/`peers6` sets).
    Peers,
    /// The cluster's nodes (the `cluster4`/`cluster6` sets).
    Cluster,
}

/// A rule's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let the packet in.
    Accept,
    /// Drop it silently.
    Drop,
}

/// One port rule of the input chain (after the fixed rules for loopback,
/// established traffic, ICMP and SSH, which accept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The protocol.
    pub protocol: PortProtocol,
    /// The destination port.
    pub port: u16,
    /// Who it matches.
    pub from: Source,
    /// What it does.
    pub verdict: Verdict,
}

/// A computed rule set: the rules as data, the sets' contents, and the
/// table's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    /// The role the rules are for.
    pub role: EtcdRole,
    /// The default verdict (the chain's policy).
    pub default: FirewallDefault,
    /// Sources allowed on 2380, without networks contained in others.
    pub peers: Vec<Network>,
    /// The cluster's nodes and `cluster_networks`, likewise.
    pub cluster: Vec<Network>,
    /// The port rules, in chain order.
    pub rules: Vec<Rule>,
    /// The table's definition (`table inet deckhand { ... }`).
    pub text: String,
    /// FNV-1a 64 of `text`, 16 hex digits.
    pub hash: String,
}

/// Why a rule set was refused (the previous rules stay), in words.
pub type Refusal = String;

/// Whose rules a node needs: member rules while it is or is becoming a
/// member (its role says member, its member unit runs, or it is in the
/// member list: a leaving member keeps 2380 open until it has left and
/// stopped), proxy rules otherwise.
pub fn firewall_role(o: &Observation) -> EtcdRole {
    if crate::target_role(o) == EtcdRole::Member || o.local.member_unit_active || o.me().is_some() {
        EtcdRole::Member
    } else {
        EtcdRole::Proxy
    }
}

/// The host of a URL (`http://10.0.0.1:2380`, `https://[fd00::1]:2379`) as
/// an address, when it is one.
pub fn url_address(url: &str) -> Option<IpAddr> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let hostport = rest.split('/').next()?;
    let host = if let Some(h) = hostport.strip_prefix('[') {
        h.split(']').next()?
    } else {
        hostport
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(hostport)
    };
    host.parse().ok()
}

fn host(addr: IpAddr) -> Network {
    Network {
        addr,
        prefix: if addr.is_ipv4() { 32 } else { 128 },
    }
}

/// `net` contains `addr`.
pub fn contains(net: &Network, addr: IpAddr) -> bool {
    match (net.addr, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(net.prefix))
                .unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(net.prefix))
                .unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// The networks with their host bits cleared, sorted, each once, without
/// any network contained in another (nftables refuses overlapping
/// intervals in a set).
pub fn normalize(nets: impl IntoIterator<Item = Network>) -> Vec<Network> {
    let clear = |n: Network| {
        let addr = match n.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(n.prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(n.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Network { addr, ..n }
    };
    let all: BTreeSet<Network> = nets.into_iter().map(clear).collect();
    all.iter()
        .filter(|n| {
            !all.iter()
                .any(|o| o != *n && o.prefix < n.prefix && contains(o, n.addr))
        })
        .copied()
        .collect()
}

/// FNV-1a, 64 bits, as 16 hex digits: a stable fingerprint of a rule set
/// (not a security hash: it only tells two texts apart).
pub fn fnv1a(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The rule set for `inputs`, or why none may be applied.
///
/// # Errors
/// A [`Refusal`] when the rules would cut this node off from the voters:
/// the member list is unknown, it has no voter, a voter's peer URL names
/// a host rather than an address (the rules match addresses), or, for a
/// member, a voter's address would not be let in on 2380 or 2379.
pub fn ruleset(inputs: &FirewallInputs<'_>) -> Result<RuleSet, Refusal> {
    let Some(members) = inputs.members else {
        return Err(
            "the member list is unknown (no voter answered): rules computed now \
                    could shut the voters out, so the previous rules stay"
                .into(),
        );
    };
    let voters: Vec<&MemberView> = members.iter().filter(|m| !m.is_learner).collect();
    if voters.is_empty() {
        return Err("the member list has no voter: no voter address is known".into());
    }
    let mut voter_addrs = Vec::new();
    for v in &voters {
        if v.peer_urls.is_empty() {
            return Err(format!("voter {:x} has no peer URL", v.id));
        }
        for u in &v.peer_urls {
            match url_address(u) {
                Some(a) => voter_addrs.push(a),
                None => {
                    return Err(format!(
                        "voter {} has the peer URL {u}, whose host is not an IP address: \
                         the firewall matches addresses, so it cannot let that voter in",
                        v.display_name()
                    ));
                }
            }
        }
    }
    let member_addrs = members
        .iter()
        .flat_map(|m| m.peer_urls.iter().chain(&m.client_urls))
        .filter_map(|u| url_address(u));
    let node_addr = |n: &KnownNode| n.address.parse::<IpAddr>().ok();
    let peers = normalize(
        members
            .iter()
            .flat_map(|m| &m.peer_urls)
            .filter_map(|u| url_address(u))
            .chain(
                inputs
                    .nodes
                    .iter()
                    .filter(|n| n.wants_member)
                    .filter_map(node_addr),
            )
            .map(host),
    );
    let cluster = normalize(
        member_addrs
            .chain(inputs.nodes.iter().filter_map(node_addr))
            .map(host)
            .chain(inputs.config.networks()),
    );
    let mut rules = vec![
        Rule {
            protocol: PortProtocol::Tcp,
            port: METRICS_PORT,
            from: Source::Cluster,
            verdict: Verdict::Accept,
        },
        // The certificate signer's challenge of a renewing node
        // (`deckhand_model::pki::CHALLENGE_PORT`): the signer is a node.
        Rule {
            protocol: PortProtocol::Tcp,
            port: deckhand_model::pki::CHALLENGE_PORT,
            from: Source::Cluster,
            verdict: Verdict::Accept,
        },
    ];
    let tcp = |port, from, verdict| Rule {
        protocol: PortProtocol::Tcp,
        port,
        from,
        verdict,
    };
    match inputs.role {
        EtcdRole::Member => {
            rules.push(tcp(PEER_PORT, Source::Peers, Verdict::Accept));
            rules.push(tcp(PEER_PORT, Source::Any, Verdict::Drop));
            rules.push(tcp(CLIENT_PORT, Source::Cluster, Verdict::Accept));
            rules.push(tcp(CLIENT_PORT, Source::Any, Verdict::Drop));
        }
        EtcdRole::Proxy => {
            rules.push(tcp(CLIENT_PORT, Source::Any, Verdict::Drop));
            rules.push(tcp(PEER_PORT, Source::Any, Verdict::Drop));
        }
    }
    let mut ports: Vec<PlanePort> = inputs.ports.to_vec();
    ports.sort();
    ports.dedup_by_key(|p| (p.port, p.protocol));
    for p in ports {
        let rule = |from, verdict| Rule {
            protocol: p.protocol,
            port: p.port,
            from,
            verdict,
        };
        match p.from {
            PortFrom::Any => rules.push(rule(Source::Any, Verdict::Accept)),
            PortFrom::Cluster => {
                rules.push(rule(Source::Cluster, Verdict::Accept));
                rules.push(rule(Source::Any, Verdict::Drop));
            }
        }
    }
    let mut set = RuleSet {
        role: inputs.role,
        default: inputs.config.default,
        peers,
        cluster,
        rules,
        text: String::new(),
        hash: String::new(),
    };
    // The guard, judged on the rules themselves: every voter reaches a
    // member's 2380 and 2379.
    if inputs.role == EtcdRole::Member {
        for a in &voter_addrs {
            for port in [PEER_PORT, CLIENT_PORT] {
                if set.verdict(*a, PortProtocol::Tcp, port) != Verdict::Accept {
                    return Err(format!(
                        "the voter at {a} would not be let in on {port}: refused"
                    ));
                }
            }
        }
    }
    set.text = render(&set);
    set.hash = fnv1a(&set.text);
    Ok(set)
}

impl RuleSet {
    /// The verdict of the input chain for a new connection from `src` (not
    /// on loopback) to `port`: the first port rule that matches, else SSH's
    /// accept, else the default. (Loopback, established traffic and ICMP
    /// are accepted before any port rule.)
    pub fn verdict(&self, src: IpAddr, protocol: PortProtocol, port: u16) -> Verdict {
        if protocol == PortProtocol::Tcp && port == SSH_PORT {
            return Verdict::Accept;
        }
        for r in &self.rules {
            if r.protocol != protocol || r.port != port {
                continue;
            }
            let matches = match r.from {
                Source::Any => true,
                Source::Peers => self.peers.iter().any(|n| contains(n, src)),
                Source::Cluster => self.cluster.iter().any(|n| contains(n, src)),
            };
            if matches {
                return r.verdict;
            }
        }
        match self.default {
            FirewallDefault::Accept => Verdict::Accept,
            FirewallDefault::Drop => Verdict::Drop,
        }
    }

    /// The `nft -f` script that replaces deckhand's table with this rule
    /// set in one transaction.
    pub fn apply_script(&self) -> String {
        format!(
            "table inet deckhand {{}}\ndelete table inet deckhand\n{}",
            self.text
        )
    }

    /// The peer addresses as strings (for the status document).
    pub fn peer_strings(&self) -> Vec<String> {
        self.peers.iter().map(|n| n.to_string()).collect()
    }
}

fn set_text(name: &str, v6: bool, nets: &[Network]) -> String {
    let elems: Vec<String> = nets
        .iter()
        .filter(|n| n.addr.is_ipv6() == v6)
        .map(|n| n.to_string())
        .collect();
    let kind = if v6 { "ipv6_addr" } else { "ipv4_addr" };
    let mut s = format!("\tset {name} {{\n\t\ttype {kind}\n\t\tflags interval\n");
    if !elems.is_empty() {
        s.push_str(&format!("\t\telements = {{ {} }}\n", elems.join(", ")));
    }
    s.push_str("\t}\n");
    s
}

fn render(set: &RuleSet) -> String {
    let mut t = String::from("table inet deckhand {\n");
    t.push_str(&set_text("peers4", false, &set.peers));
    t.push_str(&set_text("peers6", true, &set.peers));
    t.push_str(&set_text("cluster4", false, &set.cluster));
    t.push_str(&set_text("cluster6", true, &set.cluster));
    t.push_str("\tchain input {\n");
    t.push_str(&format!(
        "\t\ttype filter hook input priority filter; policy {};\n",
        set.default
    ));
    t.push_str("\t\tiif \"lo\" accept\n");
    t.push_str("\t\tct state established,related accept\n");
    t.push_str(
        "\t\ticmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept\n",
    );
    match set.default {
        FirewallDefault::Drop => t.push_str(&format!(
            "\t\tmeta l4proto {{ icmp, ipv6-icmp }} limit rate {ICMP_RATE_PER_SECOND}/second accept\n"
        )),
        FirewallDefault::Accept => t.push_str("\t\tmeta l4proto { icmp, ipv6-icmp } accept\n"),
    }
    t.push_str(&format!("\t\ttcp dport {SSH_PORT} accept\n"));
    for r in &set.rules {
        let verdict = match r.verdict {
            Verdict::Accept => "accept",
            Verdict::Drop => "drop",
        };
        let (p, port) = (r.protocol, r.port);
        match r.from {
            Source::Any => t.push_str(&format!("\t\t{p} dport {port} {verdict}\n")),
            Source::Peers | Source::Cluster => {
                let name = if r.from == Source::Peers {
                    "peers"
                } else {
                    "cluster"
                };
                t.push_str(&format!(
                    "\t\t{p} dport {port} ip saddr @{name}4 {verdict}\n"
                ));
                t.push_str(&format!(
                    "\t\t{p} dport {port} ip6 saddr @{name}6 {verdict}\n"
                ));
            }
        }
    }
    t.push_str("\t}\n}\n");
    t
}

/// Why this node, about to join as a learner, must wait for the firewalls:
/// its own rule set is not in place for the member role yet, or a member's
/// rules in place do not let its address reach that member's 2380.
/// `statuses` are the live nodes' (address, firewall status); a member
/// without a status (dead) or without a table of deckhand's filters
/// nothing deckhand can change and is skipped. `None`: go ahead.
pub fn join_wait(
    own: &FirewallStatus,
    my_address: &str,
    members: &[MemberView],
    statuses: &[(String, FirewallStatus)],
) -> Option<String> {
    if !own.enabled {
        return None;
    }
    if !own.applied || own.role.as_deref() != Some("member") {
        return Some(format!(
            "the firewall must open this node's 2380 to the members before it joins: {}",
            own.reason
                .as_deref()
                .unwrap_or("the member rules are not applied yet")
        ));
    }
    let me: Option<IpAddr> = my_address.parse().ok();
    for m in members {
        let Some(addr) = m.peer_urls.iter().find_map(|u| url_address(u)) else {
            continue;
        };
        let Some((_, fw)) = statuses
            .iter()
            .find(|(a, _)| a.parse::<IpAddr>().ok() == Some(addr))
        else {
            continue;
        };
        if fw.hash.is_none() || fw.role.as_deref() != Some("member") {
            continue;
        }
        let admitted = me.is_some_and(|me| {
            fw.peers
                .iter()
                .filter_map(|p| Network::parse(p).ok())
                .any(|n| contains(&n, me))
        });
        if !admitted {
            return Some(format!(
                "waiting for the firewall of the member at {addr} to let this node ({my_address}) reach its 2380"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(id: u8, learner: bool) -> MemberView {
        MemberView {
            id: u64::from(id),
            name: format!("node{id}"),
            peer_urls: vec![format!("http://10.0.0.{id}:2380")],
            client_urls: vec![format!("http://10.0.0.{id}:2379")],
            is_learner: learner,
            healthy: Some(true),
        }
    }

    fn node(id: u8, wants_member: bool) -> KnownNode {
        KnownNode {
            address: format!("10.0.0.{id}"),
            wants_member,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cfg(default: FirewallDefault) -> FirewallConfig {
        FirewallConfig {
            enabled: true,
            default,
            cluster_networks: vec![],
        }
    }

    const TCP: PortProtocol = PortProtocol::Tcp;

    #[test]
    fn a_member_admits_peers_on_2380_and_nodes_on_2379() {
        let members = [member(1, false), member(2, false), member(3, false)];
        let nodes = [
            node(1, true),
            node(2, true),
            node(3, true),
            node(4, false),
            node(5, true),
        ];
        let c = cfg(FirewallDefault::Drop);
        let rs = ruleset(&FirewallInputs {
            config: &c,
            role: EtcdRole::Member,
            members: Some(&members),
            nodes: &nodes,
            ports: &[],
        })
        .unwrap();
        for v in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
            assert_eq!(rs.verdict(ip(v), TCP, 2380), Verdict::Accept, "{v}");
        }
        // node5 wants to be a member: let in before its learner is added.
        assert_eq!(rs.verdict(ip("10.0.0.5"), TCP, 2380), Verdict::Accept);
        // node4 is a proxy: 2379 yes, 2380 no.
        assert_eq!(rs.verdict(ip("10.0.0.4"), TCP, 2380), Verdict::Drop);
        assert_eq!(rs.verdict(ip("10.0.0.4"), TCP, 2379), Verdict::Accept);
        // An outsider: neither, and nothing else but SSH.
        assert_eq!(rs.verdict(ip("10.9.9.9"), TCP, 2379), Verdict::Drop);
        assert_eq!(rs.verdict(ip("10.9.9.9"), TCP, 2380), Verdict::Drop);
        // The signer's challenge reaches a renewing node from the cluster.
        assert_eq!(rs.verdict(ip("10.0.0.4"), TCP, 2381), Verdict::Accept);
        assert_eq!(rs.verdict(ip("10.9.9.9"), TCP, 8080), Verdict::Drop);
        assert_eq!(rs.verdict(ip("10.9.9.9"), TCP, 22), Verdict::Accept);
        assert_eq!(
            rs.verdict(ip("10.0.0.4"), TCP, METRICS_PORT),
            Verdict::Accept
        );
        assert!(rs.text.contains("policy drop;"), "{}", rs.text);
        assert!(
            rs.text
                .contains("elements = { 10.0.0.1, 10.0.0.2, 10.0.0.3, 10.0.0.5 }")
        );
        assert_eq!(rs.hash, fnv1a(&rs.text));
        assert!(rs.apply_script().starts_with(REMOVE_SCRIPT));
    }

    #[test]
    fn a_proxy_exposes_neither_etcd_port_even_with_default_accept() {
        let members = [member(1, false)];
        let nodes = [node(4, false)];
        let c = cfg(FirewallDefault::Accept);
        let ports = [PlanePort {
            port: 2379,
            protocol: TCP,
            from: PortFrom::Any,
        }];
        let rs = ruleset(&FirewallInputs {
            config: &c,
            role: EtcdRole::Proxy,
            members: Some(&members),
            nodes: &nodes,
            ports: &ports,
        })
        .unwrap();
        for src in ["10.0.0.1", "10.0.0.4", "192.0.2.1"] {
            assert_eq!(rs.verdict(ip(src), TCP, 2379), Verdict::Drop, "{src}");
            assert_eq!(rs.verdict(ip(src), TCP, 2380), Verdict::Drop, "{src}");
        }
        assert_eq!(rs.verdict(ip("192.0.2.1"), TCP, 8080), Verdict::Accept);
    }

    #[test]
    fn plane_ports_follow_their_from() {
        let members = [member(1, false)];
        let nodes = [node(1, false), node(4, false)];
        let mut c = cfg(FirewallDefault::Accept);
        c.cluster_networks = vec!["192.168.7.0/24".into()];
        let ports = [
            PlanePort {
                port: 443,
                protocol: TCP,
                from: PortFrom::Any,
            },
            PlanePort {
                port: 53,
                protocol: PortProtocol::Udp,
                from: PortFrom::Cluster,
            },
        ];
        let rs = ruleset(&FirewallInputs {
            config: &c,
            role: EtcdRole::Proxy,
            members: Some(&members),
            nodes: &nodes,
            ports: &ports,
        })
        .unwrap();
        assert_eq!(rs.verdict(ip("203.0.113.9"), TCP, 443), Verdict::Accept);
        assert_eq!(
            rs.verdict(ip("203.0.113.9"), PortProtocol::Udp, 53),
            Verdict::Drop,
            "from cluster is enforced even when the default accepts"
        );
        assert_eq!(
            rs.verdict(ip("10.0.0.4"), PortProtocol::Udp, 53),
            Verdict::Accept
        );
        assert_eq!(
            rs.verdict(ip("192.168.7.200"), PortProtocol::Udp, 53),
            Verdict::Accept,
            "cluster_networks count as the cluster"
        );
        assert!(rs.text.contains("udp dport 53 ip saddr @cluster4 accept"));
    }

    #[test]
    fn refuses_what_would_cut_the_node_off() {
        let c = cfg(FirewallDefault::Drop);
        let inputs = |members| FirewallInputs {
            config: &c,
            role: EtcdRole::Member,
            members,
            nodes: &[],
            ports: &[],
        };
        let e = ruleset(&inputs(None)).unwrap_err();
        assert!(e.contains("member list is unknown"), "{e}");
        let only_learner = [member(1, true)];
        let e = ruleset(&inputs(Some(&only_learner))).unwrap_err();
        assert!(e.contains("no voter"), "{e}");
        let mut named = member(2, false);
        named.peer_urls = vec!["http://node2.example:2380".into()];
        let e = ruleset(&inputs(Some(&[member(1, false), named]))).unwrap_err();
        assert!(e.contains("not an IP address"), "{e}");
    }

    #[test]
    fn urls_networks_and_normalizing() {
        assert_eq!(url_address("http://10.0.0.1:2380"), Some(ip("10.0.0.1")));
        assert_eq!(url_address("https://[fd00::1]:2379"), Some(ip("fd00::1")));
        assert_eq!(url_address("http://node1:2380"), None);
        let n = |s: &str| Network::parse(s).unwrap();
        assert_eq!(
            normalize([
                n("10.0.0.5"),
                n("10.0.0.0/24"),
                n("10.0.1.1"),
                n("10.0.0.77/24")
            ]),
            vec![n("10.0.0.0/24"), n("10.0.1.1")]
        );
        assert!(contains(&n("fd00::/64"), ip("fd00::9")));
        assert!(!contains(&n("fd00::/64"), ip("10.0.0.1")));
        assert!(contains(&n("0.0.0.0/0"), ip("10.0.0.1")));
    }

    #[test]
    fn a_joiner_waits_for_its_own_rules_and_every_members() {
        let members = [member(1, false), member(2, false)];
        let applied = |peers: &[&str]| FirewallStatus {
            enabled: true,
            applied: true,
            matches_role: true,
            role: Some("member".into()),
            hash: Some("00".into()),
            peers: peers.iter().map(|s| s.to_string()).collect(),
            reason: None,
        };
        let mine = applied(&["10.0.0.1", "10.0.0.2"]);
        let statuses = vec![
            (
                "10.0.0.1".to_string(),
                applied(&["10.0.0.1", "10.0.0.2", "10.0.0.5"]),
            ),
            ("10.0.0.2".to_string(), applied(&["10.0.0.1", "10.0.0.2"])),
        ];
        let w = join_wait(&mine, "10.0.0.5", &members, &statuses).unwrap();
        assert!(w.contains("member at 10.0.0.2"), "{w}");
        let mut ok = statuses.clone();
        ok[1].1 = applied(&["10.0.0.0/24"]);
        assert_eq!(join_wait(&mine, "10.0.0.5", &members, &ok), None);
        // Its own rules not applied: wait, with the reason.
        let mut refused = mine.clone();
        refused.applied = false;
        refused.reason = Some("the member list is unknown".into());
        assert!(
            join_wait(&refused, "10.0.0.5", &members, &ok)
                .unwrap()
                .contains("member list is unknown")
        );
        // Firewall off: nothing to wait for.
        assert_eq!(
            join_wait(&FirewallStatus::default(), "10.0.0.5", &members, &statuses),
            None
        );
    }

    fn arb_addr() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (0u8..4, 1u8..20).prop_map(|(a, b)| IpAddr::from([10, 0, a, b])),
            (1u16..20).prop_map(|b| IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, b])),
        ]
    }

    fn url(a: IpAddr, port: u16) -> String {
        match a {
            IpAddr::V4(_) => format!("http://{a}:{port}"),
            IpAddr::V6(_) => format!("http://[{a}]:{port}"),
        }
    }

    prop_compose! {
        fn arb_members()(addrs in proptest::collection::vec((arb_addr(), any::<bool>(), any::<bool>()), 1..7))
            -> Vec<MemberView> {
            addrs.into_iter().enumerate().map(|(i, (a, learner, started))| MemberView {
                id: i as u64 + 1,
                name: if started { format!("n{i}") } else { String::new() },
                peer_urls: vec![url(a, 2380)],
                client_urls: if started { vec![url(a, 2379)] } else { vec![] },
                is_learner: learner && i > 0,
                healthy: None,
            }).collect()
        }
    }

    fn arb_port() -> impl Strategy<Value = PlanePort> {
        (
            1u16..=65535,
            prop_oneof![Just(PortProtocol::Tcp), Just(PortProtocol::Udp)],
            prop_oneof![Just(PortFrom::Any), Just(PortFrom::Cluster)],
        )
            .prop_map(|(port, protocol, from)| PlanePort {
                port,
                protocol,
                from,
            })
    }

    proptest! {
        /// Every current voter's address reaches 2380 and 2379 of every
        /// member; a proxy never accepts 2379/2380 from outside loopback;
        /// an address that is no node reaches no member's 2379.
        #[test]
        fn rules_keep_the_voters_in_and_proxies_closed(
            members in arb_members(),
            nodes in proptest::collection::vec((arb_addr(), any::<bool>()), 0..8),
            ports in proptest::collection::vec(arb_port(), 0..6),
            drop in any::<bool>(),
            outsider in arb_addr(),
            probe in arb_addr(),
        ) {
            let known: Vec<KnownNode> = nodes.iter()
                .map(|(a, w)| KnownNode { address: a.to_string(), wants_member: *w })
                .collect();
            let c = cfg(if drop { FirewallDefault::Drop } else { FirewallDefault::Accept });
            for role in [EtcdRole::Member, EtcdRole::Proxy] {
                let rs = ruleset(&FirewallInputs {
                    config: &c, role, members: Some(&members), nodes: &known, ports: &ports,
                }).expect("a voter exists: the rules are computed");
                let voters = members.iter().filter(|m| !m.is_learner)
                    .flat_map(|m| m.peer_urls.iter()).filter_map(|u| url_address(u));
                let is_node = |a: IpAddr| members.iter()
                    .flat_map(|m| m.peer_urls.iter().chain(&m.client_urls))
                    .filter_map(|u| url_address(u)).any(|m| m == a)
                    || nodes.iter().any(|(n, _)| *n == a);
                let is_peer = |a: IpAddr| members.iter().flat_map(|m| &m.peer_urls)
                    .filter_map(|u| url_address(u)).any(|m| m == a)
                    || nodes.iter().any(|(n, w)| *w && *n == a);
                match role {
                    EtcdRole::Member => {
                        for v in voters {
                            prop_assert_eq!(rs.verdict(v, TCP, 2380), Verdict::Accept);
                            prop_assert_eq!(rs.verdict(v, TCP, 2379), Verdict::Accept);
                        }
                        if !is_node(outsider) {
                            prop_assert_eq!(rs.verdict(outsider, TCP, 2379), Verdict::Drop);
                        }
                        prop_assert_eq!(
                            rs.verdict(probe, TCP, 2380) == Verdict::Accept,
                            is_peer(probe)
                        );
                    }
                    EtcdRole::Proxy => {
                        for src in [outsider, probe] {
                            prop_assert_eq!(rs.verdict(src, TCP, 2379), Verdict::Drop);
                            prop_assert_eq!(rs.verdict(src, TCP, 2380), Verdict::Drop);
                        }
                    }
                }
                // Plane ports, except etcd's, as their config says.
                for p in &ports {
                    if p.protocol == TCP && [2379, 2380, 22, METRICS_PORT].contains(&p.port) {
                        continue;
                    }
                    if ports.iter().any(|q| q.port == p.port && q.protocol == p.protocol && q != p) {
                        continue;
                    }
                    let v = rs.verdict(outsider, p.protocol, p.port);
                    match p.from {
                        PortFrom::Any => prop_assert_eq!(v, Verdict::Accept),
                        PortFrom::Cluster => prop_assert_eq!(
                            v == Verdict::Accept, is_node(outsider)
                        ),
                    }
                }
                prop_assert_eq!(&rs.hash, &fnv1a(&rs.text));
                let policy = format!("policy {};", c.default);
                prop_assert!(rs.text.contains(&policy));
            }
        }
    }
}
