//! End-to-end plane tests (issue 3): global units where their plane is,
//! singleton units on exactly one node with failover on a node kill and
//! fencing across a partition, a plane removed from a node, a bad plane
//! config, `deckhand preseed` against the harness registry, and the agent's
//! preseed worker following the `[docker]` settings of a config drop-in.
//!
//! The plane units are the harness's demo units (integration/node-image
//! overlay): `docker run --pull never` of images in the harness registry
//! (172.29.77.2:5000), so a unit whose image was not preseeded fails
//! instead of pulling. Every test runs on the shared 5-node cluster
//! (ClusterGuard::shared), which starts with no plane and no image pulled
//! by a plane.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use deckhand_integration::*;
use serde_json::Value;

const REGISTRY: &str = "172.29.77.2:5000";
const ROUTER_UNIT: &str = "demo-router.service";
const CONTROL_UNIT: &str = "demo-control.service";
/// Lease TTL for these tests, in seconds (default 20).
const TTL: u64 = 10;

fn image(name: &str) -> String {
    format!("{REGISTRY}/deckhand/{name}:1")
}

fn set_ttl() -> Result<()> {
    sh_ok(
        "node1",
        &format!("etcdctl put /deckhand/config/cluster '{{\"lease_ttl_seconds\":{TTL}}}'"),
    )?;
    Ok(())
}

/// The router plane: the global unit demo-router.service and its image
/// (`deckhand plane set` on node1).
fn set_router_plane() -> Result<()> {
    sh_ok(
        "node1",
        &format!(
            "deckhand plane set router --unit {ROUTER_UNIT}=global --image {}",
            image("router")
        ),
    )?;
    Ok(())
}

/// `deckhand role set NODE --etcd ETCD --planes PLANES` on node1; returns
/// the revision.
fn role_planes(node: &str, etcd: &str, planes: &str) -> Result<i64> {
    let out = sh_ok(
        "node1",
        &format!("deckhand role set {node} --etcd {etcd} --planes '{planes}'"),
    )?;
    out.split("revision ")
        .nth(1)
        .and_then(|s| s.trim().parse().ok())
        .with_context(|| format!("no revision in {out:?}"))
}

/// Whether `unit` is active on `node` (false for a node that is down).
fn active(node: &str, unit: &str) -> bool {
    sh(node, &format!("systemctl is-active {unit}"))
        .map(|(ok, out, _)| ok && out.trim() == "active")
        .unwrap_or(false)
}

/// Whether the container of `unit` runs on `node` (false when the node is
/// down or cut off from docker exec).
fn container_running(node: &str, unit: &str) -> bool {
    let name = unit.trim_end_matches(".service");
    sh(
        node,
        "docker ps --filter status=running --format '{{.Names}}'",
    )
    .map(|(ok, out, _)| ok && out.lines().any(|l| l.trim() == name))
    .unwrap_or(false)
}

fn nodes_running(nodes: &[&str], unit: &str) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| container_running(n, unit))
        .map(|n| n.to_string())
        .collect()
}

/// The status entry's unit `unit` on node `name`, as seen from `via`.
fn unit_status(st: &Value, name: &str, unit: &str) -> Option<Value> {
    node(st, name)?["planes"]
        .as_array()?
        .iter()
        .flat_map(|p| p["units"].as_array().cloned().unwrap_or_default())
        .find(|u| u["name"] == unit)
}

