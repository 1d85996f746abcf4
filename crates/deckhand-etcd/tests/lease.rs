//! The lease keeper against a real single-member etcd that restarts.

mod common;

use std::time::{Duration, Instant};

use common::{EtcdCluster, eventually};
use deckhand_etcd::LeaseKeeper;
use etcd_client::{Client, PutOptions};

const TTL: i64 = 3;

/// A put attached to `lease` succeeds (the lease is alive).
async fn put_with(client: &mut Client, lease: i64) -> bool {
    let put = client.put("status", "up", Some(PutOptions::new().with_lease(lease)));
    matches!(
        tokio::time::timeout(Duration::from_secs(1), put).await,
        Ok(Ok(_))
    )
}

/// The TTL etcd reports for `lease`: -1 when it does not exist.
async fn ttl_of(client: &mut Client, lease: i64) -> i64 {
    client
        .lease_time_to_live(lease, None)
        .await
        .map(|r| r.ttl())
        .unwrap_or(-2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_survives_restarts_and_is_replaced_when_lost() {
    let mut etcd = EtcdCluster::start(1).await;
    let mut client = etcd.client().await;
    let keeper = LeaseKeeper::spawn(client.clone(), TTL);
    let rx = keeper.lease();

    let first = eventually(Duration::from_secs(5), "a lease", || async {
        let id = *rx.borrow();
        (id != 0).then_some(id)
    })
    .await;
    assert!(
        put_with(&mut client, first).await,
        "put with the first lease"
    );

    // Kept alive well past its TTL.
    tokio::time::sleep(Duration::from_secs(TTL as u64 + 1)).await;
    assert_eq!(*rx.borrow(), first);
    assert!(ttl_of(&mut client, first).await > 0);

    // A short restart: etcd extends leases when a leader takes over, so the
    // lease survives and the keeper keeps it (or, had a keep-alive been late
    // past the TTL, replaces it).
    etcd.stop_node(0);
    tokio::time::sleep(Duration::from_millis(700)).await;
    etcd.start_node(0);
    etcd.wait_ready(0, Duration::from_secs(10))
        .await
        .expect("etcd back");
    let restarted = Instant::now();
    let after = eventually(
        Duration::from_secs(6),
        "a live lease after the restart",
        || {
            let rx = rx.clone();
            let mut client = client.clone();
            async move {
                let id = *rx.borrow();
                (id != 0 && put_with(&mut client, id).await).then_some(id)
            }
        },
    )
    .await;
    eprintln!(
        "after a short restart: lease {after:x} ({}), live {:?} after etcd answered",
        if after == first { "same" } else { "new" },
        restarted.elapsed()
    );
    assert_eq!(
        after, first,
        "the lease should have survived a short restart"
    );
    // And keep-alives resumed: without them the lease (extended by TTL plus
    // an election timeout when etcd came back) would be gone by now.
    tokio::time::sleep(Duration::from_secs(TTL as u64 + 1)).await;
    assert_eq!(*rx.borrow(), first);
    assert!(
        ttl_of(&mut client, first).await > 0,
        "lease expired after the restart"
    );

    // A long outage: past the TTL the keeper gives the lease up (publishes
    // 0), then grants a new one as soon as etcd is back.
    etcd.stop_node(0);
    let stopped = Instant::now();
    eventually(
        Duration::from_secs(TTL as u64 + 3),
        "the lease to be given up",
        || async { (*rx.borrow() == 0).then_some(()) },
    )
    .await;
    let given_up = stopped.elapsed();
    assert!(
        given_up >= Duration::from_secs(TTL as u64 - 1),
        "gave up after {given_up:?}"
    );
    tokio::time::sleep(Duration::from_secs(2 * TTL as u64 + 1).saturating_sub(stopped.elapsed()))
        .await;
    etcd.start_node(0);
    etcd.wait_ready(0, Duration::from_secs(10))
        .await
        .expect("etcd back");
    let new = eventually(Duration::from_secs(6), "a new lease", || async {
        let id = *rx.borrow();
        (id != 0).then_some(id)
    })
    .await;
    assert_ne!(
        new, after,
        "a lease out of contact past its TTL must be replaced"
    );
    assert!(put_with(&mut client, new).await, "put with the new lease");
    // The given-up lease is revoked once etcd answers again.
    eventually(
        Duration::from_secs(5),
        "the old lease to be revoked",
        || {
            let mut client = client.clone();
            async move { (ttl_of(&mut client, after).await == -1).then_some(()) }
        },
    )
    .await;

    keeper.revoke().await;
    assert_eq!(
        ttl_of(&mut client, new).await,
        -1,
        "revoked lease still exists"
    );
    let got = client.get("status", None).await.expect("get");
    assert!(got.kvs().is_empty(), "key of the revoked lease still there");
}

/// A TTL change done as the agent does it: grant a lease with the new TTL,
/// move every key of the old lease onto it, revoke the old one. A reader in
/// a tight loop never misses the status key, and the singleton candidacy
/// keeps leading (its create revision is kept) on the new lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_moved_to_a_new_lease_never_disappear() {
    use deckhand_etcd::election::{campaign, leader, resign};
    use deckhand_etcd::lease::move_keys;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    const ELECTION: &str = "/t/elections/demo-control.service";

    let etcd = EtcdCluster::start(1).await;
    let mut client = etcd.client().await;
    let old_keeper = LeaseKeeper::spawn(client.clone(), TTL);
    let new_keeper = LeaseKeeper::spawn(client.clone(), 2 * TTL);
    let live = |k: &LeaseKeeper| {
        let rx = k.lease();
        async move {
            eventually(Duration::from_secs(5), "a lease", || async {
                let id = *rx.borrow();
                (id != 0).then_some(id)
            })
            .await
        }
    };
    let old = live(&old_keeper).await;
    let new = live(&new_keeper).await;
    let other = client.lease_grant(60, None).await.expect("grant").id();
    client
        .put(
            "/t/status",
            "{\"up\":1}",
            Some(PutOptions::new().with_lease(old)),
        )
        .await
        .expect("put status");
    client
        .put("/t/lock", "me", Some(PutOptions::new().with_lease(old)))
        .await
        .expect("put lock");
    campaign(&mut client, ELECTION, old, "node1")
        .await
        .expect("campaign");
    campaign(&mut client, ELECTION, other, "node2")
        .await
        .expect("campaign");
    let before = client.get("/t/status", None).await.expect("get");
    let before = before.kvs()[0].clone();

    // The reader: every status read finds the key, every election read finds
    // node1 leading.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let mut c = client.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut reads, mut misses) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let st = c.get("/t/status", None).await.expect("get");
                if st.kvs().is_empty() {
                    misses.push(format!("status missing at revision {:?}", st.header()));
                }
                let v = leader(&mut c, ELECTION).await.expect("leader");
                if v.leader().map(|l| l.value.as_str()) != Some("node1") {
                    misses.push(format!("leader {:?}", v.leader()));
                }
                reads += 1;
            }
            (reads, misses)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut moved = move_keys(&mut client, old, new).await.expect("move");
    moved.sort();
    assert_eq!(
        moved,
        vec![
            format!("{ELECTION}/{old:x}"),
            "/t/lock".into(),
            "/t/status".into()
        ]
    );
    old_keeper.revoke().await;
    assert_eq!(ttl_of(&mut client, old).await, -1, "old lease revoked");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (reads, misses) = reader.await.expect("reader");
    assert!(reads > 5, "only {reads} reads");
    assert!(
        misses.is_empty(),
        "{} of {reads} reads missed: {misses:?}",
        misses.len()
    );

    let after = client.get("/t/status", None).await.expect("get");
    let after = &after.kvs()[0];
    assert_eq!(after.value(), before.value(), "value kept");
    assert_eq!(after.create_revision(), before.create_revision());
    assert_eq!(after.lease(), new);
    // The candidacy leads on the new lease; campaigning again with it adds
    // no second candidacy; resigning with it ends the moved one.
    let v = campaign(&mut client, ELECTION, new, "node1")
        .await
        .expect("campaign");
    assert!(v.leads(new), "{v:?}");
    assert_eq!(v.candidates.len(), 2, "{v:?}");
    resign(&mut client, ELECTION, new).await.expect("resign");
    let v = leader(&mut client, ELECTION).await.expect("leader");
    assert!(v.leads(other), "{v:?}");
    // Moving from a lease that is gone moves nothing.
    assert!(
        move_keys(&mut client, old, new)
            .await
            .expect("move")
            .is_empty()
    );
    new_keeper.revoke().await;
}
