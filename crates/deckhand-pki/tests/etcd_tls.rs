//! The crate's certificates against real etcd 3.4 (Debian's `etcd`,
//! `etcdctl` and `openssl` on PATH): a two-member cluster on 127.0.0.1 with
//! mutual TLS on its client and peer listeners, and a grpc-proxy in front.
//!
//! What etcd's TLS guide promises (https://etcd.io/docs/v3.4/op-guide/security/)
//! is tried, refusals included: no client certificate, and a certificate
//! from another CA.

use std::fs::File;
use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use deckhand_pki::{CA_DAYS, Ca, Issued, LEAF_DAYS};

const LOOPBACK: &str = "127.0.0.1";

fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    ls.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// Writes a certificate and key as `NAME.crt` / `NAME.key` into `dir`.
fn save(dir: &Path, name: &str, issued: &Issued) -> (PathBuf, PathBuf) {
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, &issued.cert_pem).unwrap();
    std::fs::write(&k, &issued.key_pem).unwrap();
    (c, k)
}

/// A process killed (SIGKILL) and reaped on drop, its output in a log file.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(cmd: &mut Command, log: PathBuf) -> Proc {
        let f = File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("these tests need etcd on PATH (Debian's etcd-server)");
        Proc { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the process exits, at most `timeout`: `Some(status)`,
    /// or `None` while it still runs.
    fn exited_within(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.log.display(), self.log());
        }
    }
}

/// A client identity for etcdctl: `--cacert`, and `--cert/--key` if any.
struct Creds<'a> {
    cacert: &'a Path,
    cert: Option<(&'a Path, &'a Path)>,
}

