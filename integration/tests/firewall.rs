//! End-to-end test of the host firewall (issue 10, docs/firewall.md): the
//! cluster config turns it on with default drop; then, probed from other
//! nodes and from a container on the harness network outside the cluster,
//! a member's 2380 answers only members, its 2379 only the cluster's nodes,
//! a proxy's 2379 nobody, and a plane's ports as their config says; a
//! table flushed by hand comes back; a proxy → member change opens the new
//! member's 2380 before it joins; turning the firewall off removes the
//! table. Each "unreachable" is checked against a baseline in which the
//! same probe got an answer with the firewall off.
//!
//! Listeners are busybox httpd from the harness's router image, run in the
//! node's Docker with host networking (a published port would bypass the
//! INPUT hook: moby#22054).

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use deckhand_integration::*;
use serde_json::Value;

const IMAGE: &str = "172.29.77.2:5000/deckhand/router:1";
/// The same image as the host's Docker knows it.
const HOST_IMAGE: &str = "127.0.0.1:5000/deckhand/router:1";
const NET: &str = "deckhand";
const OUTSIDER: &str = "deckhand-e2e-outsider";
/// A plane port open to anyone, and one open to the cluster only.
const PORT_ANY: u16 = 8080;
const PORT_CLUSTER: u16 = 8090;
/// How long the rules may take to follow a change: a few agent passes.
const FOLLOW: Duration = Duration::from_secs(60);

fn ip(node: &str) -> Result<String> {
    Ok(cluster(&["ip", node])?.trim().to_string())
}

/// Whether `ip:port` answers an HTTP request from `node` (curl gets any
/// HTTP status; a dropped or refused connection gives none).
fn from_node(node: &str, ip: &str, port: u16) -> Result<bool> {
    let out = sh_ok(
        node,
        &format!(
            "curl -s -m 3 -o /dev/null -w '%{{http_code}}' http://{ip}:{port}/version || true"
        ),
    )?;
    Ok(out.trim() != "000" && !out.trim().is_empty())
}

/// Whether `ip:port` answers an HTTP request from a busybox container on
/// the harness network that is no cluster node.
fn from_outside(ip: &str, port: u16) -> Result<bool> {
    let out = Command::new("docker")
        .args([
            "exec",
            OUTSIDER,
            "/bin/busybox",
            "sh",
            "-c",
            &format!(
                "printf 'GET /version HTTP/1.0\\r\\n\\r\\n' | /bin/busybox timeout 5 /bin/busybox nc -w 3 {ip} {port}"
            ),
        ])
        .output()
        .context("docker exec in the outside container")?;
    Ok(String::from_utf8_lossy(&out.stdout).contains("HTTP/"))
}

/// The outside container: removed when dropped.
struct Outsider;

impl Outsider {
    fn start() -> Result<Outsider> {
        let _ = Command::new("docker").args(["rm", "-f", OUTSIDER]).output();
        let out = Command::new("docker")
            .args([
                "run",
                "-d",
                "--rm",
                "--name",
                OUTSIDER,
                "--network",
                NET,
                HOST_IMAGE,
                "sleep",
                "3600",
            ])
            .output()
            .context("docker run")?;
        ensure!(
            out.status.success(),
            "docker run {HOST_IMAGE}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Outsider)
    }
}

impl Drop for Outsider {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", OUTSIDER]).output();
    }
}

/// Starts busybox httpd on `node` with host networking on `addr_port`
/// (`8080`, or `172.29.77.14:2379`).
fn listen(node: &str, name: &str, addr_port: &str) -> Result<()> {
    sh_ok(
        node,
        &format!(
            "docker rm -f {name} >/dev/null 2>&1; docker pull -q {IMAGE} >/dev/null && \
             docker run -d --rm --name {name} --network host {IMAGE} httpd -f -p {addr_port} -h /www >/dev/null"
        ),
    )?;
    Ok(())
}

