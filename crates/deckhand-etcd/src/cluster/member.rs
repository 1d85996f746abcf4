//! What a member is: one entry of etcd's member list, learner or voter.

/// One entry of etcd's member list: a voter, or a learner when
/// [`Member::is_learner`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Member {
    /// The member id (etcd prints it in hex).
    pub id: u64,
    /// The member name (`--name`); empty until the member has started and
    /// published itself to the cluster.
    pub name: String,
    /// The URLs the other members reach it on (`--initial-advertise-peer-urls`).
    pub peer_urls: Vec<String>,
    /// The URLs clients reach it on (`--advertise-client-urls`); empty until
    /// the member has started.
    pub client_urls: Vec<String>,
    /// The member is a raft learner: it receives the log but does not vote,
    /// and refuses client reads and writes.
    pub is_learner: bool,
}

impl Member {
    /// The member's etcd process has run and published its name and client URLs.
    ///
    /// etcd adds a member with only its peer URLs; the member sets its name
    /// and client URLs through raft once it runs (`publish` in
    /// `etcdserver/server.go`). Members of a bootstrap's initial cluster carry
    /// their names from `--initial-cluster` before they ever ran, so only the
    /// client URLs tell: none means it never started.
    pub fn is_started(&self) -> bool {
        !self.client_urls.is_empty()
    }

    /// The member lists `peer_url` among its peer URLs (a trailing `/` is
    /// ignored, and so is the scheme: `deckhand tls enable` changes
    /// `http://` to `https://` one member at a time).
    pub fn has_peer_url(&self, peer_url: &str) -> bool {
        let strip = |u: &str| {
            u.split_once("://")
                .map_or(u, |(_, rest)| rest)
                .trim_end_matches('/')
                .to_string()
        };
        let want = strip(peer_url);
        self.peer_urls.iter().any(|u| strip(u) == want)
    }
}

impl From<&etcd_client::Member> for Member {
    fn from(m: &etcd_client::Member) -> Self {
        Member {
            id: m.id(),
            name: m.name().to_owned(),
            peer_urls: m.peer_urls().to_vec(),
            client_urls: m.client_urls().to_vec(),
            is_learner: m.is_learner(),
        }
    }
}

/// The members of an etcd member list answer, in its order.
pub(super) fn members_of(list: &[etcd_client::Member]) -> Vec<Member> {
    list.iter().map(Member::from).collect()
}
