//! Test support: a real single-member etcd (Debian's `etcd-server`) on free
//! loopback ports, killed when dropped (plaintext, or mutual TLS with
//! certificates from `deckhand-pki`), and a status document to start from.

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
        tls_stage: None,
        firewall: Default::default(),
        metrics_listen: None,
    }
}

/// A running etcd.
pub struct Etcd {
    /// Its client URL, `http://127.0.0.1:<port>` (`https://` with TLS).
    pub url: String,
    child: Child,
    dir: tempfile::TempDir,
    /// With TLS: the node's files as `[tls]` names them (`ca.crt`,
    /// `node.crt`/`node.key` for 127.0.0.1, `proxy.crt`/`proxy.key`) in
    /// the etcd's temp dir, which also holds `operator.crt`/`operator.key`
    /// (CN `root`) and the CA's key `ca.key`.
    pub tls: Option<crate::config::TlsSettings>,
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
        Etcd::start_with(false).await
    }

    /// [`Etcd::start`] with mutual TLS on its client and peer URLs
    /// (`--client-cert-auth`, `--peer-client-cert-auth`), certificates
    /// from a CA made for it.
    pub async fn start_tls() -> Etcd {
        Etcd::start_with(true).await
    }

    /// The operator certificate's files of a TLS etcd (`--cacert`,
    /// `--cert`, `--key`).
    pub fn operator_files(&self) -> crate::tls::CliFiles {
        crate::tls::CliFiles {
            cacert: Some(self.dir.path().join("ca.crt")),
            cert: Some(self.dir.path().join("operator.crt")),
            key: Some(self.dir.path().join("operator.key")),
        }
    }

    /// The node's client material of a TLS etcd.
    pub fn client_tls(&self) -> Option<deckhand_etcd::Tls> {
        self.tls
            .as_ref()
            .map(|t| crate::tls::load_node(t).expect("test TLS files").client)
    }

    fn write_pki(dir: &std::path::Path) -> crate::config::TlsSettings {
        let ca = deckhand_pki::Ca::create("test-ca", 30).expect("test CA");
        let lo = "127.0.0.1".parse().expect("an address");
        let node = ca.issue_node("t", lo, 30).expect("node cert");
        let proxy = ca.issue_proxy("t", lo, 30).expect("proxy cert");
        let op = ca.issue_operator("root", 30).expect("operator cert");
        ca.write(dir).expect("write the test CA (ca.crt, ca.key)");
        for (name, text) in [
            ("node.crt", &node.cert_pem),
            ("node.key", &node.key_pem),
            ("proxy.crt", &proxy.cert_pem),
            ("proxy.key", &proxy.key_pem),
            ("operator.crt", &op.cert_pem),
            ("operator.key", &op.key_pem),
        ] {
            std::fs::write(dir.join(name), text).expect("write a test TLS file");
        }
        crate::config::TlsSettings {
            ca_file: dir.join("ca.crt"),
            cert_file: dir.join("node.crt"),
            key_file: dir.join("node.key"),
            proxy_cert_file: dir.join("proxy.crt"),
            proxy_key_file: dir.join("proxy.key"),
            ..Default::default()
        }
    }

    async fn start_with(tls: bool) -> Etcd {
        let dir = tempfile::tempdir().expect("a temp dir");
        let scheme = if tls { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{}", free_port());
        let peer = format!("{scheme}://127.0.0.1:{}", free_port());
        let files = tls.then(|| Etcd::write_pki(dir.path()));
        let mut cmd = Command::new("etcd");
        if let Some(t) = &files {
            for (flag, path) in [
                ("--trusted-ca-file", &t.ca_file),
                ("--cert-file", &t.cert_file),
                ("--key-file", &t.key_file),
                ("--peer-trusted-ca-file", &t.ca_file),
                ("--peer-cert-file", &t.cert_file),
                ("--peer-key-file", &t.key_file),
            ] {
                cmd.arg(flag).arg(path);
            }
            cmd.args(["--client-cert-auth", "--peer-client-cert-auth"]);
        }
        let child = cmd
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
        let etcd = Etcd {
            url,
            child,
            dir,
            tls: files,
        };
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
        let tls = self.client_tls();
        for _ in 0..100 {
            if let Ok(c) =
                crate::connect::first_answering(&eps, Duration::from_secs(2), tls.as_ref()).await
            {
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
