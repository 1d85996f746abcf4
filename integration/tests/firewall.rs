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
use deckhand_model::METRICS_PORT;
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

/// What a TCP connection attempt got: the handshake completed, a reset or
/// ICMP rejection came back, or nothing came back before the timeout (what
/// a firewall's drop gives). The etcd ports are probed at the TCP level:
/// on a TLS cluster a plaintext HTTP request to them gets no HTTP answer
/// whether a firewall is there or not (integration/tests/tls.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Connected,
    Refused,
    TimedOut,
}

impl Probe {
    /// From a probe script's output: `rc=N` last, an error message before.
    fn parse(out: &str) -> Result<Probe> {
        let rc = out
            .rsplit("rc=")
            .next()
            .and_then(|r| r.trim().parse::<i32>().ok())
            .with_context(|| format!("probe output without rc=: {out:?}"))?;
        Ok(if rc == 0 {
            Probe::Connected
        } else if out.to_lowercase().contains("refused") {
            Probe::Refused
        } else {
            Probe::TimedOut
        })
    }
}

/// A TCP connection from `node` to `ip:port` (bash's /dev/tcp, 4 s).
fn from_node(node: &str, ip: &str, port: u16) -> Result<Probe> {
    let (_, out, err) = sh(
        node,
        &format!("timeout 4 bash -c 'exec 3<>/dev/tcp/{ip}/{port}' 2>&1; echo rc=$?"),
    )?;
    Probe::parse(&format!("{err}{out}"))
}

