//! Test support: a real single-member etcd (Debian's `etcd-server`) on free
//! loopback ports, killed when dropped, and a status document to start from.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use deckhand_model::{EtcdMode, EtcdStatus, NodeStatus};
use etcd_client::Client;

/// A converged node's status document: `name` at 10.0.0.1, etcd `mode`,
/// nothing desired, no error; tests change the fields they look at.
pub fn node_status(name: &str, mode: EtcdMode) -> NodeStatus {
    NodeStatus {
        id: name.into(),
        name: name.into(),
        address: "10.0.0.1".into(),
        version: "0".into(),
        desired: None,
        desired_revision: 0,
        applied: None,
        converged: true,
        etcd: EtcdStatus {
            mode,
            member_id: None,
            leader: false,
        },
        step: None,
        blocked: None,
        error: None,
        failure_domain: None,
        replacer: None,
        events: vec![],
        planes: vec![],
        images: Default::default(),
        checks: Vec::new(),
        voter_problems: Vec::new(),
        certificate: None,
    }
}

/// A running etcd.
pub struct Etcd {
    /// Its client URL, `http://127.0.0.1:<port>`.
    pub url: String,
    child: Child,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Etcd {
    /// A CLI target at this etcd alone, under the prefix `/t`.
    pub fn target(&self) -> crate::connect::Target {
        crate::connect::Target {
            endpoints: vec![self.url.clone()],
            cli_endpoints: vec![self.url.clone()],
            config_endpoints: vec![],
            keyspace: deckhand_model::Keyspace::new("/t"),
            settings: None,
            tls: None,
            tls_error: None,
        }
    }

    /// Starts one and waits until it answers (at most 10 s).
    pub async fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("a temp dir");
        let url = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(dir.path().join("data"))
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
            .args(["--initial-cluster", &format!("t={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("these tests need etcd (Debian's etcd-server; integration/prereqs)");
        let etcd = Etcd { url, child, dir };
        etcd.client().await;
        etcd
    }

    /// Its data dir (`--data-dir`).
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// A client that has had an answer.
    pub async fn client(&self) -> Client {
        let eps = [self.url.clone()];
        for _ in 0..100 {
            if let Ok(c) = crate::connect::first_answering(&eps, Duration::from_secs(2), None).await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("etcd at {} did not answer within 10 s", self.url);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
