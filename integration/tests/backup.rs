//! End-to-end test of backups (issue 11) on the shared 5-node cluster:
//! with a 10 s schedule, `deckhand backup now` answers with a verified
//! snapshot, the schedule adds more, exactly one agent (the one elected in
//! `elections/backup`, on a member node) took every one of them, `deckhand
//! backup verify` passes the file and refuses a damaged and a truncated
//! copy (exit 65), and doctor's backups check passes. The cluster config's
//! `backup` section and the snapshots written are removed at the end.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use deckhand_integration::*;
use serde_json::Value;

const DIR: &str = "/var/lib/deckhand/backups";
const WAIT: Duration = Duration::from_secs(90);

/// Puts the cluster config back and removes the snapshots, also on failure.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = sh("node1", "deckhand cluster set backup=null");
        for k in 1..=SHARED_NODES {
            let _ = sh(&format!("node{k}"), &format!("rm -rf {DIR}"));
        }
    }
}

/// Every manifest on every node: (node it is on, manifest).
fn manifests() -> Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    for k in 1..=SHARED_NODES {
        let n = format!("node{k}");
        let text = sh_ok(
            &n,
            &format!(
                "find {DIR} -name '*.db.json' -exec cat {{}} \\; -exec echo \\; 2>/dev/null || true"
            ),
        )?;
        for part in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
            out.push((
                n.clone(),
                part.with_context(|| format!("a manifest on {n}: {text}"))?,
            ));
        }
    }
    Ok(out)
}

#[test]
fn snapshots_are_taken_by_one_agent_and_verified() -> Result<()> {
    let _guard = ClusterGuard::shared()?;
    // Nothing of an earlier run counts; the cluster config and the files
    // go again at the end.
    drop(Restore);
    let _restore = Restore;
    sh_ok(
        "node1",
        r#"deckhand cluster set 'backup={"enabled":true,"interval_seconds":10}'"#,
    )?;

    // `backup now`, asked from a proxy node, is answered by the taker.
    let t = Instant::now();
    let out = wait_for("deckhand backup now to succeed", WAIT, || {
        let (code, out, err) = sh_rc("node5", "deckhand backup now --timeout 60")?;
        ensure!(code == 0, "backup now exited {code}: {out} {err}");
        Ok(Some(out))
    })?;
    eprintln!(
        "[figure] backup now answered {:.1} s after the schedule was set: {out}",
        t.elapsed().as_secs_f64()
    );
    ensure!(out.contains("written and verified"), "{out}");

    // The schedule adds at least two more within 3 intervals (and a bit).
    let all = wait_for("three snapshots", WAIT, || {
        let m = manifests()?;
        Ok((m.len() >= 3).then_some(m))
    })?;
    let holders: std::collections::BTreeSet<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    ensure!(
        holders.len() == 1,
        "snapshots on more than one node: {holders:?}"
    );
    let taker = *holders.iter().next().unwrap();
    let leader = sh_ok(
        "node1",
        "ETCDCTL_API=3 etcdctl get --prefix /deckhand/elections/backup/ --print-value-only --sort-by=CREATE --order=ASCEND | head -1",
    )?;
    ensure!(
        leader.trim() == taker,
        "taker {taker}, election leader {leader}"
    );
    let member = status("node1")?;
    ensure!(
        node(&member, taker).is_some_and(|n| n["desired"]["etcd"] == "member"),
        "the taker {taker} is not a member node"
    );
    let mut revisions = Vec::new();
    for (n, m) in &all {
        ensure!(
            m["node"] == n.as_str(),
            "a manifest on {n} names {}",
            m["node"]
        );
        revisions.push((
            m["taken_at"].as_u64().unwrap_or(0),
            m["path"].as_str().unwrap_or("").to_owned(),
        ));
        let size = m["size"].as_u64().unwrap_or(0);
        eprintln!(
            "[figure] snapshot {} {} bytes, {} keys",
            m["path"], size, m["keys"]
        );
    }
    revisions.sort();
    revisions.dedup_by_key(|(t, _)| *t);
    ensure!(
        revisions.len() == all.len(),
        "two snapshots at one time: {all:?}"
    );

    // verify: the file as written, its manifest's SHA-256 over the file;
    // then a flipped byte and a truncated copy, refused with status 65.
    let path = all[0].1["path"].as_str().context("a path")?.to_owned();
    let sha = all[0].1["sha256"].as_str().context("a sha256")?.to_owned();
    let (code, out, err) = sh_rc(taker, &format!("deckhand backup verify {path}"))?;
    ensure!(
        code == 0 && out.contains("as its manifest says"),
        "{code} {out} {err}"
    );
    let got = sh_ok(taker, &format!("sha256sum {path} | cut -d' ' -f1"))?;
    ensure!(got.trim() == sha, "sha256sum {got} vs manifest {sha}");
    let (code, _, err) = sh_rc(
        taker,
        &format!(
            "cp {path} /tmp/flipped.db && printf '\\377' | dd of=/tmp/flipped.db bs=1 seek=5000 conv=notrunc 2>/dev/null && deckhand backup verify /tmp/flipped.db"
        ),
    )?;
    ensure!(
        code == 65 && err.contains("SHA-256 does not match"),
        "flipped: {code} {err}"
    );
    let (code, _, err) = sh_rc(
        taker,
        &format!("head -c 10000 {path} > /tmp/short.db && deckhand backup verify /tmp/short.db"),
    )?;
    ensure!(
        code == 65 && err.contains("refused"),
        "truncated: {code} {err}"
    );
    sh_ok(taker, "rm -f /tmp/flipped.db /tmp/short.db")?;

    // list, status and doctor see it.
    let list = sh_ok(taker, "deckhand backup list")?;
    ensure!(list.contains(&path) && list.contains("last good"), "{list}");
    let table = sh_ok("node4", "deckhand status")?;
    ensure!(table.contains("backup: newest snapshot"), "{table}");
    let (_, out, _) = sh_rc("node1", "deckhand doctor --json")?;
    let v: Value = serde_json::from_str(&out).with_context(|| out.clone())?;
    let f = v["findings"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["name"] == "backups"))
        .context("a backups finding")?;
    ensure!(f["level"] == "pass", "{f}");
    Ok(())
}
