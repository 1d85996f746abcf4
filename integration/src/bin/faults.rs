//! Randomized fault test of deckhand on the 5-node harness cluster.
//!
//! `integration/faults [--seed N] [--ops N] [--keep]` (a wrapper around
//! `cargo run -p deckhand-integration --bin faults`): brings up a fresh
//! cluster, runs a schedule of operator actions and faults generated from the
//! seed (role changes, agent SIGABRT at failpoints, node kills, partitions,
//! automatic replacement on/off) while a host-side writer and a probe on each
//! node use etcd, then stops the faults and checks the invariants:
//! no acknowledged write lost, quorum lost only while the schedule had a
//! majority of the voters down, every node converged to its role key within
//! a bound, no learner or unstarted member left over. It prints a report and
//! exits 1 if an invariant failed, 2 if the harness itself failed.

#[path = "../faults/check.rs"]
mod check;
#[path = "../faults/harness.rs"]
mod harness;
#[path = "../faults/schedule.rs"]
mod schedule;
#[path = "../faults/writer.rs"]
mod writer;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::Value;

use check::{DownEvent, VoterObs};
use harness::{node, sh, sh_ok, status, voters};
use schedule::{KINDS, NODES, Op, Schedule, Trigger};

/// Nodes not acknowledging any write for longer than this is a quorum loss.
const GAP_S: f64 = 15.0;
/// After the schedule stops taking a majority down, the cluster gets this
/// long to elect a leader again before a write gap counts against it.
const RECOVERY_S: f64 = 20.0;
/// Voter sets seen this long before a fault segment also count for it.
const LOOKBACK_S: f64 = 10.0;
/// Bound on convergence after the faults stop.
const CONVERGE: Duration = Duration::from_secs(180);
/// A node blocked this long at the end gets its refused change cancelled.
const BLOCKED_CANCEL: Duration = Duration::from_secs(20);
const CLUSTER_CONFIG_BASE: &str =
    r#""lease_ttl_seconds":10,"learner_timeout_seconds":30,"dead_grace_seconds":15"#;
const SHORT: Duration = Duration::from_secs(30);
const PROBE_LOG: &str = "/var/lib/faults-probe.log";

/// The probe each node runs: one write through localhost:2379 every 0.5 s,
/// single attempt, logged as `ok|fail <unix time>` on the node's disk (so a
/// killed node's log survives; its probe does not and is restarted).
const PROBE: &str = r#"
n=$(hostname); i=0
while [ ! -e /tmp/faults-probe.stop ]; do
  i=$((i+1)); t=$(date +%s.%N | cut -c1-14)
  if timeout 5 etcdctl --endpoints=127.0.0.1:2379 --dial-timeout=1s --command-timeout=2s put "/faults/probe/$n" "$i" >/dev/null 2>&1; then r=ok; else r=fail; fi
  echo "$r $t" >> /var/lib/faults-probe.log
  sleep 0.5
done
"#;

#[derive(Parser)]
#[command(about = "Randomized fault test of deckhand on the 5-node harness cluster")]
struct Args {
    /// Seed of the schedule (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Number of operations.
    #[arg(long, default_value_t = 30)]
    ops: usize,
    /// Leave the cluster up afterwards.
    #[arg(long)]
    keep: bool,
}

/// The schedule's view of the cluster, and what the monitor saw.
struct Model {
    t0: Instant,
    killed: BTreeSet<String>,
    parted: BTreeSet<String>,
    down_events: Vec<DownEvent>,
    voter_obs: Vec<VoterObs>,
    last_status: Option<Value>,
    /// Status polls of the monitor: (answered, failed).
    polls: (usize, usize),
}

impl Model {
    fn secs(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.t0).as_secs_f64()
    }
    fn now(&self) -> f64 {
        self.secs(Instant::now())
    }
    fn record_down(&mut self) {
        let down: BTreeSet<String> = self.killed.union(&self.parted).cloned().collect();
        let at = self.now();
        self.down_events.push(DownEvent { at, down });
    }
    fn up_nodes(&self) -> Vec<String> {
        NODES
            .iter()
            .filter(|n| !self.killed.contains(**n) && !self.parted.contains(**n))
            .map(|n| n.to_string())
            .collect()
    }
}

type Shared = Arc<Mutex<Model>>;

fn log(m: &Shared, msg: &str) {
    let t = m.lock().unwrap().now();
    eprintln!("[faults {t:7.1}s] {msg}");
}

