//! End-to-end test of the agents' metrics (issue 12, "Metrics and alerts"):
//! a real Prometheus (Debian's, run on this host) scrapes every node of the
//! shared cluster on port 7479 with the alert rules of
//! `packaging/prometheus/` loaded; every target is up, node4's role change
//! shows in its transition counter, and a killed node's `DeckhandNodeDown`
//! alert goes pending. The cluster is left as it was (node4 a proxy again,
//! node5 started and converged).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use deckhand_integration::*;
use serde_json::Value;

/// A Prometheus server on 127.0.0.1, stopped and its data removed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed on drop (the integration crate has no tempfile).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Node `k`'s metrics target (the harness's addresses, 172.29.77.1K).
fn target(k: usize) -> String {
    format!("172.29.77.{}:7479", 10 + k)
}

impl Prometheus {
    fn start() -> Result<Prometheus> {
        let dir = std::env::temp_dir().join(format!("deckhand-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data"))?;
        let dir = TempDir(dir);
        let rules = repo().join("packaging/prometheus/deckhand-rules.yml");
        let targets: Vec<String> = (1..=SHARED_NODES)
            .map(|k| format!("\"{}\"", target(k)))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files: [\"{}\"]\n\
             scrape_configs:\n  - job_name: deckhand\n    static_configs:\n      - targets: [{}]\n",
            rules.display(),
            targets.join(", ")
        );
        let cfg = dir.0.join("prometheus.yml");
        std::fs::write(&cfg, config)?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.0.join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("prometheus not found: run integration/prereqs (Debian's prometheus)")?;
        Ok(Prometheus {
            child,
            port,
            _dir: dir,
        })
    }

    /// GET of the HTTP API's `path` with `query` (url-encoded), its `data`.
    fn api(&self, path: &str, query: Option<&str>) -> Result<Value> {
        let url = format!("http://127.0.0.1:{}/api/v1/{path}", self.port);
        let mut cmd = Command::new("curl");
        cmd.args(["-fsS", "-m", "5", "-G", &url]);
        if let Some(q) = query {
            cmd.args(["--data-urlencode", &format!("query={q}")]);
        }
        let out = cmd.output()?;
        ensure!(
            out.status.success(),
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout)?;
        ensure!(v["status"] == "success", "{v}");
        Ok(v["data"].clone())
    }

    /// The values of an instant query's series.
    fn values(&self, q: &str) -> Result<Vec<(Value, f64)>> {
        let d = self.api("query", Some(q))?;
        Ok(d["result"]
            .as_array()
            .context("no result")?
            .iter()
            .filter_map(|s| {
                let v = s["value"][1].as_str()?.parse().ok()?;
                Some((s["metric"].clone(), v))
            })
            .collect())
    }

    /// One series' value, 0 when the query finds none.
    fn scalar(&self, q: &str) -> Result<f64> {
        Ok(self.values(q)?.first().map(|s| s.1).unwrap_or(0.0))
    }
}

/// Starts node5 again (and waits for it) when dropped: a failed test must
/// not leave it killed.
struct StartAgain(&'static str);

impl Drop for StartAgain {
    fn drop(&mut self) {
        let _ = cluster(&["start", self.0]);
    }
}

#[test]
fn prometheus_scrapes_every_node_and_sees_transitions_and_a_dead_node() -> Result<()> {
    let _guard = ClusterGuard::shared()?;
    let prom = Prometheus::start()?;

    // 1. Every node's target up.
    let t = Instant::now();
    wait_for("every node's target up", Duration::from_secs(120), || {
        let up = prom.values("up{job=\"deckhand\"} == 1")?;
        Ok((up.len() == SHARED_NODES).then_some(()))
    })?;
    println!(
        "[figure] all {SHARED_NODES} targets up {:.1} s after Prometheus started",
        t.elapsed().as_secs_f64()
    );
    // The exposition is the one promtool checks (text format): each node
    // reports its mode, and exactly one agent the cluster's figures.
    wait_for("the leader's cluster view", Duration::from_secs(60), || {
        let v = prom.values("deckhand_cluster{figure=\"voters\"}")?;
        Ok((v.len() == 1 && v[0].1 >= 3.0).then_some(()))
    })?;

    // 2. node4 proxy -> member -> proxy: its transition counter grows.
    let n4 = target(4);
    let q = format!("sum(deckhand_role_transitions_total{{instance=\"{n4}\",outcome=\"ok\"}})");
    let before = prom.scalar(&q)?;
    let (ok, out, rev) = role_set("node1", "node4", "member")?;
    ensure!(ok, "role set node4 member: {out}");
    let changed = wait_converged("node1", "node4", rev);
    let (ok2, out2, rev2) = role_set("node1", "node4", "proxy")?;
    changed?;
    ensure!(ok2, "role set node4 proxy: {out2}");
    let after = wait_for(
        "node4's transitions in Prometheus",
        Duration::from_secs(60),
        || {
            let v = prom.scalar(&q)?;
            Ok((v > before).then_some(v))
        },
    )?;
    let promote = prom.scalar(&format!(
        "deckhand_role_transitions_total{{instance=\"{n4}\",kind=\"promote\",outcome=\"ok\"}}"
    ))?;
    ensure!(promote >= 1.0, "no promote step counted on node4");
    println!("node4 role-changing steps: {before} before, {after} after (promote {promote})");
    wait_converged("node1", "node4", rev2)?;

    // 3. node5 killed: its DeckhandNodeDown alert goes pending.
    let n5 = target(5);
    let back = StartAgain("node5");
    let t = Instant::now();
    cluster(&["kill", "node5"])?;
    let state = wait_for(
        "node5's DeckhandNodeDown alert",
        Duration::from_secs(120),
        || {
            let alerts = prom.api("alerts", None)?;
            Ok(alerts["alerts"].as_array().and_then(|a| {
                a.iter()
                    .find(|x| {
                        x["labels"]["alertname"] == "DeckhandNodeDown"
                            && x["labels"]["instance"] == n5.as_str()
                    })
                    .and_then(|x| x["state"].as_str().map(str::to_string))
            }))
        },
    )?;
    ensure!(
        state == "pending" || state == "firing",
        "DeckhandNodeDown is {state}"
    );
    println!(
        "[figure] node5's DeckhandNodeDown {state} {:.1} s after the kill",
        t.elapsed().as_secs_f64()
    );

    // 4. node5 back and converged; its target up again.
    drop(back);
    wait_converged("node1", "node5", 0)?;
    wait_for("node5's target up again", Duration::from_secs(120), || {
        Ok((prom.scalar(&format!("up{{instance=\"{n5}\"}}"))? == 1.0).then_some(()))
    })?;
    Ok(())
}
