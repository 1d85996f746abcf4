//! The resuming watch against a real etcd cluster whose member restarts.

mod common;

use std::time::Duration;

use common::{EtcdCluster, TIMEOUT};
use deckhand_etcd::{Cluster, KeyEvent, watch_key};
use tokio::sync::mpsc::Receiver;

const KEY: &str = "/deckhand/nodes/n1/role";

async fn next(rx: &mut Receiver<KeyEvent>) -> KeyEvent {
    tokio::time::timeout(Duration::from_secs(15), rx.recv())
        .await
        .expect("an event within 15 s")
        .expect("watcher alive")
}

fn put_value(event: &KeyEvent) -> (&str, &[u8]) {
    match event {
        KeyEvent::Put { key, value, .. } => (key, value),
        other => panic!("expected a put, got {other:?}"),
    }
}

async fn put(client: &mut etcd_client::Client, value: &str) -> i64 {
    client
        .put(KEY, value, None)
        .await
        .expect("put")
        .header()
        .expect("header")
        .revision()
}

/// A 3-member cluster; the watcher's client is bound to member 0 only, so
/// stopping member 0 breaks its stream while the others take writes. Member 0
/// is made a follower first, so stopping it needs no election (a write in
/// flight when the leader dies is lost, and would fail the test's put).
async fn setup() -> (EtcdCluster, etcd_client::Client, etcd_client::Client) {
    let etcd = EtcdCluster::start(3).await;
    let all = etcd.connect().await;
    let members = all.member_list().await.expect("member list");
    let m1 = members
        .iter()
        .find(|m| m.has_peer_url(&etcd.nodes[1].peer_url))
        .expect("m1")
        .id;
    all.move_leader(m1).await.expect("move leader to m1");
    let only_m0 = Cluster::connect(
        std::slice::from_ref(&etcd.nodes[0].client_url),
        TIMEOUT,
        None,
    )
    .await
    .expect("connect")
    .client();
    let others = Cluster::connect(
        &[
            etcd.nodes[1].client_url.clone(),
            etcd.nodes[2].client_url.clone(),
        ],
        TIMEOUT,
        None,
    )
    .await
    .expect("connect")
    .client();
    (etcd, only_m0, others)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_a_broken_stream_without_gaps() {
    let (mut etcd, watcher_client, mut writer) = setup().await;
    let r0 = put(&mut writer, "v0").await;
    let mut rx = watch_key(watcher_client, KEY.to_owned(), false);
    match next(&mut rx).await {
        KeyEvent::Snapshot { kvs, revision } => {
            assert!(revision >= r0);
            assert_eq!(kvs, vec![(KEY.to_owned(), b"v0".to_vec(), r0)]);
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }
    put(&mut writer, "v1").await;
    assert_eq!(put_value(&next(&mut rx).await), (KEY, &b"v1"[..]));

    etcd.stop_node(0);
    let r2 = put(&mut writer, "v2").await;
    writer.delete(KEY, None).await.expect("delete");
    let r4 = put(&mut writer, "v4").await;
    etcd.start_node(0);

    let e = next(&mut rx).await;
    assert_eq!(
        e,
        KeyEvent::Put {
            key: KEY.to_owned(),
            value: b"v2".to_vec(),
            mod_revision: r2
        }
    );
    assert_eq!(
        next(&mut rx).await,
        KeyEvent::Delete {
            key: KEY.to_owned(),
            mod_revision: r2 + 1
        }
    );
    assert_eq!(
        next(&mut rx).await,
        KeyEvent::Put {
            key: KEY.to_owned(),
            value: b"v4".to_vec(),
            mod_revision: r4
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resyncs_with_a_snapshot_after_compaction() {
    let (mut etcd, watcher_client, mut writer) = setup().await;
    let mut rx = watch_key(watcher_client, KEY.to_owned(), false);
    match next(&mut rx).await {
        KeyEvent::Snapshot { kvs, .. } => assert!(kvs.is_empty(), "{kvs:?}"),
        other => panic!("expected a snapshot, got {other:?}"),
    }
    put(&mut writer, "v1").await;
    put(&mut writer, "v2").await;
    assert_eq!(put_value(&next(&mut rx).await), (KEY, &b"v1"[..]));
    assert_eq!(put_value(&next(&mut rx).await), (KEY, &b"v2"[..]));

    // Break the stream, write more, and compact past what the watcher saw.
    etcd.stop_node(0);
    put(&mut writer, "v3").await;
    put(&mut writer, "v4").await;
    let r5 = put(&mut writer, "v5").await;
    writer
        .compact(
            r5,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .expect("compact");
    etcd.start_node(0);

    // v3 and v4 are lost to compaction: a snapshot with the latest value.
    match next(&mut rx).await {
        KeyEvent::Snapshot { kvs, revision } => {
            assert!(revision >= r5);
            assert_eq!(kvs, vec![(KEY.to_owned(), b"v5".to_vec(), r5)]);
        }
        other => panic!("expected a resync snapshot, got {other:?}"),
    }
    let r6 = put(&mut writer, "v6").await;
    assert_eq!(
        next(&mut rx).await,
        KeyEvent::Put {
            key: KEY.to_owned(),
            value: b"v6".to_vec(),
            mod_revision: r6
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prefix_reports_puts_and_deletes() {
    let etcd = EtcdCluster::start(1).await;
    let mut client = etcd.client().await;
    client.put("/p/a", "1", None).await.expect("put");
    client.put("/q", "x", None).await.expect("put");
    let mut rx = watch_key(client.clone(), "/p/".to_owned(), true);
    match next(&mut rx).await {
        KeyEvent::Snapshot { kvs, .. } => {
            let keys: Vec<&str> = kvs.iter().map(|(k, _, _)| k.as_str()).collect();
            assert_eq!(keys, ["/p/a"]);
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }
    client.put("/q", "y", None).await.expect("put");
    client.put("/p/b", "2", None).await.expect("put");
    client.delete("/p/a", None).await.expect("delete");
    assert_eq!(put_value(&next(&mut rx).await), ("/p/b", &b"2"[..]));
    match next(&mut rx).await {
        KeyEvent::Delete { key, .. } => assert_eq!(key, "/p/a"),
        other => panic!("expected a delete, got {other:?}"),
    }
    drop(rx);
}