fn main() -> ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    let sched = schedule::generate(seed, args.ops);
    println!("{}", schedule_text(&sched));
    let result = run(&sched);
    if args.keep {
        eprintln!("[faults] --keep: the cluster stays up (integration/cluster down removes it)");
    } else {
        let _ = harness::cluster(&["down"], Duration::from_secs(300));
    }
    match result {
        Ok((report, pass)) => {
            println!("{report}");
            if pass {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            println!("FAULT TEST HARNESS ERROR (seed {seed}): {e:#}");
            ExitCode::from(2)
        }
    }
}

fn schedule_text(s: &Schedule) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "=== schedule: seed {}, {} ops, voters:3 initially {} ===",
        s.seed,
        s.ops.len(),
        if s.voters_initially { "on" } else { "off" }
    );
    for (i, p) in s.ops.iter().enumerate() {
        let _ = writeln!(
            t,
            "{:3}. {:<55} then wait {} s",
            i + 1,
            p.op.to_string(),
            p.wait_s
        );
    }
    t
}

fn cluster_config(voters_on: bool) -> String {
    if voters_on {
        format!("{{{CLUSTER_CONFIG_BASE},\"voters\":3}}")
    } else {
        format!("{{{CLUSTER_CONFIG_BASE}}}")
    }
}

/// Runs `script` on the first of `nodes` where it succeeds.
fn on_any(nodes: &[String], script: &str) -> Result<(String, String)> {
    let mut errs = Vec::new();
    for n in nodes {
        match sh(n, script, SHORT) {
            Ok(o) if o.ok => return Ok((n.clone(), o.stdout)),
            Ok(o) => errs.push(format!("{n}: {}", o.text())),
            Err(e) => errs.push(format!("{n}: {e:#}")),
        }
    }
    bail!("`{script}` failed everywhere: {}", errs.join(" | "))
}

/// `via` first, then the other nodes that are up.
fn prefer(m: &Shared, via: &str) -> Vec<String> {
    let mut v = vec![via.to_string()];
    v.extend(
        m.lock()
            .unwrap()
            .up_nodes()
            .into_iter()
            .filter(|n| n != via),
    );
    v
}

fn start_probe(node: &str, fresh: bool) -> Result<()> {
    let rm = if fresh {
        format!("rm -f {PROBE_LOG}; ")
    } else {
        String::new()
    };
    sh_ok(
        node,
        &format!(
            "{rm}rm -f /tmp/faults-probe.stop; nohup setsid sh -c '{}' >/dev/null 2>&1 &",
            PROBE.replace('\'', "'\\''")
        ),
        SHORT,
    )?;
    Ok(())
}

fn role_set(m: &Shared, node: &str, etcd: &str, via: &str) -> Result<String> {
    let (ran_on, out) = on_any(
        &prefer(m, via),
        &format!("deckhand role set {node} --etcd {etcd}"),
    )?;
    Ok(format!("{} (on {ran_on})", out.trim()))
}

/// The etcd role the latest status says `name` should have.
fn desired_etcd(m: &Shared, name: &str) -> Option<String> {
    let mm = m.lock().unwrap();
    let st = mm.last_status.as_ref()?;
    node(st, name)?["desired"]["etcd"]
        .as_str()
        .map(str::to_string)
}

struct Armed {
    op: usize,
    node: String,
    point: String,
}

struct OpResult {
    at: f64,
    text: String,
    ok: bool,
}

