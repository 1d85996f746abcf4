//! A real etcd's snapshot restored into a member data dir, refusals that
//! change nothing, and the identity etcd gives a restored member.

use std::process::{Child, Command, Stdio};

use super::*;
use crate::backup::take::{Take, cluster_id, take};
use crate::testing::Etcd;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A snapshot of a real etcd holding `n` keys under `/t/k`, with its
/// manifest, in `<dir>/<cluster id>/`.
async fn snapshot(dir: &Path, n: usize) -> (PathBuf, Manifest) {
    let etcd = Etcd::start().await;
    let mut c = etcd.client().await;
    for i in 0..n {
        c.put(format!("/t/k{i}"), format!("v{i}"), None)
            .await
            .unwrap();
    }
    let store = crate::store::Store::new(
        c.clone(),
        deckhand_model::Keyspace::new("/t"),
        Duration::from_secs(5),
    );
    let cid = cluster_id(&store).await.unwrap();
    let member = deckhand_etcd::Member {
        id: 7,
        name: "one".into(),
        peer_urls: vec![],
        client_urls: vec![etcd.url.clone()],
        is_learner: false,
    };
    let m = take(Take {
        cluster_id: &cid,
        dir,
        member: &member,
        tls: None,
        node: "n1",
        now: crate::agent::observe::unix_now,
        request: None,
    })
    .await
    .unwrap();
    (PathBuf::from(&m.path), m)
}

fn request(snapshot: &Path, data: &Path, state: &Path, peer: &str) -> Request {
    Request {
        snapshot: snapshot.to_owned(),
        cluster_id: None,
        members: vec![
            ("n1".into(), peer.into()),
            ("n2".into(), "http://127.0.0.1:1".into()),
            ("n3".into(), "http://127.0.0.1:2".into()),
        ],
        name: "n1".into(),
        peer_url: peer.into(),
        token: None,
        data_dir: data.to_owned(),
        state_dir: state.to_owned(),
    }
}

