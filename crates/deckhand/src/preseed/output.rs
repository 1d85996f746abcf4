//! What `deckhand preseed` prints: one line per image event, or progress
//! bars on a terminal, then a summary line or JSON.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use deckhand_images::{Event, EventKind, Report};
use deckhand_model::ImageRef;
use serde::Serialize;
use tokio::sync::mpsc;

/// Where the image list came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Arguments,
    Etcd,
    Cache,
}

/// `, written 12 min ago` from the file's modification time.
pub fn age(path: &Path) -> String {
    let Ok(modified) = std::fs::metadata(path).and_then(|m| m.modified()) else {
        return String::new();
    };
    let Ok(ago) = modified.elapsed() else {
        return String::new();
    };
    let s = ago.as_secs();
    let words = match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        7200..172_800 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86400),
    };
    format!(" (written {words} ago)")
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn plural(n: u64, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// The line for one event, or `None` for events shown only as progress.
pub fn event_line(e: &Event) -> Option<String> {
    let i = &e.image;
    Some(match &e.kind {
        EventKind::Checking | EventKind::Progress(_) | EventKind::Waiting => return None,
        EventKind::Present => format!("present   {i}"),
        EventKind::Pulling { attempt: 1 } => format!("pulling   {i}"),
        EventKind::Pulling { attempt } => format!("pulling   {i} (attempt {attempt})"),
        EventKind::Retrying {
            attempt,
            reason,
            delay,
        } => format!(
            "retrying  {i} in {:.1} s: attempt {attempt} failed: {reason}",
            delay.as_secs_f64()
        ),
        EventKind::Pulled {
            elapsed,
            bytes,
            layers_downloaded,
            layers_existing,
        } => format!(
            "pulled    {i} in {:.1} s ({}, {}{})",
            elapsed.as_secs_f64(),
            mib(*bytes),
            plural(u64::from(*layers_downloaded), "layer"),
            if *layers_existing > 0 {
                format!(", {layers_existing} already present")
            } else {
                String::new()
            }
        ),
        EventKind::Failed { reason } => format!("FAILED    {i}: {reason}"),
    })
}

/// Prints events: progress bars on a terminal, else one line each (on
/// stderr when stdout carries JSON).
pub async fn print_events(mut rx: mpsc::UnboundedReceiver<Event>, terminal: bool, json: bool) {
    if !terminal {
        while let Some(e) = rx.recv().await {
            if let Some(line) = event_line(&e) {
                if json {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
            }
        }
        return;
    }
    use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
    let multi = MultiProgress::new();
    let style =
        ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    let mut bars: BTreeMap<ImageRef, ProgressBar> = BTreeMap::new();
    while let Some(e) = rx.recv().await {
        match &e.kind {
            EventKind::Pulling { attempt } => {
                let bar = bars.entry(e.image.clone()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(0));
                    b.set_style(style.clone());
                    b.set_prefix(e.image.to_string());
                    b.enable_steady_tick(Duration::from_millis(200));
                    b
                });
                bar.set_position(0);
                bar.set_message(if *attempt > 1 {
                    format!("attempt {attempt}")
                } else {
                    String::new()
                });
            }
            EventKind::Progress(p) => {
                if let Some(bar) = bars.get(&e.image) {
                    bar.set_length(p.total_bytes.max(p.bytes));
                    bar.set_position(p.bytes);
                    bar.set_message(format!(
                        "{} {}/{} layers",
                        p.status.to_lowercase(),
                        p.layers_downloaded + p.layers_existing,
                        p.layers
                    ));
                }
            }
            EventKind::Retrying { .. } => {
                if let (Some(bar), Some(line)) = (bars.get(&e.image), event_line(&e)) {
                    bar.set_message("waiting to retry");
                    let _ = multi.println(line);
                }
            }
            EventKind::Pulled { .. } | EventKind::Failed { .. } | EventKind::Present => {
                if let Some(bar) = bars.remove(&e.image) {
                    bar.finish_and_clear();
                    multi.remove(&bar);
                }
                if let Some(line) = event_line(&e) {
                    let _ = multi.println(line);
                }
            }
            EventKind::Checking | EventKind::Waiting => {}
        }
    }
    let _ = multi.clear();
}