fn exec_op(m: &Shared, op: &Op, idx: usize, armed: &mut Vec<Armed>) -> Result<String> {
    let long = Duration::from_secs(400);
    match op {
        Op::Role { node, etcd, via } => role_set(m, node, etcd, via),
        Op::AgentKill {
            node,
            point,
            trigger,
        } => {
            sh_ok(
                node,
                &format!(
                    "mkdir -p /run/deckhand && rm -f /run/deckhand/failpoint.hit && printf %s {point} > /run/deckhand/failpoint"
                ),
                SHORT,
            )?;
            armed.retain(|a| a.node != *node);
            armed.push(Armed {
                op: idx,
                node: node.clone(),
                point: point.clone(),
            });
            let current = desired_etcd(m, node);
            let to = match trigger {
                Trigger::Member => "member",
                Trigger::Proxy => "proxy",
                Trigger::Flip => {
                    if current.as_deref() == Some("member") {
                        "proxy"
                    } else {
                        "member"
                    }
                }
            };
            let note = if current.as_deref() == Some(to) {
                " (already wanted; the point stays armed for a later transition)"
            } else {
                ""
            };
            let out = role_set(m, node, to, node)?;
            Ok(format!("armed {point}; role -> {to}{note}: {out}"))
        }
        Op::NodeKill { node } => {
            {
                let mut mm = m.lock().unwrap();
                mm.killed.insert(node.clone());
                mm.record_down();
            }
            armed.retain(|a| a.node != *node);
            let o = harness::cluster(&["kill", node], SHORT)?;
            if !o.ok {
                bail!("{}", o.text());
            }
            Ok(o.text())
        }
        Op::NodeStart { node } => {
            let o = harness::cluster(&["start", node], long)?;
            if !o.ok {
                bail!("{}", o.text());
            }
            {
                let mut mm = m.lock().unwrap();
                mm.killed.remove(node);
                mm.record_down();
            }
            start_probe(node, false)?;
            Ok(o.text())
        }
        Op::Partition { node } => {
            {
                let mut mm = m.lock().unwrap();
                mm.parted.insert(node.clone());
                mm.record_down();
            }
            let o = harness::cluster(&["partition", node], SHORT)?;
            if !o.ok {
                bail!("{}", o.text());
            }
            Ok(o.text())
        }
        Op::Heal { node } => {
            let o = harness::cluster(&["heal", node], SHORT)?;
            if !o.ok {
                bail!("{}", o.text());
            }
            let mut mm = m.lock().unwrap();
            mm.parted.remove(node);
            mm.record_down();
            Ok(o.text())
        }
        Op::VotersOn | Op::VotersOff => {
            let cfg = cluster_config(matches!(op, Op::VotersOn));
            let up = m.lock().unwrap().up_nodes();
            let (n, _) = on_any(
                &up,
                &format!("etcdctl --command-timeout=5s put /deckhand/config/cluster '{cfg}'"),
            )?;
            Ok(format!("{cfg} (on {n})"))
        }
    }
}

/// Checks the armed failpoints of the nodes that are up: hit, or still armed.
fn check_armed(m: &Shared, armed: &mut Vec<Armed>, hits: &mut Vec<String>) {
    let up = m.lock().unwrap().up_nodes();
    let t = m.lock().unwrap().now();
    armed.retain(|a| {
        if !up.contains(&a.node) {
            return true;
        }
        match sh(
            &a.node,
            "cat /run/deckhand/failpoint.hit 2>/dev/null",
            SHORT,
        ) {
            Ok(o) if o.stdout.trim() == a.point => {
                hits.push(format!(
                    "{} hit {} (armed by op {}, seen at {t:.1} s)",
                    a.node,
                    a.point,
                    a.op + 1
                ));
                let _ = sh(&a.node, "rm -f /run/deckhand/failpoint.hit", SHORT);
                false
            }
            _ => true,
        }
    });
}

