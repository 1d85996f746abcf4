//! The clap definition as operators' tools read it: every command's exit
//! statuses in its `--help`, shell completions (`deckhand completion
//! bash|zsh|fish`, from `clap_complete`) and a man page per command
//! (`deckhand man DIR`, from `clap_mangen`). The .deb installs both
//! (packaging/deb/build).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::{Args, CommandFactory as _};
use clap_complete::Shell;

use super::Cli;
use crate::exit::Failure;

/// The exit statuses of the commands that talk to etcd (every command but
/// those of [`EXIT_OF`]).
const EXIT_ONLINE: &str = "Exit status: 0 success; 1 the command failed (etcd did not answer, \
a write was refused, a node did not converge in time); 2 bad arguments (nothing changed); \
78 the agent config cannot be used (fix it, or give both --endpoints and --prefix).";

/// Commands whose exit statuses differ from [`EXIT_ONLINE`], by their path
/// (`deckhand` and the subcommand names, space-separated). Commands whose
/// long help already names its exit statuses ("Exit status:") keep theirs.
const EXIT_OF: &[(&str, &str)] = &[
    (
        "deckhand agent",
        "Exit status: 0 the agent stopped; 1 it failed (a fatal error, a failed join); 78 its \
config cannot be used (deckhand.service has RestartPreventExitStatus=78: systemd does not \
restart it until the config is fixed).",
    ),
    (
        "deckhand check-member",
        "Exit status: it execs etcd when the data dir's member is the member the cluster knows; \
65 it refused the data dir (deckhand-etcd-member.service has RestartPreventExitStatus=65); \
1 it could not tell; 78 the agent config cannot be used.",
    ),
    (
        "deckhand completion",
        "Exit status: 0 the script is printed; 2 an unknown shell.",
    ),
    (
        "deckhand man",
        "Exit status: 0 every page is written; 1 a page could not be written; 2 bad arguments.",
    ),
];

/// Offline commands (no etcd): `pki` but its online subcommands.
const EXIT_OFFLINE: &str = "Exit status: 0 success; 1 the command failed (a file could not be \
read or written); 2 bad arguments (nothing written).";

/// `deckhand`'s clap command with each command's exit statuses appended to
/// its long help (`--help`), as the binary parses it and as completions
/// and man pages describe it.
pub fn command() -> clap::Command {
    with_exit_statuses(Cli::command(), "deckhand")
}

fn with_exit_statuses(cmd: clap::Command, path: &str) -> clap::Command {
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    let mut cmd = cmd;
    for name in names {
        let sub_path = format!("{path} {name}");
        cmd = cmd.mut_subcommand(&name, |s| with_exit_statuses(s, &sub_path));
    }
    let documented = cmd
        .get_long_about()
        .or(cmd.get_about())
        .is_some_and(|a| a.to_string().contains("Exit status:"))
        || cmd.get_after_long_help().is_some();
    if documented || path == "deckhand" {
        return cmd;
    }
    let text = EXIT_OF
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, t)| *t)
        .unwrap_or(if path.starts_with("deckhand pki") {
            EXIT_OFFLINE
        } else {
            EXIT_ONLINE
        });
    cmd.after_long_help(text)
}

/// `deckhand completion SHELL` arguments.
#[derive(Args)]
pub struct CompletionArgs {
    /// bash, zsh, fish, elvish or powershell.
    ///
    /// bash: `deckhand completion bash > /etc/bash_completion.d/deckhand`
    /// (the .deb installs /usr/share/bash-completion/completions/deckhand);
    /// zsh: a file `_deckhand` in a directory of $fpath; fish:
    /// ~/.config/fish/completions/deckhand.fish.
    pub shell: Shell,
}

/// `deckhand man DIR` arguments.
#[derive(Args)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing): deckhand.1
    /// and one page per command, deckhand-role.1, deckhand-role-set.1, ...
    /// (`man -l DIR/deckhand-role.1`).
    pub dir: PathBuf,
}

/// Prints the completion script of `args.shell` on stdout.
pub fn completion(args: &CompletionArgs) -> Result<(), Failure> {
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut command(), "deckhand", &mut buf);
    out!("{}", String::from_utf8_lossy(&buf));
    Ok(())
}

/// Writes the man pages into `args.dir`, printing each file written.
///
/// # Errors
/// The directory or a page could not be written.
pub fn man(args: &ManArgs) -> Result<(), Failure> {
    let written = write_man_pages(&args.dir).map_err(Failure::failed)?;
    for p in written {
        outln!("{}", p.display());
    }
    Ok(())
}

/// Writes `deckhand.1` and a page per command (hidden ones left out) into
/// `dir`, named by the command's path joined by `-` (`deckhand-role-set.1`,
/// clap's display name of a subcommand), and returns their paths.
///
/// # Errors
/// `dir` could not be created or a page could not be written.
pub fn write_man_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_page(cmd, dir, &mut written)?;
    Ok(written)
}

fn write_page(cmd: clap::Command, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_page(sub.clone(), dir, out)?;
    }
    let man = clap_mangen::Man::new(cmd);
    let path = man
        .generate_to(dir)
        .with_context(|| format!("writing {}", dir.join(man.get_filename()).display()))?;
    out.push(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command's `--help` names its exit statuses.
    #[test]
    fn every_command_documents_its_exit_statuses() {
        fn walk(cmd: &mut clap::Command, path: &str, missing: &mut Vec<String>) {
            let help = cmd.render_long_help().to_string();
            if !help.contains("Exit status:") {
                missing.push(path.to_string());
            }
            for sub in cmd.get_subcommands_mut() {
                if sub.get_name() == "help" {
                    continue;
                }
                let p = format!("{path} {}", sub.get_name());
                walk(sub, &p, missing);
            }
        }
        let mut cmd = command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&mut cmd, "deckhand", &mut missing);
        assert!(
            missing.is_empty(),
            "no exit statuses in --help of {missing:?}"
        );
        let set = cmd
            .find_subcommand_mut("role")
            .and_then(|r| r.find_subcommand_mut("set"))
            .expect("role set")
            .render_long_help()
            .to_string();
        assert!(
            set.contains("3 with --wait: the node reports the change blocked"),
            "{set}"
        );
        assert!(
            set.contains("4 with --wait: the node did not converge"),
            "{set}"
        );
    }

    #[test]
    fn man_pages_are_written_per_command() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_man_pages(dir.path()).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for n in [
            "deckhand.1",
            "deckhand-role.1",
            "deckhand-role-set.1",
            "deckhand-status.1",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
        assert!(
            !names.iter().any(|x| x.contains("check-member")),
            "hidden commands get no page: {names:?}"
        );
        let role = std::fs::read_to_string(dir.path().join("deckhand-role-set.1")).unwrap();
        assert!(role.starts_with(".ie") || role.contains(".TH"), "{role}");
        assert!(role.contains("deckhand\\-role\\-set"), "{role}");
    }
}
