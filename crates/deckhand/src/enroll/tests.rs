//! The whole path against a real etcd with mutual TLS on loopback: a
//! request, the signer's challenge and signature, the requester's check
//! and installation; a refusal reported; a renewal; and etcd serving a
//! replaced leaf certificate without a restart.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deckhand_model::pki::RequestKind;
use deckhand_model::{EtcdMode, Keyspace};

use super::requester::{Ask, ask_and_install};
use super::signer::Signer;
use crate::config::TlsSettings;
use crate::store::Store;
use crate::testing::{Etcd, node_status};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node directory holding only the CA certificate (what the install file
/// carries), and the [tls] settings naming files there.
fn joining_node(etcd_tls: &TlsSettings) -> (tempfile::TempDir, TlsSettings) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&etcd_tls.ca_file, dir.path().join("ca.crt")).unwrap();
    let s = TlsSettings {
        ca_file: dir.path().join("ca.crt"),
        cert_file: dir.path().join("node.crt"),
        key_file: dir.path().join("node.key"),
        proxy_cert_file: dir.path().join("proxy.crt"),
        proxy_key_file: dir.path().join("proxy.key"),
        ..Default::default()
    };
    (dir, s)
}

fn signer_for(etcd: &Etcd, port: u16) -> Signer {
    let t = etcd.tls.as_ref().unwrap();
    let key = t.ca_file.with_file_name("ca.key");
    let mut s = Signer::load(&t.ca_file, &key, "signer").unwrap();
    // Every claimed address is reached at the test's port on loopback.
    s.dial = Arc::new(move |_| SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port));
    s
}

async fn store_of(etcd: &Etcd) -> Store {
    Store::new(
        etcd.client().await,
        Keyspace::new("/t"),
        Duration::from_secs(5),
    )
}

fn ask(id: &str, name: &str, port: u16) -> Ask {
    Ask {
        node_id: id.into(),
        name: name.into(),
        address: "10.0.0.4".parse().unwrap(),
        kind: RequestKind::Join,
        current: None,
        listen: SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port),
    }
}