/// `10 images: 7 present, 3 pulled, 0 failed in 4.2 s`.
pub fn summary_line(r: &Report, wanted: usize, elapsed: Duration) -> String {
    format!(
        "{}: {} present, {} pulled, {} failed in {:.1} s",
        plural(wanted as u64, "image"),
        r.present.len() + r.joined.len(),
        r.pulled.len(),
        r.failed.len(),
        elapsed.as_secs_f64()
    )
}

#[derive(Serialize)]
pub struct SummaryJson {
    source: Source,
    images: usize,
    present: Vec<String>,
    pulled: Vec<PulledJson>,
    failed: Vec<FailedJson>,
    layers_downloaded: u64,
    seconds: f64,
}

#[derive(Serialize)]
struct PulledJson {
    image: String,
    seconds: f64,
    bytes: u64,
    layers_downloaded: u32,
    layers_existing: u32,
}

#[derive(Serialize)]
struct FailedJson {
    image: String,
    reason: String,
}

pub fn summary_json(r: &Report, wanted: usize, source: Source, elapsed: Duration) -> SummaryJson {
    SummaryJson {
        source,
        images: wanted,
        present: r
            .present
            .iter()
            .chain(&r.joined)
            .map(ToString::to_string)
            .collect(),
        pulled: r
            .pulled
            .iter()
            .map(|p| PulledJson {
                image: p.image.to_string(),
                seconds: p.elapsed.as_secs_f64(),
                bytes: p.bytes,
                layers_downloaded: p.layers_downloaded,
                layers_existing: p.layers_existing,
            })
            .collect(),
        failed: r
            .failed
            .iter()
            .map(|f| FailedJson {
                image: f.image.to_string(),
                reason: f.reason.clone(),
            })
            .collect(),
        layers_downloaded: r.layers_downloaded,
        seconds: elapsed.as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use deckhand_images::Pulled;

    use super::*;

    fn img(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn lines_and_summary() {
        let e = |kind| Event {
            image: img("redis:7"),
            kind,
        };
        assert_eq!(
            event_line(&e(EventKind::Pulled {
                elapsed: Duration::from_millis(3100),
                bytes: 8 * 1024 * 1024 + 200 * 1024,
                layers_downloaded: 2,
                layers_existing: 0
            }))
            .unwrap(),
            "pulled    docker.io/library/redis:7 in 3.1 s (8.2 MiB, 2 layers)"
        );
        assert_eq!(
            event_line(&e(EventKind::Pulled {
                elapsed: Duration::from_millis(3100),
                bytes: 1024 * 1024,
                layers_downloaded: 1,
                layers_existing: 1
            }))
            .unwrap(),
            "pulled    docker.io/library/redis:7 in 3.1 s (1.0 MiB, 1 layer, 1 already present)"
        );
        assert_eq!(
            event_line(&e(EventKind::Failed {
                reason: "no progress for 60 s".into()
            }))
            .unwrap(),
            "FAILED    docker.io/library/redis:7: no progress for 60 s"
        );
        assert!(event_line(&e(EventKind::Checking)).is_none());
        let r = Report {
            present: vec![img("a"), img("b")],
            pulled: vec![Pulled {
                image: img("c"),
                elapsed: Duration::from_secs(1),
                bytes: 1,
                layers_downloaded: 1,
                layers_existing: 0,
            }],
            ..Default::default()
        };
        assert_eq!(
            summary_line(&r, 3, Duration::from_millis(4200)),
            "3 images: 2 present, 1 pulled, 0 failed in 4.2 s"
        );
        let j = serde_json::to_value(summary_json(&r, 3, Source::Cache, Duration::ZERO)).unwrap();
        assert_eq!(j["source"], "cache");
        assert_eq!(j["pulled"][0]["image"], "docker.io/library/c:latest");
    }
}