fn stop_listeners(node: &str) {
    let _ = sh(
        node,
        "docker rm -f e2e-fw-any e2e-fw-cluster e2e-fw-etcd >/dev/null 2>&1",
    );
}

/// Every live node's firewall status as `deckhand status` shows it.
fn firewalls() -> Result<Vec<(String, Value)>> {
    let st = status("node1")?;
    Ok(st["nodes"]
        .as_array()
        .context("nodes")?
        .iter()
        .filter(|n| n["alive"] == true)
        .map(|n| {
            (
                n["name"].as_str().unwrap_or("").to_string(),
                n["firewall"].clone(),
            )
        })
        .collect())
}

/// Waits until every live node reports its rules applied and matching its
/// role, the member rules on `members` and the proxy rules elsewhere.
fn wait_applied(members: &[&str]) -> Result<()> {
    wait_for("every node's firewall to follow its role", FOLLOW, || {
        let f = firewalls()?;
        ensure!(f.len() == SHARED_NODES, "{} live nodes", f.len());
        for (name, fw) in &f {
            let want = if members.contains(&name.as_str()) {
                "member"
            } else {
                "proxy"
            };
            ensure!(
                fw["enabled"] == true
                    && fw["applied"] == true
                    && fw["matches_role"] == true
                    && fw["role"] == want,
                "{name}: {fw}"
            );
        }
        Ok(Some(()))
    })
}