/// Every file and directory under `root`, with its size: what a refusal
/// must leave as it was.
fn tree(root: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        out.push((p.clone(), if md.is_dir() { 0 } else { md.len() }));
        if md.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn members_parse_and_refuse() {
    let m = parse_members("n1=https://10.0.0.1:2380, n2=https://10.0.0.2:2380").unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(
        initial_cluster(&m),
        "n1=https://10.0.0.1:2380,n2=https://10.0.0.2:2380"
    );
    for bad in [
        "",
        "n1",
        "n1=10.0.0.1:2380",
        "=http://a:1",
        "n1=http://a:1,n1=http://b:1",
        "n1=http://a:x",
    ] {
        assert!(
            matches!(parse_members(bad), Err(Refused::Usage(_))),
            "{bad:?}"
        );
    }
    let e = resolve_snapshot("s3://bucket/c/x.db")
        .unwrap_err()
        .to_string();
    assert!(e.contains("downloaded first"), "{e}");
    assert_eq!(s3_key("s3://b/p/c/x.db"), Some("s3://b/p/c/x.db"));
    assert_eq!(s3_key("s3:p/c/x.db"), Some("p/c/x.db"));
    assert_eq!(s3_key("/var/x.db"), None);
    assert_eq!(
        resolve_snapshot("/b/x.db").unwrap(),
        PathBuf::from("/b/x.db")
    );
}

#[tokio::test]
async fn bad_snapshots_are_refused_and_nothing_changes() {
    let root = tempfile::tempdir().unwrap();
    let backups = root.path().join("backups");
    let (path, m) = snapshot(&backups, 20).await;
    let data = root.path().join("etcd/member");
    std::fs::create_dir_all(data.join("member/wal")).unwrap();
    std::fs::write(data.join("member/wal/x.wal"), b"old").unwrap();
    let state = root.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join(crate::paths::MEMBER_ENV), b"ETCD_NAME=n1\n").unwrap();
    let peer = "http://127.0.0.1:3";
    let bytes = std::fs::read(&path).unwrap();
    let folder = path.parent().unwrap().to_owned();
    let copy = |name: &str, b: &[u8], manifest: &Manifest| {
        let p = folder.join(name);
        std::fs::write(&p, b).unwrap();
        std::fs::write(
            backup::manifest_path(&p),
            serde_json::to_vec(manifest).unwrap(),
        )
        .unwrap();
        p
    };
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 3] ^= 0x10;
    let cases = [
        (copy("flipped.db", &flipped, &m), "SHA-256 does not match"),
        (
            copy("short.db", &bytes[..bytes.len() - 4096], &m),
            "SHA-256 does not match",
        ),
        (
            copy(
                "other.db",
                &bytes,
                &Manifest {
                    cluster_id: "0".repeat(32),
                    ..m.clone()
                },
            ),
            "names deckhand cluster 00000000",
        ),
    ];
    let before = tree(root.path());
    for (file, want) in &cases {
        let e = check(request(file, &data, &state, peer)).await.unwrap_err();
        assert!(matches!(e, Refused::Snapshot(_)), "{file:?}: {e}");
        assert!(e.to_string().contains(want), "{file:?}: {e}");
    }
    // No manifest at all; a peer URL that is not this node's; a node not named.
    let bare = folder.join("bare.db");
    std::fs::write(&bare, &bytes).unwrap();
    let e = check(request(&bare, &data, &state, peer))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no manifest"), "{e}");
    let mut r = request(&path, &data, &state, peer);
    r.peer_url = "http://127.0.0.1:4".into();
    let e = check(r).await.unwrap_err();
    assert!(e.to_string().contains("this node's is"), "{e}");
    let mut r = request(&path, &data, &state, peer);
    r.name = "n9".into();
    assert!(matches!(check(r).await, Err(Refused::Usage(_))));
    // The right cluster id given by flag, a wrong one refused.
    let mut r = request(&path, &data, &state, peer);
    r.cluster_id = Some("f".repeat(32));
    let e = check(r).await.unwrap_err();
    assert!(e.to_string().contains("another cluster"), "{e}");
    let mut after = tree(root.path());
    after.retain(|(p, _)| *p != bare);
    assert_eq!(after, before, "a refusal changes nothing");
    // And the good one passes.
    let c = check(request(&path, &data, &state, peer)).await.unwrap();
    assert_eq!(c.verified.sha256, m.sha256);
    assert!(c.already.is_none());
    // Three members: etcdctl gives this one the identity deckhand expects
    // (prepare refuses otherwise), and the data dir is still the old one.
    let (prepared, id) = prepare(&c, crate::agent::observe::unix_now())
        .await
        .unwrap();
    assert_eq!(id, c.identity);
    assert!(prepared.starts_with(root.path().join("etcd")));
    assert_eq!(
        std::fs::read(data.join("member/wal/x.wal")).unwrap(),
        b"old"
    );
}

