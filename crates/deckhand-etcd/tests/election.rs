//! Singleton elections against a real etcd: revision order, idempotent
//! campaigns, resignation, and a candidacy that goes with its lease.

mod common;

use std::time::Duration;

use common::{EtcdCluster, eventually};
use deckhand_etcd::election::{campaign, leader, remove_candidate, resign};

const ELECTION: &str = "/deckhand/elections/demo-control.service";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_candidate_leads_until_it_resigns_or_its_lease_expires() {
    let etcd = EtcdCluster::start(1).await;
    let mut client = etcd.client().await;
    let a = client.lease_grant(60, None).await.expect("grant").id();
    let b = client.lease_grant(60, None).await.expect("grant").id();
    let c = client.lease_grant(5, None).await.expect("grant").id();

    let v = campaign(&mut client, ELECTION, a, "node1")
        .await
        .expect("campaign");
    assert!(v.leads(a));
    assert_eq!(v.leader().unwrap().value, "node1");
    assert_eq!(
        v.leader().unwrap().key,
        format!("{ELECTION}/{a:x}"),
        "etcd's election key layout"
    );

    let v = campaign(&mut client, ELECTION, b, "node2")
        .await
        .expect("campaign");
    assert!(!v.leads(b), "a later candidate does not lead");
    assert!(v.leads(a));
    assert_eq!(v.candidates.len(), 2);

    // Campaigning again keeps the place: a stays first, b second.
    let again = campaign(&mut client, ELECTION, a, "node1")
        .await
        .expect("campaign");
    assert_eq!(again.candidates, v.candidates);
    assert!(!v.leads(0), "lease 0 never leads");

    // a resigns: b leads at once.
    resign(&mut client, ELECTION, a).await.expect("resign");
    let v = leader(&mut client, ELECTION).await.expect("leader");
    assert!(v.leads(b));
    assert_eq!(v.candidates.len(), 1);
    resign(&mut client, ELECTION, a)
        .await
        .expect("resigning twice is fine");

    // c enters behind b; b's removal only happens while the key is still
    // on b's lease.
    campaign(&mut client, ELECTION, c, "node3")
        .await
        .expect("campaign");
    let b_key = format!("{ELECTION}/{b:x}");
    assert!(!remove_candidate(&mut client, &b_key, c).await.expect("txn"));
    assert!(leader(&mut client, ELECTION).await.unwrap().leads(b));
    assert!(remove_candidate(&mut client, &b_key, b).await.expect("txn"));
    assert!(leader(&mut client, ELECTION).await.unwrap().leads(c));

    // c's lease (TTL 5 s) is not kept alive: its candidacy goes with it.
    let mut probe = client.clone();
    eventually(Duration::from_secs(20), "c's candidacy to expire", || {
        let mut client = probe.clone();
        async move {
            let v = leader(&mut client, ELECTION).await.ok()?;
            v.candidates.is_empty().then_some(())
        }
    })
    .await;
    let v = leader(&mut probe, ELECTION).await.expect("leader");
    assert_eq!(v.leader(), None);
}
