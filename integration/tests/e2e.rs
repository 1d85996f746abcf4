//! End-to-end: a real 5-node cluster of systemd containers installed by
//! cloud-init (integration/cluster), reconfigured live by role keys.
//!
//! One scenario, in order, because each step starts from the state the one
//! before left: (1) node4 to member, (2) the leader's node to proxy,
//! (3) one more member to proxy is refused, (4) garbage in node5's role key,
//! (5) clients on every live node kept reading and writing throughout and
//! lost nothing, (6) a killed proxy's status expires.
//!
//! Needs Docker and root (it boots containers); `.ci/run` provides both.
//! Runs on the shared cluster (ClusterGuard::shared: reused and reset when
//! one is up); integration/test takes it down at the end unless
//! DECKHAND_E2E_KEEP=1. With DECKHAND_E2E_FIREWALL=1 the host firewall is on
//! (default drop) throughout.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use deckhand_integration::*;

const NODES: [&str; 5] = ["node1", "node2", "node3", "node4", "node5"];
/// Lease TTL set for the test, in seconds (the default is 20).
const TTL: u64 = 10;

/// The probe each node runs: every 200 ms one logical write through
/// localhost:2379, retried for up to 10 s (a transition restarts the local
/// etcd once, which refuses connections for about a second). Logs one line per
/// logical operation: `ok KEY` or `fail KEY`.
const PROBE: &str = r#"
n=$(hostname); i=0
while [ ! -e /tmp/probe.stop ]; do
  i=$((i+1)); k="/e2e/probe/$n/$i"; ok=0; t=0
  while [ $t -lt 20 ]; do
    if ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:2379 --dial-timeout=1s --command-timeout=2s put "$k" "$i" >/dev/null 2>&1; then ok=1; break; fi
    t=$((t+1)); sleep 0.5
  done
  if [ $ok = 1 ]; then echo "ok $k $t" >> /tmp/probe.log; else echo "fail $k" >> /tmp/probe.log; fi
  sleep 0.2
done
"#;

