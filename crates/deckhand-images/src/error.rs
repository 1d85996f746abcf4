//! The errors of Docker calls ([`Error`]), each saying what failed and what
//! to do.

use std::path::PathBuf;

/// Why a Docker call failed. Every message says what failed and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The daemon's socket does not answer.
    #[error("cannot reach the Docker daemon at {}: {reason} (is docker.service running?)", socket.display())]
    Unreachable {
        /// The socket path.
        socket: PathBuf,
        /// What the connection said.
        reason: String,
    },
    /// The daemon accepted the connection but did not answer in time.
    #[error("the Docker daemon at {} did not answer {what} within {seconds} s (is it hung? see journalctl -u docker)", socket.display())]
    Timeout {
        /// The socket path.
        socket: PathBuf,
        /// The request.
        what: String,
        /// The request timeout, in seconds.
        seconds: u64,
    },
    /// The daemon answered with an error; `message` is its words verbatim
    /// (for a pull, usually the registry's).
    #[error("{message}")]
    Docker {
        /// What was asked, e.g. `pull of registry.example/app:1`.
        what: String,
        /// The HTTP status, 0 when the error came inside a progress stream.
        status: u16,
        /// The daemon's message.
        message: String,
    },
    /// The Docker `config.json` could not be used.
    #[error("cannot use the Docker credentials file {} (docker.config): {reason}", path.display())]
    Credentials {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}
