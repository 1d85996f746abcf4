//! The membership lock against a real etcd.

mod common;

use common::EtcdCluster;
use deckhand_etcd::{LockOutcome, try_lock, unlock};

const KEY: &str = "/deckhand/locks/membership";

async fn holder(client: &mut etcd_client::Client) -> Option<(String, i64)> {
    let got = client.get(KEY, None).await.expect("get");
    got.kvs()
        .first()
        .map(|kv| (String::from_utf8_lossy(kv.value()).into_owned(), kv.lease()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_is_exclusive_reentrant_and_released_by_owner_only() {
    let etcd = EtcdCluster::start(1).await;
    let mut client = etcd.client().await;
    let lease_a = client.lease_grant(30, None).await.expect("grant").id();

    assert_eq!(
        try_lock(&mut client, KEY, "a", lease_a)
            .await
            .expect("lock"),
        LockOutcome::Acquired
    );
    assert_eq!(holder(&mut client).await, Some(("a".to_owned(), lease_a)));
    assert_eq!(
        try_lock(&mut client, KEY, "b", 0).await.expect("lock"),
        LockOutcome::HeldBy("a".to_owned())
    );

    // Not the owner: nothing happens.
    unlock(&mut client, KEY, "b").await.expect("unlock");
    assert_eq!(
        try_lock(&mut client, KEY, "b", 0).await.expect("lock"),
        LockOutcome::HeldBy("a".to_owned())
    );

    // Re-entrant, and moves to the owner's new lease.
    let lease_a2 = client.lease_grant(30, None).await.expect("grant").id();
    assert_eq!(
        try_lock(&mut client, KEY, "a", lease_a2)
            .await
            .expect("lock"),
        LockOutcome::Acquired
    );
    assert_eq!(holder(&mut client).await, Some(("a".to_owned(), lease_a2)));

    unlock(&mut client, KEY, "a").await.expect("unlock");
    assert_eq!(holder(&mut client).await, None);
    unlock(&mut client, KEY, "a")
        .await
        .expect("unlock a free lock");

    let lease_b = client.lease_grant(30, None).await.expect("grant").id();
    assert_eq!(
        try_lock(&mut client, KEY, "b", lease_b)
            .await
            .expect("lock"),
        LockOutcome::Acquired
    );
    assert_eq!(
        try_lock(&mut client, KEY, "a", lease_a2)
            .await
            .expect("lock"),
        LockOutcome::HeldBy("b".to_owned())
    );

    // The holder's lease ends: the lock is free.
    client.lease_revoke(lease_b).await.expect("revoke");
    assert_eq!(
        try_lock(&mut client, KEY, "a", lease_a2)
            .await
            .expect("lock"),
        LockOutcome::Acquired
    );

    // A lock on an expired lease is refused by etcd, not taken.
    client.lease_revoke(lease_a).await.expect("revoke");
    unlock(&mut client, KEY, "a").await.expect("unlock");
    assert!(try_lock(&mut client, KEY, "c", lease_a).await.is_err());
    assert_eq!(holder(&mut client).await, None);
}