#[test]
fn five_node_cluster_roles() -> Result<()> {
    let guard = ClusterGuard::shared()?;

    // ClusterGuard::shared waited for five agents converged with three voters.
    let st = status("node1")?;
    // Every node reports the version of the agent it runs, in the JSON and
    // in the table.
    let version = sh_ok("node1", "deckhand --version")?;
    let version = version
        .trim()
        .strip_prefix("deckhand ")
        .context("deckhand --version")?;
    for n in NODES {
        assert_eq!(node(&st, n).unwrap()["version"], version, "{st:#}");
    }
    let table = sh_ok("node1", "deckhand status")?;
    // The node table follows the cluster section: its header starts "NODE".
    let lines: Vec<&str> = table.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.starts_with("NODE "))
        .with_context(|| format!("no node table header in:\n{table}"))?;
    assert!(lines[header].contains("VERSION"), "{table}");
    let rows = &lines[header + 1..];
    assert!(
        rows.len() >= 5 && rows[..5].iter().all(|l| l.contains(version)),
        "{table}"
    );
    for n in ["node4", "node5"] {
        assert_eq!(
            node(&st, n).unwrap()["etcd"]["mode"],
            "proxy",
            "{n} starts as a proxy: {st:#}"
        );
    }
    // DECKHAND_E2E_FIREWALL=1: the same scenario with the host firewall on
    // (default drop, docs/firewall.md): the role changes must not be
    // blocked by it.
    let firewall = std::env::var("DECKHAND_E2E_FIREWALL").as_deref() == Ok("1");
    let fw_config = if firewall {
        r#","firewall":{"enabled":true,"default":"drop"}"#
    } else {
        ""
    };
    println!(
        "host firewall: {}",
        if firewall { "on, default drop" } else { "off" }
    );
    sh_ok(
        "node1",
        &format!(
            "etcdctl put /deckhand/config/cluster '{{\"lease_ttl_seconds\":{TTL}{fw_config}}}'"
        ),
    )?;

    // Keys written before any change, and a probe on every node.
    sh_ok(
        "node4",
        "for i in $(seq 1 50); do etcdctl put /e2e/before/$i v$i >/dev/null; done",
    )?;
    for n in NODES {
        sh_ok(
            n,
            &format!(
                "rm -f /tmp/probe.log /tmp/probe.stop; nohup sh -c '{}' >/dev/null 2>&1 &",
                PROBE.replace('\'', "'\\''")
            ),
        )?;
    }

    // 1. node4 to member: learner, promoted, 4 voters; localhost served throughout.
    let t = Instant::now();
    let (ok, out, rev) = role_set("node1", "node4", "member")?;
    ensure!(ok, "role set node4 member: {out}");
    let st = wait_converged("node1", "node4", rev)?;
    println!(
        "node4 proxy -> member converged in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(st["voters"], 4, "{st:#}");
    assert_eq!(node(&st, "node4").unwrap()["etcd"]["mode"], "member");
    let j = journal_since("node4", guard.since)?;
    let learner = j
        .find("starting learner")
        .context("node4 never started as a learner")?;
    let promoted = j
        .find("promoted to voter")
        .context("node4 was never promoted")?;
    assert!(learner < promoted, "learner start comes before promotion");
    sh_ok(
        "node4",
        "etcdctl --endpoints=127.0.0.1:2379 endpoint status -w json | grep -q '\"leader\"'",
    )?;

    // 2. The leader's node to proxy: leadership moves first, data dir kept aside.
    let leader = st["leader"]
        .as_str()
        .context("no leader in status")?
        .to_string();
    let t = Instant::now();
    let (ok, out, rev) = role_set("node1", &leader, "proxy")?;
    ensure!(ok, "role set {leader} proxy: {out}");
    let other = NODES
        .iter()
        .find(|n| **n != leader && **n != "node5")
        .unwrap();
    let st = wait_converged(other, &leader, rev)?;
    println!(
        "{leader} member -> proxy converged in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(st["voters"], 3, "{st:#}");
    assert_ne!(
        st["leader"].as_str(),
        Some(leader.as_str()),
        "leadership moved away"
    );
    assert_eq!(node(&st, &leader).unwrap()["etcd"]["mode"], "proxy");
    let j = journal_since(&leader, guard.since)?;
    let moved = j
        .find("moving leadership")
        .context("leadership was not moved first")?;
    let removed = j
        .find("removed this node's member")
        .context("member was not removed")?;
    assert!(moved < removed, "leadership moved before the removal");
    // Moved aside by this test: `member.removed-<unix time>` of now, not a
    // dir an earlier test on a reused cluster left.
    let aside = sh_ok(
        &leader,
        "ls -d /var/lib/deckhand-etcd/member.removed-*/member",
    )?;
    ensure!(
        aside.lines().any(|l| l
            .split("member.removed-")
            .nth(1)
            .and_then(|t| t.trim_end_matches("/member").parse::<u64>().ok())
            .is_some_and(|t| t >= guard.since)),
        "data dir moved aside during this test: {aside}"
    );

    // 3. One more member to proxy: refused, nothing changed.
    let victim = st["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .find(|n| *n != leader)
        .unwrap()
        .to_string();
    let (ok, out, _) = role_set("node1", &victim, "proxy")?;
    ensure!(ok, "{out}");
    let st = wait_for(&format!("{victim} to report blocked"), CONVERGE, || {
        let st = status(other)?;
        Ok(node(&st, &victim)
            .and_then(|n| n["blocked"].as_str())
            .is_some()
            .then_some(st))
    })?;
    let n = node(&st, &victim).unwrap();
    let blocked = n["blocked"].as_str().unwrap();
    assert!(
        blocked.contains("min_voters"),
        "blocked says why: {blocked}"
    );
    assert_eq!(n["etcd"]["mode"], "member", "nothing changed");
    assert_eq!(st["voters"], 3);
    let (ok, out, rev) = role_set("node1", &victim, "member")?;
    ensure!(ok, "{out}");
    wait_converged(other, &victim, rev)?;

    // 4. Garbage in node5's role key: error in status, node5 stays a proxy.
    let id5 = node(&st, "node5").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    sh_ok(
        "node1",
        &format!("etcdctl put /deckhand/nodes/{id5}/role 'garbage{{'"),
    )?;
    let st = wait_for("node5 to report the bad role", CONVERGE, || {
        let st = status("node1")?;
        Ok(node(&st, "node5")
            .and_then(|n| n["error"].as_str())
            .is_some_and(|e| e.contains("not valid role JSON"))
            .then_some(st))
    })?;
    let n5 = node(&st, "node5").unwrap();
    assert_eq!(n5["etcd"]["mode"], "proxy", "{n5:#}");
    assert_eq!(n5["alive"], true);
    sh_ok("node5", "systemctl is-active deckhand")?;
    // The warning reached the journal at its priority (the agent's `<4>`
    // prefix, read and stripped by journald): `journalctl -p warning` shows
    // it, and none of the info lines the agent wrote meanwhile.
    let warnings = sh_ok(
        "node5",
        &format!(
            "journalctl -u deckhand -p warning --no-pager -o cat --since @{}",
            guard.since
        ),
    )?;
    assert!(
        warnings.contains("ignoring malformed role key"),
        "journalctl -p warning shows the rejected role key: {warnings}"
    );
    assert!(
        !warnings.contains("<4>"),
        "journald strips the prefix: {warnings}"
    );
    let infos = sh_ok(
        "node5",
        &format!(
            "journalctl -u deckhand -p info..info --no-pager -o cat --since @{}",
            guard.since
        ),
    )?;
    assert!(
        infos.contains("taking step"),
        "node5's proxy updates are info lines: {infos}"
    );
    for line in infos.lines() {
        assert!(
            !warnings.lines().any(|w| w == line),
            "an info line shows as a warning: {line}"
        );
    }

    // 5. Clients on every node kept working; nothing acknowledged was lost.
    for n in NODES {
        sh_ok(n, "touch /tmp/probe.stop")?;
    }
    std::thread::sleep(Duration::from_secs(3));
    let before = sh_ok(
        "node2",
        "etcdctl get --prefix /e2e/before/ --keys-only | grep -c before",
    )?;
    assert_eq!(
        before.trim(),
        "50",
        "keys written before the changes are all there"
    );
    for n in NODES {
        let log = sh_ok(n, "cat /tmp/probe.log")?;
        let oks: Vec<&str> = log
            .lines()
            .filter_map(|l| l.strip_prefix("ok "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let fails = log.lines().filter(|l| l.starts_with("fail")).count();
        let retried = log
            .lines()
            .filter(|l| l.starts_with("ok ") && !l.ends_with(" 0"))
            .count();
        println!(
            "{n}: {} writes acknowledged, {retried} needed retries, {fails} failed",
            oks.len()
        );
        assert!(
            oks.len() >= 5,
            "{n}: the probe made progress ({} writes)",
            oks.len()
        );
        assert_eq!(fails, 0, "{n}: localhost:2379 refused writes for over 10 s");
        let stored = sh_ok(
            "node2",
            &format!("etcdctl get --prefix /e2e/probe/{n}/ --keys-only | grep -c probe"),
        )?;
        assert_eq!(
            stored.trim().parse::<usize>()?,
            oks.len(),
            "{n}: every acknowledged write is stored"
        );
    }

    // With the firewall on: every node's rules applied and following the
    // role it ended with.
    if firewall {
        wait_for(
            "every node's firewall to follow its role",
            Duration::from_secs(30),
            || {
                let st = status("node1")?;
                for n in NODES {
                    let fw = &node(&st, n).context("node missing")?["firewall"];
                    ensure!(
                        fw["enabled"] == true
                            && fw["applied"] == true
                            && fw["matches_role"] == true,
                        "{n}: {fw}"
                    );
                }
                Ok(Some(()))
            },
        )?;
        println!("every node's firewall applied and matching its role");
    }

    // 6. docker kill of a proxy: its status disappears, alive turns false.
    let t = Instant::now();
    cluster(&["kill", "node5"])?;
    wait_for(
        "node5 to be reported dead",
        Duration::from_secs(TTL + 20),
        || {
            let st = status("node1")?;
            Ok(node(&st, "node5")
                .is_some_and(|n| n["alive"] == false)
                .then_some(()))
        },
    )?;
    println!(
        "node5 reported dead {:.1} s after the kill (lease TTL {TTL} s)",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