#[tokio::test]
async fn a_snapshot_becomes_this_members_data_dir_and_a_rerun_knows_it() {
    let root = tempfile::tempdir().unwrap();
    let backups = root.path().join("backups");
    let (path, m) = snapshot(&backups, 300).await;
    let data = root.path().join("etcd/member");
    std::fs::create_dir_all(data.join("member")).unwrap();
    std::fs::write(data.join("member/old-file"), b"old").unwrap();
    let state = root.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let env = state.join(crate::paths::MEMBER_ENV);
    std::fs::write(&env, b"ETCD_NAME=old\n").unwrap();
    let (client_port, peer_port) = (free_port(), free_port());
    let peer = format!("http://127.0.0.1:{peer_port}");
    let url = format!("http://127.0.0.1:{client_port}");
    // One member only: it has quorum on its own, so it can be read.
    let mut r = request(&path, &data, &state, &peer);
    r.members.truncate(1);
    let c = check(r.clone()).await.unwrap();
    let now = crate::agent::observe::unix_now();
    let (prepared, id) = prepare(&c, now).await.unwrap();
    assert_eq!(id, c.identity, "etcd computes what deckhand expects");
    assert!(
        data.join("member/old-file").exists(),
        "prepare moves nothing"
    );
    let done = install(&c, &prepared, "ETCD_NAME=n1\n", now).unwrap();
    let aside = done.data_dir_aside.clone().unwrap();
    assert!(
        aside
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("member.old-"),
        "{aside:?}"
    );
    assert_eq!(
        std::fs::read(aside.join("member/old-file")).unwrap(),
        b"old"
    );
    assert_eq!(
        std::fs::read(done.env_aside.unwrap()).unwrap(),
        b"ETCD_NAME=old\n"
    );
    assert!(state.join(crate::paths::BOOTSTRAPPED).exists());
    assert_eq!(wal::read_identity(&data).unwrap(), Some(c.identity));
    let marker = read_marker(&state).unwrap();
    assert_eq!(marker.sha256, m.sha256);

    // A second run of the same restore: already done.
    let again = check(r.clone()).await.unwrap();
    assert_eq!(again.already.as_ref(), Some(&marker));
    // Another token is another cluster: not "already".
    let mut other = r.clone();
    other.token = Some("x".into());
    assert!(check(other).await.unwrap().already.is_none());

    // etcd starts on it as the new cluster and holds the keys.
    let child = Command::new("etcd")
        .args(["--name", "n1", "--data-dir"])
        .arg(&data)
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _etcd = Killed(child);
    let mut client = None;
    for _ in 0..100 {
        if let Ok(c) = crate::connect::first_answering(
            std::slice::from_ref(&url),
            Duration::from_secs(2),
            None,
        )
        .await
            && c.clone().get("/t/k0", None).await.is_ok()
        {
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut client = client.expect("the restored member answers");
    let resp = client
        .get(
            "/t/k",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(resp.count(), 300);
    let h = resp.header().unwrap();
    assert_eq!(h.cluster_id(), c.identity.cluster_id);
    assert_eq!(h.member_id(), c.identity.member_id);
    assert!(
        h.revision() >= m.revision,
        "the snapshot's revision goes on"
    );
    let cid = client.get("/t/backup/cluster-id", None).await.unwrap();
    assert_eq!(cid.kvs()[0].value_str().unwrap(), m.cluster_id);
}

#[test]
fn the_expected_identity_is_deterministic_and_depends_on_the_token() {
    let members = vec![
        ("a".to_string(), "https://10.0.0.1:2380".to_string()),
        ("b".to_string(), "https://10.0.0.2:2380".to_string()),
    ];
    let x = expected_identity(&members, "a", "t1").unwrap();
    let y = expected_identity(&members, "b", "t1").unwrap();
    assert_eq!(x.cluster_id, y.cluster_id, "one cluster");
    assert_ne!(x.member_id, y.member_id);
    let z = expected_identity(&members, "a", "t2").unwrap();
    assert_ne!(z.cluster_id, x.cluster_id);
    assert!(expected_identity(&members, "c", "t1").is_none());
    assert_eq!(
        default_token("abcdef0123456789ffff"),
        "deckhand-restore-abcdef0123456789"
    );
}

#[test]
fn restore_expect_in_the_config_keeps_a_node_from_bootstrapping() {
    use crate::config::{parse_fragment, validate};
    let base = "[etcd]\nendpoints=[\"http://10.0.0.2:2379\"]\n";
    assert!(
        !validate(parse_fragment(base).unwrap())
            .unwrap()
            .expect_restore
    );
    let s =
        validate(parse_fragment(&format!("{base}[restore]\nexpect = true\n")).unwrap()).unwrap();
    assert!(s.expect_restore);
    assert!(
        parse_fragment("[restore]\nexpected = true\n").is_err(),
        "unknown keys refused"
    );
    // What the planner does with it: an initial member with an empty disk
    // and no voter to reach starts a proxy instead of a new cluster.
    use deckhand_plan::{LocalView, LockView, Observation};
    let mut o = Observation {
        node_name: "node1".into(),
        peer_url: "http://10.0.0.1:2380".into(),
        desired: None,
        in_initial_cluster: true,
        config_endpoints: vec!["http://10.0.0.2:2379".into()],
        min_voters: 3,
        local: LocalView {
            bootstrapped: true,
            ..LocalView::default()
        },
        cluster: None,
        lock: LockView::Free,
        learner_timeout: 300,
        voter_start_timeout: 300,
        pending: Default::default(),
        down: Default::default(),
        identity: Default::default(),
    };
    assert!(matches!(
        deckhand_plan::plan(&o),
        deckhand_plan::Step::StartProxy { .. }
    ));
    o.local.bootstrapped = false;
    assert!(matches!(
        deckhand_plan::plan(&o),
        deckhand_plan::Step::BootstrapMember
    ));
}

/// The same restore on three "nodes" (three data dirs, three etcd
/// processes on loopback), each given only the file and the member list:
/// they form one cluster, the one deckhand computed, holding the keys.
#[tokio::test]
async fn three_members_restored_apart_form_one_cluster() {
    let root = tempfile::tempdir().unwrap();
    let (path, m) = snapshot(&root.path().join("backups"), 50).await;
    let nodes: Vec<(String, u16, u16)> = (1..=3)
        .map(|k| (format!("n{k}"), free_port(), free_port()))
        .collect();
    let members: Vec<(String, String)> = nodes
        .iter()
        .map(|(n, _, p)| (n.clone(), format!("http://127.0.0.1:{p}")))
        .collect();
    let mut running = Vec::new();
    let mut ids = Vec::new();
    for (name, client, peer) in &nodes {
        let base = root.path().join(name);
        std::fs::create_dir_all(base.join("state")).unwrap();
        std::fs::create_dir_all(base.join("etcd")).unwrap();
        let data = base.join("etcd/member");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let c = check(Request {
            snapshot: path.clone(),
            cluster_id: None,
            members: members.clone(),
            name: name.clone(),
            peer_url: peer_url.clone(),
            token: None,
            data_dir: data.clone(),
            state_dir: base.join("state"),
        })
        .await
        .unwrap();
        let now = crate::agent::observe::unix_now();
        let (prepared, id) = prepare(&c, now).await.unwrap();
        install(&c, &prepared, "", now).unwrap();
        ids.push(id);
        let url = format!("http://127.0.0.1:{client}");
        let child = Command::new("etcd")
            .args(["--name", name, "--data-dir"])
            .arg(&data)
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        running.push(Killed(child));
    }
    assert!(ids.iter().all(|i| i.cluster_id == ids[0].cluster_id));
    let urls: Vec<String> = nodes
        .iter()
        .map(|(_, c, _)| format!("http://127.0.0.1:{c}"))
        .collect();
    let mut got = None;
    for _ in 0..150 {
        if let Ok(mut c) =
            crate::connect::first_answering(&urls[2..], Duration::from_secs(2), None).await
            && let Ok(r) = c
                .get("/t/k", Some(etcd_client::GetOptions::new().with_prefix()))
                .await
        {
            got = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = got.expect("the third member answers a linearizable read: the three form a quorum");
    assert_eq!(r.kvs().len(), 50);
    assert_eq!(r.header().unwrap().cluster_id(), ids[0].cluster_id);
    let list = deckhand_etcd::Cluster::connect(&urls, Duration::from_secs(2), None)
        .await
        .unwrap()
        .member_list()
        .await
        .unwrap();
    let mut listed: Vec<u64> = list.iter().map(|m| m.id).collect();
    let mut want: Vec<u64> = ids.iter().map(|i| i.member_id).collect();
    listed.sort_unstable();
    want.sort_unstable();
    assert_eq!(listed, want);
    assert!(m.revision > 0);
}