fn monitor(m: Shared, stop: Arc<AtomicBool>) {
    let mut k = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let up = m.lock().unwrap().up_nodes();
        if !up.is_empty() {
            let n = &up[k % up.len()];
            k += 1;
            let r = status(n);
            if r.is_err() {
                m.lock().unwrap().polls.1 += 1;
            }
            if let Ok(st) = r {
                let v = voters(&st);
                let mut mm = m.lock().unwrap();
                mm.polls.0 += 1;
                if !v.is_empty() {
                    let at = mm.now();
                    mm.voter_obs.push(VoterObs { at, voters: v });
                }
                mm.last_status = Some(st);
            }
        }
        for _ in 0..20 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn run(s: &Schedule) -> Result<(String, bool)> {
    let mut rep = String::new();
    let _ = harness::cluster(&["down"], Duration::from_secs(300));
    // TLS unless DECKHAND_E2E_TLS=0 (integration/test runs seed 1 in plaintext).
    let mode = deckhand_integration::Mode::from_env();
    eprintln!("[faults] integration/cluster up {} 5", mode.up_flag());
    let _ = writeln!(rep, "cluster: 5 nodes, etcd hops {mode:?}");
    let st = Command::new(deckhand_integration::repo().join("integration/cluster"))
        .args(["up", mode.up_flag(), "5"])
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()?;
    if !st.success() {
        bail!("integration/cluster up 5 failed ({st})");
    }
    let m: Shared = Arc::new(Mutex::new(Model {
        t0: Instant::now(),
        killed: BTreeSet::new(),
        parted: BTreeSet::new(),
        down_events: Vec::new(),
        voter_obs: Vec::new(),
        last_status: None,
        polls: (0, 0),
    }));
    let st = deckhand_integration::wait_for(
        "5 nodes alive and converged with 3 voters",
        Duration::from_secs(300),
        || {
            let st = status("node1")?;
            let all = NODES.iter().all(|n| {
                node(&st, n).is_some_and(|x| x["alive"] == true && x["converged"] == true)
            });
            Ok((all && st["voters"] == 3).then_some(st))
        },
    )?;
    log(&m, "cluster up: 5 nodes alive and converged, 3 voters");
    sh_ok(
        "node1",
        &format!(
            "etcdctl put /deckhand/config/cluster '{}'",
            cluster_config(s.voters_initially)
        ),
        SHORT,
    )?;
    for n in NODES {
        start_probe(n, true)?;
    }
    {
        let mut mm = m.lock().unwrap();
        let at = mm.now();
        mm.voter_obs.push(VoterObs {
            at,
            voters: voters(&st),
        });
        mm.last_status = Some(st);
        mm.record_down();
    }

    // Writer and monitor.
    let stop_w = Arc::new(AtomicBool::new(false));
    let wlog = Arc::new(Mutex::new(writer::Log::default()));
    let w_start = Instant::now();
    let writer_thread = {
        let (stop, l, seed) = (stop_w.clone(), wlog.clone(), s.seed);
        std::thread::spawn(move || writer::run(seed, stop, l))
    };
    let stop_m = Arc::new(AtomicBool::new(false));
    let monitor_thread = {
        let (mm, stop) = (m.clone(), stop_m.clone());
        std::thread::spawn(move || monitor(mm, stop))
    };
    std::thread::sleep(Duration::from_secs(5));

    // The schedule.
    let mut results: Vec<OpResult> = Vec::new();
    let mut armed: Vec<Armed> = Vec::new();
    let mut hits: Vec<String> = Vec::new();
    for (i, p) in s.ops.iter().enumerate() {
        let at = m.lock().unwrap().now();
        log(&m, &format!("op {}/{}: {}", i + 1, s.ops.len(), p.op));
        let r = exec_op(&m, &p.op, i, &mut armed);
        let (ok, text) = match r {
            Ok(t) => (true, t),
            Err(e) => (false, format!("{e:#}")),
        };
        let text = text.replace('\n', " / ");
        log(
            &m,
            &format!("  -> {}: {text}", if ok { "ok" } else { "FAILED" }),
        );
        results.push(OpResult { at, text, ok });
        std::thread::sleep(Duration::from_secs(p.wait_s));
        check_armed(&m, &mut armed, &mut hits);
    }

    // Stop the faults: heal, start, disarm.
    log(
        &m,
        "faults stop: healing partitions, starting killed nodes, disarming failpoints",
    );
    let mut restore_notes = Vec::new();
    let (parted, killed): (Vec<String>, Vec<String>) = {
        let mm = m.lock().unwrap();
        (
            mm.parted.iter().cloned().collect(),
            mm.killed.iter().cloned().collect(),
        )
    };
    for n in &parted {
        let o = harness::cluster(&["heal", n], SHORT)?;
        restore_notes.push(format!("heal {n}: {}", if o.ok { "ok" } else { "FAILED" }));
        if !o.ok {
            bail!("heal {n} failed: {}", o.text());
        }
        let mut mm = m.lock().unwrap();
        mm.parted.remove(n);
        mm.record_down();
    }
    for n in &killed {
        let o = harness::cluster(&["start", n], Duration::from_secs(400))?;
        restore_notes.push(format!("start {n}: {}", if o.ok { "ok" } else { "FAILED" }));
        if !o.ok {
            bail!("start {n} failed: {}", o.text());
        }
        {
            let mut mm = m.lock().unwrap();
            mm.killed.remove(n);
            mm.record_down();
        }
        if let Err(e) = start_probe(n, false) {
            restore_notes.push(format!("probe on {n} not restarted: {e:#}"));
        }
    }
    for n in NODES {
        sh_ok(n, "rm -f /run/deckhand/failpoint", SHORT)?;
    }
    check_armed(&m, &mut armed, &mut hits);
    let t_stop = Instant::now();

    // Convergence.
    let conv = converge(&m, t_stop);
    log(&m, "convergence phase over; stopping the writer");
    stop_w.store(true, Ordering::Relaxed);
    let _ = writer_thread.join();
    let w_end = Instant::now();
    stop_m.store(true, Ordering::Relaxed);
    let _ = monitor_thread.join();

    // Probes.
    for n in NODES {
        let _ = sh(n, "touch /tmp/faults-probe.stop", SHORT);
    }
    std::thread::sleep(Duration::from_secs(3));
    let mut avail = Vec::new();
    for n in NODES {
        avail.push(match sh_ok(n, &format!("cat {PROBE_LOG}"), SHORT) {
            Ok(log) => probe_summary(n, &log),
            Err(e) => format!("{n}: probe log unavailable: {e:#}"),
        });
    }

    // Save the journals for the report's reader.
    let dir = deckhand_integration::repo()
        .canonicalize()?
        .join(format!("integration/.cache/faults/seed-{}", s.seed));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    for n in NODES {
        if let Ok(o) = sh(
            n,
            "journalctl --no-pager -o short-precise -u deckhand -u 'deckhand-*'",
            Duration::from_secs(60),
        ) {
            let _ = std::fs::write(dir.join(format!("{n}.journal")), o.stdout);
        }
    }

    // ---------------------------------------------------------- the report
    let mut pass = true;
    let _ = writeln!(
        rep,
        "\n===================== FAULT TEST REPORT ====================="
    );
    let _ = writeln!(
        rep,
        "seed {}   ops {}   voters:3 initially {}",
        s.seed,
        s.ops.len(),
        s.voters_initially
    );
    let mut counts: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (p, r) in s.ops.iter().zip(&results) {
        let e = counts.entry(p.op.kind()).or_default();
        e.0 += 1;
        if !r.ok {
            e.1 += 1;
        }
    }
    let per_kind: Vec<String> = KINDS
        .iter()
        .filter_map(|k| {
            counts.get(k).map(|(n, f)| {
                if *f > 0 {
                    format!("{k} {n} ({f} failed)")
                } else {
                    format!("{k} {n}")
                }
            })
        })
        .collect();
    let _ = writeln!(rep, "operations run: {}", per_kind.join(", "));
    let _ = writeln!(rep, "\n-- operations");
    for (i, (p, r)) in s.ops.iter().zip(&results).enumerate() {
        let _ = writeln!(
            rep,
            "{:3}. [{:6.1} s] {} {}: {}",
            i + 1,
            r.at,
            if p.op.is_fault() { "FAULT" } else { "     " },
            p.op,
            if r.ok {
                short(&r.text, 160)
            } else {
                format!("FAILED: {}", short(&r.text, 300))
            }
        );
    }
    let _ = writeln!(
        rep,
        "at the end: {}",
        if restore_notes.is_empty() {
            "nothing down, nothing to restore".to_string()
        } else {
            restore_notes.join(", ")
        }
    );
    let faults = s.ops.iter().filter(|p| p.op.is_fault()).count();
    let _ = writeln!(rep, "\n-- faults injected: {faults}");
    let _ = writeln!(
        rep,
        "failpoints hit: {}",
        if hits.is_empty() {
            "none".to_string()
        } else {
            hits.join("; ")
        }
    );
    for a in &armed {
        let _ = writeln!(
            rep,
            "failpoint not hit: {} {} (op {})",
            a.node,
            a.point,
            a.op + 1
        );
    }

    // 1. No acknowledged write lost.
    let (acks, per_ep, failed_attempts, last_errors) = {
        let l = wlog.lock().unwrap();
        (
            l.acks.clone(),
            l.per_endpoint,
            l.failed_attempts,
            l.last_error.clone(),
        )
    };
    let _ = writeln!(rep, "\n-- invariants");
    match writer::read_back() {
        Ok(stored) => {
            let mut missing = Vec::new();
            let mut wrong = Vec::new();
            for (n, _) in &acks {
                match stored.get(&writer::key(*n)) {
                    None => missing.push(*n),
                    Some(v) if *v != writer::value(s.seed, *n) => wrong.push((*n, v.clone())),
                    Some(_) => {}
                }
            }
            let ok = missing.is_empty() && wrong.is_empty() && !acks.is_empty();
            pass &= ok;
            let _ = writeln!(
                rep,
                "[{}] no acknowledged write lost: {} acknowledged (per node1..5 {:?}, {} failed attempts), {} keys stored, {} missing{}, {} with a wrong value{}",
                pf(ok),
                acks.len(),
                per_ep,
                failed_attempts,
                stored.len(),
                missing.len(),
                if missing.is_empty() {
                    String::new()
                } else {
                    format!(" (first: {:?})", &missing[..missing.len().min(10)])
                },
                wrong.len(),
                if wrong.is_empty() {
                    String::new()
                } else {
                    format!(" (first: {:?})", &wrong[..wrong.len().min(5)])
                }
            );
        }
        Err(e) => {
            pass = false;
            let _ = writeln!(
                rep,
                "[FAIL] no acknowledged write lost: cannot read back: {e:#}"
            );
        }
    }

    // 2. Quorum lost only when the schedule took a majority down.
    {
        let mm = m.lock().unwrap();
        let ack_s: Vec<f64> = acks.iter().map(|(_, t)| mm.secs(*t)).collect();
        let (ws, we) = (mm.secs(w_start), mm.secs(w_end));
        let gaps = check::gaps(&ack_s, ws, we, GAP_S);
        let excused = check::excused(&mm.down_events, &mm.voter_obs, we, LOOKBACK_S, RECOVERY_S);
        let mut lines = Vec::new();
        let mut ok = true;
        for g in &gaps {
            let unexcused = check::longest_uncovered(*g, &excused);
            let bad = unexcused > GAP_S;
            ok &= !bad;
            let why: Vec<&str> = excused
                .iter()
                .filter(|(a, b, _)| *a < g.1 && *b > g.0)
                .map(|(_, _, w)| w.as_str())
                .collect();
            lines.push(format!(
                "    {} no write acknowledged {:.1} s .. {:.1} s ({:.1} s){}",
                if bad { "VIOLATION:" } else { "excused:" },
                g.0,
                g.1,
                g.1 - g.0,
                if why.is_empty() {
                    " while the schedule had no majority of the voters down".to_string()
                } else {
                    format!(
                        "; majority down: {}; longest unexplained stretch {unexcused:.1} s",
                        why.join("; ")
                    )
                }
            ));
        }
        pass &= ok;
        let _ = writeln!(
            rep,
            "[{}] quorum lost only when the schedule took down a majority: {} window(s) over {GAP_S} s without an acknowledged write",
            pf(ok),
            gaps.len()
        );
        for l in lines {
            let _ = writeln!(rep, "{l}");
        }
        if !ok {
            for (i, e) in last_errors.iter().enumerate() {
                if let Some(e) = e {
                    let _ = writeln!(
                        rep,
                        "    writer's last error on node{}: {}",
                        i + 1,
                        short(e, 200)
                    );
                }
            }
        }
        let vs: Vec<String> = {
            let mut last: Option<&Vec<String>> = None;
            let mut out = Vec::new();
            for o in &mm.voter_obs {
                if last != Some(&o.voters) {
                    out.push(format!("{:.1}s {{{}}}", o.at, o.voters.join(",")));
                    last = Some(&o.voters);
                }
            }
            out
        };
        let _ = writeln!(
            rep,
            "    voter sets seen ({} status polls answered, {} failed): {}",
            mm.polls.0,
            mm.polls.1,
            vs.join(" -> ")
        );
    }

    // 3. Convergence.
    pass &= conv.ok;
    let _ = writeln!(
        rep,
        "[{}] convergence after the faults stopped (bound {} s): {}",
        pf(conv.ok),
        CONVERGE.as_secs(),
        conv.summary
    );
    for l in &conv.lines {
        let _ = writeln!(rep, "    {l}");
    }

    // 4. No leftovers.
    let (ok, text) = leftovers(&m);
    pass &= ok;
    let _ = writeln!(rep, "[{}] no leftovers: {text}", pf(ok));

    // 5. Availability.
    let _ = writeln!(
        rep,
        "\n-- availability of localhost:2379 (probe, one put per 0.5 s; report only)"
    );
    for a in avail {
        let _ = writeln!(rep, "    {a}");
    }
    let _ = writeln!(rep, "\njournals: {}", dir.display());
    let _ = writeln!(
        rep,
        "RESULT: {} (seed {})",
        if pass { "PASS" } else { "FAIL" },
        s.seed
    );
    Ok((rep, pass))
}

fn pf(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

fn short(s: &str, n: usize) -> String {
    let s = s.trim();
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(n).collect::<String>())
    }
}