#[test]
fn firewall_follows_roles_and_planes() -> Result<()> {
    let guard = ClusterGuard::shared()?;
    let (n1, n4) = (ip("node1")?, ip("node4")?);
    let _outsider = Outsider::start()?;

    // A plane with two ports on node4 (a proxy), and listeners for them and
    // for 2379 on node4's address (its grpc-proxy is on 127.0.0.1 only).
    sh_ok(
        "node1",
        &format!(
            "echo '{{\"ports\":[{{\"port\":{PORT_ANY},\"protocol\":\"tcp\",\"from\":\"any\"}},\
             {{\"port\":{PORT_CLUSTER},\"protocol\":\"tcp\",\"from\":\"cluster\"}}]}}' | deckhand plane set router --file -"
        ),
    )?;
    sh_ok(
        "node1",
        "deckhand role set node4 --etcd proxy --planes router",
    )?;
    listen("node4", "e2e-fw-any", &PORT_ANY.to_string())?;
    listen("node4", "e2e-fw-cluster", &PORT_CLUSTER.to_string())?;
    listen("node4", "e2e-fw-etcd", &format!("{n4}:2379"))?;
    let result = (|| -> Result<()> {
        // Baseline, firewall off: every probe below gets an answer.
        wait_for("the listeners to answer", Duration::from_secs(30), || {
            Ok((from_node("node5", &n4, 2379)? && from_outside(&n4, PORT_CLUSTER)?).then_some(()))
        })?;
        for (what, ok) in [
            ("node4 -> node1:2380", from_node("node4", &n1, 2380)?),
            ("outside -> node1:2379", from_outside(&n1, 2379)?),
            ("outside -> node1:2380", from_outside(&n1, 2380)?),
            ("outside -> node4:8090", from_outside(&n4, PORT_CLUSTER)?),
            ("node5 -> node4:2379", from_node("node5", &n4, 2379)?),
        ] {
            ensure!(ok, "baseline without firewall: {what} did not answer");
        }
        let doctor = sh("node1", "deckhand doctor --json")?.1;
        ensure!(
            doctor.contains("the host firewall is off"),
            "doctor with the firewall off: {doctor}"
        );

        // On, default drop.
        sh_ok(
            "node1",
            r#"deckhand cluster set 'firewall={"enabled":true,"default":"drop"}'"#,
        )?;
        wait_applied(&["node1", "node2", "node3"])?;
        let f = firewalls()?;
        println!("firewall statuses: {f:?}");
        ensure!(
            from_node("node2", &n1, 2380)?,
            "member node2 -> node1:2380 refused"
        );
        ensure!(
            !from_node("node4", &n1, 2380)?,
            "proxy node4 reached node1:2380"
        );
        ensure!(!from_outside(&n1, 2380)?, "outside reached node1:2380");
        ensure!(
            from_node("node4", &n1, 2379)?,
            "node4 -> node1:2379 refused"
        );
        ensure!(!from_outside(&n1, 2379)?, "outside reached node1:2379");
        ensure!(
            !from_node("node5", &n4, 2379)?,
            "node5 reached proxy node4's 2379"
        );
        ensure!(
            !from_node("node1", &n4, 2379)?,
            "node1 reached proxy node4's 2379"
        );
        ensure!(
            from_outside(&n4, PORT_ANY)?,
            "outside -> node4:8080 (from any) refused"
        );
        ensure!(
            !from_outside(&n4, PORT_CLUSTER)?,
            "outside reached node4:8090 (from cluster)"
        );
        ensure!(
            from_node("node5", &n4, PORT_CLUSTER)?,
            "node5 -> node4:8090 refused"
        );
        let (_, doctor, _) = sh("node1", "deckhand doctor --json")?;
        let d: Value = serde_json::from_str(&doctor).context("doctor JSON")?;
        let fw = d["findings"]
            .as_array()
            .and_then(|a| a.iter().find(|f| f["name"] == "firewall"))
            .context("no firewall finding")?;
        ensure!(fw["level"] == "pass", "doctor firewall: {fw}");
        let table = sh_ok("node1", "deckhand status")?;
        println!("{table}");
        ensure!(table.contains("FIREWALL"), "{table}");

        // Someone flushes node2's table: the agent notices and re-applies.
        sh_ok("node2", "nft flush table inet deckhand")?;
        wait_for("node2's table to come back", FOLLOW, || {
            let l = sh_ok("node2", "nft list table inet deckhand")?;
            Ok(l.contains("dport 2380").then_some(()))
        })?;

        // proxy -> member: node5 joins; its own 2380 opened before the
        // learner was added, and the members let it in.
        let (ok, out, rev) = role_set("node1", "node5", "member")?;
        ensure!(ok, "{out}");
        wait_converged("node1", "node5", rev)?;
        let m = members("node1")?;
        let n5 = ip("node5")?;
        let voters = m["members"]
            .as_array()
            .context("members")?
            .iter()
            .filter(|m| m["isLearner"] != true)
            .count();
        ensure!(voters == 4, "node5 did not become a voter: {m}");
        wait_applied(&["node1", "node2", "node3", "node5"])?;
        ensure!(
            from_node("node5", &n1, 2380)?,
            "new member node5 -> node1:2380 refused"
        );
        ensure!(
            from_node("node1", &n5, 2380)?,
            "node1 -> new member node5:2380 refused"
        );
        let j = journal_since("node5", guard.since)?;
        let opened = j
            .find("firewall: applied the member rules")
            .context("node5 never applied member rules")?;
        let added = j
            .find("taking step: adding this node as a learner")
            .context("node5 never added its learner")?;
        ensure!(
            opened < added,
            "node5 added its learner before opening its 2380:\n{j}"
        );

        // Off: every node removes its table.
        sh_ok("node1", "deckhand cluster set firewall=null")?;
        wait_for("every table to be removed", FOLLOW, || {
            for k in 1..=SHARED_NODES {
                let node = format!("node{k}");
                let (present, _, _) = sh(&node, "nft list table inet deckhand")?;
                ensure!(!present, "{node} still has table inet deckhand");
            }
            Ok(Some(()))
        })?;
        ensure!(
            from_outside(&n1, 2379)?,
            "firewall off: outside -> node1:2379 refused"
        );
        Ok(())
    })();
    stop_listeners("node4");
    let _ = sh("node1", "deckhand cluster set firewall=null");
    result
}
