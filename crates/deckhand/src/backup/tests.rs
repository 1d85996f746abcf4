//! Snapshots of a real etcd: taken, verified, refused when damaged, pruned.

use super::take::{Take, cluster_id, pick_voter, take};
use super::*;
use crate::testing::Etcd;

fn now() -> u64 {
    crate::agent::observe::unix_now()
}

#[test]
fn names() {
    let n = file_name(1_796_239_697, 42);
    assert_eq!(n, "20261202T192817Z-rev42.db");
    assert_eq!(revision_of_name(&n), Some(42));
    assert_eq!(revision_of_name("20261202T192817Z-rev0.db"), None);
    assert_eq!(revision_of_name("x-rev4.db"), None);
    assert_eq!(revision_of_name(".tmp-1.db"), None);
}

#[test]
fn voters_only_healthy_and_own_first() {
    let m = |id, name: &str, learner| deckhand_etcd::Member {
        id,
        name: name.into(),
        peer_urls: vec![],
        client_urls: vec![format!("http://{name}:2379")],
        is_learner: learner,
    };
    let members = [m(1, "a", false), m(2, "b", false), m(3, "c", true)];
    let h = [(1, false), (2, true)];
    assert_eq!(
        pick_voter(&members, &h, "c").unwrap().name,
        "b",
        "never the learner"
    );
    assert_eq!(
        pick_voter(&members, &h, "a").unwrap().name,
        "b",
        "never an unhealthy voter"
    );
    let h = [(1, true), (2, true)];
    assert_eq!(pick_voter(&members, &h, "b").unwrap().name, "b");
    assert_eq!(pick_voter(&members, &h, "x").unwrap().name, "a");
    assert!(pick_voter(&members, &[], "a").is_none());
}

#[tokio::test]
async fn a_snapshot_is_verified_and_damage_is_refused() {
    let etcd = Etcd::start().await;
    let mut c = etcd.client().await;
    for i in 0..50 {
        c.put(format!("/t/k{i}"), vec![b'x'; 100], None)
            .await
            .unwrap();
    }
    let store = crate::store::Store::new(
        c.clone(),
        deckhand_model::Keyspace::new("/t"),
        std::time::Duration::from_secs(5),
    );
    let cid = cluster_id(&store).await.unwrap();
    assert_eq!(cluster_id(&store).await.unwrap(), cid, "made once");
    let dir = tempfile::tempdir().unwrap();
    let member = deckhand_etcd::Member {
        id: 7,
        name: "one".into(),
        peer_urls: vec![],
        client_urls: vec![etcd.url.clone()],
        is_learner: false,
    };
    let m = take(Take {
        cluster_id: &cid,
        dir: dir.path(),
        member: &member,
        tls: None,
        node: "n1",
        now,
        request: Some("r1".into()),
    })
    .await
    .unwrap();
    let rev = c
        .get("/t/k0", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    assert_eq!(
        m.revision, rev,
        "no write since: the snapshot holds the head revision"
    );
    assert!(m.keys >= 51, "{} keys", m.keys);
    let path = std::path::PathBuf::from(&m.path);
    assert_eq!(path.parent().unwrap(), dir.path().join(&cid));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), m.size);
    let listed = list_local(dir.path(), None).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].manifest.as_ref(), Some(&m));
    verify(&path, Some(&m)).await.expect("the manifest matches");

    // A flipped byte in the database, a truncated copy, a lying manifest.
    let bytes = std::fs::read(&path).unwrap();
    let copy = |name: &str, b: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x01;
    let e = verify(&copy("flipped.db", &flipped), None)
        .await
        .unwrap_err();
    assert!(e.why.contains("SHA-256 does not match"), "{e}");
    let e = verify(&copy("short.db", &bytes[..bytes.len() - 100]), None)
        .await
        .unwrap_err();
    assert!(e.why.contains("not a database of whole pages"), "{e}");
    // Cut at a page: the size looks right, the hash does not.
    let e = verify(&copy("page.db", &bytes[..bytes.len() - 4096]), None)
        .await
        .unwrap_err();
    assert!(e.why.contains("SHA-256 does not match"), "{e}");
    let e = verify(&copy("empty.db", b""), None).await.unwrap_err();
    assert!(e.why.contains("0 bytes"), "{e}");
    // Whole pages and a right hash, but not bbolt: etcdctl refuses.
    let mut junk = vec![0u8; 8192];
    let h = ring::digest::digest(&ring::digest::SHA256, &junk);
    junk.extend_from_slice(h.as_ref());
    let e = verify(&copy("junk.db", &junk), None).await.unwrap_err();
    assert!(e.why.contains("does not open as an etcd database"), "{e}");
    let lying = Manifest {
        keys: m.keys + 1,
        ..m.clone()
    };
    let e = verify(&path, Some(&lying)).await.unwrap_err();
    assert!(e.why.contains("claims key count"), "{e}");
    let renamed = copy(&file_name(m.taken_at, m.revision + 1), &bytes);
    let e = verify(&renamed, None).await.unwrap_err();
    assert!(e.why.contains("name claims revision"), "{e}");

    // Retention: an old verified snapshot goes, the newest stays.
    let old = dir.path().join(&cid).join(file_name(1_000_000, m.revision));
    std::fs::copy(&path, &old).unwrap();
    let old_m = Manifest {
        taken_at: 1_000_000,
        ..m.clone()
    };
    std::fs::write(manifest_path(&old), serde_json::to_vec(&old_m).unwrap()).unwrap();
    let unverified = dir.path().join(&cid).join(file_name(2_000_000, m.revision));
    std::fs::copy(&path, &unverified).unwrap();
    let deleted = prune(dir.path(), &cid, now(), &Default::default()).unwrap();
    assert_eq!(deleted, vec![old.clone()]);
    assert!(!manifest_path(&old).exists());
    assert!(
        path.exists() && unverified.exists(),
        "newest and unmanifested stay"
    );
}