struct Conv {
    ok: bool,
    summary: String,
    lines: Vec<String>,
}

/// Waits until every node is alive, converged to its role key's current
/// revision, not blocked, with no learner pending — seen twice in a row.
fn converge(m: &Shared, t_stop: Instant) -> Conv {
    let mut ok_since: BTreeMap<&str, Option<Instant>> = NODES.iter().map(|n| (*n, None)).collect();
    let mut blocked_since: BTreeMap<String, Instant> = BTreeMap::new();
    let mut notes = Vec::new();
    let mut streak = 0;
    let mut last_state = String::new();
    let mut k = 0usize;
    loop {
        if t_stop.elapsed() > CONVERGE {
            let mut lines = notes.clone();
            lines.push(format!("last state: {last_state}"));
            for n in NODES {
                if ok_since[n].is_none() {
                    let j = sh(
                        n,
                        "journalctl --no-pager -o short-precise -u deckhand -n 25",
                        SHORT,
                    )
                    .map(|o| o.stdout)
                    .unwrap_or_default();
                    lines.push(format!("{n} not converged; journal tail:\n{j}"));
                }
            }
            return Conv {
                ok: false,
                summary: format!("not converged after {} s", CONVERGE.as_secs()),
                lines,
            };
        }
        let via = NODES[k % NODES.len()];
        k += 1;
        let st = status(via);
        let revs = writer::role_revisions();
        match (st, revs) {
            (Ok(st), Ok(revs)) => {
                let now = Instant::now();
                let mut states = Vec::new();
                let mut all = st["learners"] == 0;
                for n in NODES {
                    let Some(x) = node(&st, n) else {
                        all = false;
                        ok_since.insert(n, None);
                        states.push(format!("{n}: no entry"));
                        continue;
                    };
                    let id = x["id"].as_str().unwrap_or_default();
                    let want = revs.get(id).copied().unwrap_or(0);
                    let have = x["desired_revision"].as_i64().unwrap_or(-1);
                    let blocked = x["blocked"].as_str();
                    let good = x["alive"] == true
                        && x["converged"] == true
                        && have == want
                        && blocked.is_none();
                    if good {
                        ok_since.entry(n).or_insert(None).get_or_insert(now);
                    } else {
                        ok_since.insert(n, None);
                        all = false;
                    }
                    states.push(format!(
                        "{n}: alive={} converged={} rev {have}/{want} mode={} {}{}",
                        x["alive"],
                        x["converged"],
                        x["etcd"]["mode"].as_str().unwrap_or("?"),
                        blocked
                            .map(|b| format!("blocked: {b} "))
                            .unwrap_or_default(),
                        x["step"].as_str().or(x["error"].as_str()).unwrap_or("")
                    ));
                    // A change refused for good (e.g. below min_voters):
                    // cancel it the way an operator would.
                    match blocked {
                        Some(b) => {
                            let since = *blocked_since.entry(n.to_string()).or_insert(now);
                            if now.duration_since(since) > BLOCKED_CANCEL
                                && let Some(mode) = x["etcd"]["mode"].as_str()
                                && (mode == "member" || mode == "proxy")
                            {
                                let r = role_set(m, n, mode, via);
                                let note = format!(
                                    "{n} blocked for over {} s ({b}): role set back to {mode}: {}",
                                    BLOCKED_CANCEL.as_secs(),
                                    match r {
                                        Ok(t) => t,
                                        Err(e) => format!("failed: {e:#}"),
                                    }
                                );
                                log(m, &note);
                                notes.push(note);
                                blocked_since.remove(n);
                            }
                        }
                        None => {
                            blocked_since.remove(n);
                        }
                    }
                }
                last_state = format!(
                    "voters {} learners {}; {}",
                    st["voters"],
                    st["learners"],
                    states.join("; ")
                );
                if all {
                    streak += 1;
                    if streak >= 2 {
                        let mut lines = notes;
                        let mut times = Vec::new();
                        for n in NODES {
                            let t = ok_since[n]
                                .map(|t| t.saturating_duration_since(t_stop).as_secs_f64())
                                .unwrap_or(0.0);
                            times.push(format!("{n} {t:.1} s"));
                        }
                        lines.push(format!("final: {last_state}"));
                        return Conv {
                            ok: true,
                            summary: format!(
                                "all converged in {:.1} s; per node: {}",
                                t_stop.elapsed().as_secs_f64(),
                                times.join(", ")
                            ),
                            lines,
                        };
                    }
                } else {
                    streak = 0;
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                streak = 0;
                last_state = format!("status unavailable: {}", short(&format!("{e:#}"), 300));
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// No learner, every member started (has client URLs and a name), and the
/// members are exactly the nodes that report etcd mode member.
fn leftovers(_m: &Shared) -> (bool, String) {
    let st = match status("node1") {
        Ok(s) => s,
        Err(e) => return (false, format!("no status: {e:#}")),
    };
    let eps: Vec<String> = st["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .flat_map(|m| m["client_urls"].as_array().cloned().unwrap_or_default())
                .filter_map(|u| u.as_str().map(str::to_string))
                .filter(|u| !u.contains("127.0.0.1") && !u.contains("localhost"))
                .collect()
        })
        .unwrap_or_default();
    let tls = match deckhand_integration::cluster_mode() {
        Ok(deckhand_integration::Mode::Tls) => deckhand_integration::NODE_ETCDCTL_TLS,
        Ok(deckhand_integration::Mode::Plaintext) => "",
        Err(e) => return (false, format!("cluster mode: {e:#}")),
    };
    let script = if eps.is_empty() {
        match deckhand_integration::etcdctl_at(&["172.29.77.11", "172.29.77.12", "172.29.77.13"]) {
            Ok(c) => format!("{c} member list -w json"),
            Err(e) => return (false, format!("{e:#}")),
        }
    } else {
        format!(
            "etcdctl --endpoints={} {tls} member list -w json",
            eps.join(",")
        )
    };
    let list: Value = match sh_ok("node1", &script, SHORT)
        .and_then(|o| serde_json::from_str(&o).context("member list JSON"))
    {
        Ok(v) => v,
        Err(e) => return (false, format!("member list failed: {e:#}")),
    };
    let members = list["members"].as_array().cloned().unwrap_or_default();
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for mb in &members {
        let name = mb["name"].as_str().unwrap_or("");
        let id = mb["ID"]
            .as_u64()
            .map(|i| format!("{i:x}"))
            .unwrap_or_default();
        if mb["isLearner"] == true {
            problems.push(format!("learner {id} ({name}) left"));
        }
        if name.is_empty() || mb["clientURLs"].as_array().is_none_or(|a| a.is_empty()) {
            problems.push(format!(
                "member {id} never started (no name or client URLs)"
            ));
        }
        names.insert(name.to_string());
    }
    let member_nodes: BTreeSet<String> = NODES
        .iter()
        .filter(|n| node(&st, n).is_some_and(|x| x["etcd"]["mode"] == "member"))
        .map(|n| n.to_string())
        .collect();
    if names != member_nodes {
        problems.push(format!(
            "member list {{{}}} differs from the nodes in member mode {{{}}}",
            names.iter().cloned().collect::<Vec<_>>().join(","),
            member_nodes.iter().cloned().collect::<Vec<_>>().join(",")
        ));
    }
    let desc = format!(
        "{} members {{{}}}",
        members.len(),
        names.into_iter().collect::<Vec<_>>().join(",")
    );
    if problems.is_empty() {
        (
            true,
            format!("{desc}, no learner, all started, all in member mode"),
        )
    } else {
        (false, format!("{desc}: {}", problems.join("; ")))
    }
}

/// `ok/total (x %), longest outage` of one node's probe log.
fn probe_summary(n: &str, log: &str) -> String {
    let mut ok = 0usize;
    let mut fail = 0usize;
    let mut outage_start: Option<f64> = None;
    let mut longest = 0f64;
    let mut last_t = 0f64;
    for l in log.lines() {
        let mut it = l.split_whitespace();
        let (Some(r), Some(t)) = (it.next(), it.next()) else {
            continue;
        };
        let Ok(t) = t.parse::<f64>() else { continue };
        // No line for over 10 s: the node was down, not the probe failing.
        if t - last_t > 10.0
            && let Some(s) = outage_start.take()
        {
            longest = longest.max(last_t - s);
        }
        last_t = t;
        if r == "ok" {
            ok += 1;
            if let Some(s) = outage_start.take() {
                longest = longest.max(t - s);
            }
        } else {
            fail += 1;
            outage_start.get_or_insert(t);
        }
    }
    if let Some(s) = outage_start {
        longest = longest.max(last_t - s);
    }
    let total = ok + fail;
    let pct = if total == 0 {
        0.0
    } else {
        100.0 * ok as f64 / total as f64
    };
    format!("{n}: {ok}/{total} probes ok ({pct:.1} %), longest outage {longest:.1} s")
}
