//! Planner tests: scenarios for each transition, and property tests that no
//! observation ever leads to a step that breaks a safety rule.

use super::*;
use deckhand_model::Role;
use proptest::prelude::*;

const ME: &str = "http://10.0.0.4:2380";

fn member(id: u64, name: &str, learner: bool, healthy: bool) -> MemberView {
    MemberView {
        id,
        name: name.into(),
        peer_urls: vec![format!("http://10.0.0.{id}:2380")],
        client_urls: if name.is_empty() {
            vec![]
        } else {
            vec![format!("http://10.0.0.{id}:2379")]
        },
        is_learner: learner,
        healthy: Some(healthy),
    }
}

/// A sighting `for_secs` old on this agent's monotonic clock; its wall-clock
/// time is deliberately absurd: no decision may read it.
fn seen(for_secs: u64) -> Sighting {
    Sighting {
        for_secs,
        at_unix: 4_000_000_000,
    }
}

fn three_voters() -> Vec<MemberView> {
    vec![
        member(1, "node1", false, true),
        member(2, "node2", false, true),
        member(3, "node3", false, true),
    ]
}

fn proxy_node(desired: EtcdRole) -> Observation {
    Observation {
        node_name: "node4".into(),
        peer_url: ME.into(),
        desired: Some(Role::new(desired)),
        in_initial_cluster: false,
        config_endpoints: vec!["http://10.0.0.1:2379".into()],
        min_voters: 3,
        local: LocalView {
            proxy_unit_active: true,
            proxy_endpoints: vec![
                "http://10.0.0.1:2379".into(),
                "http://10.0.0.2:2379".into(),
                "http://10.0.0.3:2379".into(),
            ],
            bootstrapped: true,
            ..LocalView::default()
        },
        cluster: Some(ClusterView {
            members: three_voters(),
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

/// A voter node4 (id 4) serving localhost, in a 4-voter cluster.
fn member_node(desired: EtcdRole) -> Observation {
    let mut o = proxy_node(desired);
    o.local = LocalView {
        member_unit_active: true,
        member_env: Some(MemberEnvView {
            member_id: Some(4),
            serves_localhost: true,
        }),
        data_dir_exists: true,
        bootstrapped: true,
        ..LocalView::default()
    };
    let c = o.cluster.as_mut().unwrap();
    c.members.push(member(4, "node4", false, true));
    o
}

#[test]
fn proxy_to_member_walks_learner_path() {
    let mut o = proxy_node(EtcdRole::Member);
    assert_eq!(plan(&o), Step::AcquireLock);
    o.lock = LockView::Mine;
    assert_eq!(plan(&o), Step::AddLearner);
    o.cluster
        .as_mut()
        .unwrap()
        .members
        .push(member(4, "", true, false));
    match plan(&o) {
        Step::StartLearner {
            id: 4,
            initial_cluster,
            move_aside: false,
        } => {
            assert!(initial_cluster.contains("node4=http://10.0.0.4:2380"));
            assert!(initial_cluster.contains("node1=http://10.0.0.1:2380"));
        }
        other => panic!("unexpected {other:?}"),
    }
    o.local.member_unit_active = true;
    o.local.member_env = Some(MemberEnvView {
        member_id: Some(4),
        serves_localhost: false,
    });
    assert_eq!(etcd_mode(&o), EtcdMode::Learner);
    assert_eq!(plan(&o), Step::Promote { id: 4 });
    o.cluster.as_mut().unwrap().members[3].is_learner = false;
    assert_eq!(plan(&o), Step::ServeLocalhostFromMember { id: 4 });
    o.local.member_env = Some(MemberEnvView {
        member_id: Some(4),
        serves_localhost: true,
    });
    o.local.proxy_unit_active = false;
    assert_eq!(plan(&o), Step::ReleaseLock);
    o.lock = LockView::Free;
    assert_eq!(plan(&o), Step::Converged);
    assert_eq!(etcd_mode(&o), EtcdMode::Member);
}

#[test]
fn join_waits_for_pending_learner_and_lock() {
    let mut o = proxy_node(EtcdRole::Member);
    o.cluster
        .as_mut()
        .unwrap()
        .members
        .push(member(9, "", true, false));
    assert!(matches!(plan(&o), Step::Wait(r) if r.contains("one learner at a time")));
    o.cluster.as_mut().unwrap().members.pop();
    o.lock = LockView::Other("abc".into());
    assert!(matches!(plan(&o), Step::Wait(r) if r.contains("held by node abc")));
}

#[test]
fn member_to_proxy_moves_leadership_then_leaves() {
    let mut o = member_node(EtcdRole::Proxy);
    o.cluster.as_mut().unwrap().leader = Some(4);
    assert_eq!(plan(&o), Step::AcquireLock);
    o.lock = LockView::Mine;
    assert_eq!(plan(&o), Step::TransferLeadership { from: 4, to: 1 });
    o.cluster.as_mut().unwrap().leader = Some(1);
    assert_eq!(plan(&o), Step::RemoveSelf { id: 4 });
    o.cluster.as_mut().unwrap().members.pop();
    assert_eq!(plan(&o), Step::StopMember);
    o.local.member_unit_active = false;
    assert!(matches!(plan(&o), Step::StartProxy { endpoints } if endpoints.len() == 3));
    o.local.proxy_unit_active = true;
    assert_eq!(plan(&o), Step::MoveDataDirAside);
    o.local.data_dir_exists = false;
    o.local.member_env = None;
    o.local.proxy_endpoints = vec!["http://10.0.0.1:2379".into()];
    assert!(matches!(plan(&o), Step::UpdateProxy { .. }));
    o.local.proxy_endpoints = o.cluster.as_ref().unwrap().voter_client_urls();
    assert_eq!(plan(&o), Step::ReleaseLock);
    o.lock = LockView::Free;
    assert_eq!(plan(&o), Step::Converged);
}

#[test]
fn member_to_proxy_refused_below_min_voters() {
    // Three voters, node3 is this node: leaving would make 2 < min_voters 3.
    let mut o = member_node(EtcdRole::Proxy);
    o.cluster.as_mut().unwrap().members.remove(0);
    match plan(&o) {
        Step::Blocked(r) => assert!(r.contains("fewer than min_voters = 3"), "{r}"),
        other => panic!("unexpected {other:?}"),
    }
    o.min_voters = 1;
    assert_eq!(plan(&o), Step::AcquireLock);
}

#[test]
fn member_to_proxy_refused_without_healthy_quorum() {
    let mut o = member_node(EtcdRole::Proxy);
    o.min_voters = 1;
    let c = o.cluster.as_mut().unwrap();
    c.members[0].healthy = Some(false);
    c.members[1].healthy = None;
    match plan(&o) {
        Step::Blocked(r) => assert!(
            r.contains("remaining voters would be healthy")
                && r.contains("not healthy: node1, node2"),
            "{r}"
        ),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn unreachable_cluster_keeps_localhost_served() {
    let mut o = proxy_node(EtcdRole::Proxy);
    o.cluster = None;
    o.local.proxy_unit_active = false;
    assert!(matches!(plan(&o), Step::StartProxy { endpoints } if endpoints.len() == 3));
    o.local.proxy_endpoints.clear();
    assert!(matches!(plan(&o), Step::StartProxy { endpoints } if endpoints == o.config_endpoints));

    let mut m = member_node(EtcdRole::Member);
    m.cluster = None;
    m.local.member_unit_active = false;
    assert_eq!(plan(&m), Step::StartMember);

    let mut b = proxy_node(EtcdRole::Member);
    b.desired = None;
    b.cluster = None;
    b.in_initial_cluster = true;
    b.local = LocalView::default();
    assert_eq!(plan(&b), Step::BootstrapMember);
    b.local.bootstrapped = true;
    assert!(matches!(plan(&b), Step::StartProxy { .. }));
}

#[test]
fn late_initial_member_bootstraps_into_running_cluster() {
    let mut o = proxy_node(EtcdRole::Member);
    o.desired = None;
    o.in_initial_cluster = true;
    o.local = LocalView::default();
    o.cluster
        .as_mut()
        .unwrap()
        .members
        .push(member(4, "", false, false));
    assert_eq!(plan(&o), Step::BootstrapMember, "no proxy first");
    o.local.proxy_unit_active = true;
    assert_eq!(plan(&o), Step::BootstrapMember);
}

#[test]
fn unwanted_learner_is_removed() {
    let mut o = proxy_node(EtcdRole::Proxy);
    o.cluster
        .as_mut()
        .unwrap()
        .members
        .push(member(4, "", true, false));
    assert_eq!(plan(&o), Step::AcquireLock);
    o.lock = LockView::Mine;
    assert_eq!(plan(&o), Step::RemoveSelf { id: 4 });
}

#[test]
fn stale_learner_is_reaped_by_a_voter_or_a_joiner() {
    let mut o = member_node(EtcdRole::Member);
    o.cluster
        .as_mut()
        .unwrap()
        .members
        .push(member(9, "", true, false));
    o.pending.insert(9, seen(100));
    assert_eq!(plan(&o), Step::Converged, "not stale yet");
    o.pending.insert(9, seen(300));
    assert_eq!(plan(&o), Step::Converged, "the bound itself is not past it");
    o.pending.insert(9, seen(301));
    assert_eq!(plan(&o), Step::AcquireLock);
    o.lock = LockView::Mine;
    assert!(matches!(plan(&o), Step::RemoveMember { id: 9, why } if why.contains("within 300 s")));

    // A proxy that wants to join reaps it too; a content proxy leaves it.
    let mut j = proxy_node(EtcdRole::Member);
    j.cluster
        .as_mut()
        .unwrap()
        .members
        .push(member(9, "", true, false));
    j.pending.insert(9, seen(400));
    j.lock = LockView::Mine;
    assert!(matches!(plan(&j), Step::RemoveMember { id: 9, .. }));
    j.desired = Some(Role::new(EtcdRole::Proxy));
    assert_eq!(plan(&j), Step::ReleaseLock);
}

/// A voter entry added for `http://10.0.0.9:2380` that never started.
fn unstarted(id: u64) -> MemberView {
    let mut m = member(id, "", false, false);
    m.healthy = None;
    m
}

#[test]
fn unstarted_voter_is_removed_after_the_bound_by_a_voter_or_a_joiner() {
    let mut o = member_node(EtcdRole::Member);
    o.voter_start_timeout = 10;
    o.cluster.as_mut().unwrap().members.push(unstarted(9));
    assert_eq!(plan(&o), Step::Converged, "never sighted: no bound runs");
    o.pending.insert(9, seen(10));
    assert_eq!(plan(&o), Step::Converged, "not past the bound yet");
    o.pending.insert(9, seen(11));
    assert_eq!(plan(&o), Step::AcquireLock);
    o.lock = LockView::Other("n2".into());
    assert!(
        matches!(plan(&o), Step::Wait(w) if w.contains("n2")),
        "one agent at a time"
    );
    o.lock = LockView::Mine;
    assert!(
        matches!(plan(&o), Step::RemoveMember { id: 9, why } if why.contains("did not start within 10 s") && why.contains("10.0.0.9:2380"))
    );
    // Not when the started voters would not keep quorum without it: two of
    // the four started voters down, five voters in all.
    let c = o.cluster.as_mut().unwrap();
    c.members[0].healthy = Some(false);
    c.members[1].healthy = Some(false);
    assert!(!matches!(plan(&o), Step::RemoveMember { .. }));
    // A started voter that died is not unstarted: the replacer's business.
    let mut d = member_node(EtcdRole::Member);
    d.voter_start_timeout = 10;
    d.cluster.as_mut().unwrap().members[2].healthy = Some(false);
    d.pending.insert(3, seen(1000));
    d.lock = LockView::Mine;
    assert_eq!(unstarted_voter(&d), None);
    assert_eq!(plan(&d), Step::ReleaseLock);
    // A proxy content to stay one leaves it alone; this node's own
    // unstarted entry is never "another voter".
    let mut p = proxy_node(EtcdRole::Proxy);
    p.cluster.as_mut().unwrap().members.push(unstarted(9));
    p.pending.insert(9, seen(1000));
    assert_eq!(plan(&p), Step::Converged);
    let mut me = proxy_node(EtcdRole::Member);
    let mut mine = unstarted(4);
    mine.peer_urls = vec![ME.into()];
    me.cluster.as_mut().unwrap().members.push(mine);
    me.pending.insert(4, seen(1000));
    assert_eq!(unstarted_voter(&me), None);
}

#[test]
fn a_joiner_is_blocked_while_a_voter_is_down_and_joins_once_it_is_removed() {
    let mut o = proxy_node(EtcdRole::Member);
    o.cluster.as_mut().unwrap().members[2].healthy = Some(false);
    o.down.insert(3, seen(42));
    let Step::Blocked(why) = plan(&o) else {
        panic!("not blocked: {:?}", plan(&o));
    };
    for part in [
        "node3",
        "10.0.0.3:2380",
        "since Tue, 02 Oct 2096 07:06:40 GMT",
        "start it again",
        "`deckhand member remove node3`",
        "strict-reconfig-check",
    ] {
        assert!(why.contains(part), "{part:?} missing from {why:?}");
    }
    // Holding the lock while blocked would stop others removing the voter.
    o.lock = LockView::Mine;
    assert_eq!(plan(&o), Step::ReleaseLock);
    // Unknown health (one failed check) does not block.
    o.lock = LockView::Free;
    o.cluster.as_mut().unwrap().members[2].healthy = None;
    assert_eq!(plan(&o), Step::AcquireLock);
    // The dead voter removed: the join goes on.
    o.cluster.as_mut().unwrap().members.remove(2);
    assert_eq!(plan(&o), Step::AcquireLock);
    o.lock = LockView::Mine;
    assert_eq!(plan(&o), Step::AddLearner);
    // A voter that never started is in the way too, named by its id.
    let mut u = proxy_node(EtcdRole::Member);
    u.cluster.as_mut().unwrap().members.push(unstarted(9));
    assert!(
        matches!(plan(&u), Step::Blocked(r) if r.contains("voter 9 (http://10.0.0.9:2380) was added but has not started") && r.contains("`deckhand member remove 9`"))
    );
}

#[test]
fn utc_formats_unix_seconds() {
    assert_eq!(utc(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(utc(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    assert_eq!(utc(1_796_183_445), "Wed, 02 Dec 2026 03:50:45 GMT");
}

#[test]
fn entry_from_an_earlier_life_is_removed_then_the_node_joins() {
    // node4 came back with an empty disk; its old voter entry (id 4) is listed.
    let mut o = proxy_node(EtcdRole::Member);
    o.cluster
        .as_mut()
        .unwrap()
        .members
        .push(member(4, "node4", false, false));
    o.lock = LockView::Mine;
    assert!(matches!(plan(&o), Step::RemoveMember { id: 4, why } if why.contains("earlier life")));
    // Not if removing it would cost quorum: two of four voters dead.
    o.cluster.as_mut().unwrap().members[0].healthy = Some(false);
    assert!(matches!(plan(&o), Step::Blocked(r) if r.contains("earlier life")));
    // Same name, other address, unhealthy: also an earlier life.
    let mut n = proxy_node(EtcdRole::Member);
    let mut old = member(7, "node4", false, false);
    old.peer_urls = vec!["http://10.9.9.9:2380".into()];
    n.cluster.as_mut().unwrap().members.push(old);
    n.lock = LockView::Mine;
    assert!(matches!(plan(&n), Step::RemoveMember { id: 7, .. }));
}

#[test]
fn dead_member_removal_ignores_min_voters_but_not_quorum() {
    let mut m = three_voters();
    m[2].healthy = Some(false);
    assert!(check_removal(&m, 3, Some(3)).is_err());
    assert!(check_removal(&m, 3, None).is_ok());
    m[1].healthy = Some(false);
    assert!(check_removal(&m, 3, None).is_err());
}

#[test]
fn rebooted_member_without_role_key_starts_its_member() {
    // node4 was promoted (not an initial member), then lost power: the role
    // key cannot be read until the member runs again.
    let mut o = member_node(EtcdRole::Member);
    o.desired = None;
    o.local.member_unit_active = false;
    assert_eq!(target_role(&o), EtcdRole::Member);
    assert_eq!(plan(&o), Step::StartMember);
    o.cluster = None;
    assert_eq!(plan(&o), Step::StartMember);
}

#[test]
fn proxies_skip_unhealthy_voters() {
    let mut o = proxy_node(EtcdRole::Proxy);
    o.cluster.as_mut().unwrap().members[1].healthy = Some(false);
    match plan(&o) {
        Step::UpdateProxy { endpoints } => assert_eq!(
            endpoints,
            vec![
                "http://10.0.0.1:2379".to_string(),
                "http://10.0.0.3:2379".to_string()
            ]
        ),
        other => panic!("{other:?}"),
    }
    for m in &mut o.cluster.as_mut().unwrap().members {
        m.healthy = Some(false);
    }
    assert_eq!(plan(&o), Step::Converged, "all unhealthy: keep every voter");
}

#[test]
fn quorum_math() {
    assert_eq!(quorum(1), 1);
    assert_eq!(quorum(3), 2);
    assert_eq!(quorum(4), 3);
    assert_eq!(quorum(5), 3);
}

// ---- property tests -------------------------------------------------------

fn arb_member(id: u64) -> impl Strategy<Value = MemberView> {
    (
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(None), Just(Some(true)), Just(Some(false))],
    )
        .prop_map(move |(learner, started, healthy)| {
            member(id, if started { "n" } else { "" }, learner, false).with_health(healthy)
        })
}

trait WithHealth {
    fn with_health(self, h: Option<bool>) -> Self;
}
impl WithHealth for MemberView {
    fn with_health(mut self, h: Option<bool>) -> Self {
        self.healthy = h;
        self
    }
}

prop_compose! {
    fn arb_observation()(
        n in 0usize..7,
        members in proptest::collection::vec(any::<u64>(), 7),
        flags in proptest::collection::vec(any::<bool>(), 12),
        kinds in proptest::collection::vec(arb_member(0), 7),
        leader in 0u64..8,
        desired in 0u8..3,
        lock in 0u8..3,
        min_voters in 1usize..5,
    ) -> Observation {
        let _ = members;
        let members: Vec<MemberView> = kinds
            .into_iter()
            .take(n)
            .enumerate()
            .map(|(i, mut m)| {
                let id = i as u64 + 1;
                m.id = id;
                m.peer_urls = vec![format!("http://10.0.0.{id}:2380")];
                m
            })
            .collect();
        Observation {
            node_name: "node4".into(),
            peer_url: ME.into(),
            desired: match desired {
                0 => None,
                1 => Some(Role::new(EtcdRole::Member)),
                _ => Some(Role::new(EtcdRole::Proxy)),
            },
            in_initial_cluster: flags[0],
            config_endpoints: vec!["http://10.0.0.1:2379".into()],
            min_voters,
            local: LocalView {
                member_unit_active: flags[1],
                proxy_unit_active: flags[2],
                member_env: flags[3].then_some(MemberEnvView {
                    member_id: flags[4].then_some(4),
                    serves_localhost: flags[5],
                }),
                proxy_endpoints: if flags[6] { vec!["http://10.0.0.1:2379".into()] } else { vec![] },
                data_dir_exists: flags[7],
                bootstrapped: flags[8],
            },
            cluster: flags[9].then(|| ClusterView {
                members,
                leader: (leader > 0).then_some(leader),
            }),
            lock: match lock {
                0 => LockView::Free,
                1 => LockView::Mine,
                _ => LockView::Other("x".into()),
            },
            learner_timeout: 300,
            voter_start_timeout: 200,
            pending: (1..=7u64).filter(|i| flags[10] || i % 2 == 0).map(|i| (i, seen(if flags[11] { 900 } else { 100 }))).collect(),
            down: Default::default(),
            identity: Default::default(),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn membership_changes_hold_the_lock(o in arb_observation()) {
        let step = plan(&o);
        if matches!(step, Step::AddLearner | Step::Promote { .. } | Step::RemoveSelf { .. } | Step::TransferLeadership { .. } | Step::StartLearner { .. }) {
            prop_assert_eq!(&o.lock, &LockView::Mine, "{:?}", step);
        }
    }

    #[test]
    fn never_removes_a_voter_unsafely(o in arb_observation()) {
        if let Step::RemoveSelf { id } = plan(&o) {
            let c = o.cluster.as_ref().unwrap();
            let m = c.members.iter().find(|m| m.id == id).unwrap();
            prop_assert_eq!(Some(m), o.me());
            if !m.is_learner {
                prop_assert!(check_removal(&c.members, id, Some(o.min_voters)).is_ok());
                prop_assert!(c.leader != Some(id), "removes the leader without moving leadership");
                let voters = c.members.iter().filter(|m| !m.is_learner).count();
                prop_assert!(voters > o.min_voters);
            }
        }
    }

    #[test]
    fn never_adds_beside_a_pending_learner(o in arb_observation()) {
        if plan(&o) == Step::AddLearner {
            let c = o.cluster.as_ref().unwrap();
            prop_assert!(c.members.iter().all(|m| !m.is_learner));
            prop_assert!(o.me().is_none());
        }
    }

    #[test]
    fn never_asks_etcd_to_add_while_a_voter_is_in_the_way(o in arb_observation()) {
        if matches!(plan(&o), Step::AddLearner | Step::AcquireLock) && o.me().is_none() && stale_learner(&o).is_none() && unstarted_voter(&o).is_none() && stale_self_entries(&o).is_empty() {
            let c = o.cluster.as_ref().unwrap();
            prop_assert!(c.members.iter().filter(|m| !m.is_learner).all(|m| m.is_started() && m.healthy != Some(false)));
        }
    }

    #[test]
    fn promotes_only_safely(o in arb_observation()) {
        if let Step::Promote { id } = plan(&o) {
            let c = o.cluster.as_ref().unwrap();
            prop_assert!(check_promotion(&c.members, id).is_ok());
            prop_assert!(o.local.member_unit_active);
        }
    }

    #[test]
    fn leadership_goes_to_a_healthy_voter(o in arb_observation()) {
        if let Step::TransferLeadership { from, to } = plan(&o) {
            let c = o.cluster.as_ref().unwrap();
            prop_assert_eq!(c.leader, Some(from));
            let t = c.members.iter().find(|m| m.id == to).unwrap();
            prop_assert!(!t.is_learner && t.is_started() && t.healthy == Some(true) && to != from);
        }
    }

    #[test]
    fn never_stops_or_moves_a_listed_member(o in arb_observation()) {
        let step = plan(&o);
        if matches!(step, Step::StopMember | Step::MoveDataDirAside) {
            prop_assert!(o.cluster.is_some(), "destructive step without a member list");
            prop_assert!(o.me().is_none(), "{:?} while still listed", step);
        }
    }

    #[test]
    fn reaps_only_stale_learners_and_dead_entries_safely(o in arb_observation()) {
        if let Step::RemoveMember { id, .. } = plan(&o) {
            let c = o.cluster.as_ref().unwrap();
            let m = c.members.iter().find(|m| m.id == id).unwrap();
            prop_assert_eq!(&o.lock, &LockView::Mine);
            prop_assert!(o.me().map(|me| me.id) != Some(id) || stale_self_entries(&o).iter().any(|s| s.id == id));
            let seen_for = o.pending.get(&id).map(|s| s.for_secs);
            let earlier_life = stale_self_entries(&o).iter().any(|s| s.id == id);
            if m.is_learner {
                prop_assert!(seen_for.is_some_and(|t| t > o.learner_timeout) || earlier_life);
            } else {
                prop_assert!(check_removal(&c.members, id, None).is_ok());
                prop_assert!(m.healthy != Some(true) || o.me().map(|me| me.id) == Some(id));
                // A voter is removed by housekeeping only when it never
                // started and was seen so past the bound (or is this
                // host's own earlier entry).
                prop_assert!(earlier_life || (!m.is_started() && seen_for.is_some_and(|t| t > o.voter_start_timeout)));
            }
        }
    }

    #[test]
    fn bootstraps_at_most_once(o in arb_observation()) {
        if plan(&o) == Step::BootstrapMember {
            prop_assert!(!o.local.bootstrapped && o.in_initial_cluster && !o.local.member_unit_active);
        }
    }

    #[test]
    fn never_leaves_localhost_unserved_when_idle(o in arb_observation()) {
        let step = plan(&o);
        if step == Step::Converged {
            prop_assert!(matches!(etcd_mode(&o), EtcdMode::Member | EtcdMode::Proxy));
        }
    }
}
