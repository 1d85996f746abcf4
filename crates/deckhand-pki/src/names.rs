//! Which node and operator names a certificate may carry, and the node CN.

use std::net::IpAddr;

use crate::{Error, Result};

/// The CN of a node's certificate, `node:<name>`: the node's etcd user name
/// once auth is on (etcd takes a client certificate's CN as the user,
/// <https://etcd.io/docs/v3.4/op-guide/authentication/>).
pub fn node_common_name(name: &str) -> String {
    format!("node:{name}")
}

/// Checks a node name: a hostname (RFC 1123): dot-separated labels of 1 to
/// 63 ASCII letters, digits and hyphens, no hyphen first or last, at most
/// 253 characters in all. It becomes a DNS SAN, the CN `node:<name>`, and a
/// directory name under `DIR/nodes/`.
///
/// # Errors
/// [`Error::InvalidName`] saying which rule it breaks.
pub fn check_node_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            kind: "node",
            name: name.into(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 253 {
        return bad("longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return bad("an empty label (a dot first, last or twice)");
        }
        if label.len() > 63 {
            return bad("a label longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return bad("only ASCII letters, digits, '-' and '.' are allowed (a hostname)");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label starts or ends with '-'");
        }
    }
    Ok(())
}

/// Checks an operator name: the etcd user name the operator acts as (`root`
/// for full rights), 1 to 64 characters of ASCII letters, digits and
/// `._:@-`, not starting with `.` (it is also a directory name under
/// `DIR/operators/`).
///
/// # Errors
/// [`Error::InvalidName`] saying which rule it breaks.
pub fn check_operator_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            kind: "operator",
            name: name.into(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 64 {
        return bad("longer than 64 characters");
    }
    if name.starts_with('.') {
        return bad("starts with '.'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._:@-".contains(&b))
    {
        return bad("only ASCII letters, digits and ._:@- are allowed");
    }
    Ok(())
}

/// Checks a node's address: one its peers and clients can dial, which
/// `0.0.0.0`/`::` (unspecified), multicast and `255.255.255.255` are not.
/// Loopback is allowed (a cluster of processes on one host, as in tests).
///
/// # Errors
/// [`Error::InvalidAddress`] saying which.
pub fn check_node_address(address: IpAddr) -> Result<()> {
    let reason = if address.is_unspecified() {
        "unspecified (a listen address, not one to dial)"
    } else if address.is_multicast() {
        "multicast"
    } else if address == IpAddr::from([255, 255, 255, 255]) {
        "broadcast"
    } else {
        return Ok(());
    };
    Err(Error::InvalidAddress { address, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_follow_hostname_rules() {
        for good in ["node1", "a", "n-1.example.org", &"a".repeat(63)] {
            check_node_name(good).unwrap();
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a/b",
            "../x",
            "a b",
            "ünï",
            &"a".repeat(64),
        ] {
            assert!(check_node_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn operator_names_are_etcd_user_names_and_directory_names() {
        for good in ["root", "alice", "ops@example", "a.b-c_d:e"] {
            check_operator_name(good).unwrap();
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", &"r".repeat(65)] {
            assert!(check_operator_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
