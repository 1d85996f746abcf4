//! Voter health, observed by the voters themselves and published once into
//! etcd, read by every other agent through a watch (`docs/scale.md`,
//! "Voter health").
//!
//! Before, every proxy asked every voter for its `Status` on each loop pass:
//! a voter answered about `12 × N` status calls a minute for `N` nodes. Now:
//!
//! - **Publisher** ([`Publisher`]): the agent of a node whose own member is a
//!   started voter judges its local member by the `Status` answer its loop
//!   already gets each pass on the node's own client URL ([`Publisher::sample`];
//!   it asks itself only when no answer younger than [`SAMPLE_FRESH`] came),
//!   and puts a [`VoterReport`] at
//!   `<prefix>/health/voters/<member id hex>` ([`deckhand_model::Keyspace::voter_health`])
//!   when the report changes, or when a read-back every [`VERIFY_EVERY`]
//!   finds the key missing or different (a bounded refresh that costs no
//!   watch event while nothing changed). The key lives on a lease of its own
//!   ([`REPORT_TTL`] seconds, kept alive by a [`deckhand_etcd::LeaseKeeper`]
//!   through `localhost:2379`, which on a member node is the member being
//!   reported). So the report vanishes within `REPORT_TTL` (plus etcd's
//!   election timeout after a leader change) when the node dies, when the
//!   member stops serving, or when the voter is cut off from quorum: a voter
//!   partitioned away cannot publish its own un-health, but it cannot keep
//!   its report alive either.
//! - **Readers** ([`Reports`]): every agent watches the prefix (one more
//!   watch on the stream it already holds, [`super::watches::Source::VoterHealth`]).
//!   A started voter is healthy when its report is present, names its member
//!   id, and says healthy; a voter without a report counts as not healthy
//!   (`Some(false)`), so a proxy stops sending to it. Until the watch's
//!   first snapshot has arrived nothing is known (`None`), and the observer
//!   falls back to asking the voters directly, as before.
//!
//! Membership changes still look directly: the observer asks every voter
//! itself, once per pass, only on a node whose own membership change is
//! pending (a learner, a joiner, a member to demote, a stale entry of this
//! host, a voter that never started); see [`super::observe`]. The steady
//! state of a proxy costs the voters nothing but its watch.
//!
//! Cost per voter, per minute, in steady state: no status call beyond those
//! its own agent's loop made before (one a pass), `60 / (REPORT_TTL / 3)`
//! lease keep-alives and `60 / VERIFY_EVERY` reads, whatever `N`; plus one
//! watch event per watcher for each change of a report (a restart, an
//! election).
//!
//! Trade-offs named: a voter whose agent is stopped for longer than
//! `REPORT_TTL` counts as not healthy although its member may answer
//! (proxies then leave it out, and fall back to every voter when none is
//! healthy); and during a rolling upgrade from an agent that does not
//! publish, upgrade the voters first.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use deckhand_etcd::{Cluster, KeyEvent, LeaseKeeper};
use deckhand_model::Keyspace;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::store::Store;