/// A TCP connection to `ip:port` from a busybox container on the harness
/// network that is no cluster node (busybox nc, 3 s).
fn from_outside(ip: &str, port: u16) -> Result<Probe> {
    let out = Command::new("docker")
        .args([
            "exec",
            OUTSIDER,
            "/bin/busybox",
            "sh",
            "-c",
            &format!(
                "/bin/busybox timeout 5 /bin/busybox nc -w 3 {ip} {port} </dev/null 2>&1; echo rc=$?"
            ),
        ])
        .output()
        .context("docker exec in the outside container")?;
    Probe::parse(&String::from_utf8_lossy(&out.stdout))
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
        "docker rm -f e2e-fw-any e2e-fw-cluster e2e-fw-etcd e2e-fw-metrics >/dev/null 2>&1",
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

/// `got` is `want`, or an error naming the probe.
fn expect(what: &str, got: Probe, want: Probe) -> Result<()> {
    println!("probe {what}: {got:?}");
    ensure!(got == want, "{what}: {got:?}, expected {want:?}");
    Ok(())
}

/// The agent's main PID on `node`.
fn agent_pid(node: &str) -> Result<String> {
    Ok(sh_ok(node, "systemctl show -p MainPID --value deckhand")?
        .trim()
        .to_string())
}

#[test]
fn firewall_follows_roles_and_planes() -> Result<()> {
    use Probe::{Connected, TimedOut};
    let guard = ClusterGuard::shared()?;
    let (n1, n4) = (ip("node1")?, ip("node4")?);
    let _outsider = Outsider::start()?;

    // A plane with two ports on node4 (a proxy), and listeners for them,
    // for 2379 on node4's address (its grpc-proxy is on 127.0.0.1 only)
    // and for the metrics port on node1 (the agent serves none yet).
    sh_ok(
        "node1",
        &format!(
            "deckhand plane set router --port {PORT_ANY}/tcp=any --port {PORT_CLUSTER}/tcp=cluster"
        ),
    )?;
    sh_ok(
        "node1",
        "deckhand role set node4 --etcd proxy --planes router",
    )?;
    listen("node4", "e2e-fw-any", &PORT_ANY.to_string())?;
    listen("node4", "e2e-fw-cluster", &PORT_CLUSTER.to_string())?;
    listen("node4", "e2e-fw-etcd", &format!("{n4}:2379"))?;
    listen("node1", "e2e-fw-metrics", &METRICS_PORT.to_string())?;
    let result = (|| -> Result<()> {
        // Baseline, firewall off: every probe that is refused below
        // connects (so a refusal later is the firewall's, not a missing
        // listener's).
        wait_for("the listeners to answer", Duration::from_secs(30), || {
            Ok((from_node("node5", &n4, 2379)? == Connected
                && from_outside(&n4, PORT_CLUSTER)? == Connected
                && from_outside(&n1, METRICS_PORT)? == Connected)
                .then_some(()))
        })?;
        for (what, got) in [
            ("off: node4 -> node1:2380", from_node("node4", &n1, 2380)?),
            ("off: outside -> node1:2379", from_outside(&n1, 2379)?),
            ("off: outside -> node1:2380", from_outside(&n1, 2380)?),
            (
                "off: outside -> node4:8090",
                from_outside(&n4, PORT_CLUSTER)?,
            ),
            ("off: node5 -> node4:2379", from_node("node5", &n4, 2379)?),
            ("off: node1 -> node4:2379", from_node("node1", &n4, 2379)?),
            (
                "off: outside -> node1:7479",
                from_outside(&n1, METRICS_PORT)?,
            ),
        ] {
            expect(what, got, Connected)?;
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
        let t = std::time::Instant::now();
        wait_applied(&["node1", "node2", "node3"])?;
        println!(
            "[figure] firewall on: every node's rules applied {:.1} s after cluster set",
            t.elapsed().as_secs_f64()
        );
        let f = firewalls()?;
        println!("firewall statuses: {f:?}");
        let listing = sh_ok("node1", "nft list table inet deckhand")?;
        println!("node1's table:\n{listing}");
        for rule in [
            "policy drop",
            "iif \"lo\" accept",
            "tcp dport 2380 ip saddr @peers4 accept",
            "tcp dport 2379 ip saddr @cluster4 accept",
            "tcp dport 7479 ip saddr @cluster4 accept",
            // The certificate signer's challenge (renewal).
            "tcp dport 2381 ip saddr @cluster4 accept",
        ] {
            ensure!(listing.contains(rule), "node1's table lacks {rule:?}");
        }
        for (what, got, want) in [
            (
                "member node2 -> node1:2380",
                from_node("node2", &n1, 2380)?,
                Connected,
            ),
            (
                "proxy node4 -> node1:2380",
                from_node("node4", &n1, 2380)?,
                TimedOut,
            ),
            ("outside -> node1:2380", from_outside(&n1, 2380)?, TimedOut),
            (
                "proxy node4 -> node1:2379",
                from_node("node4", &n1, 2379)?,
                Connected,
            ),
            ("outside -> node1:2379", from_outside(&n1, 2379)?, TimedOut),
            (
                "node5 -> proxy node4:2379",
                from_node("node5", &n4, 2379)?,
                TimedOut,
            ),
            (
                "node1 -> proxy node4:2379",
                from_node("node1", &n4, 2379)?,
                TimedOut,
            ),
            (
                "node4 -> localhost:2379",
                from_node("node4", "127.0.0.1", 2379)?,
                Connected,
            ),
            (
                "node1 -> localhost:2379",
                from_node("node1", "127.0.0.1", 2379)?,
                Connected,
            ),
            (
                "outside -> node4:8080 (any)",
                from_outside(&n4, PORT_ANY)?,
                Connected,
            ),
            (
                "outside -> node4:8090 (cluster)",
                from_outside(&n4, PORT_CLUSTER)?,
                TimedOut,
            ),
            (
                "node5 -> node4:8090 (cluster)",
                from_node("node5", &n4, PORT_CLUSTER)?,
                Connected,
            ),
            (
                "node4 -> node1:7479 (metrics)",
                from_node("node4", &n1, METRICS_PORT)?,
                Connected,
            ),
            (
                "outside -> node1:7479 (metrics)",
                from_outside(&n1, METRICS_PORT)?,
                TimedOut,
            ),
        ] {
            expect(what, got, want)?;
        }
        // Requests still flow where they must: a proxy node's local client
        // through its grpc-proxy to the members' 2379 (TLS), and the CLI.
        sh_ok(
            "node4",
            "etcdctl --command-timeout=5s put /e2e/firewall ok >/dev/null",
        )?;
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

        // A bad config (written past `deckhand cluster set`, which refuses
        // it): every agent reports it, keeps the rules in place and runs on.
        let hashes: Vec<(String, Value)> = f
            .iter()
            .map(|(n, v)| (n.clone(), v["hash"].clone()))
            .collect();
        let pids: Vec<String> = (1..=SHARED_NODES)
            .map(|k| agent_pid(&format!("node{k}")))
            .collect::<Result<_>>()?;
        sh_ok(
            "node1",
            r#"etcdctl put /deckhand/config/cluster '{"firewall":{"enabled":true,"default":"reject"}}' >/dev/null"#,
        )?;
        wait_for("every node to report the bad config", FOLLOW, || {
            let st = status("node1")?;
            for k in 1..=SHARED_NODES {
                let name = format!("node{k}");
                let n = node(&st, &name).context("node missing")?;
                let e = n["error"].as_str().unwrap_or("");
                ensure!(e.contains("rejected"), "{name}: error {e:?}");
            }
            Ok(Some(()))
        })?;
        std::thread::sleep(Duration::from_secs(5));
        let after = firewalls()?;
        for (name, fw) in &after {
            let before = &hashes.iter().find(|(n, _)| n == name).context("node")?.1;
            ensure!(
                fw["applied"] == true && &fw["hash"] == before,
                "{name} changed its rules on a bad config: {fw}"
            );
        }
        for (k, pid) in pids.iter().enumerate() {
            let node = format!("node{}", k + 1);
            ensure!(
                &agent_pid(&node)? == pid,
                "{node}'s agent restarted on a bad config"
            );
        }
        expect(
            "bad config: outside -> node1:2379",
            from_outside(&n1, 2379)?,
            TimedOut,
        )?;
        sh_ok(
            "node1",
            r#"etcdctl put /deckhand/config/cluster '{"firewall":{"enabled":true,"default":"drop"}}' >/dev/null"#,
        )?;

        // Someone flushes node2's table: the agent notices and re-applies.
        sh_ok("node2", "nft flush table inet deckhand")?;
        let t = std::time::Instant::now();
        wait_for("node2's table to come back", FOLLOW, || {
            let l = sh_ok("node2", "nft list table inet deckhand")?;
            Ok(l.contains("dport 2380").then_some(()))
        })?;
        println!(
            "[figure] a flushed table re-applied within {:.1} s",
            t.elapsed().as_secs_f64()
        );

        // proxy -> member: node5 joins; its own 2380 opened before the
        // learner was added, and the members let it in.
        let t = std::time::Instant::now();
        let (ok, out, rev) = role_set("node1", "node5", "member")?;
        ensure!(ok, "{out}");
        wait_converged("node1", "node5", rev)?;
        println!(
            "[figure] node5 proxy -> member with the firewall on converged in {:.1} s",
            t.elapsed().as_secs_f64()
        );
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
        expect(
            "new member node5 -> node1:2380",
            from_node("node5", &n1, 2380)?,
            Connected,
        )?;
        expect(
            "node1 -> new member node5:2380",
            from_node("node1", &n5, 2380)?,
            Connected,
        )?;
        expect(
            "outside -> new member node5:2380",
            from_outside(&n5, 2380)?,
            TimedOut,
        )?;
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
        expect(
            "firewall off: outside -> node1:2379",
            from_outside(&n1, 2379)?,
            Connected,
        )?;
        Ok(())
    })();
    stop_listeners("node4");
    stop_listeners("node1");
    let _ = sh("node1", "deckhand cluster set firewall=null");
    result
}
