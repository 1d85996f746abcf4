//! `packaging/prometheus/`: the alert rules pass `promtool check rules`
//! and their unit tests (`promtool test rules`). promtool comes with
//! Debian's `prometheus` package (`integration/prereqs` installs it).

use std::path::PathBuf;
use std::process::Command;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../packaging/prometheus")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir())
        .output()
        .expect("promtool not found: run integration/prereqs (Debian's prometheus package)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {said}");
    said
}

#[test]
fn rules_pass_promtool_check_rules() {
    let said = promtool(&["check", "rules", "deckhand-rules.yml"]);
    assert!(said.contains("SUCCESS"), "{said}");
}

#[test]
fn rules_pass_their_unit_tests() {
    let said = promtool(&["test", "rules", "deckhand-rules.test.yml"]);
    assert!(said.contains("SUCCESS"), "{said}");
}

/// Every query of the Grafana dashboard (`packaging/grafana/deckhand.json`)
/// parses: promtool checks them as recording rules.
#[test]
fn dashboard_queries_parse() {
    let path = dir().join("../grafana/deckhand.json");
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let panels = d["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    for (i, p) in panels.iter().enumerate() {
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            assert!(expr.contains("deckhand_") || expr.contains("up{"), "{expr}");
            rules.push_str(&format!(
                "      - record: dashboard:panel{i}\n        expr: {}\n",
                serde_json::to_string(expr).unwrap()
            ));
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("dashboard-rules.yml");
    std::fs::write(&file, rules).unwrap();
    let said = promtool(&["check", "rules", file.to_str().unwrap()]);
    assert!(said.contains("SUCCESS"), "{said}");
}
