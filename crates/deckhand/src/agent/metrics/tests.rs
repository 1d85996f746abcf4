//! The exposition's names and types (and `promtool check metrics` on it,
//! when promtool is installed: `integration/prereqs` installs Debian's
//! `prometheus`).

use super::*;

/// Fills every metric once, as the agent's code paths would.
fn exercise() {
    step(&Step::AcquireLock, true, Duration::from_millis(20), false);
    step(&Step::AddLearner, false, Duration::from_millis(30), false);
    step(&Step::Blocked("quorum".into()), true, Duration::ZERO, true);
    step(&Step::Converged, true, Duration::ZERO, false);
    observation_failed();
    etcd_mode(EtcdMode::Member);
    status_write(true);
    status_write(false);
    certificate_renewal(false);
    unit_start(true);
    unit_start(false);
    unit_stop(true);
    unit_failure("did-not-stay-up");
    singletons_held(1);
    image_pulled(1234, Duration::from_secs(3));
    image_pull_failed();
    checks(&[Check {
        name: "disk-etcd".into(),
        state: CheckState::Warn,
        detail: String::new(),
    }]);
    certificate(Some(&CertificateStatus {
        not_after_unix: 1_900_000_000,
        common_name: "node1".into(),
        renewal: None,
    }));
    firewall(&FirewallStatus::default());
}

#[test]
fn exposition_names_types_and_labels() {
    exercise();
    let text = render();
    for line in [
        "# TYPE deckhand_role_transitions counter",
        "deckhand_role_transitions_total{kind=\"acquire-lock\",outcome=\"ok\"} 1",
        "deckhand_role_transitions_total{kind=\"add-learner\",outcome=\"failed\"} 1",
        "# TYPE deckhand_role_transition_duration_seconds histogram",
        "deckhand_role_change_duration_seconds_count 1",
        "deckhand_step_blocked{change=\"demotion\"} 0",
        "deckhand_steps_blocked_total 1",
        "deckhand_converged 1",
        "deckhand_etcd_mode{mode=\"member\"} 1",
        "deckhand_status_writes_total{outcome=\"failed\"} 1",
        "deckhand_certificate_renewals_total{outcome=\"failed\"} 1",
        "deckhand_plane_unit_failures_total{reason=\"start-job\"} 1",
        "deckhand_plane_unit_failures_total{reason=\"did-not-stay-up\"} 1",
        "deckhand_singletons_held 1",
        "deckhand_image_pull_bytes_total 1234",
        "deckhand_image_pulls_total{outcome=\"failed\"} 1",
        "deckhand_check{check=\"disk-etcd\",state=\"warn\"} 1",
        "deckhand_check{check=\"disk-etcd\",state=\"pass\"} 0",
        "deckhand_certificate_expiry_timestamp_seconds{certificate=\"node\"} 1900000000",
        "deckhand_firewall{state=\"enabled\"} 0",
        "# TYPE deckhand_node_time_seconds gauge",
        "deckhand_watch_restarts_total{reason=\"broken\"} 0",
        "deckhand_build_info{version=",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    // The node's wall clock, at scrape.
    let t: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("deckhand_node_time_seconds "))
        .expect("node time")
        .parse()
        .unwrap();
    assert!(t > 1.7e9, "{t}");
}

/// `promtool check metrics` (Prometheus's own linter) on the exposition.
#[test]
fn promtool_check_metrics() {
    exercise();
    let text = render_text();
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        panic!("promtool not found: run integration/prereqs (Debian's prometheus package)");
    };
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
}

/// The endpoint over a real socket: text 0.0.4 by default, OpenMetrics
/// when asked for, 404 elsewhere.
#[tokio::test]
async fn endpoint_serves_both_formats() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    exercise();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(crate::agent::metrics_http::serve(listener));
    let get = |path: &'static str, accept: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let text = get("/metrics", "*/*").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("text/plain; version=0.0.4"), "{text}");
    assert!(text.contains("# TYPE deckhand_role_transitions_total counter"));
    let om = get("/metrics", "application/openmetrics-text;version=1.0.0").await;
    assert!(om.contains("application/openmetrics-text"), "{om}");
    assert!(om.contains("# TYPE deckhand_role_transitions counter") && om.contains("# EOF"));
    let other = get("/", "*/*").await;
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
}

/// `[metrics] listen`: default 0.0.0.0:7479, "off", an address, and a
/// clear refusal of anything else.
#[test]
fn listen_setting() {
    use crate::config::metrics_listen;
    assert_eq!(
        metrics_listen(None).unwrap(),
        Some("0.0.0.0:7479".parse().unwrap())
    );
    assert_eq!(metrics_listen(Some("off")).unwrap(), None);
    assert_eq!(
        metrics_listen(Some("[::1]:9000")).unwrap(),
        Some("[::1]:9000".parse().unwrap())
    );
    let e = metrics_listen(Some("7479")).unwrap_err().to_string();
    assert!(e.contains("metrics.listen") && e.contains("\"off\""), "{e}");
    // Through the config file, unknown keys refused like every section's.
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("config.toml");
    std::fs::write(
        &main,
        "[etcd]\nendpoints=[\"http://10.0.0.1:2379\"]\n[metrics]\nlisten=\"off\"\n",
    )
    .unwrap();
    assert_eq!(crate::config::load(&main).unwrap().metrics, None);
    std::fs::write(
        &main,
        "[etcd]\nendpoints=[\"http://10.0.0.1:2379\"]\n[metrics]\nport=1\n",
    )
    .unwrap();
    assert!(crate::config::load(&main).is_err());
}
