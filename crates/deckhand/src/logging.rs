//! Logging: journald fields under systemd, plain text on a terminal.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// Installs the global subscriber. `RUST_LOG` filters (default `info` for the
/// agent, `warn` for CLI commands). Under systemd (`JOURNAL_STREAM` set) logs
/// go to journald with structured fields; otherwise to stderr.
pub fn init(agent: bool) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(if agent { "info" } else { "warn" }));
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journald) = tracing_journald::layer()
    {
        tracing_subscriber::registry()
            .with(filter)
            .with(journald)
            .init();
        return;
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .init();
}
