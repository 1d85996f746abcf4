//! `integration/cluster` with a time limit on every call: a fault test must
//! never hang on a wedged `docker exec`.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The outcome of one harness call.
pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// stdout and stderr, trimmed, for messages.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr).trim().to_string()
    }
}

/// Runs `integration/cluster ARGS`; kills its process group after `timeout`
/// (then `ok` is false and stderr says so).
pub fn cluster(args: &[&str], timeout: Duration) -> Result<Out> {
    let mut child = Command::new(deckhand_integration::repo().join("integration/cluster"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("running integration/cluster {}", args.join(" ")))?;
    let mut so = child.stdout.take().context("stdout")?;
    let mut se = child.stderr.take().context("stderr")?;
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if start.elapsed() > timeout {
            timed_out = true;
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stderr(Stdio::null())
                .status();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // A grandchild that escaped the group could hold the pipes open: do
    // not wait for the readers then.
    let (stdout, mut stderr) = if timed_out {
        (String::new(), String::new())
    } else {
        (
            t_out.join().unwrap_or_default(),
            t_err.join().unwrap_or_default(),
        )
    };
    if timed_out {
        stderr.push_str(&format!(
            "integration/cluster {} timed out after {} s",
            args.join(" "),
            timeout.as_secs()
        ));
    }
    Ok(Out {
        ok: status.success() && !timed_out,
        stdout,
        stderr,
    })
}

/// `sh -c SCRIPT` on `node`.
pub fn sh(node: &str, script: &str, timeout: Duration) -> Result<Out> {
    cluster(&["exec", node, "--", "sh", "-c", script], timeout)
}

/// `sh -c SCRIPT` on `node`, failing on a non-zero exit.
pub fn sh_ok(node: &str, script: &str, timeout: Duration) -> Result<String> {
    let o = sh(node, script, timeout)?;
    if !o.ok {
        bail!("on {node}: `{script}` failed: {}", o.text());
    }
    Ok(o.stdout)
}

/// `deckhand status --json` as seen from `node`.
pub fn status(node: &str) -> Result<Value> {
    let out = sh_ok(node, "deckhand status --json", Duration::from_secs(30))?;
    serde_json::from_str(&out).with_context(|| format!("status JSON from {node}: {out}"))
}

/// The entry of the node named `name` in a status document.
pub fn node<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    deckhand_integration::node(status, name)
}

/// The voters (member names, learners excluded) of a status document; empty
/// when the status could not list the members.
pub fn voters(status: &Value) -> Vec<String> {
    let mut v: Vec<String> = status["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|m| m["learner"] != true)
                .filter_map(|m| m["name"].as_str())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
