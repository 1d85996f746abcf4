//! Helpers for the end-to-end tests: drive `integration/cluster`, run
//! commands on nodes, read `deckhand status --json`, wait for conditions.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `integration/cluster ARGS`, failing with its output on a non-zero exit.
pub fn cluster(args: &[&str]) -> Result<String> {
    let out = cluster_raw(args)?;
    if !out.status.success() {
        bail!(
            "integration/cluster {} failed ({}):\n{}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `integration/cluster ARGS` and returns its output whatever the exit.
pub fn cluster_raw(args: &[&str]) -> Result<Output> {
    Command::new(repo().join("integration/cluster"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running integration/cluster {}", args.join(" ")))
}

/// Runs `sh -c SCRIPT` on `node`; returns (success, stdout, stderr).
pub fn sh(node: &str, script: &str) -> Result<(bool, String, String)> {
    let out = cluster_raw(&["exec", node, "--", "sh", "-c", script])?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Runs `sh -c SCRIPT` on `node`, failing on a non-zero exit.
pub fn sh_ok(node: &str, script: &str) -> Result<String> {
    let (ok, out, err) = sh(node, script)?;
    if !ok {
        bail!("on {node}: `{script}` failed:\n{out}\n{err}");
    }
    Ok(out)
}

/// `deckhand status --json` as seen from `node`.
pub fn status(node: &str) -> Result<Value> {
    let out = sh_ok(node, "deckhand status --json")?;
    serde_json::from_str(&out).with_context(|| format!("status JSON from {node}: {out}"))
}

/// The entry of the node named `name` in a status document.
pub fn node<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == name)
}

/// Polls `f` every 500 ms until it returns `Ok(Some(v))`, or fails after
/// `timeout` with the last error or `what`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut last = String::new();
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() > timeout {
            bail!(
                "timed out after {} s waiting for {what}; last error: {last}",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// How long a role change may take to converge in the tests.
pub const CONVERGE: Duration = Duration::from_secs(180);

/// A fresh cluster of `n` nodes for one test: `down` then `up` at creation,
/// `down` when dropped (unless `DECKHAND_E2E_KEEP` is set).
pub struct ClusterGuard;

impl ClusterGuard {
    /// Boots a fresh cluster and waits until every node is alive and
    /// converged with 3 voters.
    pub fn up(n: usize) -> Result<ClusterGuard> {
        let _ = cluster(&["down"]);
        cluster(&["up", &n.to_string()])?;
        let guard = ClusterGuard;
        wait_for(
            &format!("{n} nodes alive and converged with 3 voters"),
            CONVERGE,
            || {
                let st = status("node1")?;
                let nodes = st["nodes"].as_array().map(Vec::len).unwrap_or(0);
                let all = st["nodes"].as_array().is_some_and(|a| {
                    a.iter()
                        .all(|x| x["alive"] == true && x["converged"] == true)
                });
                Ok((nodes == n && all && st["voters"] == 3).then_some(()))
            },
        )?;
        Ok(guard)
    }
}

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        if std::env::var_os("DECKHAND_E2E_KEEP").is_none() {
            let _ = cluster(&["down"]);
        }
    }
}

/// Waits until node `name` reports alive, converged, from a role key of at
/// least revision `min_rev`, as seen from node `from`; returns that status.
pub fn wait_converged(from: &str, name: &str, min_rev: i64) -> Result<Value> {
    wait_for(&format!("{name} to converge"), CONVERGE, || {
        let st = status(from)?;
        let n = node(&st, name).context("node missing from status")?;
        let ok = n["alive"] == true
            && n["converged"] == true
            && n["desired_revision"].as_i64().unwrap_or(0) >= min_rev;
        Ok(ok.then(|| st.clone()))
    })
}

/// `deckhand role set NODE --etcd ETCD` run on `via`: (success, output,
/// revision of the write).
pub fn role_set(via: &str, node: &str, etcd: &str) -> Result<(bool, String, i64)> {
    let (ok, out, err) = sh(via, &format!("deckhand role set {node} --etcd {etcd}"))?;
    let rev = out
        .split("revision ")
        .nth(1)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    Ok((ok, format!("{out}{err}"), rev))
}

/// The agent's journal on `node` (messages only).
pub fn journal(node: &str) -> Result<String> {
    sh_ok(node, "journalctl -u deckhand --no-pager -o cat")
}

/// `etcdctl member list` as JSON from `node`'s localhost:2379... through a
/// real member: the client URL of a member node.
pub fn members(via_member: &str) -> Result<Value> {
    let ip = cluster(&["ip", via_member])?;
    let out = sh_ok(
        via_member,
        &format!(
            "etcdctl --endpoints=http://{}:2379 member list -w json",
            ip.trim()
        ),
    )?;
    serde_json::from_str(&out).context("member list JSON")
}
