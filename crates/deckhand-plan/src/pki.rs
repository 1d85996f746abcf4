//! The certificate signer's policy: whether the elected signer signs a
//! node's certificate request, refuses it (and why), waits for an
//! operator's approval, or must first send its challenge. Pure: the agent
//! gathers the facts (the live nodes' statuses, the member list, the
//! approval, the current certificate's check, the challenge's outcome) and
//! acts on the [`Decision`]. See `docs/pki.md`.

use std::net::IpAddr;

use deckhand_model::pki::RequestKind;

/// The request as the signer read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFacts<'a> {
    /// The node id of the request's key (`pki/requests/<node-id>`).
    pub node_id: &'a str,
    /// The name it asks for (CN `node:<name>`).
    pub name: &'a str,
    /// The address it claims, as written.
    pub address: &'a str,
    /// Join or renew.
    pub kind: RequestKind,
}

/// A live node: one with a status key (its lease is alive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveNode<'a> {
    /// Its node id.
    pub id: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its address.
    pub address: &'a str,
}

/// An etcd member: its name (empty while unstarted) and the hosts of its
/// peer URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPeer<'a> {
    /// Its name (the node name).
    pub name: &'a str,
    /// The host part of each peer URL.
    pub peer_hosts: Vec<&'a str>,
}

/// Everything the decision rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignFacts<'a> {
    /// The request.
    pub request: RequestFacts<'a>,
    /// Every live node (the requester's own status included, if it has one).
    pub live_nodes: &'a [LiveNode<'a>],
    /// The member list.
    pub members: &'a [MemberPeer<'a>],
    /// The cluster config's `pki.auto_sign`.
    pub auto_sign: bool,
    /// An approval for this very request (same CSR) exists.
    pub approved: bool,
    /// For a renewal: whether the current certificate in the request is
    /// this CA's, valid now, CN `node:<name>` with the address among its
    /// SANs (`Err` says what is wrong). `None` for a join.
    pub current_cert: Option<Result<(), String>>,
    /// The challenge's outcome for this request; `None` when it has not
    /// been sent yet.
    pub challenge: Option<Result<(), String>>,
}

/// What the signer does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Sign it.
    Sign,
    /// Send the challenge to the claimed address, then decide again.
    Challenge,
    /// Wait for an operator's approval (`pki.auto_sign` is off); the words
    /// say how to give it.
    AwaitApproval(String),
    /// Refuse it, for this reason.
    Refuse(String),
}

