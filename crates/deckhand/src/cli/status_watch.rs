//! `deckhand status --watch`: the status redrawn on every change of the
//! keys under the prefix, through one etcd watch (no poll): a node's status
//! key is put when its agent's report changes and deleted when its lease
//! expires, so a change of any node, role or plane shows.
//!
//! The watch is [`deckhand_etcd::watch_key`]: a snapshot first, then every
//! event, resumed across broken streams and compactions
//! (<https://etcd.io/docs/v3.4/learning/api/#watch-api>).

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::{Result, bail};
use deckhand_etcd::KeyEvent;
use tokio::sync::mpsc;

use super::session::Session;

/// How long a burst of events may go on before the status is redrawn: the
/// events that arrive within this time of each other make one redraw.
const SETTLE: Duration = Duration::from_millis(200);
/// The longest a redraw waits for a burst to end.
const SETTLE_MAX: Duration = Duration::from_secs(1);

/// Prints the status (a table, or with `json` one JSON document per line)
/// at start and after every change, until interrupted. On a terminal each
/// table replaces the last (ANSI clear); otherwise tables follow one
/// another, each after a line naming its revision.
///
/// # Errors
/// The watch ended (it resumes by itself across broken streams, so only
/// when its task ended).
pub async fn watch(session: Session, json: bool) -> Result<()> {
    let clear = !json && std::io::stdout().is_terminal();
    frames(session, json, |revision, frame| {
        if clear {
            out!("\x1b[H\x1b[2J");
        }
        if !json {
            outln!(
                "deckhand status --watch: revision {revision}, {}",
                crate::tls::utc(crate::agent::observe::unix_now())
            );
        }
        out!("{frame}");
        true
    })
    .await
}

/// Renders the status at start and after every change under the prefix,
/// handing each frame and the newest revision it reflects to `sink` until
/// `sink` returns `false` (then `Ok`). A frame that cannot be read (etcd
/// away) is reported on stderr and skipped: the next change redraws.
///
/// # Errors
/// The watch ended.
pub async fn frames(
    session: Session,
    json: bool,
    mut sink: impl FnMut(i64, String) -> bool,
) -> Result<()> {
    let key = format!("{}/", session.store.keyspace().prefix());
    let mut events = deckhand_etcd::watch_key(session.store.client(), key, true);
    loop {
        let Some(first) = events.recv().await else {
            bail!("the watch of the keys ended");
        };
        let revision = settle(&mut events, revision_of(&first)).await;
        let frame = if json {
            super::status::render_json_line(&session).await
        } else {
            super::status::render(&session, false).await
        };
        match frame {
            Ok(f) => {
                if !sink(revision, f) {
                    return Ok(());
                }
            }
            Err(e) => eprintln!("deckhand status: {e:#}; redrawing on the next change"),
        }
    }
}

/// Takes the events of a burst (each within [`SETTLE`] of the last, at
/// most [`SETTLE_MAX`] in all) and returns the newest revision seen.
async fn settle(events: &mut mpsc::Receiver<KeyEvent>, mut revision: i64) -> i64 {
    let deadline = tokio::time::Instant::now() + SETTLE_MAX;
    while let Ok(Some(ev)) = tokio::time::timeout_at(
        deadline.min(tokio::time::Instant::now() + SETTLE),
        events.recv(),
    )
    .await
    {
        revision = revision.max(revision_of(&ev));
    }
    revision
}

fn revision_of(ev: &KeyEvent) -> i64 {
    match ev {
        KeyEvent::Snapshot { revision, .. } => *revision,
        KeyEvent::Put { mod_revision, .. } | KeyEvent::Delete { mod_revision, .. } => *mod_revision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Etcd;

    /// Against a real etcd: a frame at start, and a new one when a key
    /// under the prefix changes, showing the change, at a newer revision.
    #[tokio::test]
    async fn redraws_when_a_key_changes() {
        let etcd = Etcd::start().await;
        let session = Session::connect(etcd.target()).await.unwrap();
        let writer = Session::connect(etcd.target()).await.unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(frames(session, true, move |rev, f| {
            tx.send((rev, f)).is_ok()
        }));
        let (rev0, first) = rx.recv().await.expect("the first frame");
        let doc: serde_json::Value = serde_json::from_str(&first).unwrap();
        assert_eq!(doc["nodes"].as_array().map(Vec::len), Some(0), "{first}");
        let id = "a".repeat(32);
        writer.store.put_name(&id, "watched1").await.unwrap();
        let (rev1, second) = rx.recv().await.expect("a frame after the change");
        assert!(rev1 > rev0, "{rev1} > {rev0}");
        let doc: serde_json::Value = serde_json::from_str(&second).unwrap();
        assert_eq!(doc["nodes"][0]["name"], "watched1", "{second}");
        drop(rx);
        task.abort();
    }
}
