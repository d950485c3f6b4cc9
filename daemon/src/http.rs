//! The metrics and health endpoint: `/metrics`, `/healthz` and `/readyz`
//! (what they judge is [`crate::health`]'s).

use crate::metrics;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Parses kube-vip's `prometheus_server` (`:2112`, `0.0.0.0:2112`, `[::]:2112`).
pub fn listen_address(text: &str) -> Result<SocketAddr, String> {
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_string()
    };
    full.parse()
        .map_err(|_| format!("prometheus_server: {text:?} is not [HOST]:PORT"))
}

/// Serves until the process ends; `started` anchors the loop-beat clock.
pub async fn serve(
    addr: SocketAddr,
    started: Instant,
    stuck_after: Duration,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("prometheus_server: cannot listen on {addr}: {e}"))?;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => continue,
        };
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| async move {
                let netlink_age = crate::net::kernel::since_last_read(started);
                let health = metrics::health(stuck_after, netlink_age);
                let problem = format!("{}\n", health.problem);
                let (code, body, kind) = match req.uri().path() {
                    "/metrics" => (
                        StatusCode::OK,
                        metrics::render(),
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                    "/healthz" if health.alive => {
                        (StatusCode::OK, "ok\n".to_string(), "text/plain")
                    }
                    "/readyz" if health.ready => (StatusCode::OK, "ok\n".to_string(), "text/plain"),
                    "/healthz" | "/readyz" => {
                        (StatusCode::SERVICE_UNAVAILABLE, problem, "text/plain")
                    }
                    _ => (
                        StatusCode::NOT_FOUND,
                        "not found\n".to_string(),
                        "text/plain",
                    ),
                };
                Response::builder()
                    .status(code)
                    .header("content-type", kind)
                    .body(Full::new(Bytes::from(body)))
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_vip_listen_addresses() {
        assert_eq!(
            listen_address(":2112").unwrap(),
            "0.0.0.0:2112".parse().unwrap()
        );
        assert_eq!(
            listen_address("[::]:2113").unwrap(),
            "[::]:2113".parse().unwrap()
        );
        assert!(listen_address("2112").is_err());
    }
}
