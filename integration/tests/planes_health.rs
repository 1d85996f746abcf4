//! End-to-end tests of issue 9's acting on a sick node, on the shared
//! 5-node cluster (ClusterGuard::shared): the node holding a singleton
//! whose Docker daemon is stopped resigns, another control node runs the
//! unit within the lease TTL plus a few seconds, and the node campaigns
//! again once Docker answers; a singleton that keeps failing on its node
//! moves to another; a change of `lease_ttl_seconds` (`deckhand cluster
//! set`) leaves no status read without every node, and the singleton where
//! it was.
//!
//! The singleton is the harness's demo-control.service (`docker run --pull
//! never` of the registry's control image, `Requires=docker.service`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use deckhand_integration::*;
use serde_json::Value;

const REGISTRY: &str = "172.29.77.2:5000";
const CONTROL_UNIT: &str = "demo-control.service";
const CONTROL_NODES: [&str; 3] = ["node1", "node2", "node3"];
/// Lease TTL for these tests, in seconds (default 20).
const TTL: u64 = 10;

/// The control plane (the singleton) on node1..node3, TTL [`TTL`]; returns
/// the node that runs the unit once exactly one does.
fn control_plane() -> Result<String> {
    sh_ok(
        "node1",
        &format!("deckhand cluster set lease_ttl_seconds={TTL}"),
    )?;
    sh_ok(
        "node1",
        &format!(
            "deckhand plane set control --unit {CONTROL_UNIT}=singleton --image {REGISTRY}/deckhand/control:1"
        ),
    )?;
    for n in CONTROL_NODES {
        let out = sh_ok(
            "node1",
            &format!("deckhand role set {n} --etcd member --planes control"),
        )?;
        let rev = out
            .split("revision ")
            .nth(1)
            .and_then(|s| s.trim().parse().ok())
            .with_context(|| format!("no revision in {out:?}"))?;
        wait_converged("node1", n, rev)?;
    }
    // Every control node a candidate, exactly one copy.
    wait_for("three candidates and one copy", CONVERGE, || {
        let c = candidates()?;
        let on = running(&CONTROL_NODES);
        Ok((c.len() == 3 && on.len() == 1).then(|| on[0].clone()))
    })
}

/// Whether the container of the control unit runs on `node` (false when
/// its Docker does not answer: then no container runs there).
fn container_running(node: &str) -> bool {
    sh(
        node,
        "docker ps --filter status=running --format '{{.Names}}'",
    )
    .map(|(ok, out, _)| ok && out.lines().any(|l| l.trim() == "demo-control"))
    .unwrap_or(false)
}

fn running(nodes: &[&str]) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| container_running(n))
        .map(|n| n.to_string())
        .collect()
}

