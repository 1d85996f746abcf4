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
