//! Membership operations against a real etcd 3.4 cluster.

mod common;

use std::time::Duration;

use common::{EtcdCluster, TIMEOUT, eventually, retry_unhealthy};
use deckhand_etcd::{Cluster, Error, Member};

fn by_peer<'a>(members: &'a [Member], peer_url: &str) -> Vec<&'a Member> {
    members
        .iter()
        .filter(|m| m.has_peer_url(peer_url))
        .collect()
}

/// The member id of the current leader, as the first running member sees it.
async fn leader(etcd: &EtcdCluster) -> u64 {
    eventually(Duration::from_secs(10), "a leader", || async {
        for url in etcd.client_urls() {
            match Cluster::endpoint_status(&url, TIMEOUT, None).await {
                Ok(s) if s.leader != 0 => return Some(s.leader),
                _ => {}
            }
        }
        None
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_learner_twice_reuses_the_member() {
    let mut etcd = EtcdCluster::start(3).await;
    let cluster = etcd.connect().await;
    let i = etcd.add_node();
    let peer = etcd.nodes[i].peer_url.clone();

    let added = retry_unhealthy(|| cluster.add_learner(&peer))
        .await
        .expect("add learner");
    assert!(!added.reused);
    assert!(added.member.is_learner, "{added:?}");
    assert!(
        !added.member.is_started(),
        "unstarted learner has a name: {added:?}"
    );
    assert!(added.member.client_urls.is_empty(), "{added:?}");
    assert_eq!(added.members.len(), 4, "{:?}", added.members);

    let members = cluster.member_list().await.expect("member list");
    let found = by_peer(&members, &peer);
    assert_eq!(found.len(), 1, "{members:?}");
    assert!(found[0].is_learner);
    assert_eq!(found[0].id, added.member.id);

    let again = cluster.add_learner(&peer).await.expect("add learner again");
    assert!(again.reused, "{again:?}");
    assert_eq!(again.member.id, added.member.id);
    let members = cluster.member_list().await.expect("member list");
    assert_eq!(members.len(), 4, "{members:?}");
    assert_eq!(by_peer(&members, &peer).len(), 1, "{members:?}");

    // etcd 3.4 allows one learner at a time.
    let j = etcd.add_node();
    let other = etcd.nodes[j].peer_url.clone();
    match cluster.add_learner(&other).await {
        Err(Error::TooManyLearners { peer_url }) => assert_eq!(peer_url, other),
        other => panic!("expected TooManyLearners, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_waits_until_the_learner_is_in_sync() {
    let mut etcd = EtcdCluster::start(3).await;
    let cluster = etcd.connect().await;
    let i = etcd.add_node();
    let peer = etcd.nodes[i].peer_url.clone();
    let id = retry_unhealthy(|| cluster.add_learner(&peer))
        .await
        .expect("add learner")
        .member
        .id;

    // Not started: never in sync.
    match cluster.promote(id).await {
        Err(Error::LearnerNotInSync { id: got }) => assert_eq!(got, id),
        other => panic!("expected LearnerNotInSync, got {other:?}"),
    }
    // Neither within a short deadline.
    match cluster
        .promote_until_in_sync(id, Duration::from_millis(700))
        .await
    {
        Err(Error::PromoteDeadline { id: got, .. }) => assert_eq!(got, id),
        other => panic!("expected PromoteDeadline, got {other:?}"),
    }

    etcd.join(i);
    let status = etcd
        .wait_ready(i, Duration::from_secs(10))
        .await
        .expect("learner runs");
    assert!(status.is_learner, "{status:?}");
    assert_eq!(status.member_id, id);

    cluster
        .promote_until_in_sync(id, Duration::from_secs(20))
        .await
        .expect("promote");
    // The member list is not linearizable in 3.4: the member asked may
    // not have applied the promotion yet.
    let members = eventually(Duration::from_secs(5), "the promotion listed", || async {
        let members = cluster.member_list().await.ok()?;
        by_peer(&members, &peer)
            .first()
            .is_some_and(|m| !m.is_learner)
            .then_some(members)
    })
    .await;
    let me = by_peer(&members, &peer);
    assert_eq!(me.len(), 1, "{members:?}");
    assert!(me[0].is_started(), "{members:?}");

    // A re-run of the promote is a no-op.
    cluster.promote(id).await.expect("promote a voter");
    let status = Cluster::endpoint_status(&etcd.nodes[i].client_url, TIMEOUT, None)
        .await
        .expect("status");
    assert!(!status.is_learner, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_is_idempotent() {
    let mut etcd = EtcdCluster::start(3).await;
    let cluster = etcd.connect().await;
    let members = cluster.member_list().await.expect("member list");
    // Remove a follower: removing the leader leaves the cluster without one
    // until the election ends, and a request in that window is dropped by
    // raft and only ends with its timeout (the agent moves leadership first).
    let lead = leader(&etcd).await;
    let v = (0..3)
        .find(|&i| by_peer(&members, &etcd.nodes[i].peer_url)[0].id != lead)
        .expect("a follower");
    let victim = by_peer(&members, &etcd.nodes[v].peer_url)[0].clone();

    // Ask the other members: a member that takes its own removal stops
    // before it answers ("etcdserver: server stopped"), though the removal
    // was committed (seen in CI's run of this test).
    etcd.forget(v);
    cluster
        .set_endpoints(&etcd.client_urls())
        .await
        .expect("set endpoints");
    retry_unhealthy(|| cluster.remove(victim.id))
        .await
        .expect("remove");
    // MemberList is answered from the answering member's applied state: the
    // member that did not take the request may lag for a moment.
    eventually(
        Duration::from_secs(5),
        "every member to drop the victim",
        || async {
            let members = cluster.member_list().await.ok()?;
            (members.len() == 2 && members.iter().all(|m| m.id != victim.id)).then_some(())
        },
    )
    .await;

    cluster.remove(victim.id).await.expect("remove again");
    cluster.remove(0x1234).await.expect("remove an unknown id");

    // The removed member's etcd stops itself.
    eventually(
        Duration::from_secs(10),
        "the removed member to exit",
        || async {
            Cluster::endpoint_status(&etcd.nodes[v].client_url, Duration::from_millis(300), None)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_refuses_to_break_quorum() {
    let mut etcd = EtcdCluster::start(3).await;
    let members = etcd
        .connect()
        .await
        .member_list()
        .await
        .expect("member list");
    let id_of = |i: usize| by_peer(&members, &etcd.nodes[i].peer_url)[0].id;
    // Stop a follower (stopping the leader would leave the cluster without
    // one until the election ends), ask the leader, and try to remove the
    // other follower.
    let lead = leader(&etcd).await;
    let ask = (0..3).find(|&i| id_of(i) == lead).expect("leader node");
    let down = (0..3).find(|&i| i != ask).expect("a follower");
    let up = (0..3)
        .find(|&i| i != ask && i != down)
        .expect("another follower");
    let (down_id, up_id) = (id_of(down), id_of(up));

    // etcd's strict reconfiguration check wants every voter connected for
    // 5 s before it counts it as active: let that pass first.
    let cluster = Cluster::connect(
        std::slice::from_ref(&etcd.nodes[ask].client_url),
        TIMEOUT,
        None,
    )
    .await
    .expect("connect");
    tokio::time::sleep(Duration::from_secs(5)).await;
    etcd.stop_node(down);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let health = cluster.voter_health(&members, TIMEOUT).await;
    let expected: Vec<(u64, bool)> = members.iter().map(|m| (m.id, m.id != down_id)).collect();
    assert_eq!(health, expected);

    // The leader and the stopped follower would be left: no active quorum.
    // etcd 3.4 says "unhealthy cluster" here, not "not enough started members".
    match cluster.remove(up_id).await {
        Err(Error::UnhealthyCluster { op }) => assert_eq!(op, "member_remove"),
        other => panic!("expected UnhealthyCluster, got {other:?}"),
    }
    // Removing the member that is down is fine.
    cluster
        .remove(down_id)
        .await
        .expect("remove the stopped member");
    etcd.forget(down);
    let members = cluster.member_list().await.expect("member list");
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(members.iter().all(|m| m.id != down_id), "{members:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_leader_to_a_follower() {
    let etcd = EtcdCluster::start(3).await;
    let cluster = etcd.connect().await;
    let members = cluster.member_list().await.expect("member list");
    let old = leader(&etcd).await;
    let target = members
        .iter()
        .find(|m| m.id != old)
        .expect("a follower")
        .clone();

    // etcd only takes MoveLeader on the leader.
    let follower_url = target.client_urls[0].clone();
    let mut direct = Cluster::connect(std::slice::from_ref(&follower_url), TIMEOUT, None)
        .await
        .expect("connect")
        .client();
    let err = direct.move_leader(target.id).await.expect_err("not leader");
    assert!(err.to_string().contains("etcdserver: not leader"), "{err}");

    cluster.move_leader(target.id).await.expect("move leader");
    for url in etcd.client_urls() {
        eventually(
            Duration::from_secs(5),
            "every member to see the new leader",
            || async {
                let s = Cluster::endpoint_status(&url, TIMEOUT, None).await.ok()?;
                (s.leader == target.id).then_some(())
            },
        )
        .await;
    }
    let status = Cluster::endpoint_status(&follower_url, TIMEOUT, None)
        .await
        .expect("status");
    assert!(status.is_leader(), "{status:?}");

    // Already leads: nothing to do.
    cluster
        .move_leader(target.id)
        .await
        .expect("move to the leader");
    match cluster.move_leader(0x1234).await {
        Err(Error::MemberNotFound { id, .. }) => assert_eq!(id, 0x1234),
        other => panic!("expected MemberNotFound, got {other:?}"),
    }

    let health = cluster.voter_health(&members, TIMEOUT).await;
    assert_eq!(health.len(), 3, "{health:?}");
    assert!(health.iter().all(|(_, ok)| *ok), "{health:?}");
}

/// With the first endpoint down, `member_list` moves to a member that
/// answers, and keeps using it (a client balanced over all endpoints would
/// fail some requests on the dead one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_list_fails_over_to_a_live_endpoint() {
    let mut etcd = EtcdCluster::start(3).await;
    let urls = etcd.client_urls();
    etcd.stop_node(0);
    let cluster = Cluster::connect(&urls, TIMEOUT, None)
        .await
        .expect("connect");
    for _ in 0..5 {
        let members = cluster
            .member_list()
            .await
            .expect("member list through a live endpoint");
        assert_eq!(members.len(), 3);
    }
    assert_ne!(
        cluster.client().member_list().await.map(|_| ()).ok(),
        None,
        "current client is live"
    );
    // Rebinding to a list that still holds the live endpoint keeps it.
    cluster.set_endpoints(&urls).await.expect("set endpoints");
    assert!(cluster.client().member_list().await.is_ok());
}