/// The node names standing in the control unit's election, leader first.
fn candidates() -> Result<Vec<String>> {
    let out = sh_ok(
        "node1",
        &format!(
            "etcdctl get --prefix /deckhand/elections/{CONTROL_UNIT}/ --sort-by=CREATE --order=ASCEND --print-value-only"
        ),
    )?;
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// The control unit's entry in `name`'s status.
fn unit_status(st: &Value, name: &str) -> Option<Value> {
    node(st, name)?["planes"]
        .as_array()?
        .iter()
        .flat_map(|p| p["units"].as_array().cloned().unwrap_or_default())
        .find(|u| u["name"] == CONTROL_UNIT)
}

/// Samples the control nodes every 200 ms until another node than `from`
/// runs the unit; fails on two copies. Returns the new node and the time.
fn wait_takeover(from: &str, within: Duration) -> Result<(String, Duration)> {
    let t = Instant::now();
    while t.elapsed() < within {
        let on = running(&CONTROL_NODES);
        if on.len() > 1 {
            bail!(
                "two copies of the singleton {:.1} s after the fault: {on:?}",
                t.elapsed().as_secs_f64()
            );
        }
        if let Some(n) = on.iter().find(|n| *n != from) {
            return Ok((n.clone(), t.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("no other node ran the singleton within {within:?} after the fault on {from}")
}

/// Docker stopped on the holder: another control node runs the unit within
/// the lease TTL plus a few seconds, never two copies, the holder's status
/// says why; Docker started again: the holder campaigns again.
#[test]
fn singleton_leaves_a_node_whose_docker_stopped() -> Result<()> {
    let _guard = ClusterGuard::shared()?;
    let holder = control_plane()?;
    let t = Instant::now();
    sh_ok(&holder, "systemctl stop docker.socket docker.service")?;
    let (by, after) = wait_takeover(&holder, Duration::from_secs(TTL + 10))?;
    println!(
        "Docker stopped on {holder}: {by} runs {CONTROL_UNIT} after {:.1} s (lease TTL {TTL} s)",
        after.as_secs_f64()
    );
    let st = wait_for("the holder's status to say why", CONVERGE, || {
        let st = status("node1")?;
        Ok(unit_status(&st, &holder)
            .and_then(|u| u["candidacy"].as_str().map(String::from))
            .filter(|c| c.starts_with("resigned") && c.contains("Docker")))
    })?;
    println!("{holder}'s unit status: {st}");
    ensure!(
        !candidates()?.contains(&holder),
        "{holder} is still a candidate: {:?}",
        candidates()?
    );
    ensure!(
        sh_ok(&holder, "systemctl is-active docker.service || true")?.trim() != "active",
        "deckhand started Docker again on {holder}"
    );
    // Docker back: a candidate again once it answered for 30 s; the unit
    // stays where it is (no handover back), one copy all along.
    sh_ok(&holder, "systemctl start docker.socket docker.service")?;
    let t2 = Instant::now();
    wait_for(&format!("{holder} a candidate again"), CONVERGE, || {
        let on = running(&CONTROL_NODES);
        ensure!(on.len() <= 1, "two copies: {on:?}");
        Ok(candidates()?.contains(&holder).then_some(()))
    })?;
    println!(
        "Docker started on {holder}: a candidate again after {:.1} s; fault to here {:.1} s",
        t2.elapsed().as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    ensure!(
        running(&CONTROL_NODES) == vec![by.clone()],
        "the unit moved again: {:?}",
        running(&CONTROL_NODES)
    );
    Ok(())
}

/// The unit fails on its holder (a drop-in `ExecStart=/bin/false`): after
/// three failed starts the node resigns and another control node runs it.
#[test]
fn a_singleton_that_keeps_failing_moves_to_another_node() -> Result<()> {
    let _guard = ClusterGuard::shared()?;
    let holder = control_plane()?;
    sh_ok(
        &holder,
        &format!(
            "mkdir -p /run/systemd/system/{CONTROL_UNIT}.d && \
             printf '[Service]\\nExecStart=\\nExecStart=/bin/false\\n' > /run/systemd/system/{CONTROL_UNIT}.d/90-test.conf && \
             systemctl daemon-reload && systemctl stop {CONTROL_UNIT}"
        ),
    )?;
    // Three failed starts, START_BACKOFF (10 s) apart, then the resign.
    let (by, after) = wait_takeover(&holder, Duration::from_secs(75))?;
    println!(
        "{CONTROL_UNIT} failing on {holder}: {by} runs it after {:.1} s",
        after.as_secs_f64()
    );
    let st = status("node1")?;
    let c = unit_status(&st, &holder)
        .and_then(|u| u["candidacy"].as_str().map(String::from))
        .unwrap_or_default();
    ensure!(
        c.starts_with("resigned") && c.contains("failed to start or stay up"),
        "{holder}'s candidacy note: {c:?}"
    );
    ensure!(
        !candidates()?.contains(&holder),
        "{holder} still a candidate"
    );
    Ok(())
}

/// `deckhand cluster set lease_ttl_seconds=...`: every node moves its keys
/// onto a lease with the new TTL; a reader in a tight loop on node1 never
/// sees fewer than five status keys, and the singleton stays where it ran.
#[test]
fn lease_ttl_change_makes_nobody_look_dead() -> Result<()> {
    let _guard = ClusterGuard::shared()?;
    let holder = control_plane()?;
    let before = candidates()?;
    let new_ttl = TTL + 7;
    let out = sh_ok(
        "node1",
        &format!(
            r#"(sleep 2; deckhand cluster set lease_ttl_seconds={new_ttl} >/tmp/ttl-set.log 2>&1) &
end=$(( $(date +%s) + 15 )); n=0; miss=0
while [ "$(date +%s)" -lt "$end" ]; do
  c=$(etcdctl get --prefix /deckhand/nodes/ --keys-only | grep -c '/status$')
  n=$((n+1))
  if [ "$c" -lt 5 ]; then miss=$((miss+1)); echo "miss: $c status keys at read $n"; fi
done
wait
echo "reads=$n misses=$miss"
cat /tmp/ttl-set.log"#
        ),
    )?;
    println!("{out}");
    ensure!(
        out.contains("misses=0"),
        "a status read missed a node:\n{out}"
    );
    let reads: u64 = out
        .split("reads=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    ensure!(reads > 50, "only {reads} reads:\n{out}");
    // Every status key is on a lease granted with the new TTL.
    wait_for("every status on a lease of the new TTL", CONVERGE, || {
        let out = sh_ok(
            "node1",
            r#"for k in $(etcdctl get --prefix /deckhand/nodes/ --keys-only | grep '/status$'); do
  l=$(etcdctl get "$k" -w json | sed -n 's/.*"lease":\([0-9]*\).*/\1/p')
  etcdctl lease timetolive "$(printf '%x' "$l")" | sed -n 's/.*granted with TTL(\([0-9]*\)s).*/\1/p'
done"#,
        )?;
        let ttls: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
        Ok((ttls.len() == 5 && ttls.iter().all(|t| t.trim() == new_ttl.to_string())).then_some(()))
    })?;
    ensure!(
        running(&CONTROL_NODES) == vec![holder.clone()],
        "the singleton moved: {:?}",
        running(&CONTROL_NODES)
    );
    ensure!(
        candidates()? == before,
        "the candidacies changed: {before:?} → {:?}",
        candidates()?
    );
    Ok(())
}