/// Decides on one request. The rules, in order (the first that fails
/// decides):
/// 1. the address is an IP address a node can have (not loopback,
///    unspecified or multicast);
/// 2. the address is not another node's: no live node with another id has
///    it, and no member with another name has a peer URL on it;
/// 3. the name is not another live node's; a live node's own id asks with
///    `kind: renew` only (a live node renews with its certificate);
/// 4. a renewal's current certificate passed its check;
/// 5. with `auto_sign` off, the request is approved;
/// 6. the challenge was answered (first [`Decision::Challenge`], then its
///    outcome).
pub fn decide(f: &SignFacts<'_>) -> Decision {
    let r = &f.request;
    let addr: IpAddr = match r.address.parse() {
        Ok(a) => a,
        Err(_) => {
            return Decision::Refuse(format!("the address {:?} is not an IP address", r.address));
        }
    };
    if addr.is_loopback() || addr.is_unspecified() || addr.is_multicast() {
        return Decision::Refuse(format!(
            "the address {addr} is loopback, unspecified or multicast: not a node's address"
        ));
    }
    let same_addr = |a: &str| a.parse::<IpAddr>().is_ok_and(|a| a == addr);
    if let Some(n) = f
        .live_nodes
        .iter()
        .find(|n| n.id != r.node_id && same_addr(n.address))
    {
        return Decision::Refuse(format!(
            "the address {addr} is live node {} ({})'s",
            n.name, n.id
        ));
    }
    if let Some(m) = f.members.iter().find(|m| {
        m.name != r.name
            && m.peer_hosts
                .iter()
                .any(|h| same_addr(h.trim_start_matches('[').trim_end_matches(']')))
    }) {
        let who = if m.name.is_empty() {
            "an unstarted member".to_string()
        } else {
            format!("member {}", m.name)
        };
        return Decision::Refuse(format!("the address {addr} is the peer address of {who}"));
    }
    if let Some(n) = f
        .live_nodes
        .iter()
        .find(|n| n.name == r.name && n.id != r.node_id)
    {
        return Decision::Refuse(format!(
            "the name {} is live node {}'s (another node id)",
            r.name, n.id
        ));
    }
    let live_self = f.live_nodes.iter().find(|n| n.id == r.node_id);
    if let Some(n) = live_self {
        if r.kind == RequestKind::Join {
            return Decision::Refuse(format!(
                "node {} ({}) is live: a live node renews with its current certificate (kind renew), it does not join",
                n.name, n.id
            ));
        }
        if n.name != r.name {
            return Decision::Refuse(format!(
                "node {} is live as {}: a renewal keeps the node's name (asked for {})",
                n.id, n.name, r.name
            ));
        }
    }
    match (&r.kind, &f.current_cert) {
        (RequestKind::Renew, None) => {
            return Decision::Refuse("a renewal without its current certificate".into());
        }
        (RequestKind::Renew, Some(Err(e))) => {
            return Decision::Refuse(format!("the current certificate does not qualify: {e}"));
        }
        _ => {}
    }
    if !f.auto_sign && !f.approved {
        return Decision::AwaitApproval(format!(
            "awaiting approval: pki.auto_sign is off; `deckhand pki approve {}` signs it",
            r.name
        ));
    }
    match &f.challenge {
        None => Decision::Challenge,
        Some(Err(e)) => Decision::Refuse(format!(
            "the challenge to {} failed: {e}",
            challenge_target(addr)
        )),
        Some(Ok(())) => Decision::Sign,
    }
}

