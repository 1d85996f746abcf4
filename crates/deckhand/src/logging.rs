//! Logging: plain text on stderr, which systemd sends to the journal.
//!
//! Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp and no
//! colours (the journal adds its own); a tracing event's fields are printed
//! inline (`key=value`), so `journalctl -u deckhand` shows everything without
//! `-o verbose`. (A journald layer would store fields separately, where the
//! default output hides them.)

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG` filters (default `info` for the
/// agent, `warn` for CLI commands).
pub fn init(agent: bool) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(if agent { "info" } else { "warn" }));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder
            .without_time()
            .with_ansi(false)
            .with_level(true)
            .init();
    } else {
        builder.init();
    }
}