/// How often a voter's health is judged when no sample of the loop's
/// arrives: the loop's own `Status` answer is used when fresh (the agent
/// passes every 5 s when idle), else the publisher asks its member itself.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);
/// TTL of the lease a voter's report lives on, in seconds: how long a report
/// outlives the last keep-alive that reached the leader.
pub const REPORT_TTL: i64 = 10;
/// How often the publisher reads its report back and rewrites it when it is
/// missing or different (the bounded refresh).
pub const VERIFY_EVERY: Duration = Duration::from_secs(60);
/// A sample of the loop's is used while younger than this; an older one
/// makes the publisher ask the member itself.
pub const SAMPLE_FRESH: Duration = Duration::from_secs(8);
/// Timeout of the publisher's status request to its own member.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// Timeout of the publisher's puts and reads.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// One voter's health as its own agent saw it, the value of
/// `<prefix>/health/voters/<member id hex>` (JSON).
///
/// Example: `{"member_id":"8e9e05c52164694d","node":"node1","healthy":true,"leader":"8e9e05c52164694d","raft_term":4}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterReport {
    /// The member id, hex (as `etcdctl member list` prints it).
    pub member_id: String,
    /// The node name of the publisher.
    pub node: String,
    /// The member answered `Status` on the node's client URL, knows a
    /// leader, and is not a learner (one failed check is forgiven: a
    /// member restart is not un-health).
    pub healthy: bool,
    /// The leader's member id as the member knows it, hex; empty when none.
    #[serde(default)]
    pub leader: String,
    /// The raft term of that answer (the newest term names the leader).
    #[serde(default)]
    pub raft_term: u64,
    /// The member's client URLs as the member list has them: a change of
    /// them (`deckhand tls enable`) changes the report, which tells the
    /// readers to read the member list again.
    #[serde(default)]
    pub client_urls: Vec<String>,
}

impl VoterReport {
    fn member(&self) -> Option<u64> {
        u64::from_str_radix(&self.member_id, 16).ok()
    }
}

/// What the publisher is told each pass: the member id and client URLs of
/// this node's own started voter, `None` when this node runs no voter (its
/// report is then withdrawn: the lease is revoked).
pub type PublishAs = Option<(u64, Vec<String>)>;

/// The publisher task's handle. Dropping it stops the task without
/// revoking: the report then expires after [`REPORT_TTL`] (an agent restart
/// rewrites it before that on its first pass).
pub struct Publisher {
    tx: watch::Sender<PublishAs>,
    samples: watch::Sender<Option<Sample>>,
}

/// The loop's answer of the local member to `Status` (`None`: no answer),
/// and when it came.
type Sample = (Instant, Option<deckhand_etcd::EndpointStatus>);

impl Publisher {
    /// Starts the publisher of node `node` (its name), which asks
    /// `client_url` (this node's own client URL, `tls` for `https://`) and
    /// writes through `store` (`localhost:2379`).
    pub fn spawn(
        store: Store,
        node: String,
        client_url: String,
        tls: Option<deckhand_etcd::Tls>,
    ) -> Publisher {
        let (tx, rx) = watch::channel(None);
        let (samples, samples_rx) = watch::channel(None);
        tokio::spawn(publish(store, node, client_url, tls, rx, samples_rx));
        Publisher { tx, samples }
    }

    /// Hands the publisher the local member's answer to `Status` that the
    /// loop got this pass (`None`: it did not answer), so that the
    /// publisher need not ask itself: it asks only when no answer younger
    /// than [`SAMPLE_FRESH`] came (the loop is busy with a long step).
    pub fn sample(&self, answer: Option<deckhand_etcd::EndpointStatus>) {
        self.samples.send_replace(Some((Instant::now(), answer)));
    }

    /// Tells the publisher which voter this node runs now.
    pub fn set(&self, who: PublishAs) {
        self.tx.send_if_modified(|cur| {
            let changed = *cur != who;
            *cur = who;
            changed
        });
    }
}

/// The report a status answer makes, with `failures` consecutive failed
/// checks before this one (the first failure is forgiven).
pub fn report_of(
    member_id: u64,
    client_urls: &[String],
    node: &str,
    status: Option<&deckhand_etcd::EndpointStatus>,
    failures: u32,
) -> VoterReport {
    let ok = status.filter(|s| s.member_id == member_id && s.leader != 0 && !s.is_learner);
    VoterReport {
        member_id: format!("{member_id:x}"),
        node: node.to_string(),
        healthy: ok.is_some() || failures < 1,
        leader: ok.map(|s| format!("{:x}", s.leader)).unwrap_or_default(),
        raft_term: ok.map(|s| s.raft_term).unwrap_or_default(),
        client_urls: client_urls.to_vec(),
    }
}

