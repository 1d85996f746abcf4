//! End-to-end membership and time tests (issue 9): a voter added but never
//! started is removed after `voter_start_timeout_seconds`, not before; a
//! join while a voter's host is dead is `blocked`, naming the voter, until
//! `deckhand member remove` removes it; one voter's wall clock stepped an
//! hour forward (libfaketime in its agent only) reaps a stalled learner
//! after its timeout, not before. Each runs on the shared 5-node cluster.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use deckhand_integration::*;
use serde_json::Value;

/// A peer URL on the harness network that nothing serves.
const NOBODY: &str = "http://172.29.77.250:2380";

fn config(json: &str) -> Result<()> {
    sh_ok(
        "node1",
        &format!("etcdctl put /deckhand/config/cluster '{json}'"),
    )?;
    Ok(())
}

/// The member list through node1's member: (voter names, all members).
fn member_list() -> Result<Vec<Value>> {
    Ok(members("node1")?["members"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn listed(peer: &str) -> Result<bool> {
    Ok(member_list()?.iter().any(|m| {
        m["peerURLs"]
            .as_array()
            .is_some_and(|u| u.iter().any(|u| u == peer))
    }))
}

fn voter_names() -> Result<Vec<String>> {
    let mut v: Vec<String> = member_list()?
        .iter()
        .filter(|m| m["isLearner"] != true)
        .map(|m| m["name"].as_str().unwrap_or("").to_string())
        .collect();
    v.sort();
    Ok(v)
}

/// Every node alive and converged, with voters node1..node3.
fn boot_layout_holds(via: &str) -> Result<()> {
    let st = status(via)?;
    for k in 1..=SHARED_NODES {
        let name = format!("node{k}");
        let n = node(&st, &name).with_context(|| format!("{name} missing"))?;
        ensure!(
            n["alive"] == true && n["converged"] == true && n["error"].is_null(),
            "{name} is not alive and converged: {n}"
        );
    }
    ensure!(voter_names()? == ["node1", "node2", "node3"]);
    Ok(())
}

/// A voter `etcdctl member add`ed for a peer URL nothing serves is removed
/// once it has not started for voter_start_timeout_seconds (10), not before.
#[test]
fn unstarted_voter_is_removed_after_the_bound() -> Result<()> {
    let _c = ClusterGuard::shared()?;
    config(r#"{"voter_start_timeout_seconds":10}"#)?;
    // Let every agent read the config before the fault.
    std::thread::sleep(Duration::from_secs(2));
    sh_ok(
        "node1",
        &format!("etcdctl member add ghost --peer-urls={NOBODY}"),
    )?;
    let t = Instant::now();
    let mut reported = None;
    let removed = wait_for(
        "the unstarted voter to be removed",
        Duration::from_secs(90),
        || {
            if reported.is_none() {
                let st = status("node1")?;
                let said = st["nodes"].as_array().into_iter().flatten().any(|n| {
                    n["voter_problems"]
                        .as_array()
                        .is_some_and(|p| p.iter().any(|p| p["peer_url"] == NOBODY))
                });
                if said {
                    reported = Some(t.elapsed());
                }
            }
            Ok((!listed(NOBODY)?).then(|| t.elapsed()))
        },
    )?;
    // No agent saw it before it was added, and each counts from its own
    // first sighting: removal before the bound is a bug.
    ensure!(
        removed >= Duration::from_secs(10),
        "removed {:.1} s after it was added, before the 10 s bound",
        removed.as_secs_f64()
    );
    let ev = wait_for("the removal in a status", Duration::from_secs(30), || {
        Ok(all_events("node1")?
            .into_iter()
            .find(|e| e.contains("was added but did not start within 10 s")))
    })?;
    println!(
        "unstarted voter: in a node's voter problems {}; removed {:.1} s after `member add` (bound 10 s); event: {ev}",
        reported.map_or(
            "not seen (another branch reports voter problems)".into(),
            |r| format!("{:.1} s after", r.as_secs_f64())
        ),
        removed.as_secs_f64()
    );
    wait_for("the cluster to settle", Duration::from_secs(60), || {
        Ok(boot_layout_holds("node1").ok())
    })?;
    Ok(())
}

/// node3's host killed, node4 asked to become a member: node4 is blocked
/// naming node3 (etcd refuses the add); `deckhand member remove node3`
/// unblocks it and it joins; node3 restarted comes back as a proxy.
#[test]
fn join_blocked_by_a_dead_voter_until_it_is_removed() -> Result<()> {
    let _c = ClusterGuard::shared()?;
    cluster(&["kill", "node3"])?;
    let killed = Instant::now();
    let (ok, out, _) = role_set("node1", "node4", "member")?;
    ensure!(ok, "{out}");
    let blocked = wait_for("node4 to be blocked", Duration::from_secs(60), || {
        let st = status("node1")?;
        let n = node(&st, "node4").context("node4 missing")?;
        Ok(n["blocked"].as_str().map(String::from))
    })?;
    let blocked_after = killed.elapsed();
    for part in [
        "node3",
        "172.29.77.13:2380",
        "deckhand member remove node3",
        "since ",
    ] {
        ensure!(blocked.contains(part), "{part:?} missing from: {blocked}");
    }
    // It stays blocked (reported, not an error retried against etcd) and
    // adds no learner.
    std::thread::sleep(Duration::from_secs(8));
    let st = status("node1")?;
    let n = node(&st, "node4").context("node4 missing")?;
    ensure!(
        n["blocked"].is_string() && n["error"].is_null(),
        "node4: {n}"
    );
    ensure!(
        member_list()?.iter().all(|m| m["isLearner"] != true),
        "a learner was added while a voter is down"
    );
    let out = sh_ok("node1", "deckhand member remove node3")?;
    let removed_at = Instant::now();
    ensure!(
        out.contains("removed voter") && out.contains("role key set to proxy"),
        "{out}"
    );
    wait_converged("node1", "node4", 0)?;
    let joined = removed_at.elapsed();
    ensure!(
        voter_names()? == ["node1", "node2", "node4"],
        "voters: {:?}",
        voter_names()?
    );
    println!(
        "dead voter: node4 blocked {:.1} s after node3 was killed; joined {:.1} s after `deckhand member remove node3`",
        blocked_after.as_secs_f64(),
        joined.as_secs_f64()
    );
    // node3 back: its member was removed and its role key says proxy. A
    // converged proxy has moved its old member data dir aside.
    let t = Instant::now();
    cluster(&["start", "node3"])?;
    wait_for("node3 back as a proxy", Duration::from_secs(150), || {
        let st = status("node1")?;
        let Some(n) = node(&st, "node3") else {
            return Ok(None);
        };
        Ok(
            (n["alive"] == true && n["converged"] == true && n["etcd"]["mode"] == "proxy")
                .then_some(()),
        )
    })?;
    println!(
        "node3 restarted: converged as a proxy {:.1} s after `integration/cluster start node3` began",
        t.elapsed().as_secs_f64()
    );
    ensure!(voter_names()? == ["node1", "node2", "node4"]);
    Ok(())
}

/// The drop-in that preloads libfaketime into node2's agent: the offset is
/// read from /run/deckhand/faketime at every clock call, the monotonic
/// clock is left alone.
const FAKETIME_DROP_IN: &str = r#"
set -e
mkdir -p /run/deckhand
echo +0 > /run/deckhand/faketime
mkdir -p /run/systemd/system/deckhand.service.d
cat > /run/systemd/system/deckhand.service.d/faketime.conf <<EOF
[Service]
Environment=LD_PRELOAD=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
Environment=FAKETIME_TIMESTAMP_FILE=/run/deckhand/faketime
Environment=FAKETIME_NO_CACHE=1
Environment=FAKETIME_DONT_FAKE_MONOTONIC=1
EOF
systemctl daemon-reload
systemctl restart deckhand.service
"#;

/// node2's agent sees its wall clock an hour ahead (libfaketime, changed
/// at run time) while a learner stalls: the learner is reaped after its
/// timeout, not before, and nothing else changes.
#[test]
fn a_stepped_wall_clock_changes_no_decision() -> Result<()> {
    let _c = ClusterGuard::shared()?;
    config(r#"{"learner_timeout_seconds":20}"#)?;
    sh_ok("node2", FAKETIME_DROP_IN)?;
    wait_for("node2's agent back", Duration::from_secs(60), || {
        Ok(boot_layout_holds("node1").ok())
    })?;
    // The preload works: the agent maps it, and a process with the same
    // environment sees the offset.
    sh_ok(
        "node2",
        "grep -q libfaketime /proc/$(systemctl show -P MainPID deckhand.service)/maps",
    )?;
    sh_ok(
        "node1",
        &format!("etcdctl member add --learner stall --peer-urls={NOBODY}"),
    )?;
    let t = Instant::now();
    // Step once every agent has had an idle tick (5 s) to see the learner:
    // a decision that compared node2's clock with a sighting recorded by
    // any node before the step would reap it at once.
    std::thread::sleep(Duration::from_secs(8));
    sh_ok("node2", "echo +3600 > /run/deckhand/faketime")?;
    let seen = sh_ok(
        "node2",
        "echo $(( $(LD_PRELOAD=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 FAKETIME_TIMESTAMP_FILE=/run/deckhand/faketime FAKETIME_NO_CACHE=1 date +%s) - $(date +%s) ))",
    )?;
    let offset: i64 = seen.trim().parse().context("offset")?;
    ensure!(
        (3590..=3610).contains(&offset),
        "libfaketime offset {offset} s, not an hour"
    );
    let stepped = t.elapsed();
    let reaped = wait_for(
        "the stalled learner to be reaped",
        Duration::from_secs(90),
        || Ok((!listed(NOBODY)?).then(|| t.elapsed())),
    )?;
    ensure!(
        reaped >= Duration::from_secs(20),
        "reaped {:.1} s after it was added, before the 20 s timeout (node2's clock was stepped at {:.1} s)",
        reaped.as_secs_f64(),
        stepped.as_secs_f64()
    );
    let ev = wait_for("the reap in a status", Duration::from_secs(30), || {
        Ok(all_events("node1")?
            .into_iter()
            .find(|e| e.contains("did not start or catch up within 20 s")))
    })?;
    println!(
        "stepped clock: node2 +1 h at {:.1} s; learner reaped {:.1} s after `member add --learner` (timeout 20 s); event: {ev}",
        stepped.as_secs_f64(),
        reaped.as_secs_f64()
    );
    // Nothing else changed: same voters, every node converged, no error,
    // and node2 kept its lease (it never looked dead).
    std::thread::sleep(Duration::from_secs(5));
    boot_layout_holds("node1")?;
    boot_layout_holds("node2")?;
    Ok(())
}
