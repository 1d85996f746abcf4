//! Who this node is: its id (`/etc/machine-id`), name (hostname) and the
//! address it advertises to peers and clients.

use std::net::{IpAddr, UdpSocket};

use anyhow::{Context, Result, bail};

use crate::config::Settings;

/// This node's identity.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `/etc/machine-id`: 32 lowercase hex characters.
    pub id: String,
    /// The node name: the hostname unless configured.
    pub name: String,
    /// The advertised address.
    pub address: IpAddr,
    /// TLS is on (`[tls]` in the config): the node's URLs are `https://`.
    pub tls: bool,
}

impl Identity {
    /// Peer URL, `http://<address>:2380` (`https://` with TLS).
    pub fn peer_url(&self) -> String {
        peer_url_of(self.address, self.tls)
    }
    /// Client URL, `http://<address>:2379` (`https://` with TLS).
    pub fn client_url(&self) -> String {
        client_url_of(self.address, self.tls)
    }
}

fn scheme(tls: bool) -> &'static str {
    if tls { "https" } else { "http" }
}

/// The peer URL of a node at `address`, `http://<address>:2380`, or
/// `https://` when `tls` (`[...]` around an IPv6 address).
pub fn peer_url_of(address: IpAddr, tls: bool) -> String {
    format!("{}://{}", scheme(tls), host_port(address, 2380))
}

/// The client URL of a node at `address`, `http://<address>:2379`, or
/// `https://` when `tls`.
pub fn client_url_of(address: IpAddr, tls: bool) -> String {
    format!("{}://{}", scheme(tls), host_port(address, 2379))
}

/// `host:port` of a URL, without its scheme: peer URLs compared across a
/// change of scheme (a node's status records its address, not whether
/// the cluster it was seen in uses TLS).
pub fn without_scheme(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, rest)| rest)
}

fn host_port(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// Reads the identity from the host.
///
/// # Errors
/// An unreadable or malformed `/etc/machine-id`, no hostname, or no route to
/// the first endpoint to derive the address from.
pub fn detect(settings: &Settings) -> Result<Identity> {
    let id = machine_id()?;
    let name = match &settings.name {
        Some(n) => n.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("cannot read the hostname")?
            .trim()
            .to_string(),
    };
    let address = match settings.advertise_address {
        Some(a) => a,
        None => route_source_address(&settings.endpoints)?,
    };
    Ok(Identity {
        id,
        name,
        address,
        tls: settings.tls.is_some(),
    })
}

/// This node's id: `/etc/machine-id`, 32 hex characters.
///
/// # Errors
/// The file is unreadable or holds something else.
pub fn machine_id() -> Result<String> {
    let id = std::fs::read_to_string("/etc/machine-id")
        .context("cannot read /etc/machine-id (the node id)")?
        .trim()
        .to_string();
    if id.len() != 32 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!(
            "/etc/machine-id holds {id:?}, not a 32-character hex machine id; run systemd-machine-id-setup"
        );
    }
    Ok(id)
}

/// The source address the kernel would use to reach the first endpoint: a
/// UDP socket's `connect` picks the route without sending anything. With the
/// endpoints on the cluster network this is the default-route interface's
/// address for that network.
fn route_source_address(endpoints: &[String]) -> Result<IpAddr> {
    let first = endpoints.first().context("no etcd endpoint to route to")?;
    let hostport = without_scheme(first).trim_end_matches('/').to_string();
    let sock = UdpSocket::bind("0.0.0.0:0").context("binding a UDP socket")?;
    sock.connect(&hostport).with_context(|| {
        format!("no route to {hostport}; set node.advertise_address in the config")
    })?;
    let addr = sock.local_addr()?.ip();
    if addr.is_loopback() || addr.is_unspecified() {
        bail!(
            "the route to {hostport} leaves from {addr}; set node.advertise_address in the config"
        );
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_take_the_scheme_from_tls() {
        let v4: IpAddr = "10.0.0.5".parse().unwrap();
        let v6: IpAddr = "fd00::5".parse().unwrap();
        assert_eq!(peer_url_of(v4, false), "http://10.0.0.5:2380");
        assert_eq!(peer_url_of(v4, true), "https://10.0.0.5:2380");
        assert_eq!(client_url_of(v6, true), "https://[fd00::5]:2379");
        assert_eq!(without_scheme("https://10.0.0.5:2380"), "10.0.0.5:2380");
        assert_eq!(without_scheme("10.0.0.5:2380"), "10.0.0.5:2380");
    }
}
