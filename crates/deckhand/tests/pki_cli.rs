//! `deckhand pki init|issue|show` through the built binary: the files and
//! modes it writes, and every bad input refused with nothing written.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use deckhand_pki::{CertInfo, key_matches, verify_issued_by};

fn deckhand(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deckhand"))
        .args(args)
        // No agent config is read by `pki`; make sure of it.
        .env("DECKHAND_CONFIG", "/nonexistent/deckhand.toml")
        .output()
        .expect("run deckhand")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file under `dir` (relative path → contents), to show that a
/// refused command changed nothing.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let e = e.unwrap();
            let path = e.path();
            if path.is_dir() {
                out.insert(path.strip_prefix(dir).unwrap().to_path_buf(), Vec::new());
                stack.push(path);
            } else {
                out.insert(
                    path.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// A temp dir with a CA made by `pki init` in `<tmp>/pki`.
fn with_ca() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let o = deckhand(&["pki", "init", p(&dir)]);
    assert!(o.status.success(), "{}", text(&o));
    (tmp, dir)
}

#[test]
fn init_makes_a_private_dir_with_the_ca_and_refuses_a_second_time() {
    let (_tmp, dir) = with_ca();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
    assert_eq!(mode(&dir.join("ca.crt")), 0o644);
    let info = CertInfo::from_file(&dir.join("ca.crt")).unwrap();
    assert!(info.is_ca);
    assert_eq!(info.common_name.as_deref(), Some("deckhand-ca"));
    let before = tree(&dir);
    let o = deckhand(&["pki", "init", p(&dir)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(stderr(&o).contains("ca.key exists already"), "{}", text(&o));
    assert_eq!(tree(&dir), before);
    // A lone ca.crt is refused as well.
    let half = dir.parent().unwrap().join("half");
    std::fs::create_dir(&half).unwrap();
    std::fs::write(half.join("ca.crt"), "x").unwrap();
    let o = deckhand(&["pki", "init", p(&half)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(!half.join("ca.key").exists());
}

#[test]
fn init_takes_days_and_a_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let o = deckhand(&["pki", "init", "--days", "30", "--name", "test-ca", p(&dir)]);
    assert!(o.status.success(), "{}", text(&o));
    let info = CertInfo::from_file(&dir.join("ca.crt")).unwrap();
    assert_eq!(info.common_name.as_deref(), Some("test-ca"));
    assert_eq!(
        info.not_after_unix - info.not_before_unix,
        30 * 86_400 + deckhand_pki::BACKDATE_SECONDS as u64
    );
    let o = deckhand(&["pki", "init", "--days", "0", p(&tmp.path().join("d"))]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!tmp.path().join("d").exists());
}

#[test]
fn issue_node_writes_the_files_a_node_installs() {
    let (_tmp, dir) = with_ca();
    let o = deckhand(&[
        "pki",
        "issue",
        "--node",
        "node1",
        "--address",
        "10.0.0.11",
        "--days",
        "90",
        p(&dir),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let n = dir.join("nodes").join("node1");
    let mut names: Vec<String> = std::fs::read_dir(&n)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["ca.crt", "node.crt", "node.key", "proxy.crt", "proxy.key"]
    );
    for (f, m) in [
        ("ca.crt", 0o644),
        ("node.crt", 0o644),
        ("node.key", 0o600),
        ("proxy.crt", 0o644),
        ("proxy.key", 0o600),
    ] {
        assert_eq!(mode(&n.join(f)), m, "{f}");
    }
    let ca = read(&dir.join("ca.crt"));
    assert_eq!(read(&n.join("ca.crt")), ca);
    let node = read(&n.join("node.crt"));
    let proxy = read(&n.join("proxy.crt"));
    verify_issued_by(&ca, &node).unwrap();
    verify_issued_by(&ca, &proxy).unwrap();
    assert!(key_matches(&node, &read(&n.join("node.key"))).unwrap());
    assert!(key_matches(&proxy, &read(&n.join("proxy.key"))).unwrap());
    let ni = CertInfo::from_pem(&node).unwrap();
    assert_eq!(ni.common_name.as_deref(), Some("node:node1"));
    assert!(ni.server_auth && ni.client_auth);
    assert_eq!(ni.ip_sans[0].to_string(), "10.0.0.11");
    assert_eq!(ni.dns_sans, ["localhost", "node1"]);
    assert_eq!(
        ni.not_after_unix - ni.not_before_unix,
        90 * 86_400 + deckhand_pki::BACKDATE_SECONDS as u64
    );
    let pi = CertInfo::from_pem(&proxy).unwrap();
    assert_eq!(pi.common_name, None);
    assert!(pi.client_auth);
}

#[test]
fn issue_operator_writes_a_client_certificate_with_the_name_verbatim() {
    let (_tmp, dir) = with_ca();
    let o = deckhand(&["pki", "issue", "--operator", "root", p(&dir)]);
    assert!(o.status.success(), "{}", text(&o));
    let d = dir.join("operators").join("root");
    assert_eq!(mode(&d.join("operator.key")), 0o600);
    assert_eq!(read(&d.join("ca.crt")), read(&dir.join("ca.crt")));
    let cert = read(&d.join("operator.crt"));
    verify_issued_by(&read(&dir.join("ca.crt")), &cert).unwrap();
    let info = CertInfo::from_pem(&cert).unwrap();
    assert_eq!(info.common_name.as_deref(), Some("root"));
    assert!(info.client_auth && !info.server_auth);
    assert!(key_matches(&cert, &read(&d.join("operator.key"))).unwrap());
}

#[test]
fn issue_never_overwrites_and_renew_moves_the_old_files_aside() {
    let (_tmp, dir) = with_ca();
    let args = [
        "pki",
        "issue",
        "--node",
        "n1",
        "--address",
        "10.0.0.1",
        p(&dir),
    ];
    assert!(deckhand(&args).status.success());
    let n = dir.join("nodes").join("n1");
    let before = tree(&dir);
    let o = deckhand(&args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(stderr(&o).contains("--renew"), "{}", text(&o));
    assert_eq!(tree(&dir), before, "a refused issue changed files");
    // An operator's existing files are refused just the same.
    assert!(
        deckhand(&["pki", "issue", "--operator", "ops", p(&dir)])
            .status
            .success()
    );
    let before = tree(&dir);
    let o = deckhand(&["pki", "issue", "--operator", "ops", p(&dir)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(tree(&dir), before);

    let old_key = read(&n.join("node.key"));
    let old_cert = read(&n.join("node.crt"));
    let mut renew = args.to_vec();
    renew.insert(2, "--renew");
    let o = deckhand(&renew);
    assert!(o.status.success(), "{}", text(&o));
    assert_ne!(read(&n.join("node.key")), old_key);
    let mut aside: Vec<(String, PathBuf)> = std::fs::read_dir(&n)
        .unwrap()
        .map(|e| e.unwrap())
        .filter_map(|e| {
            let name = e.file_name().into_string().unwrap();
            name.contains(".old-").then(|| (name, e.path()))
        })
        .collect();
    aside.sort();
    assert_eq!(aside.len(), 5, "{aside:?}");
    let key_aside = aside
        .iter()
        .find(|(name, _)| name.starts_with("node.key.old-"))
        .expect("node.key moved aside");
    assert_eq!(read(&key_aside.1), old_key);
    assert_eq!(mode(&key_aside.1), 0o600);
    let cert_aside = aside
        .iter()
        .find(|(name, _)| name.starts_with("node.crt.old-"))
        .unwrap();
    assert_eq!(read(&cert_aside.1), old_cert);
    // The stamp is a UTC time: node.key.old-20261202T101516Z.
    let stamp = key_aside.0.trim_start_matches("node.key.old-");
    assert_eq!(stamp.len(), 16, "{stamp}");
    assert!(
        stamp.ends_with('Z') && stamp.as_bytes()[8] == b'T',
        "{stamp}"
    );
    let new = read(&n.join("node.crt"));
    assert!(key_matches(&new, &read(&n.join("node.key"))).unwrap());
}

#[test]
fn bad_input_is_refused_and_writes_nothing() {
    let (tmp, dir) = with_ca();
    let before = tree(tmp.path());
    let d = p(&dir);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--node", "n1", "--address", "not-an-ip", d],
            "invalid IP address",
        ),
        (
            vec!["--node", "n1", "--address", "10.0.0.256", d],
            "invalid IP address",
        ),
        (vec!["--node", "n1", d], "--address"),
        (
            vec!["--node", "n1", "--address", "0.0.0.0", d],
            "invalid node address 0.0.0.0",
        ),
        (
            vec!["--node", "bad_name", "--address", "10.0.0.1", d],
            "invalid node name",
        ),
        (
            vec!["--node", "../escape", "--address", "10.0.0.1", d],
            "invalid node name",
        ),
        (vec!["--node", "-n", "--address", "10.0.0.1", d], ""),
        (vec!["--operator", "../root", d], "invalid operator name"),
        (vec!["--operator", "", d], "invalid operator name"),
        (
            vec![
                "--node",
                "n1",
                "--address",
                "10.0.0.1",
                "--operator",
                "root",
                d,
            ],
            "cannot be used with",
        ),
        (
            vec!["--operator", "root", "--address", "10.0.0.1", d],
            "cannot be used with",
        ),
        (vec![d], "required"),
        (
            vec!["--node", "n1", "--address", "10.0.0.1", "--days", "0", d],
            "days",
        ),
    ];
    for (args, says) in cases {
        let mut all = vec!["pki", "issue"];
        all.extend(&args);
        let o = deckhand(&all);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(
            stderr(&o).contains(says),
            "{args:?} should say {says:?}: {}",
            text(&o)
        );
        assert_eq!(tree(tmp.path()), before, "{args:?} changed files");
    }
    // No CA in DIR: refused, and the directory is not made.
    let none = tmp.path().join("none");
    let o = deckhand(&[
        "pki",
        "issue",
        "--node",
        "n1",
        "--address",
        "10.0.0.1",
        p(&none),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(stderr(&o).contains("no CA in"), "{}", text(&o));
    assert!(!none.exists());
    let o = deckhand(&["pki", "issue", "--operator", "root", p(&none)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!none.exists());
    // A DIR whose key is not the CA's: refused.
    let other = tmp.path().join("other");
    assert!(deckhand(&["pki", "init", p(&other)]).status.success());
    std::fs::copy(dir.join("ca.key"), other.join("ca.key.mine")).unwrap();
    std::fs::rename(other.join("ca.key.mine"), other.join("ca.key")).unwrap();
    let o = deckhand(&["pki", "issue", "--operator", "root", p(&other)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(stderr(&o).contains("does not match"), "{}", text(&o));
    assert!(!other.join("operators").exists());
}

#[test]
fn show_prints_names_validity_and_fingerprint() {
    let (_tmp, dir) = with_ca();
    assert!(
        deckhand(&[
            "pki",
            "issue",
            "--node",
            "node1",
            "--address",
            "10.0.0.11",
            p(&dir)
        ])
        .status
        .success()
    );
    let n = dir.join("nodes").join("node1");
    let o = deckhand(&[
        "pki",
        "show",
        p(&dir.join("ca.crt")),
        p(&n.join("node.crt")),
        p(&n.join("proxy.crt")),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let info = CertInfo::from_file(&n.join("node.crt")).unwrap();
    for want in [
        "subject CN  node:node1",
        "subject CN  (empty)",
        "kind        CA",
        "kind        leaf (server, client)",
        "IP SANs     10.0.0.11, 127.0.0.1, ::1",
        "DNS SANs    localhost, node1",
        info.sha256_fingerprint.as_str(),
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let o = deckhand(&["pki", "show", "--json", p(&n.join("node.crt"))]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["common_name"], "node:node1");
    assert_eq!(v[0]["is_ca"], false);
    let left = v[0]["days_left"].as_i64().unwrap();
    assert!(left == 364 || left == 365, "{left}");
    assert_eq!(v[0]["ip_sans"][0], "10.0.0.11");
    assert_eq!(v[0]["sha256_fingerprint"], info.sha256_fingerprint.as_str());
    assert_eq!(v[0]["not_after_unix"], info.not_after_unix);
    // A key, a missing file: exit 1, naming the file; the good one is still shown.
    let o = deckhand(&[
        "pki",
        "show",
        p(&n.join("node.key")),
        p(&n.join("nope.crt")),
        p(&n.join("node.crt")),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains("node.key") && err.contains("nope.crt"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("node:node1"));
}

#[test]
fn show_counts_whole_days_left_and_says_expired() {
    let tmp = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let write = |name: &str, not_before, not_after| {
        let mut params = rcgen::CertificateParams::new(vec!["x".to_string()]).unwrap();
        params.not_before = not_before;
        params.not_after = not_after;
        let path = tmp.path().join(name);
        std::fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
        path
    };
    // 10.5 days left: 10 whole days, whatever second the test runs in.
    let now = time::OffsetDateTime::now_utc();
    let soon = write("soon.crt", now, now + time::Duration::hours(10 * 24 + 12));
    let o = deckhand(&["pki", "show", p(&soon)]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("(10 days left)"),
        "{}",
        text(&o)
    );
    let old = write(
        "old.crt",
        rcgen::date_time_ymd(2000, 1, 1),
        rcgen::date_time_ymd(2001, 1, 1),
    );
    let o = deckhand(&["pki", "show", p(&old)]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("EXPIRED") && out.contains("2001-01-01T00:00:00Z"),
        "{out}"
    );
}

#[test]
fn the_help_teaches_files_names_and_lifetimes() {
    let o = deckhand(&["pki", "issue", "--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for want in [
        "/etc/deckhand/pki/",
        "node:NAME",
        "empty",
        "root",
        "365 days",
        "--renew",
        "proxy.key",
    ] {
        assert!(help.contains(want), "missing {want:?} in:\n{help}");
    }
    let o = deckhand(&["pki", "init", "--help"]);
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(
        help.contains("P-256") && help.contains("10 years"),
        "{help}"
    );
}
