//! Pulling one image: a pull slot, attempts retried with backoff within the
//! deadline, the free disk space before each attempt, and ImageCreate's
//! progress stream read with the no-progress timeout.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use bollard::query_parameters::CreateImageOptionsBuilder;
use deckhand_model::ImageRef;
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::{Error, EventKind, MIB, Preseeder, Pulled, auth, progress};

/// A pull attempt's failure: its reason, and whether another attempt may
/// succeed.
struct AttemptError {
    reason: String,
    retry: bool,
}

impl Preseeder {
    /// Pulls with retries, within the deadline, holding a pull slot.
    pub(crate) async fn pull(
        &self,
        image: &ImageRef,
        emit: &impl Fn(EventKind),
    ) -> Result<Pulled, String> {
        let opts = &self.inner.opts;
        let _slot = self
            .inner
            .slots
            .acquire()
            .await
            .map_err(|_| "the preseeder was shut down".to_string())?;
        let start = Instant::now();
        let deadline = start + opts.deadline;
        let attempts = opts.attempts.max(1);
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(opts.min_backoff)
            .with_max_delay(opts.max_backoff.max(opts.min_backoff))
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(attempts as usize)
            .build();
        let out_of_time = |last: &str| {
            format!(
                "pull of {image} did not finish within {} s (docker.pull_deadline_seconds){}",
                opts.deadline.as_secs(),
                if last.is_empty() {
                    String::new()
                } else {
                    format!("; last error: {last}")
                }
            )
        };
        let mut attempt = 1;
        loop {
            emit(EventKind::Pulling { attempt });
            let r = tokio::time::timeout_at(deadline, self.attempt(image, emit)).await;
            let err = match r {
                Err(_) => return Err(out_of_time("")),
                Ok(Ok(t)) => {
                    return Ok(Pulled {
                        image: image.clone(),
                        elapsed: start.elapsed(),
                        bytes: t.bytes,
                        layers_downloaded: t.layers_downloaded,
                        layers_existing: t.layers_existing,
                    });
                }
                Ok(Err(e)) => e,
            };
            if !err.retry {
                return Err(err.reason);
            }
            if attempt >= attempts {
                return Err(if attempts > 1 {
                    format!("{} (after {attempts} attempts)", err.reason)
                } else {
                    err.reason
                });
            }
            let delay = backoff.next().unwrap_or(opts.max_backoff);
            if Instant::now() + delay >= deadline {
                return Err(out_of_time(&err.reason));
            }
            tracing::debug!(image = %image, attempt, delay_ms = delay.as_millis() as u64, "pull failed, retrying: {}", err.reason);
            emit(EventKind::Retrying {
                attempt,
                reason: err.reason,
                delay,
            });
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// Checks the free disk space of the daemon's root dir.
    async fn check_disk(&self) -> Result<(), AttemptError> {
        let min = self.inner.opts.min_free_bytes;
        if min == 0 {
            return Ok(());
        }
        let dir = self.root_dir().await.map_err(|e| AttemptError {
            reason: e.to_string(),
            retry: true,
        })?;
        match rustix::fs::statvfs(dir) {
            Ok(st) => {
                let free = st.f_bavail.saturating_mul(st.f_frsize);
                if free < min {
                    return Err(AttemptError {
                        reason: format!(
                            "not enough free disk space in {}: {} MiB free, at least {} MiB required (docker.min_free_bytes)",
                            dir.display(),
                            free / MIB,
                            min.div_ceil(MIB)
                        ),
                        retry: false,
                    });
                }
            }
            // The daemon's root dir is not visible here (another mount
            // namespace): the daemon's own errors will have to do.
            Err(e) => tracing::warn!(
                "cannot check the free disk space of Docker's root dir {}: {e}; pulling without the check",
                dir.display()
            ),
        }
        Ok(())
    }

    /// One pull attempt: disk check, credentials, ImageCreate, its stream
    /// read until the end with the no-progress timeout.
    async fn attempt(
        &self,
        image: &ImageRef,
        emit: &impl Fn(EventKind),
    ) -> Result<progress::Totals, AttemptError> {
        let opts = &self.inner.opts;
        self.check_disk().await?;
        let credentials = match &opts.docker_config {
            Some(path) => {
                auth::credentials_for(path, image.registry()).map_err(|e| AttemptError {
                    reason: e.to_string(),
                    retry: false,
                })?
            }
            None => None,
        };
        let docker = self.docker().await.map_err(|e| AttemptError {
            reason: e.to_string(),
            retry: true,
        })?;
        // ImageCreate: fromImage=<name>, tag=<tag or digest>, as the docker
        // CLI sends it.
        let options = CreateImageOptionsBuilder::new()
            .from_image(&image.docker_name())
            .tag(image.digest().or(image.tag()).unwrap_or("latest"))
            .build();
        let what = format!("pull of {image}");
        // The daemon answers ImageCreate only once it has the manifest from
        // the registry, which may take longer than an API call: the
        // no-progress timer below bounds the wait instead of the request
        // timeout.
        let docker = docker.clone().with_timeout(
            opts.no_progress_timeout.max(opts.request_timeout) + Duration::from_secs(1),
        );
        let mut stream = docker.create_image(Some(options), None, credentials);
        let mut tracker = progress::Tracker::default();
        let mut last_new = Instant::now();
        loop {
            let next = tokio::time::timeout_at(last_new + opts.no_progress_timeout, stream.next());
            match next.await {
                Err(_) => {
                    return Err(AttemptError {
                        reason: format!(
                            "no progress for {} s (docker.pull_no_progress_seconds)",
                            opts.no_progress_timeout.as_secs()
                        ),
                        retry: true,
                    });
                }
                Ok(None) => break,
                Ok(Some(Ok(info))) => {
                    if let Some(p) = tracker.update(&info) {
                        last_new = Instant::now();
                        emit(EventKind::Progress(p));
                    } else if info.progress_detail.is_none() && info.status.is_some() {
                        // A new status line ("Pulling from", "Digest: ...")
                        // is progress too; a repeated layer line is not.
                        last_new = Instant::now();
                    }
                }
                Ok(Some(Err(e))) => {
                    let e = self.map_err(&what, e);
                    let retry = match &e {
                        Error::Docker {
                            status, message, ..
                        } => retryable(*status, message),
                        _ => true,
                    };
                    return Err(AttemptError {
                        reason: e.to_string(),
                        retry,
                    });
                }
            }
        }
        // The stream ended without an error: the image must be there now.
        match self.is_present(image).await {
            Ok(true) => Ok(tracker.totals()),
            Ok(false) => Err(AttemptError {
                reason: format!(
                    "the pull of {image} ended without an error, but the image is not present afterwards"
                ),
                retry: true,
            }),
            Err(e) => Err(AttemptError {
                reason: e.to_string(),
                retry: true,
            }),
        }
    }
}

/// Whether another attempt may fix a pull error: not when the registry
/// says the image does not exist or access is denied.
fn retryable(status: u16, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    let permanent = [
        "manifest unknown",
        "not found",
        "unauthorized",
        "denied",
        "authentication required",
        "no basic auth credentials",
        "invalid reference format",
        "no matching manifest",
    ];
    !(status == 404 || status == 401 || status == 403 || permanent.iter().any(|p| m.contains(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_errors() {
        assert!(!retryable(
            404,
            "manifest for x:1 not found: manifest unknown: manifest unknown"
        ));
        assert!(!retryable(0, "unauthorized: authentication required"));
        assert!(!retryable(
            500,
            "Head \"http://127.0.0.1:5000/v2/a/manifests/1\": no basic auth credentials"
        ));
        assert!(retryable(
            500,
            "Get \"http://127.0.0.1:1/v2/\": dial tcp 127.0.0.1:1: connect: connection refused"
        ));
        assert!(retryable(0, "unexpected EOF"));
    }
}
