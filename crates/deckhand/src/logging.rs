//! Logging: plain text on stderr, which systemd sends to the journal.
//!
//! Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp and no
//! colours (the journal adds its own), and each line starts with its syslog
//! priority as `<N>` (3 error, 4 warning, 6 info, 7 debug), which journald
//! reads from a stream and strips (sd-daemon(3), "SD_WARNING"), so
//! `journalctl -p warning -u deckhand` shows warnings and errors. A tracing
//! event's fields are printed inline (`key=value`), so `journalctl -u
//! deckhand` shows everything without `-o verbose`. (A journald layer would
//! store fields separately, where the default output hides them.)

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The syslog priority journald gives a line of `level`.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// An event format that writes `<priority>` before what `F` writes.
pub struct Prioritized<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for Prioritized<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

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
        let format = tracing_subscriber::fmt::format()
            .without_time()
            .with_ansi(false)
            .with_level(true)
            .with_target(false);
        builder.event_format(Prioritized(format)).init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_line_starts_with_its_journal_priority_and_keeps_its_fields() {
        let buf = Buffer::default();
        let writer = buf.clone();
        let format = tracing_subscriber::fmt::format()
            .without_time()
            .with_ansi(false)
            .with_target(false);
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(Level::DEBUG)
            .event_format(Prioritized(format))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!("e");
            tracing::warn!(key = 7, "w");
            tracing::info!("i");
            tracing::debug!("d");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[0].starts_with("<3>") && lines[0].contains("ERROR") && lines[0].ends_with('e')
        );
        assert!(
            lines[1].starts_with("<4>") && lines[1].contains("w key=7"),
            "{text}"
        );
        assert!(lines[2].starts_with("<6>"));
        assert!(lines[3].starts_with("<7>"));
    }
}