/// `ADDR:2381` (`[ADDR]:2381` for IPv6): where the challenge goes.
pub fn challenge_target(addr: IpAddr) -> String {
    std::net::SocketAddr::new(addr, deckhand_model::pki::CHALLENGE_PORT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: [LiveNode<'static>; 2] = [
        LiveNode {
            id: "id1",
            name: "n1",
            address: "10.0.0.1",
        },
        LiveNode {
            id: "id2",
            name: "n2",
            address: "10.0.0.2",
        },
    ];

    fn members() -> Vec<MemberPeer<'static>> {
        vec![
            MemberPeer {
                name: "n1",
                peer_hosts: vec!["10.0.0.1"],
            },
            MemberPeer {
                name: "",
                peer_hosts: vec!["10.0.0.9"],
            },
        ]
    }

    fn join<'a>(members: &'a [MemberPeer<'a>]) -> SignFacts<'a> {
        SignFacts {
            request: RequestFacts {
                node_id: "id4",
                name: "n4",
                address: "10.0.0.4",
                kind: RequestKind::Join,
            },
            live_nodes: &LIVE,
            members,
            auto_sign: true,
            approved: false,
            current_cert: None,
            challenge: Some(Ok(())),
        }
    }

    fn refused(f: &SignFacts<'_>) -> String {
        match decide(f) {
            Decision::Refuse(r) => r,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_new_node_that_answered_the_challenge_is_signed() {
        let m = members();
        assert_eq!(decide(&join(&m)), Decision::Sign);
        let mut f = join(&m);
        f.challenge = None;
        assert_eq!(decide(&f), Decision::Challenge);
    }

    #[test]
    fn a_failed_challenge_is_refused_with_its_reason() {
        let m = members();
        let mut f = join(&m);
        f.challenge = Some(Err("connection refused".into()));
        let r = refused(&f);
        assert!(
            r.contains("10.0.0.4:2381") && r.contains("connection refused"),
            "{r}"
        );
    }

    #[test]
    fn an_address_that_is_no_node_address_is_refused() {
        let m = members();
        for (a, want) in [
            ("node4", "not an IP address"),
            ("127.0.0.1", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("::1", "loopback"),
            ("224.0.0.1", "multicast"),
        ] {
            let mut f = join(&m);
            f.request.address = a;
            let r = refused(&f);
            assert!(r.contains(want), "{a}: {r}");
        }
    }

    #[test]
    fn another_live_nodes_address_is_refused() {
        let m = members();
        let mut f = join(&m);
        f.request.address = "10.0.0.2";
        let r = refused(&f);
        assert!(r.contains("10.0.0.2 is live node n2 (id2)'s"), "{r}");
    }

    #[test]
    fn another_members_peer_address_is_refused() {
        let m = members();
        let mut f = join(&m);
        f.live_nodes = &[];
        f.request.address = "10.0.0.1";
        let r = refused(&f);
        assert!(r.contains("peer address of member n1"), "{r}");
        f.request.address = "10.0.0.9";
        let r = refused(&f);
        assert!(r.contains("an unstarted member"), "{r}");
        // The member of the same name (a node that comes back) is its own.
        f.request.address = "10.0.0.1";
        f.request.name = "n1";
        assert_eq!(decide(&f), Decision::Sign);
    }

    #[test]
    fn a_live_nodes_name_is_refused() {
        let m = members();
        let mut f = join(&m);
        f.request.name = "n2";
        let r = refused(&f);
        assert!(r.contains("the name n2 is live node id2's"), "{r}");
        // Even as a renewal: the live node with that name has another id.
        f.request.kind = RequestKind::Renew;
        f.current_cert = Some(Ok(()));
        let r = refused(&f);
        assert!(r.contains("the name n2 is live node id2's"), "{r}");
    }

    #[test]
    fn a_live_node_renews_and_does_not_join() {
        let m = members();
        let mut f = join(&m);
        f.request = RequestFacts {
            node_id: "id2",
            name: "n2",
            address: "10.0.0.2",
            kind: RequestKind::Join,
        };
        let r = refused(&f);
        assert!(r.contains("is live") && r.contains("kind renew"), "{r}");
        f.request.kind = RequestKind::Renew;
        f.current_cert = Some(Ok(()));
        assert_eq!(decide(&f), Decision::Sign);
        // A renewal under another name.
        f.request.name = "n7";
        let r = refused(&f);
        assert!(r.contains("live as n2"), "{r}");
    }

    #[test]
    fn a_renewal_needs_a_current_certificate_that_qualifies() {
        let m = members();
        let mut f = join(&m);
        f.request.kind = RequestKind::Renew;
        let r = refused(&f);
        assert!(r.contains("without its current certificate"), "{r}");
        f.current_cert = Some(Err("expired at 2026-01-01".into()));
        let r = refused(&f);
        assert!(r.contains("does not qualify: expired"), "{r}");
        f.current_cert = Some(Ok(()));
        assert_eq!(decide(&f), Decision::Sign);
    }

    #[test]
    fn without_auto_sign_only_approved_requests_are_signed() {
        let m = members();
        let mut f = join(&m);
        f.auto_sign = false;
        f.challenge = None;
        match decide(&f) {
            Decision::AwaitApproval(w) => assert!(w.contains("deckhand pki approve n4"), "{w}"),
            other => panic!("{other:?}"),
        }
        f.approved = true;
        assert_eq!(decide(&f), Decision::Challenge);
        f.challenge = Some(Ok(()));
        assert_eq!(decide(&f), Decision::Sign);
        // An approval does not override the other rules.
        f.request.address = "10.0.0.2";
        assert!(matches!(decide(&f), Decision::Refuse(_)));
    }
}