/// The publisher's state while it runs a voter.
struct Publishing {
    member_id: u64,
    client_urls: Vec<String>,
    keeper: LeaseKeeper,
    /// (lease, report) last put.
    written: Option<(i64, VoterReport)>,
    verified: Instant,
    failures: u32,
    /// The last healthy answer's leader and term, kept through one failure.
    last: Option<(String, u64)>,
}

async fn publish(
    store: Store,
    node: String,
    client_url: String,
    tls: Option<deckhand_etcd::Tls>,
    mut rx: watch::Receiver<PublishAs>,
    mut samples: watch::Receiver<Option<Sample>>,
) {
    let mut state: Option<Publishing> = None;
    loop {
        let who = rx.borrow_and_update().clone();
        match (who, state.take()) {
            (None, None) => {}
            (None, Some(p)) => {
                tracing::info!(
                    "no longer a voter: withdrawing the health report of member {:x}",
                    p.member_id
                );
                p.keeper.revoke().await;
            }
            (Some((id, urls)), Some(mut p)) if p.member_id == id => {
                p.client_urls = urls;
                state = Some(p);
            }
            (Some((id, urls)), old) => {
                if let Some(p) = old {
                    p.keeper.revoke().await;
                }
                tracing::info!(
                    "publishing the health of member {id:x} every {} s (lease TTL {REPORT_TTL} s)",
                    CHECK_EVERY.as_secs()
                );
                state = Some(Publishing {
                    member_id: id,
                    client_urls: urls,
                    keeper: LeaseKeeper::spawn(store.client(), REPORT_TTL),
                    written: None,
                    verified: Instant::now(),
                    failures: 0,
                    last: None,
                });
            }
        }
        if let Some(p) = state.as_mut() {
            let sample = samples
                .borrow_and_update()
                .clone()
                .filter(|(at, _)| at.elapsed() < SAMPLE_FRESH)
                .map(|(_, answer)| answer);
            let status = match sample {
                Some(answer) => answer,
                None => Cluster::endpoint_status(&client_url, STATUS_TIMEOUT, tls.as_ref())
                    .await
                    .ok(),
            };
            publish_once(&store, &node, p, status).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            r = rx.changed() => if r.is_err() { break },
            r = samples.changed() => if r.is_err() { break },
        }
    }
    if let Some(p) = state {
        drop(p.keeper); // not revoked: expires after its TTL
    }
}

async fn publish_once(
    store: &Store,
    node: &str,
    p: &mut Publishing,
    status: Option<deckhand_etcd::EndpointStatus>,
) {
    let mut report = report_of(
        p.member_id,
        &p.client_urls,
        node,
        status.as_ref(),
        p.failures,
    );
    let answered = status
        .as_ref()
        .is_some_and(|s| s.member_id == p.member_id && s.leader != 0 && !s.is_learner);
    if answered {
        p.failures = 0;
        p.last = Some((report.leader.clone(), report.raft_term));
    } else {
        p.failures += 1;
        if report.healthy
            && let Some((leader, term)) = &p.last
        {
            // The one forgiven failure keeps the last answer's leader.
            report.leader = leader.clone();
            report.raft_term = *term;
        }
    }
    let lease = *p.keeper.lease().borrow();
    if lease == 0 {
        return;
    }
    let key = store.keyspace().voter_health(p.member_id);
    let wanted = (lease, report);
    let mut due = p.written.as_ref() != Some(&wanted);
    if !due && p.verified.elapsed() >= VERIFY_EVERY {
        p.verified = Instant::now();
        due = match read(store, &key).await {
            Ok(v) => v.as_deref() != Some(wanted.1.encode().as_slice()),
            Err(e) => {
                tracing::debug!("reading back {key}: {e:#}");
                false
            }
        };
    }
    if !due {
        return;
    }
    let mut c = store.client();
    let put = c.put(
        key.clone(),
        wanted.1.encode(),
        Some(etcd_client::PutOptions::new().with_lease(lease)),
    );
    match tokio::time::timeout(REQUEST_TIMEOUT, put).await {
        Ok(Ok(_)) => {
            if p.written.as_ref().map(|w| w.1.healthy) != Some(wanted.1.healthy) {
                tracing::info!(
                    "published {key}: {}",
                    if wanted.1.healthy {
                        "healthy"
                    } else {
                        "not healthy"
                    }
                );
            }
            p.written = Some(wanted);
            p.verified = Instant::now();
        }
        Ok(Err(e)) => tracing::debug!("publishing {key}: {e}"),
        Err(_) => tracing::debug!("publishing {key}: no answer"),
    }
}

