//! `deckhand completion bash` completes subcommands in a real bash, and
//! `deckhand man DIR` writes pages `man -l` renders (man-db and groff:
//! integration/prereqs installs them).

use std::process::Command;

fn deckhand(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_deckhand"))
        .args(args)
        .output()
        .expect("run deckhand");
    assert!(out.status.success(), "deckhand {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// What the completion function offers for the words of `line` (the last
/// word being completed), as bash's programmable completion calls it.
fn complete(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let line = words.join(" ");
    let program = format!(
        r#"source {script}
complete -p deckhand >/dev/null || {{ echo 'no completion for deckhand' >&2; exit 3; }}
COMP_WORDS=({words})
COMP_CWORD={cword}
COMP_LINE='{line}'
COMP_POINT={point}
_deckhand deckhand '{cur}' '{prev}'
printf '%s\n' "${{COMPREPLY[@]}}""#,
        script = script.display(),
        words = words
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" "),
        cword = words.len() - 1,
        point = line.len(),
        cur = words[words.len() - 1],
        prev = words[words.len() - 2],
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .expect("run bash");
    assert!(out.status.success(), "bash: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completion_completes_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("deckhand.bash");
    std::fs::write(&script, deckhand(&["completion", "bash"])).unwrap();
    let top = complete(&script, &["deckhand", "ro"]);
    assert_eq!(top, ["role"], "deckhand ro<TAB>");
    let all = complete(&script, &["deckhand", ""]);
    for c in ["role", "status", "plane", "doctor", "completion", "man"] {
        assert!(all.iter().any(|w| w == c), "{c} missing from {all:?}");
    }
    let role = complete(&script, &["deckhand", "role", ""]);
    assert!(
        role.iter().any(|w| w == "set") && role.iter().any(|w| w == "get"),
        "{role:?}"
    );
    let opts = complete(&script, &["deckhand", "role", "set", "--e"]);
    assert!(opts.iter().any(|w| w == "--etcd"), "{opts:?}");
}

#[test]
fn zsh_and_fish_scripts_name_the_subcommands() {
    let zsh = deckhand(&["completion", "zsh"]);
    assert!(zsh.starts_with("#compdef deckhand"), "{zsh}");
    assert!(zsh.contains("'role:"), "zsh lists role");
    let fish = deckhand(&["completion", "fish"]);
    assert!(fish.contains("complete -c deckhand"), "{fish}");
    assert!(fish.contains("-a \"role\""), "fish lists role");
}

#[test]
fn man_renders_the_role_page() {
    let dir = tempfile::tempdir().unwrap();
    let listed = deckhand(&["man", dir.path().to_str().unwrap()]);
    assert!(listed.contains("deckhand-role.1"), "{listed}");
    let page = dir.path().join("deckhand-role-set.1");
    let out = Command::new("man")
        .args(["-l", "-P", "cat"])
        .arg(&page)
        .env("MANWIDTH", "100")
        .output()
        .expect("run man (man-db)");
    assert!(out.status.success(), "man -l: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("deckhand-role-set"), "{text}");
    assert!(text.contains("--planes"), "{text}");
    assert!(
        text.contains("Exit status: 0 the role is written"),
        "{text}"
    );
}
