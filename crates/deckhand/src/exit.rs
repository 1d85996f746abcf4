//! Exit statuses of every `deckhand` command, in one place.
//!
//! They follow sysexits.h where one fits, so scripts and systemd can tell a
//! configuration error (fix a file, do not retry) from a failure that may
//! pass on its own.

use std::process::ExitCode;

/// Success.
pub const OK: u8 = 0;
/// The command failed: etcd did not answer, a write was refused, a node did
/// not converge in time, an image could not be pulled.
pub const FAILED: u8 = 1;
/// A bad argument (an invalid image reference on the command line).
pub const USAGE: u8 = 2;
/// A configuration error (EX_CONFIG): the agent config cannot be read or is
/// invalid, or names a file that does not exist. `deckhand.service` has
/// `RestartPreventExitStatus=78`: systemd does not restart an agent that
/// cannot start until its config is fixed.
pub const CONFIG: u8 = 78;
/// The member unit's start check (`deckhand check-member`) refused the
/// data dir (EX_DATAERR): its member is not the member the cluster knows.
/// `deckhand-etcd-member.service` has `RestartPreventExitStatus=65`:
/// systemd does not restart it; the agent moves the data dir aside.
pub const MEMBER_REFUSED: u8 = 65;
/// `deckhand backup verify` refused the snapshot (EX_DATAERR, as for a
/// refused data dir): a changed byte, a truncated file, not an etcd
/// database, or not what its name or manifest claims.
pub const BAD_SNAPSHOT: u8 = 65;

/// `deckhand role set --wait`: the node reports the change blocked (it
/// would cost the cluster its quorum now, or its learner cannot catch up);
/// the role key keeps asking for it.
pub const BLOCKED: u8 = 3;
/// `deckhand role set --wait`: the node did not converge within `--timeout`.
pub const TIMED_OUT: u8 = 4;

/// A command's error together with the exit status it ends with.
#[derive(Debug)]
pub struct Failure {
    /// One of the constants of this module.
    pub code: u8,
    /// What went wrong, printed as `deckhand: {error:#}`.
    pub error: anyhow::Error,
}

impl Failure {
    /// A failure with status [`FAILED`].
    pub fn failed(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: FAILED,
            error: error.into(),
        }
    }

    /// A failure with status [`CONFIG`].
    pub fn config(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: CONFIG,
            error: error.into(),
        }
    }

    /// A failure with status [`USAGE`].
    pub fn usage(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: USAGE,
            error: error.into(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure::failed(error)
    }
}

/// Prints a command's error on stderr (`deckhand <what>: <error>`) and maps
/// the result to its exit status.
pub fn finish(what: &str, r: Result<(), Failure>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::from(OK),
        Err(f) => {
            eprintln!("{what}: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}