async fn read(store: &Store, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let mut c = store.client();
    let resp = tokio::time::timeout(REQUEST_TIMEOUT, c.get(key, None))
        .await
        .map_err(|_| anyhow::anyhow!("no answer"))??;
    Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
}

impl VoterReport {
    /// The JSON value.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Every voter's report as last seen through the watch of
/// `<prefix>/health/voters/`.
#[derive(Debug, Default)]
pub struct Reports {
    /// The watch's snapshot has arrived.
    seen: bool,
    /// Reports by member id (a value that does not parse is dropped).
    by_member: BTreeMap<u64, VoterReport>,
    /// Events applied so far: a change of it means some report changed.
    generation: u64,
}

impl Reports {
    /// Applies one event of the watch of [`Keyspace::voter_healths`].
    pub fn on_event(&mut self, ks: &Keyspace, ev: KeyEvent) {
        self.generation += 1;
        let prefix = ks.voter_healths();
        let id_of = |key: &str| {
            key.strip_prefix(&prefix)
                .and_then(|k| u64::from_str_radix(k, 16).ok())
        };
        match ev {
            KeyEvent::Snapshot { kvs, .. } => {
                self.seen = true;
                self.by_member.clear();
                for (k, v, _) in kvs {
                    self.put(id_of(&k), &v);
                }
            }
            KeyEvent::Put { key, value, .. } => self.put(id_of(&key), &value),
            KeyEvent::Delete { key, .. } => {
                if let Some(id) = id_of(&key) {
                    self.by_member.remove(&id);
                }
            }
        }
    }

    fn put(&mut self, id: Option<u64>, value: &[u8]) {
        let Some(id) = id else { return };
        match serde_json::from_slice::<VoterReport>(value) {
            Ok(r) if r.member() == Some(id) => {
                self.by_member.insert(id, r);
            }
            _ => {
                self.by_member.remove(&id);
            }
        }
    }

    /// How many events were applied: equal counts mean nothing changed.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The watch has delivered its first snapshot.
    pub fn known(&self) -> bool {
        self.seen
    }

    /// `(member id, healthy)` of each voter among `voters` (learners are
    /// skipped): healthy when its report says so; a voter without a report
    /// is not healthy. `None` before the watch's first snapshot.
    pub fn health(&self, members: &[deckhand_etcd::Member]) -> Option<Vec<(u64, bool)>> {
        if !self.seen {
            return None;
        }
        Some(
            members
                .iter()
                .filter(|m| !m.is_learner)
                .map(|m| (m.id, self.by_member.get(&m.id).is_some_and(|r| r.healthy)))
                .collect(),
        )
    }