#[tokio::test]
async fn a_join_and_a_renewal_through_a_tls_etcd() {
    let etcd = Etcd::start_tls().await;
    let store = store_of(&etcd).await;
    let port = free_port();
    let (_dir, node) = joining_node(etcd.tls.as_ref().unwrap());
    let reports = Arc::new(Mutex::new(Vec::<String>::new()));
    let (s2, n2, r2) = (store.clone(), node.clone(), reports.clone());
    let a = ask("id4", "n4", port);
    let join = tokio::spawn(async move {
        ask_and_install(&s2, &n2, &a, |r| r2.lock().unwrap().push(r.to_string())).await
    });
    let mut signer = signer_for(&etcd, port);
    let mut signed = Vec::new();
    for _ in 0..100 {
        if join.is_finished() {
            break;
        }
        signed.extend(signer.pass(&store, &[], true).await.unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let installed = join.await.unwrap().unwrap();
    assert_eq!(installed.len(), 4);
    assert!(
        signed
            .iter()
            .any(|n| n.contains("signed the join request of n4")),
        "{signed:?}"
    );
    // What the agent checks at start-up passes on the installed files.
    let t = crate::tls::load_node(&node).unwrap();
    assert_eq!(t.node.common_name, "node:n4");
    assert!(t.proxy.common_name.is_empty());
    assert!(
        reports
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.contains("installed")),
        "{reports:?}"
    );
    // The request and its answers are gone.
    assert!(store.pki().await.unwrap().is_empty());

    // A renewal: the node is live now (its status), and renews with its
    // current certificate; the old files are kept.
    let mut st = node_status("n4", EtcdMode::Proxy);
    st.id = "id4".into();
    st.address = "10.0.0.4".into();
    let lease = store.client().lease_grant(30, None).await.unwrap().id();
    store.put_status(&st, lease).await.unwrap();
    let old_cert = std::fs::read_to_string(&node.cert_file).unwrap();
    let old_key = std::fs::read_to_string(&node.key_file).unwrap();
    let mut a = ask("id4", "n4", port);
    a.kind = RequestKind::Renew;
    a.current = Some((old_cert.clone(), old_key));
    // A join for the live node's id is refused first (it must renew).
    let mut j = ask("id4", "n4", port);
    j.kind = RequestKind::Join;
    let (s2, n2, r3) = (
        store.clone(),
        node.clone(),
        Arc::new(Mutex::new(Vec::<String>::new())),
    );
    let r3b = r3.clone();
    let wrong = tokio::spawn(async move {
        ask_and_install(&s2, &n2, &j, |r| r3b.lock().unwrap().push(r.to_string())).await
    });
    for _ in 0..50 {
        signer.pass(&store, &[], true).await.unwrap();
        if r3.lock().unwrap().iter().any(|r| r.contains("refused")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wrong.abort();
    let _ = wrong.await;
    let said = r3.lock().unwrap().clone();
    assert!(
        said.iter()
            .any(|r| r.contains("refused by signer") && r.contains("kind renew")),
        "{said:?}"
    );
    let (s2, n2) = (store.clone(), node.clone());
    let renew = tokio::spawn(async move { ask_and_install(&s2, &n2, &a, |_| {}).await });
    for _ in 0..100 {
        if renew.is_finished() {
            break;
        }
        signer.pass(&store, &[], true).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let installed = renew.await.unwrap().unwrap();
    let kept = installed[1].old.clone().expect("the old certificate kept");
    assert_eq!(std::fs::read_to_string(kept).unwrap(), old_cert);
    assert_ne!(std::fs::read_to_string(&node.cert_file).unwrap(), old_cert);
    crate::tls::load_node(&node).unwrap();
}

#[tokio::test]
async fn a_live_nodes_name_is_refused_and_the_requester_says_why() {
    let etcd = Etcd::start_tls().await;
    let store = store_of(&etcd).await;
    let port = free_port();
    let mut st = node_status("n1", EtcdMode::Member);
    st.id = "id1".into();
    let lease = store.client().lease_grant(30, None).await.unwrap().id();
    store.put_status(&st, lease).await.unwrap();
    let (_dir, node) = joining_node(etcd.tls.as_ref().unwrap());
    let reports = Arc::new(Mutex::new(Vec::<String>::new()));
    let (s2, n2, r2) = (store.clone(), node.clone(), reports.clone());
    let a = ask("id9", "n1", port);
    let task = tokio::spawn(async move {
        ask_and_install(&s2, &n2, &a, |r| r2.lock().unwrap().push(r.to_string())).await
    });
    let mut signer = signer_for(&etcd, port);
    for _ in 0..50 {
        signer.pass(&store, &[], true).await.unwrap();
        if reports
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.contains("refused"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!task.is_finished(), "a refused requester keeps waiting");
    task.abort();
    let said = reports.lock().unwrap().clone();
    assert!(
        said.iter()
            .any(|r| r.contains("refused by signer: the name n1 is live node id1's")),
        "{said:?}"
    );
    assert!(!node.cert_file.exists(), "nothing installed");
    let pending = crate::cli::pki::pending_of(&store.pki().await.unwrap());
    assert!(
        pending[0]
            .state
            .starts_with("refused: the name n1 is live node id1's"),
        "{pending:?}"
    );
    // The refusal is in etcd, for `deckhand pki pending`.
    let keys = store.pki_of("id9").await.unwrap();
    assert!(
        keys.refused
            .unwrap()
            .unwrap()
            .reason
            .contains("live node id1")
    );
}

#[tokio::test]
async fn without_auto_sign_a_request_waits_for_its_approval() {
    let etcd = Etcd::start_tls().await;
    let store = store_of(&etcd).await;
    let port = free_port();
    let (_dir, node) = joining_node(etcd.tls.as_ref().unwrap());
    let (s2, n2) = (store.clone(), node.clone());
    let a = ask("id4", "n4", port);
    let task = tokio::spawn(async move { ask_and_install(&s2, &n2, &a, |_| {}).await });
    let mut signer = signer_for(&etcd, port);
    let mut waited = false;
    for _ in 0..50 {
        signer.pass(&store, &[], false).await.unwrap();
        let keys = store.pki_of("id4").await.unwrap();
        if let Some(Ok(r)) = keys.refused {
            assert!(r.reason.contains("deckhand pki approve n4"), "{r:?}");
            waited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(waited);
    assert!(!task.is_finished());
    let state = |p: &std::collections::BTreeMap<String, crate::store::PkiKeys>| {
        crate::cli::pki::pending_of(p)
            .into_iter()
            .map(|r| (r.name, r.kind, r.state))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        state(&store.pki().await.unwrap()),
        [("n4".into(), "join".into(), "awaiting approval".into())]
    );
    // An unknown node is no approval; by name or id works.
    assert!(
        crate::cli::pki::approve(&store, "n9", "test")
            .await
            .is_err()
    );
    crate::cli::pki::approve(&store, "n4", "test")
        .await
        .unwrap();
    assert_eq!(
        state(&store.pki().await.unwrap())[0].2,
        "approved",
        "pending shows the approval before the signer's next pass"
    );
    for _ in 0..100 {
        if task.is_finished() {
            break;
        }
        signer.pass(&store, &[], false).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    task.await.unwrap().unwrap();
    crate::tls::load_node(&node).unwrap();
}

/// The SHA-256 fingerprint of the certificate `openssl s_client` is shown
/// by the TLS etcd's client port (a new connection each call).
fn served_fingerprint(etcd: &Etcd) -> String {
    let t = etcd.tls.as_ref().unwrap();
    let hostport = etcd.url.trim_start_matches("https://");
    let files = etcd.operator_files();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {hostport} -CAfile {} -cert {} -key {} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256",
            t.ca_file.display(),
            files.cert.unwrap().display(),
            files.key.unwrap().display()
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_lowercase()
}

#[tokio::test]
async fn etcd_serves_an_installed_leaf_on_new_connections_without_a_restart() {
    let etcd = Etcd::start_tls().await;
    let t = etcd.tls.clone().unwrap();
    let before = deckhand_pki::CertInfo::from_file(&t.cert_file).unwrap();
    assert_eq!(served_fingerprint(&etcd), before.sha256_fingerprint);
    let ca = deckhand_pki::Ca::load(t.ca_file.parent().unwrap()).unwrap();
    let lo = "127.0.0.1".parse().unwrap();
    let node = ca.issue_node("t", lo, 30).unwrap();
    let proxy = ca.issue_proxy("t", lo, 30).unwrap();
    let files = super::install::NewFiles {
        cert_pem: node.cert_pem.clone(),
        key_pem: node.key_pem,
        proxy_cert_pem: proxy.cert_pem,
        proxy_key_pem: proxy.key_pem,
    };
    super::install::install(&t, &files, crate::agent::observe::unix_now()).unwrap();
    let after = deckhand_pki::CertInfo::from_pem(&node.cert_pem).unwrap();
    assert_ne!(before.sha256_fingerprint, after.sha256_fingerprint);
    assert_eq!(
        served_fingerprint(&etcd),
        after.sha256_fingerprint,
        "etcd re-reads its certificate files on each new connection"
    );
    // And it still answers its clients (the node's new files).
    let mut c = etcd.client().await;
    c.put("k", "v", None).await.unwrap();
}

#[tokio::test]
async fn a_node_with_only_the_ca_and_a_join_credential_joins_through_the_members() {
    let etcd = Etcd::start_tls().await;
    let store = store_of(&etcd).await;
    let port = free_port();
    let (dir, _) = joining_node(etcd.tls.as_ref().unwrap());
    // The join credential: a client certificate of the CA (here the
    // operator's, as `deckhand pki issue --operator join` makes one).
    let op = etcd.operator_files();
    let toml = format!(
        "key_prefix = \"/t\"\n[etcd]\nendpoints = [\"{url}\"]\n[tls]\nca_file = \"{d}/ca.crt\"\ncert_file = \"{d}/node.crt\"\nkey_file = \"{d}/node.key\"\nproxy_cert_file = \"{d}/proxy.crt\"\nproxy_key_file = \"{d}/proxy.key\"\njoin_cert_file = \"{c}\"\njoin_key_file = \"{k}\"\n",
        url = etcd.url,
        d = dir.path().display(),
        c = op.cert.unwrap().display(),
        k = op.key.unwrap().display(),
    );
    let settings = crate::config::validate(crate::config::parse_fragment(&toml).unwrap()).unwrap();
    assert!(super::join::needed(&settings));
    let identity = crate::identity::Identity {
        id: "id4".into(),
        name: "n4".into(),
        address: "10.0.0.4".parse().unwrap(),
        tls: true,
    };
    let s2 = settings.clone();
    let listen = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port);
    let join = tokio::spawn(async move { super::join::join_as(&s2, &identity, listen).await });
    let mut signer = signer_for(&etcd, port);
    for _ in 0..100 {
        if join.is_finished() {
            break;
        }
        signer.pass(&store, &[], true).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    join.await.unwrap().unwrap();
    // What the agent then loads at start-up.
    let t = crate::tls::load_node(settings.tls.as_ref().unwrap()).unwrap();
    assert_eq!(t.node.common_name, "node:n4");
    assert!(!super::join::needed(&settings), "joined: files present");
}
