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
