//! Mutual TLS against a real etcd 3.4 cluster on loopback: the cluster
//! client over `https://` (member list, add/promote/remove a learner), and
//! the refusals etcd enforces with `--client-cert-auth` and
//! `--peer-client-cert-auth`: no client certificate, a certificate from
//! another CA, plaintext on a TLS listener.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{EtcdCluster, TIMEOUT, eventually, retry_unhealthy};
use deckhand_etcd::{Cluster, Error, Tls};
use deckhand_pki::Ca;
use etcd_client::{Certificate, Client, ConnectOptions, TlsOptions};

/// A client of another CA's making, valid in every other respect.
fn foreign_client() -> Tls {
    let other = Ca::create("another-ca", 30).unwrap();
    let op = other.issue_operator("root", 30).unwrap();
    Tls::from_pem(other.cert_pem(), op.cert_pem, op.key_pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_over_mutual_tls() {
    let mut etcd = EtcdCluster::start_tls(3).await;
    let cluster = etcd.connect().await;
    let members = cluster.member_list().await.expect("member list over TLS");
    assert_eq!(members.len(), 3, "{members:?}");
    for m in &members {
        assert!(
            m.peer_urls.iter().all(|u| u.starts_with("https://")),
            "{m:?}"
        );
        assert!(
            m.client_urls.iter().all(|u| u.starts_with("https://")),
            "{m:?}"
        );
    }
    // Every voter answers a status over TLS (the cluster's own TLS).
    let health = cluster.voter_health(&members, TIMEOUT).await;
    assert!(health.iter().all(|(_, ok)| *ok), "{health:?}");

    // Add, start, promote and remove a learner, all over TLS; the new
    // member's peers accept its certificate.
    let i = etcd.add_node();
    let peer = etcd.nodes[i].peer_url.clone();
    let id = retry_unhealthy(|| cluster.add_learner(&peer))
        .await
        .expect("add learner")
        .member
        .id;
    etcd.join(i);
    let st = etcd
        .wait_ready(i, Duration::from_secs(15))
        .await
        .expect("the learner runs over TLS");
    assert!(st.is_learner, "{st:?}");
    cluster
        .promote_until_in_sync(id, Duration::from_secs(20))
        .await
        .expect("promote over TLS");
    // The member list is not linearizable in 3.4: wait until the member
    // asked has applied each change.
    eventually(Duration::from_secs(5), "the promotion listed", || async {
        let members = cluster.member_list().await.ok()?;
        members
            .iter()
            .any(|m| m.id == id && !m.is_learner)
            .then_some(())
    })
    .await;
    retry_unhealthy(|| cluster.remove(id))
        .await
        .expect("remove over TLS");
    etcd.forget(i);
    eventually(Duration::from_secs(5), "the removal listed", || async {
        let members = cluster.member_list().await.ok()?;
        (members.len() == 3 && members.iter().all(|m| m.id != id)).then_some(())
    })
    .await;
    // A KV round trip through the cluster's client.
    let mut kv = cluster.client();
    kv.put("/tls/k", "v", None).await.expect("put over TLS");
    let got = kv.get("/tls/k", None).await.expect("get over TLS");
    assert_eq!(got.kvs()[0].value(), b"v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_the_right_certificate_are_refused() {
    let etcd = EtcdCluster::start_tls(1).await;
    let url = etcd.nodes[0].client_url.clone();
    let timeout = Duration::from_secs(2);
    // The right certificate answers (so the refusals below are about the
    // certificate, not about a cluster that does not answer).
    Cluster::endpoint_status(&url, timeout, etcd.tls())
        .await
        .expect("the test's own client answers");

    // No client certificate at all, the CA trusted: the handshake is refused.
    let ca = etcd.pki.as_ref().unwrap().ca.cert_pem().to_string();
    let opts = ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_timeout(timeout)
        .with_tls(
            TlsOptions::new()
                .ca_certificate(Certificate::from_pem(&ca))
                .assume_http2(true),
        );
    let refused = match Client::connect([url.as_str()], Some(opts)).await {
        Ok(mut c) => c.status().await.map(drop),
        Err(e) => Err(e),
    };
    assert!(
        refused.is_err(),
        "a client without a certificate was served"
    );

    // A certificate of another CA: refused (and it does not trust ours).
    let foreign = Cluster::endpoint_status(&url, timeout, Some(&foreign_client())).await;
    assert!(
        foreign.is_err(),
        "another CA's client was served: {foreign:?}"
    );

    // Our CA trusted, but a client certificate from another CA: refused by
    // the server's client-certificate check.
    let other = Ca::create("another-ca", 30).unwrap();
    let op = other.issue_operator("root", 30).unwrap();
    let mixed = Tls::from_pem(ca.clone(), op.cert_pem, op.key_pem);
    let mixed = Cluster::endpoint_status(&url, timeout, Some(&mixed)).await;
    assert!(
        mixed.is_err(),
        "a foreign client certificate was served: {mixed:?}"
    );

    // Plaintext gRPC on the TLS client port: no answer.
    let plain = url.replace("https://", "http://");
    let plain = Cluster::endpoint_status(&plain, timeout, None).await;
    assert!(plain.is_err(), "plaintext was served on https: {plain:?}");

    // https:// without TLS material is refused before connecting.
    match Cluster::connect(std::slice::from_ref(&url), timeout, None).await {
        Err(Error::InvalidEndpoints { reason, .. }) => {
            assert!(reason.contains("no CA and client certificate"), "{reason}")
        }
        other => panic!("expected InvalidEndpoints, got {other:?}"),
    }
}

/// What a plaintext HTTP request to `host:port` gets back: the status line.
fn plain_http_status(hostport: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(hostport).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    // A TLS listener may reset the socket before the write: that is a
    // refusal, and the empty answer below says so (no " 200").
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    );
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_is_refused_on_the_peer_and_client_listeners() {
    // Plaintext etcd answers a plain HTTP request on its peer port (the
    // peer API's /members) and client port (/version): the probe works.
    let plain = EtcdCluster::start(1).await;
    let peer = plain.nodes[0]
        .peer_url
        .trim_start_matches("http://")
        .to_string();
    let client = plain.nodes[0]
        .client_url
        .trim_start_matches("http://")
        .to_string();
    assert!(plain_http_status(&peer, "/members").contains(" 200"));
    assert!(plain_http_status(&client, "/version").contains(" 200"));
    drop(plain);

    // With TLS, neither listener serves plaintext.
    let tls = EtcdCluster::start_tls(1).await;
    let peer = tls.nodes[0]
        .peer_url
        .trim_start_matches("https://")
        .to_string();
    let client = tls.nodes[0]
        .client_url
        .trim_start_matches("https://")
        .to_string();
    for (what, hostport, path) in [("peer", &peer, "/members"), ("client", &client, "/version")] {
        let got = plain_http_status(hostport, path);
        assert!(
            !got.contains(" 200"),
            "the {what} listener answered plaintext: {got:?}"
        );
    }
}