fn etcdctl(endpoint: &str, creds: Option<&Creds<'_>>, args: &[&str]) -> Output {
    let mut c = Command::new("etcdctl");
    c.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(["--dial-timeout=2s", "--command-timeout=4s"]);
    if let Some(cr) = creds {
        c.arg("--cacert").arg(cr.cacert);
        if let Some((cert, key)) = cr.cert {
            c.arg("--cert").arg(cert).arg("--key").arg(key);
        }
    }
    c.args(args).output().expect("etcdctl on PATH")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Retries `etcdctl endpoint health` until it succeeds, at most 30 s.
fn wait_healthy(endpoint: &str, creds: Option<&Creds<'_>>, procs: &mut [&mut Proc]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = etcdctl(endpoint, creds, &["endpoint", "health"]);
        if o.status.success() {
            return;
        }
        for p in procs.iter_mut() {
            if let Some(s) = p.child.try_wait().unwrap() {
                panic!("{} exited with {s}:\n{}", p.log.display(), p.log());
            }
        }
        assert!(
            Instant::now() < deadline,
            "{endpoint} not healthy within 30 s: {}",
            text(&o)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `openssl s_client` to `port` trusting `ca`, optionally with a client
/// certificate, sending an HTTP/1.1 request for etcd's `/version`.
fn s_client(port: u16, ca: &Path, cert: Option<(&Path, &Path)>, extra: &[&str]) -> Output {
    use std::io::Write;
    let mut c = Command::new("openssl");
    c.args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-CAfile",
    ])
    .arg(ca)
    .args(["-verify_return_error", "-ign_eof"])
    .args(extra);
    if let Some((cert, key)) = cert {
        c.arg("-cert").arg(cert).arg("-key").arg(key);
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl on PATH");
    let mut stdin = child.stdin.take().unwrap();
    // Written at once; etcd answers (or aborts) and closes, openssl exits on EOF.
    let _ =
        stdin.write_all(b"GET /version HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// The command line of member `i` of [`Tls`] (the same at every start: an
/// existing data dir ignores the initial-cluster flags).
fn member_cmd(
    d: &Path,
    i: usize,
    client_ports: &[u16],
    peer_ports: &[u16],
    ca_path: &Path,
) -> Command {
    let initial = format!(
        "m0=https://127.0.0.1:{},m1=https://127.0.0.1:{}",
        peer_ports[0], peer_ports[1]
    );
    let (crt, key) = (d.join(format!("n{i}.crt")), d.join(format!("n{i}.key")));
    let client = format!("https://127.0.0.1:{}", client_ports[i]);
    let peer = format!("https://127.0.0.1:{}", peer_ports[i]);
    let mut cmd = Command::new("etcd");
    cmd.args(["--name", &format!("m{i}")])
        .arg("--data-dir")
        .arg(d.join(format!("m{i}.etcd")))
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args([
            "--initial-cluster",
            &initial,
            "--initial-cluster-state",
            "new",
        ])
        .args(["--initial-cluster-token", "pki-test"])
        .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
        .arg("--cert-file")
        .arg(&crt)
        .arg("--key-file")
        .arg(&key)
        .arg("--trusted-ca-file")
        .arg(ca_path)
        .arg("--client-cert-auth")
        .arg("--peer-cert-file")
        .arg(&crt)
        .arg("--peer-key-file")
        .arg(&key)
        .arg("--peer-trusted-ca-file")
        .arg(ca_path)
        .arg("--peer-client-cert-auth")
        .args(["--logger", "zap"]);
    cmd
}

/// The test cluster: its CA dir, certificates, two members.
struct Tls {
    dir: tempfile::TempDir,
    ca: PathBuf,
    node: (PathBuf, PathBuf),
    proxy: (PathBuf, PathBuf),
    operator: (PathBuf, PathBuf),
    stranger: (PathBuf, PathBuf),
    client_ports: Vec<u16>,
    peer_ports: Vec<u16>,
    members: Vec<Proc>,
}

impl Tls {
    fn start() -> Tls {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ca = Ca::create("deckhand-ca", CA_DAYS).unwrap();
        ca.write(&d.join("ca")).unwrap();
        let ca_path = d.join("ca").join("ca.crt");
        let lo: IpAddr = LOOPBACK.parse().unwrap();
        let node = save(d, "n0", &ca.issue_node("n0", lo, LEAF_DAYS).unwrap());
        save(d, "n1", &ca.issue_node("n1", lo, LEAF_DAYS).unwrap());
        let proxy = save(d, "proxy", &ca.issue_proxy("n0", lo, LEAF_DAYS).unwrap());
        let operator = save(d, "root", &ca.issue_operator("root", LEAF_DAYS).unwrap());
        let other = Ca::create("deckhand-ca", CA_DAYS).unwrap();
        let stranger = save(
            d,
            "stranger",
            &other.issue_node("n0", lo, LEAF_DAYS).unwrap(),
        );
        let ports = free_ports(4);
        let (client_ports, peer_ports) = (vec![ports[0], ports[1]], vec![ports[2], ports[3]]);
        let mut members = Vec::new();
        for i in 0..2 {
            let mut cmd = member_cmd(d, i, &client_ports, &peer_ports, &ca_path);
            members.push(Proc::spawn(&mut cmd, d.join(format!("m{i}.log"))));
        }
        let mut tls = Tls {
            ca: ca_path,
            node,
            proxy,
            operator,
            stranger,
            client_ports,
            peer_ports,
            members,
            dir,
        };
        let (ca, node) = (tls.ca.clone(), tls.node.clone());
        let creds = Creds {
            cacert: &ca,
            cert: Some((&node.0, &node.1)),
        };
        for i in 0..2 {
            let ep = tls.endpoint(i);
            let mut procs: Vec<&mut Proc> = tls.members.iter_mut().collect();
            wait_healthy(&ep, Some(&creds), &mut procs);
        }
        tls
    }

    /// Kills member `i` and starts it again with the same command line
    /// (its data dir kept), once it answers.
    fn restart_member(&mut self, i: usize) {
        let d = self.dir.path().to_path_buf();
        let _ = self.members[i].child.kill();
        let _ = self.members[i].child.wait();
        let mut cmd = member_cmd(&d, i, &self.client_ports, &self.peer_ports, &self.ca);
        self.members[i] = Proc::spawn(&mut cmd, d.join(format!("m{i}.restart.log")));
        let (ca, node) = (self.ca.clone(), self.node.clone());
        let creds = Creds {
            cacert: &ca,
            cert: Some((&node.0, &node.1)),
        };
        let ep = self.endpoint(i);
        wait_healthy(&ep, Some(&creds), &mut [&mut self.members[i]]);
    }

    fn endpoint(&self, i: usize) -> String {
        format!("https://127.0.0.1:{}", self.client_ports[i])
    }

    fn creds<'a>(&'a self, cert: Option<&'a (PathBuf, PathBuf)>) -> Creds<'a> {
        Creds {
            cacert: &self.ca,
            cert: cert.map(|(c, k)| (c.as_path(), k.as_path())),
        }
    }

    /// Starts `etcd grpc-proxy` towards member 0 with the client identity
    /// `cert`, serving plaintext on a free loopback port.
    fn grpc_proxy(&self, cert: &(PathBuf, PathBuf), tag: &str) -> (Proc, u16) {
        let port = free_ports(1)[0];
        let mut cmd = Command::new("etcd");
        cmd.args(["grpc-proxy", "start"])
            .arg(format!("--endpoints={}", self.endpoint(0)))
            .arg("--cert")
            .arg(&cert.0)
            .arg("--key")
            .arg(&cert.1)
            .arg("--cacert")
            .arg(&self.ca)
            .arg(format!("--listen-addr=127.0.0.1:{port}"))
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join(tag).display()
            ));
        (
            Proc::spawn(&mut cmd, self.dir.path().join(format!("{tag}.log"))),
            port,
        )
    }
}

#[test]
fn node_and_operator_certificates_work_and_other_clients_are_refused() {
    let tls = Tls::start();
    for i in 0..2 {
        let ep = tls.endpoint(i);
        for (who, cert) in [("node", &tls.node), ("operator", &tls.operator)] {
            let c = tls.creds(Some(cert));
            let o = etcdctl(&ep, Some(&c), &["endpoint", "health"]);
            assert!(o.status.success(), "{who} health on {ep}: {}", text(&o));
            let key = format!("/pki-test/{who}/{i}");
            let o = etcdctl(&ep, Some(&c), &["put", &key, "v"]);
            assert!(o.status.success(), "{who} put on {ep}: {}", text(&o));
            // Read from the other member: the write went through the peer
            // link (mutual TLS with the node certificates as clients).
            let other = tls.endpoint(1 - i);
            let o = etcdctl(&other, Some(&c), &["get", &key, "--print-value-only"]);
            assert!(o.status.success(), "{who} get on {other}: {}", text(&o));
            assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "v");
        }
        // Without a client certificate: refused.
        let none = tls.creds(None);
        let o = etcdctl(&ep, Some(&none), &["put", "/pki-test/anon", "v"]);
        assert!(
            !o.status.success(),
            "a client without a certificate wrote: {}",
            text(&o)
        );
        // With a certificate of another CA (same CA name, other key): refused.
        let s = tls.creds(Some(&tls.stranger));
        let o = etcdctl(&ep, Some(&s), &["put", "/pki-test/stranger", "v"]);
        assert!(
            !o.status.success(),
            "another CA's certificate wrote: {}",
            text(&o)
        );
        // Plaintext on the TLS port: refused.
        let o = etcdctl(
            &format!("http://127.0.0.1:{}", tls.client_ports[i]),
            None,
            &["put", "/pki-test/plain", "v"],
        );
        assert!(
            !o.status.success(),
            "a plaintext client wrote: {}",
            text(&o)
        );
    }
    // None of the refused writes landed.
    let c = tls.creds(Some(&tls.operator));
    let o = etcdctl(
        &tls.endpoint(0),
        Some(&c),
        &["get", "/pki-test/", "--prefix", "--keys-only"],
    );
    let keys = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", text(&o));
    for refused in ["anon", "stranger", "plain"] {
        assert!(!keys.contains(refused), "{keys}");
    }
    assert_eq!(keys.lines().filter(|l| !l.is_empty()).count(), 4, "{keys}");
}

#[test]
fn openssl_without_a_client_certificate_gets_no_usable_session() {
    let tls = Tls::start();
    let ca = tls.ca.clone();
    for port in [tls.client_ports[0], tls.peer_ports[0]] {
        // The control: with the node certificate, the same request is answered.
        let ok = s_client(port, &ca, Some((&tls.node.0, &tls.node.1)), &[]);
        let out = String::from_utf8_lossy(&ok.stdout);
        if port == tls.client_ports[0] {
            assert!(
                out.contains("etcdserver"),
                "port {port} with a cert: {}",
                text(&ok)
            );
        } else {
            assert!(
                out.contains("HTTP/1.1 "),
                "port {port} with a cert: {}",
                text(&ok)
            );
        }
        // Without one: with TLS 1.3 (Go's default) the client finishes its
        // side of the handshake ("CONNECTED", a cipher), then the server
        // rejects the empty certificate with an alert and closes without
        // answering. etcd 3.4.23 (Go 1.19) sends "bad certificate" (42);
        // Go 1.21 and later send "certificate required" (116).
        let no = s_client(port, &ca, None, &[]);
        let all = text(&no);
        assert!(
            !all.contains("HTTP/1.1 "),
            "port {port} answered without a cert: {all}"
        );
        assert!(
            all.contains("alert bad certificate")
                || all.contains("alert number 42")
                || all.contains("alert certificate required")
                || all.contains("alert number 116"),
            "port {port}: {all}"
        );
        // TLS 1.2: the handshake itself fails (alert "bad certificate").
        let no12 = s_client(port, &ca, None, &["-tls1_2"]);
        let all = text(&no12);
        assert!(
            !no12.status.success(),
            "port {port} TLS 1.2 without a cert: {all}"
        );
        assert!(!all.contains("HTTP/1.1 "), "port {port}: {all}");
    }
}

#[test]
fn a_grpc_proxy_with_the_proxy_certificate_serves_plaintext_clients() {
    let tls = Tls::start();
    let (mut proxy, port) = tls.grpc_proxy(&tls.proxy, "proxy-ok");
    let ep = format!("http://127.0.0.1:{port}");
    wait_healthy(&ep, None, &mut [&mut proxy]);
    let o = etcdctl(&ep, None, &["put", "/pki-test/through-proxy", "p"]);
    assert!(o.status.success(), "put through the proxy: {}", text(&o));
    let c = tls.creds(Some(&tls.operator));
    let o = etcdctl(
        &tls.endpoint(1),
        Some(&c),
        &["get", "/pki-test/through-proxy", "--print-value-only"],
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "p",
        "{}",
        text(&o)
    );
}

#[test]
fn a_grpc_proxy_with_a_certificate_that_has_a_cn_refuses_to_start() {
    let tls = Tls::start();
    let (mut proxy, port) = tls.grpc_proxy(&tls.node, "proxy-cn");
    let status = proxy.exited_within(Duration::from_secs(20));
    let log = proxy.log();
    assert!(
        status.is_some_and(|s| !s.success()),
        "the grpc-proxy with a CN certificate still runs (port {port}): {log}"
    );
    // etcd 3.4.23 prints "cert has non empty Common Name (node:n0)" and
    // exits 1, after it has begun listening.
    assert!(log.contains("non empty Common Name (node:n0)"), "{log}");
}

/// `etcd grpc-proxy` re-reads its client certificate files on each new
/// connection to a member (3.4's `TLSInfo.ClientConfig` goes through
/// `baseConfig`, whose `GetClientCertificate` calls `tlsutil.NewCert`): a
/// renewed proxy certificate needs no proxy restart. Shown by replacing the
/// files under a running proxy and restarting the member it talks to (a new
/// connection): a certificate of another CA is then refused, a renewed one
/// of the cluster CA works. A proxy that kept the files it read at start
/// would go on working with the other CA's files in place.
#[test]
fn a_grpc_proxy_reads_replaced_certificate_files_on_its_next_connection() {
    let mut tls = Tls::start();
    let d = tls.dir.path().to_path_buf();
    let files = (d.join("live-proxy.crt"), d.join("live-proxy.key"));
    let put = |(c, k): &(PathBuf, PathBuf), (fc, fk): &(PathBuf, PathBuf)| {
        std::fs::copy(c, fc).unwrap();
        std::fs::copy(k, fk).unwrap();
    };
    put(&tls.proxy, &files);
    let (mut proxy, port) = tls.grpc_proxy(&files, "proxy-reload");
    let ep = format!("http://127.0.0.1:{port}");
    wait_healthy(&ep, None, &mut [&mut proxy]);
    let through = |v: &str| etcdctl(&ep, None, &["put", "/pki-test/reload", v]);
    assert!(through("1").status.success());
    let recovers_within = |what: &str, limit: Duration, proxy: &Proc| {
        let t = Instant::now();
        loop {
            let o = through("x");
            if o.status.success() {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < limit,
                "{what}: the proxy does not work again: {}\n{}",
                text(&o),
                proxy.log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    // Control: the member restarts, the proxy's new connection with the
    // same files works again within this long.
    tls.restart_member(0);
    let back = recovers_within("same files", Duration::from_secs(30), &proxy);
    // Another CA's certificate in place, then a new connection: refused,
    // long after the control's recovery.
    put(&tls.stranger, &files);
    tls.restart_member(0);
    std::thread::sleep(back * 2 + Duration::from_secs(5));
    for _ in 0..3 {
        assert!(
            !through("2").status.success(),
            "the proxy kept working with another CA's files in place: it did not re-read them"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    // A renewed certificate of the cluster CA: works again, no proxy restart.
    let ca = Ca::load(&d.join("ca")).unwrap();
    let renewed = save(
        &d,
        "proxy-renewed",
        &ca.issue_proxy("n0", LOOPBACK.parse().unwrap(), LEAF_DAYS)
            .unwrap(),
    );
    put(&renewed, &files);
    recovers_within("renewed files", Duration::from_secs(30), &proxy);
    assert!(
        proxy.exited_within(Duration::from_millis(1)).is_none(),
        "the same proxy process"
    );
}
