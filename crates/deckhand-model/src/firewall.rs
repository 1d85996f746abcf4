//! The host firewall's settings and report: the cluster config's
//! `firewall` section, the `ports` a plane config opens, the agent's
//! metrics port, and the `firewall` part of a node's status
//! (`docs/firewall.md`).
//!
//! ```json
//! {"firewall": {"enabled": true, "default": "drop", "cluster_networks": ["10.0.0.0/24"]}}
//! ```

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The TCP port the agent's metrics endpoint serves on every node (the
/// metrics endpoint itself is a later issue; the firewall already opens
/// this port to the cluster's nodes). Outside Prometheus's crowded
/// 9100–9999 exporter range (its wiki's "Default port allocations": 9479,
/// for one, is the Elasticbeat exporter's).
pub const METRICS_PORT: u16 = 7479;

/// Most addresses or networks in `firewall.cluster_networks`.
pub const MAX_CLUSTER_NETWORKS: usize = 64;
/// Most ports one plane config may open.
pub const MAX_PLANE_PORTS: usize = 64;

/// What happens to inbound traffic no rule names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirewallDefault {
    /// Accepted (the etcd ports are still restricted by their own rules).
    #[default]
    Accept,
    /// Dropped (no answer; ICMP rate-limited, established traffic passes).
    Drop,
}

impl fmt::Display for FirewallDefault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FirewallDefault::Accept => "accept",
            FirewallDefault::Drop => "drop",
        })
    }
}

/// The cluster config's `firewall` section. Off by default: a cluster
/// keeps its behaviour until an operator turns the firewall on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FirewallConfig {
    /// Every agent keeps the nftables table `inet deckhand` in step with
    /// its node's role. When false, the agents delete that table (and only
    /// that table). Default false.
    pub enabled: bool,
    /// The verdict for inbound traffic no rule names: `accept` (default)
    /// or `drop`.
    pub default: FirewallDefault,
    /// Addresses or networks (`10.0.0.0/24`, `fd00::/64`, `10.0.0.7`) that
    /// count as the cluster's nodes besides the nodes deckhand knows (from
    /// their status documents and the member list): set it to the subnet
    /// new nodes boot in, so that a node that has never reported can reach
    /// the members' 2379 to write its first status. At most 64.
    pub cluster_networks: Vec<String>,
}

/// An address with a prefix length: `10.0.0.0/24`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Network {
    /// The address (host bits below the prefix are cleared by nft).
    pub addr: IpAddr,
    /// The prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    pub prefix: u8,
}

impl Network {
    /// Parses `ADDR` or `ADDR/PREFIX`.
    ///
    /// # Errors
    /// Not an IPv4 or IPv6 address, or a prefix longer than the address.
    pub fn parse(s: &str) -> Result<Network, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or ADDR/PREFIX network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?}: the prefix length must be 0..={max}")),
            },
        };
        Ok(Network { addr, prefix })
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == max {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

impl FirewallConfig {
    /// Checks the section (called by `ClusterConfig::parse`).
    ///
    /// # Errors
    /// A `cluster_networks` entry that is not an address or network, or
    /// more than [`MAX_CLUSTER_NETWORKS`] of them; in words.
    pub fn validate(&self) -> Result<(), String> {
        if self.cluster_networks.len() > MAX_CLUSTER_NETWORKS {
            return Err(format!(
                "firewall.cluster_networks has {} entries, more than the {MAX_CLUSTER_NETWORKS} allowed",
                self.cluster_networks.len()
            ));
        }
        for n in &self.cluster_networks {
            Network::parse(n).map_err(|e| format!("firewall.cluster_networks: {e}"))?;
        }
        Ok(())
    }

    /// The parsed `cluster_networks` (entries that do not parse are left
    /// out; a validated config has none).
    pub fn networks(&self) -> Vec<Network> {
        self.cluster_networks
            .iter()
            .filter_map(|n| Network::parse(n).ok())
            .collect()
    }
}

/// A transport protocol a plane port is served on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for PortProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        })
    }
}

/// Who may reach a plane port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortFrom {
    /// Only the cluster's nodes (and `firewall.cluster_networks`): other
    /// sources are dropped whatever the default.
    Cluster,
    /// Anyone.
    Any,
}

impl fmt::Display for PortFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortFrom::Cluster => "cluster",
            PortFrom::Any => "any",
        })
    }
}

/// A port a plane's units serve, opened on the plane's nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanePort {
    /// The port, 1..=65535.
    #[serde(deserialize_with = "port_number")]
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: PortProtocol,
    /// `cluster` or `any`.
    pub from: PortFrom,
}

/// A port number 1..=65535, with the range in the error.
fn port_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let n = i64::deserialize(d)?;
    match u16::try_from(n) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(serde::de::Error::custom(format!(
            "port {n} is outside 1..=65535"
        ))),
    }
}

impl fmt::Display for PlanePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} from {}", self.port, self.protocol, self.from)
    }
}

/// The `firewall` part of a node's status: what its agent did with the
/// nftables table `inet deckhand`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FirewallStatus {
    /// The cluster config turns the firewall on, as this agent read it.
    pub enabled: bool,
    /// The rule set computed from the current observations is the one in
    /// the kernel (read back and compared). False when it was refused or
    /// could not be applied: then `reason` says why, and the previous rules
    /// (if any) stay.
    pub applied: bool,
    /// The rules in place are those of the role the node runs or is going
    /// to (member rules while a member or learner runs, proxy rules once
    /// the member has left).
    pub matches_role: bool,
    /// The role the rules in place were made for: `member` or `proxy`.
    pub role: Option<String>,
    /// A hash (FNV-1a 64, hex) of the rule set in place: equal on two
    /// nodes when their rules are the same text.
    pub hash: Option<String>,
    /// The addresses the rules in place let reach 2380 (member rules only):
    /// a joining node waits until every live member's list has its own.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// Why the current rule set is not applied, in words; `None` when it is.
    pub reason: Option<String>,
}