/// Tests 1, 2, 4 and 5 of the issue on one 5-node cluster, in order.
#[test]
fn planes_run_where_they_belong() -> Result<()> {
    let guard = ClusterGuard::shared()?;
    set_ttl()?;
    let all = ["node1", "node2", "node3", "node4", "node5"];
    let control = ["node1", "node2", "node3"];

    // 1. router: a global unit on node4 and node5 only, image preseeded first.
    set_router_plane()?;
    let r4 = role_planes("node4", "proxy", "router")?;
    let r5 = role_planes("node5", "proxy", "router")?;
    wait_converged("node1", "node4", r4)?;
    let st = wait_converged("node1", "node5", r5)?;
    for n in ["node4", "node5"] {
        ensure!(active(n, ROUTER_UNIT), "{ROUTER_UNIT} not active on {n}");
        let u = unit_status(&st, n, ROUTER_UNIT).context("unit in status")?;
        ensure!(u["state"] == "active", "{n} status: {u}");
        let images = &node(&st, n).unwrap()["images"];
        ensure!(
            images["wanted"] == 1 && images["present"] == 1,
            "{n} images: {images}"
        );
        // The unit really serves (its container runs busybox httpd).
        sh_ok(n, "curl -fsS -o /dev/null http://127.0.0.1:8080/")
            .with_context(|| format!("the router container on {n} does not answer"))?;
        // Preseeded before it started: the agent's journal says pulled,
        // then starting; the unit never had to fall back to a pull (it
        // runs with --pull never and never restarted).
        let log = journal_since(n, guard.since)?;
        let pulled = log
            .find(&format!("preseed: pulled {}", image("router")))
            .with_context(|| format!("{n}: no preseed of the router image in:\n{log}"))?;
        let started = log
            .find(&format!("starting plane unit {ROUTER_UNIT}"))
            .with_context(|| format!("{n}: the unit was not started by deckhand"))?;
        ensure!(
            pulled < started,
            "{n}: unit started before its image was pulled:\n{log}"
        );
        let restarts = sh_ok(n, &format!("systemctl show -P NRestarts {ROUTER_UNIT}"))?;
        ensure!(
            restarts.trim() == "0",
            "{n}: {ROUTER_UNIT} restarted {restarts}"
        );
    }
    for n in control {
        ensure!(
            !active(n, ROUTER_UNIT),
            "{ROUTER_UNIT} runs on {n}, not a router node"
        );
        ensure!(
            !container_running(n, ROUTER_UNIT),
            "router container runs on {n}"
        );
    }

    // 2. control: a singleton on node1..node3, exactly one copy.
    sh_ok(
        "node1",
        &format!(
            "deckhand plane set control --unit {CONTROL_UNIT}=singleton --image {}",
            image("control")
        ),
    )?;
    for n in control {
        let rev = role_planes(n, "member", "control")?;
        wait_converged("node1", n, rev)?;
    }
    let holder = wait_for("one control node to run the singleton", CONVERGE, || {
        let on = nodes_running(&all, CONTROL_UNIT);
        Ok((on.len() == 1).then(|| on[0].clone()))
    })?;
    let st = status("node4")?;
    for n in control {
        let u = unit_status(&st, n, CONTROL_UNIT).context("unit in status")?;
        ensure!(
            u["holder"] == holder.as_str(),
            "{n} sees holder {u}, expected {holder}"
        );
        let images = &node(&st, n).unwrap()["images"];
        ensure!(
            images["present"] == 1,
            "{n}: control image not preseeded: {images}"
        );
    }
    for n in ["node4", "node5"] {
        ensure!(!container_running(n, CONTROL_UNIT), "singleton on {n}");
    }
    // Let a few more passes run: still exactly one copy.
    std::thread::sleep(Duration::from_secs(3));
    let on = nodes_running(&all, CONTROL_UNIT);
    ensure!(on == vec![holder.clone()], "copies: {on:?}");

    // Kill the holder's node: another control node runs the unit within
    // the lease TTL plus a few seconds, without pulling anything.
    let others: Vec<&str> = control.iter().copied().filter(|n| *n != holder).collect();
    let killed_at = unix_now();
    let t = Instant::now();
    cluster(&["kill", &holder])?;
    let new_holder = wait_for(
        "another control node to run the singleton",
        CONVERGE,
        || {
            let on = nodes_running(&others, CONTROL_UNIT);
            ensure!(on.len() <= 1, "two copies of the singleton: {on:?}");
            Ok(on.first().cloned())
        },
    )?;
    let failover = t.elapsed();
    println!(
        "singleton failover after `docker kill {holder}`: {new_holder} runs {CONTROL_UNIT} after {:.1} s (lease TTL {TTL} s)",
        failover.as_secs_f64()
    );
    ensure!(
        failover < Duration::from_secs(TTL + 15),
        "failover took {:.1} s, more than the TTL ({TTL} s) plus 15 s",
        failover.as_secs_f64()
    );
    let log = journal_since(&new_holder, killed_at)?;
    ensure!(
        !log.contains("preseed: pulled"),
        "{new_holder} pulled an image during the failover:\n{log}"
    );
    let unit_log = sh_ok(
        &new_holder,
        &format!("journalctl -u {CONTROL_UNIT} --no-pager -o cat --since @{killed_at}"),
    )?;
    ensure!(
        !unit_log.contains("Unable to find image") && !unit_log.contains("Pulling"),
        "{new_holder}'s unit pulled:\n{unit_log}"
    );

    // The killed node comes back: still exactly one copy.
    cluster(&["start", &holder])?;
    wait_for(&format!("{holder} alive again"), CONVERGE, || {
        let st = status("node4")?;
        Ok(
            (node(&st, &holder).is_some_and(|n| n["alive"] == true && n["converged"] == true))
                .then_some(()),
        )
    })?;
    let on = nodes_running(&all, CONTROL_UNIT);
    ensure!(
        on == vec![new_holder.clone()],
        "after restart, copies: {on:?}"
    );

    // 4. router removed from node5's planes: the unit stops there.
    let rev = role_planes("node5", "proxy", "")?;
    wait_converged("node1", "node5", rev)?;
    ensure!(
        !active("node5", ROUTER_UNIT),
        "{ROUTER_UNIT} still active on node5"
    );
    ensure!(
        !container_running("node5", ROUTER_UNIT),
        "router container still on node5"
    );
    ensure!(
        active("node4", ROUTER_UNIT),
        "{ROUTER_UNIT} stopped on node4 too"
    );

    // 5. Bad plane configs written straight to etcd (an invalid image
    // reference; a unit name with `../`): every node reports the error,
    // nothing of it runs, the previous config keeps running.
    for (value, words) in [
        (
            format!(
                r#"{{"units":[{{"name":"{ROUTER_UNIT}","mode":"global"}}],"images":["{REGISTRY}/Deckhand/UPPER:1"]}}"#
            ),
            "invalid image reference",
        ),
        (
            format!(
                r#"{{"units":[{{"name":"../evil.service","mode":"global"}},{{"name":"{ROUTER_UNIT}","mode":"global"}}],"images":["{}"]}}"#,
                image("router")
            ),
            "contains '/'",
        ),
    ] {
        sh_ok(
            "node1",
            &format!("etcdctl put /deckhand/config/planes/router '{value}'"),
        )?;
        wait_for(
            &format!("every node to report the bad router config ({words})"),
            CONVERGE,
            || {
                let st = status("node1")?;
                let reported = all.iter().all(|n| {
                    node(&st, n).is_some_and(|x| {
                        x["error"].as_str().is_some_and(|e| {
                            e.contains("plane config")
                                && e.contains(words)
                                && e.contains("keeping the previous config")
                        })
                    })
                });
                Ok(reported.then_some(()))
            },
        )?;
        ensure!(
            active("node4", ROUTER_UNIT),
            "the previous router config stopped running"
        );
    }
    // The CLI refuses such values and writes nothing.
    let (ok, _, err) = sh(
        "node1",
        &format!(
            "deckhand plane set router --unit ../evil.service=global --image {}",
            image("router")
        ),
    )?;
    ensure!(
        !ok && err.contains("contains '/'"),
        "CLI accepted a bad unit name: {err}"
    );
    let (ok, _, err) = sh("node1", "deckhand plane set router --image 'Bad/Ref:1'")?;
    ensure!(
        !ok && err.contains("invalid image reference"),
        "CLI accepted a bad image: {err}"
    );
    for n in all {
        let (_, out, _) = sh(n, "systemctl list-units --all --no-legend 'evil*' | wc -l")?;
        ensure!(out.trim() == "0", "{n} knows an evil unit");
    }
    ensure!(
        active("node4", ROUTER_UNIT),
        "the previous router config stopped running"
    );
    // A valid config again clears the error.
    set_router_plane()?;
    wait_for("the plane error to clear", CONVERGE, || {
        let st = status("node1")?;
        let clear = all.iter().all(|n| {
            node(&st, n).is_some_and(|x| {
                !x["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("plane config"))
            })
        });
        Ok(clear.then_some(()))
    })?;
    ensure!(active("node4", ROUTER_UNIT), "router stopped on node4");
    Ok(())
}

/// Test 3: the singleton's node partitioned away: its copy stops, one copy
/// runs on the majority side, and never two at once (sampled throughout).
#[test]
fn singleton_is_fenced_across_a_partition() -> Result<()> {
    let guard = ClusterGuard::shared()?;
    set_ttl()?;
    let all = ["node1", "node2", "node3", "node4"];
    sh_ok(
        "node1",
        &format!(
            "deckhand plane set control --unit {CONTROL_UNIT}=singleton --image {}",
            image("control")
        ),
    )?;
    // node4 (a proxy) is a control node too: the majority side keeps a
    // proxy and two members whichever node is cut off.
    for (n, etcd) in [
        ("node1", "member"),
        ("node2", "member"),
        ("node3", "member"),
        ("node4", "proxy"),
    ] {
        let rev = role_planes(n, etcd, "control")?;
        wait_converged("node1", n, rev)?;
    }
    let holder = wait_for("one node to run the singleton", CONVERGE, || {
        let on = nodes_running(&all, CONTROL_UNIT);
        Ok((on.len() == 1).then(|| on[0].clone()))
    })?;
    let others: Vec<&str> = all.iter().copied().filter(|n| *n != holder).collect();

    // docker exec still reaches a partitioned node: sample every node,
    // including the cut-off one, all along.
    cluster(&["partition", &holder])?;
    let t = Instant::now();
    let mut isolated_stopped = None;
    let mut majority_started = None;
    let mut samples = 0;
    while t.elapsed() < Duration::from_secs(TTL * 4) {
        let on = nodes_running(&all, CONTROL_UNIT);
        samples += 1;
        if on.len() > 1 {
            bail!(
                "two copies of the singleton at {:.1} s into the partition: {on:?}",
                t.elapsed().as_secs_f64()
            );
        }
        if isolated_stopped.is_none() && !on.contains(&holder) {
            isolated_stopped = Some(t.elapsed());
        }
        if majority_started.is_none() && on.iter().any(|n| others.contains(&n.as_str())) {
            majority_started = Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let stopped = isolated_stopped.context("the isolated copy never stopped")?;
    let started = majority_started.context("no copy started on the majority side")?;
    println!(
        "partition of {holder}: isolated copy stopped after {:.1} s, majority copy started after {:.1} s ({samples} samples, never two)",
        stopped.as_secs_f64(),
        started.as_secs_f64()
    );
    ensure!(
        stopped < started,
        "the majority copy started before the isolated one stopped"
    );
    ensure!(
        stopped < Duration::from_secs(TTL),
        "isolated copy ran {:.1} s, longer than the lease TTL",
        stopped.as_secs_f64()
    );
    let log = journal_since(&holder, guard.since)?;
    ensure!(
        log.contains("fencing"),
        "{holder}'s journal does not mention fencing:\n{log}"
    );

    // Heal: the node rejoins as a follower, still exactly one copy.
    cluster(&["heal", &holder])?;
    wait_for(&format!("{holder} alive again"), CONVERGE, || {
        let st = status("node1")?;
        Ok(node(&st, &holder)
            .is_some_and(|n| n["alive"] == true && n["converged"] == true)
            .then_some(()))
    })?;
    for _ in 0..10 {
        let on = nodes_running(&all, CONTROL_UNIT);
        ensure!(
            on.len() == 1 && on[0] != holder,
            "after heal, copies: {on:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // SIGKILL the agent of the node running the singleton: systemd restarts
    // the agent, whose new lease does not lead, so it stops the unit before
    // the old lease can expire; another node (or this one, re-elected)
    // runs it afterwards. Never two copies.
    let runner = nodes_running(&all, CONTROL_UNIT)
        .pop()
        .context("no copy before the agent kill")?;
    sh_ok(&runner, "systemctl kill -s KILL deckhand.service")?;
    let t = Instant::now();
    let mut gap = None;
    let mut back = None;
    while t.elapsed() < Duration::from_secs(TTL * 4) && back.is_none() {
        let on = nodes_running(&all, CONTROL_UNIT);
        ensure!(
            on.len() <= 1,
            "two copies {:.1} s after killing {runner}'s agent: {on:?}",
            t.elapsed().as_secs_f64()
        );
        if on.is_empty() && gap.is_none() {
            gap = Some(t.elapsed());
        }
        if gap.is_some() && on.len() == 1 {
            back = Some((t.elapsed(), on[0].clone()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (after, by) = back.context("the singleton did not run again after the agent kill")?;
    println!(
        "agent of {runner} SIGKILLed: its copy stopped after {:.1} s, {by} runs it after {:.1} s",
        gap.unwrap_or_default().as_secs_f64(),
        after.as_secs_f64()
    );
    Ok(())
}

/// Test 6: `deckhand preseed` against the registry: everything present
/// afterwards; again: no layer downloaded; with the registry stopped: a
/// clear error and a non-zero exit.
#[test]
fn preseed_command_pulls_once_and_fails_clearly() -> Result<()> {
    let _guard = ClusterGuard::shared()?;
    let images: Vec<String> = (0..3).map(|i| image(&format!("bench-{i}"))).collect();
    let list = images.join(" ");
    // The first run must download: none of these images on node2 yet (a
    // reused cluster's node2 may have them from an earlier run).
    for i in &images {
        sh_ok(
            "node2",
            &format!(
                "docker image rm -f {i} >/dev/null 2>&1; ! docker image inspect {i} >/dev/null 2>&1"
            ),
        )
        .with_context(|| format!("{i} still present on node2"))?;
    }

    let (ok, out, err) = sh(
        "node2",
        &format!("deckhand preseed --no-etcd --json {list}"),
    )?;
    ensure!(ok, "first preseed failed:\n{out}\n{err}");
    let report: Value = serde_json::from_str(&out).with_context(|| format!("JSON: {out}"))?;
    ensure!(
        report["pulled"].as_array().map(Vec::len) == Some(images.len())
            && report["layers_downloaded"].as_u64().unwrap_or(0) > 0,
        "the first run did not pull all {} images: {report:#}",
        images.len()
    );
    for i in &images {
        sh_ok("node2", &format!("docker image inspect {i} >/dev/null"))
            .with_context(|| format!("{i} not present after preseed"))?;
    }

    // Again: every image present, no layer downloaded.
    let (ok, out, err) = sh(
        "node2",
        &format!("deckhand preseed --no-etcd --json {list}"),
    )?;
    ensure!(ok, "second preseed failed:\n{out}\n{err}");
    let report: Value = serde_json::from_str(&out).with_context(|| format!("JSON: {out}"))?;
    ensure!(
        report["layers_downloaded"] == 0,
        "second run downloaded layers: {report:#}"
    );
    ensure!(
        report["pulled"].as_array().is_some_and(Vec::is_empty),
        "second run pulled: {report:#}"
    );

    // Registry stopped, one image removed: a clear error, exit non-zero.
    cluster(&["registry", "stop"])?;
    let result = (|| -> Result<()> {
        sh_ok("node2", &format!("docker rmi {}", images[0]))?;
        sh_ok(
            "node2",
            "mkdir -p /etc/deckhand/config.d && printf '[docker]\\npull_attempts = 1\\n' > /etc/deckhand/config.d/50-test.toml",
        )?;
        let (ok, out, err) = sh("node2", &format!("deckhand preseed --no-etcd {list}"))?;
        ensure!(
            !ok,
            "preseed succeeded with the registry stopped:\n{out}\n{err}"
        );
        let text = format!("{out}{err}");
        ensure!(
            text.contains(&images[0]) && (text.contains("FAILED") || text.contains("failed")),
            "no clear error naming the image:\n{text}"
        );
        ensure!(
            text.contains("connection refused") || text.contains("172.29.77.2:5000"),
            "the error does not say what failed:\n{text}"
        );
        println!("preseed with the registry stopped says:\n{text}");
        Ok(())
    })();
    cluster(&["registry", "start"])?;
    result
}

/// The agent's preseed worker pulls with the `[docker]` settings of the
/// agent config: a drop-in that asks for more free disk than any host has
/// makes node4's pull of the router image fail with that reason (node5,
/// without it, pulls); without the drop-in node4 pulls it too.
#[test]
fn preseed_worker_follows_a_docker_dropin() -> Result<()> {
    let _guard = ClusterGuard::shared()?;
    // The fixture removes this drop-in when it resets the cluster.
    sh_ok(
        "node4",
        "mkdir -p /etc/deckhand/config.d && \
         printf '[docker]\\nmin_free_bytes = 4611686018427387904\\npull_attempts = 1\\n' \
           > /etc/deckhand/config.d/50-test.toml && systemctl restart deckhand",
    )?;
    set_router_plane()?;
    role_planes("node4", "proxy", "router")?;
    role_planes("node5", "proxy", "router")?;
    let st = wait_for("node4's pull to fail on free disk", CONVERGE, || {
        let st = status("node1")?;
        let failed = node(&st, "node4")
            .and_then(|n| n["images"]["failed"].as_array())
            .and_then(|f| f.first())
            .and_then(|f| f["reason"].as_str())
            .is_some_and(|r| {
                r.contains("not enough free disk space") && r.contains("docker.min_free_bytes")
            });
        let pulled5 = node(&st, "node5").is_some_and(|n| n["images"]["present"] == 1);
        Ok((failed && pulled5).then_some(st))
    })?;
    let n4 = node(&st, "node4").unwrap();
    assert_eq!(n4["images"]["present"], 0, "{n4:#}");
    let (present, _, _) = sh(
        "node4",
        &format!("docker image inspect {}", image("router")),
    )?;
    assert!(!present, "node4 did not pull the image");
    sh_ok(
        "node4",
        "rm /etc/deckhand/config.d/50-test.toml && systemctl restart deckhand",
    )?;
    wait_for(
        "node4 to pull the image without the drop-in",
        CONVERGE,
        || {
            let st = status("node1")?;
            Ok(node(&st, "node4")
                .is_some_and(|n| n["images"]["present"] == 1 && n["converged"] == true)
                .then_some(()))
        },
    )?;
    Ok(())
}
