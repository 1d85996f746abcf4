//! Talking to the Docker daemon: the lazy connection and its API version
//! (`GET /version`), the mapping of bollard's errors to [`Error`], presence
//! of an image (ImageInspect) and the daemon's root dir (SystemInfo).

use std::path::{Path, PathBuf};

use bollard::Docker;
use deckhand_model::ImageRef;

use crate::{Error, Preseeder};

impl Preseeder {
    /// `e`, from a request described by `what` (e.g. `GET /info`), as this
    /// crate's [`Error`]: the daemon's own answers verbatim, a timeout as
    /// [`Error::Timeout`], anything else as [`Error::Unreachable`].
    pub(crate) fn map_err(&self, what: &str, e: bollard::errors::Error) -> Error {
        use bollard::errors::Error as B;
        match e {
            B::DockerResponseServerError {
                status_code,
                message,
            } => Error::Docker {
                what: what.to_string(),
                status: status_code,
                message,
            },
            B::DockerStreamError { error } => Error::Docker {
                what: what.to_string(),
                status: 0,
                message: error,
            },
            B::RequestTimeoutError => Error::Timeout {
                socket: self.inner.socket.clone(),
                what: what.to_string(),
                seconds: self.inner.opts.request_timeout.as_secs(),
            },
            other => Error::Unreachable {
                socket: self.inner.socket.clone(),
                reason: error_chain(&other),
            },
        }
    }

    /// The client, connected on first use with the API version negotiated
    /// with the daemon (`GET /version`).
    pub(crate) async fn docker(&self) -> Result<&Docker, Error> {
        self.inner
            .docker
            .get_or_try_init(|| async {
                let path = self.inner.socket.to_string_lossy();
                let timeout = self.inner.opts.request_timeout.as_secs().max(1);
                let d = Docker::connect_with_socket(&path, timeout, bollard::API_DEFAULT_VERSION)
                    .map_err(|e| self.map_err("a connection", e))?;
                d.negotiate_version()
                    .await
                    .map_err(|e| self.map_err("GET /version", e))
            })
            .await
    }

    /// Whether `image` is present in the daemon: by digest when the
    /// reference pins one (an image whose `RepoDigests` holds
    /// `name@digest`; its tag, if any, is not looked at), else by
    /// `name:tag` existing locally (ImageInspect).
    ///
    /// # Errors
    /// [`Error`] when the daemon cannot be reached or answers anything but
    /// the image or "no such image" (HTTP 404).
    pub async fn is_present(&self, image: &ImageRef) -> Result<bool, Error> {
        let docker = self.docker().await?;
        let name = local_name(image);
        match docker.inspect_image(&name).await {
            Ok(info) => Ok(match image.digest() {
                Some(_) => info.repo_digests.unwrap_or_default().contains(&name),
                None => true,
            }),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(self.map_err(&format!("inspect of {name}"), e)),
        }
    }

    /// Whether the daemon answers: `GET /_ping`
    /// (<https://docs.docker.com/reference/api/engine/version/v1.43/#tag/System/operation/SystemPing>),
    /// bounded by [`PullOptions::request_timeout`](crate::PullOptions::request_timeout).
    /// With socket activation (`docker.socket`), connecting starts the daemon.
    ///
    /// # Errors
    /// [`Error::Unreachable`] (nothing listens on the socket),
    /// [`Error::Timeout`], or [`Error::Docker`] for an answer other than OK.
    pub async fn ping(&self) -> Result<(), Error> {
        let docker = self.docker().await?;
        docker
            .ping()
            .await
            .map(drop)
            .map_err(|e| self.map_err("GET /_ping", e))
    }

    /// The daemon's root dir (`DockerRootDir` of SystemInfo), asked once
    /// per [`Preseeder`] and remembered (also while the daemon is down).
    ///
    /// # Errors
    /// As [`Preseeder::ping`], the first time.
    pub async fn root_dir(&self) -> Result<&Path, Error> {
        let docker = self.docker().await?;
        self.inner
            .root_dir
            .get_or_try_init(|| async {
                let info = docker
                    .info()
                    .await
                    .map_err(|e| self.map_err("GET /info", e))?;
                Ok(PathBuf::from(
                    info.docker_root_dir
                        .unwrap_or_else(|| "/var/lib/docker".to_string()),
                ))
            })
            .await
            .map(PathBuf::as_path)
    }
}

/// An error and its causes, joined with `: ` (a cause already in the message
/// is left out).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

/// The name the daemon knows a reference by: `name@digest` when it pins a
/// digest, else `name:tag`.
fn local_name(image: &ImageRef) -> String {
    match image.digest() {
        Some(d) => format!("{}@{d}", image.docker_name()),
        None => format!(
            "{}:{}",
            image.docker_name(),
            image.tag().unwrap_or("latest")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PullOptions;

    #[test]
    fn local_names() {
        let r = |s: &str| ImageRef::parse(s).unwrap();
        assert_eq!(local_name(&r("redis")), "redis:latest");
        assert_eq!(
            local_name(&r("127.0.0.1:5000/a/b:1")),
            "127.0.0.1:5000/a/b:1"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            local_name(&r(&format!("10.0.0.2:5000/app:1@{d}"))),
            format!("10.0.0.2:5000/app@{d}")
        );
    }

    #[tokio::test]
    async fn unreachable_daemon_says_so() {
        let p = Preseeder::new(
            Path::new("/nonexistent/docker.sock"),
            PullOptions::default(),
        );
        let e = p
            .is_present(&ImageRef::parse("redis").unwrap())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cannot reach the Docker daemon at /nonexistent/docker.sock")
                && e.ends_with("(is docker.service running?)"),
            "{e}"
        );
    }
}
