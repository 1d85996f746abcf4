//! Whether the Docker daemon answers: `GET /_ping` over the preseeder's
//! connection (<https://docs.docker.com/reference/api/engine/version/v1.41/#tag/System/operation/SystemPing>).

use crate::{Error, Preseeder};

impl Preseeder {
    /// Pings the daemon (`GET /_ping`, which answers `OK` while the daemon
    /// serves its API), connecting first if not connected yet (a failed
    /// connection is tried again on the next call). Bounded by the
    /// options' `request_timeout`.
    ///
    /// # Errors
    /// [`Error::Unreachable`] (no socket, connection refused: the daemon is
    /// stopped), [`Error::Timeout`], [`Error::Docker`] for an answer other
    /// than success.
    pub async fn ping(&self) -> Result<(), Error> {
        let docker = self.docker().await?;
        docker
            .ping()
            .await
            .map_err(|e| self.map_err("GET /_ping", e))?;
        Ok(())
    }
}