    /// The leader named by the healthy reports of the voters among
    /// `members`, the one of the highest raft term; `None` when no healthy
    /// report names one.
    pub fn leader(&self, members: &[deckhand_etcd::Member]) -> Option<u64> {
        members
            .iter()
            .filter(|m| !m.is_learner)
            .filter_map(|m| self.by_member.get(&m.id))
            .filter(|r| r.healthy)
            .filter_map(|r| Some((r.raft_term, u64::from_str_radix(&r.leader, 16).ok()?)))
            .filter(|(_, l)| *l != 0)
            .max()
            .map(|(_, l)| l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, learner: bool) -> deckhand_etcd::Member {
        deckhand_etcd::Member {
            id,
            name: format!("n{id}"),
            peer_urls: vec![format!("http://10.0.0.{id}:2380")],
            client_urls: vec![format!("http://10.0.0.{id}:2379")],
            is_learner: learner,
        }
    }

    fn status(member: u64, leader: u64, term: u64) -> deckhand_etcd::EndpointStatus {
        deckhand_etcd::EndpointStatus {
            endpoint: String::new(),
            member_id: member,
            cluster_id: 1,
            leader,
            raft_term: term,
            raft_index: 0,
            revision: 0,
            is_learner: false,
            errors: vec![],
            version: "3.4.23".into(),
        }
    }

    fn put(r: &VoterReport, ks: &Keyspace) -> KeyEvent {
        KeyEvent::Put {
            key: ks.voter_health(r.member().unwrap()),
            value: r.encode(),
            mod_revision: 1,
        }
    }

    #[test]
    fn a_report_says_healthy_only_for_an_answer_of_its_own_member_with_a_leader() {
        let ok = report_of(0xa, &[], "n", Some(&status(0xa, 0xb, 3)), 0);
        assert!(ok.healthy);
        assert_eq!((ok.leader.as_str(), ok.raft_term), ("b", 3));
        // No leader, another member behind the URL, no answer: failures.
        for s in [Some(status(0xa, 0, 3)), Some(status(0xc, 0xb, 3)), None] {
            assert!(
                report_of(0xa, &[], "n", s.as_ref(), 0).healthy,
                "first forgiven"
            );
            assert!(
                !report_of(0xa, &[], "n", s.as_ref(), 1).healthy,
                "second not"
            );
        }
    }

    #[test]
    fn nothing_is_known_before_the_snapshot_and_a_voter_without_report_is_not_healthy() {
        let ks = Keyspace::new("/t");
        let mut r = Reports::default();
        let members = [member(1, false), member(2, false), member(3, true)];
        assert_eq!(r.health(&members), None);
        let one = report_of(1, &[], "n1", Some(&status(1, 1, 2)), 0);
        r.on_event(
            &ks,
            KeyEvent::Snapshot {
                kvs: vec![(ks.voter_health(1), one.encode(), 1)],
                revision: 1,
            },
        );
        assert_eq!(
            r.health(&members),
            Some(vec![(1, true), (2, false)]),
            "the learner is skipped; 2 has no report"
        );
        assert_eq!(r.leader(&members), Some(1));
        // 2 reports healthy, then its lease expires.
        let two = report_of(2, &[], "n2", Some(&status(2, 1, 2)), 0);
        r.on_event(&ks, put(&two, &ks));
        assert_eq!(r.health(&members), Some(vec![(1, true), (2, true)]));
        r.on_event(
            &ks,
            KeyEvent::Delete {
                key: ks.voter_health(2),
                mod_revision: 3,
            },
        );
        assert_eq!(r.health(&members), Some(vec![(1, true), (2, false)]));
        // A report that says not healthy, or names another member, or
        // does not parse, is not health.
        let sick = report_of(1, &[], "n1", None, 1);
        r.on_event(&ks, put(&sick, &ks));
        assert_eq!(r.health(&members), Some(vec![(1, false), (2, false)]));
        assert_eq!(r.leader(&members), None, "no healthy report names one");
        r.on_event(
            &ks,
            KeyEvent::Put {
                key: ks.voter_health(2),
                value: one.encode(),
                mod_revision: 4,
            },
        );
        r.on_event(
            &ks,
            KeyEvent::Put {
                key: ks.voter_health(1),
                value: b"{".to_vec(),
                mod_revision: 5,
            },
        );
        assert_eq!(r.health(&members), Some(vec![(1, false), (2, false)]));
        // A resync replaces everything.
        r.on_event(
            &ks,
            KeyEvent::Snapshot {
                kvs: vec![],
                revision: 9,
            },
        );
        assert_eq!(r.health(&members), Some(vec![(1, false), (2, false)]));
    }

    /// Feeds `rx` into `r` until `done` holds (a bound of 30 s only
    /// against a hang: nothing is timed).
    async fn until(
        r: &mut Reports,
        ks: &Keyspace,
        rx: &mut tokio::sync::mpsc::Receiver<KeyEvent>,
        done: impl Fn(&Reports) -> bool,
    ) {
        let wait = async {
            while !done(r) {
                let ev = rx.recv().await.expect("the watch runs");
                r.on_event(ks, ev);
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .expect("the reports reached the state wanted");
    }

    #[tokio::test]
    async fn a_voter_publishes_its_health_on_a_lease_and_withdraws_it() {
        let etcd = crate::testing::Etcd::start().await;
        let ks = Keyspace::new("/t");
        let store = Store::new(etcd.client().await, ks.clone(), Duration::from_secs(5));
        let st = Cluster::endpoint_status(&etcd.url, Duration::from_secs(5), None)
            .await
            .expect("status");
        let me = deckhand_etcd::Member {
            client_urls: vec![etcd.url.clone()],
            ..member(st.member_id, false)
        };
        let mut rx = deckhand_etcd::watch_key(etcd.client().await, ks.voter_healths(), true);
        let mut r = Reports::default();
        let p = Publisher::spawn(store.clone(), "n1".into(), etcd.url.clone(), None);
        p.set(Some((st.member_id, vec![etcd.url.clone()])));
        let healthy =
            |r: &Reports| r.health(std::slice::from_ref(&me)) == Some(vec![(me.id, true)]);
        until(&mut r, &ks, &mut rx, healthy).await;
        assert_eq!(r.leader(std::slice::from_ref(&me)), Some(st.member_id));
        let mut c = etcd.client().await;
        let got = c.get(ks.voter_health(me.id), None).await.expect("get");
        assert_ne!(got.kvs()[0].lease(), 0, "the report lives on a lease");
        // No longer a voter: the lease is revoked, the report is gone.
        p.set(None);
        let gone = |r: &Reports| r.health(std::slice::from_ref(&me)) == Some(vec![(me.id, false)]);
        until(&mut r, &ks, &mut rx, gone).await;
        let got = c.get(ks.voter_health(me.id), None).await.expect("get");
        assert!(got.kvs().is_empty());
        // A member id the local member does not have: forgiven once, then
        // published as not healthy.
        p.set(Some((me.id + 1, vec![])));
        let other = deckhand_etcd::Member {
            id: me.id + 1,
            ..me.clone()
        };
        let sick = |r: &Reports| {
            r.by_member.get(&other.id).is_some_and(|x| !x.healthy)
                && r.health(std::slice::from_ref(&other)) == Some(vec![(other.id, false)])
        };
        until(&mut r, &ks, &mut rx, sick).await;
        // The loop's answers are used while fresh: the publisher does not
        // ask itself (which would find another member id behind the URL).
        p.sample(Some(status(other.id, other.id, 7)));
        let sampled = |r: &Reports| {
            r.by_member
                .get(&other.id)
                .is_some_and(|x| x.healthy && x.raft_term == 7)
        };
        until(&mut r, &ks, &mut rx, sampled).await;
    }

    #[test]
    fn the_leader_of_the_newest_term_wins() {
        let ks = Keyspace::new("/t");
        let mut r = Reports::default();
        let members = [member(1, false), member(2, false), member(3, false)];
        r.on_event(
            &ks,
            KeyEvent::Snapshot {
                kvs: vec![],
                revision: 1,
            },
        );
        r.on_event(
            &ks,
            put(&report_of(1, &[], "n1", Some(&status(1, 1, 2)), 0), &ks),
        );
        r.on_event(
            &ks,
            put(&report_of(2, &[], "n2", Some(&status(2, 3, 5)), 0), &ks),
        );
        assert_eq!(r.leader(&members), Some(3));
        // Reports of members no longer listed are ignored.
        assert_eq!(r.leader(&members[..1]), Some(1));
    }
}
