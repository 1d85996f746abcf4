//! This node's Docker images, as both the agent's preseed worker and
//! `deckhand preseed` see them: the pull options of the `[docker]` settings
//! and the image cache file the agent keeps for boot-time preseeds.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use deckhand_images::PullOptions;
use deckhand_model::ImageRef;

use crate::config::DockerSettings;

/// The pull options of the `[docker]` settings, with `concurrency` pulls at
/// once (the cluster config's `preseed_concurrency`, or `--concurrency`).
/// The socket is `docker.socket` itself, given to
/// [`deckhand_images::Preseeder::new`] beside these options.
pub fn pull_options(docker: &DockerSettings, concurrency: usize) -> PullOptions {
    PullOptions {
        concurrency,
        no_progress_timeout: Duration::from_secs(docker.pull_no_progress_seconds),
        deadline: Duration::from_secs(docker.pull_deadline_seconds),
        attempts: docker.pull_attempts,
        min_free_bytes: docker.min_free_bytes,
        docker_config: docker.config.clone(),
        ..PullOptions::default()
    }
}

/// Writes the image cache (normally [`crate::paths::IMAGE_CACHE`]): `images`
/// as a JSON array of normalized references, e.g.
/// `["registry.example:5000/platform/router:1.4.2", "docker.io/library/redis:7"]`,
/// atomically (a reader never sees half a file), mode 0644, creating the
/// parent directory. Returns whether the file changed.
///
/// # Errors
/// An I/O error creating the directory or writing the file, with the path.
pub fn write_cache(path: &Path, images: &BTreeSet<ImageRef>) -> Result<bool> {
    let mut json = serde_json::to_vec_pretty(images)?;
    json.push(b'\n');
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    deckhand_systemd::write_atomic(path, &json, 0o644)
        .with_context(|| format!("writing the image cache {}", path.display()))
}

/// Reads the image cache written by [`write_cache`].
///
/// # Errors
/// The file is missing or unreadable, or is not a JSON array of valid image
/// references; the message names the path.
pub fn read_cache(path: &Path) -> Result<BTreeSet<ImageRef>> {
    let text = std::fs::read(path)
        .with_context(|| format!("cannot read the image cache {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| {
        format!(
            "the image cache {} is not a JSON array of image references",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn img(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn cache_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/images.json");
        let set: BTreeSet<ImageRef> = [img("redis:7"), img("127.0.0.1:5000/a/b:1")].into();
        assert!(write_cache(&path, &set).unwrap());
        assert!(
            !write_cache(&path, &set).unwrap(),
            "unchanged: not rewritten"
        );
        assert_eq!(read_cache(&path).unwrap(), set);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"docker.io/library/redis:7\""), "{text}");
        let e = format!(
            "{:#}",
            read_cache(&dir.path().join("none.json")).unwrap_err()
        );
        assert!(
            e.contains("cannot read the image cache") && e.contains("none.json"),
            "{e}"
        );
        std::fs::write(&path, "[\"Bad Ref\"]").unwrap();
        let e = format!("{:#}", read_cache(&path).unwrap_err());
        assert!(e.contains("not a JSON array of image references"), "{e}");
    }

    #[test]
    fn pull_options_follow_the_docker_settings() {
        let d = DockerSettings {
            socket: "/run/docker.sock".into(),
            config: Some("/etc/deckhand/docker.json".into()),
            min_free_bytes: 5,
            pull_no_progress_seconds: 30,
            pull_deadline_seconds: 600,
            pull_attempts: 4,
        };
        let o = pull_options(&d, 7);
        assert_eq!(o.concurrency, 7);
        assert_eq!(o.no_progress_timeout, Duration::from_secs(30));
        assert_eq!(o.deadline, Duration::from_secs(600));
        assert_eq!(o.attempts, 4);
        assert_eq!(o.min_free_bytes, 5);
        assert_eq!(
            o.docker_config,
            Some(PathBuf::from("/etc/deckhand/docker.json"))
        );
        // The config's defaults are the library's.
        let o = pull_options(&DockerSettings::default(), 3);
        assert_eq!(o, PullOptions::default());
    }
}
