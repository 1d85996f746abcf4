//! The agent's metrics endpoint: `GET /metrics` on the configured address
//! (`[metrics] listen`, default `0.0.0.0:7479`,
//! [`deckhand_model::METRICS_PORT`]), HTTP/1.1 with hyper (already in the
//! tree through tonic), answering [`super::metrics::render`] in the
//! OpenMetrics text format, which Prometheus negotiates
//! (<https://prometheus.io/docs/instrumenting/content_negotiation/>).
//! Any other path answers 404. No TLS and no auth: the host firewall opens
//! the port to the cluster's nodes only (`docs/firewall.md`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of Prometheus's text format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long a bind that failed (port taken) waits before the next try.
const BIND_RETRY: Duration = Duration::from_secs(10);

/// Serves the metrics on `addr` in the background. A bind that fails is
/// logged and tried again every [`BIND_RETRY`]: the agent keeps
/// reconciling without its endpoint.
pub fn spawn(addr: SocketAddr) {
    tokio::spawn(async move {
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) => {
                    tracing::error!(
                        "cannot serve metrics on {addr}: {e}; trying again in {} s",
                        BIND_RETRY.as_secs()
                    );
                    tokio::time::sleep(BIND_RETRY).await;
                }
            }
        };
        tracing::info!("serving metrics on http://{addr}/metrics");
        serve(listener).await;
    });
}

/// Answers connections on `listener` until the task ends.
pub async fn serve(listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer));
            if let Err(e) = conn.await {
                tracing::debug!("metrics connection: {e}");
            }
        });
    }
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let open_metrics = req
        .headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .any(|v| {
            v.to_str()
                .is_ok_and(|v| v.contains("application/openmetrics-text"))
        });
    let r = if req.uri().path() == "/metrics" {
        let (kind, body) = if open_metrics {
            (CONTENT_TYPE, super::metrics::render())
        } else {
            (TEXT_CONTENT_TYPE, super::metrics::render_text())
        };
        Response::builder()
            .header(hyper::header::CONTENT_TYPE, kind)
            .body(Full::new(Bytes::from(body)))
    } else {
        Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"deckhand: try /metrics\n")))
    };
    Ok(r.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}
