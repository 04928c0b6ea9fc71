//! `--metrics-addr ADDR`: a tiny HTTP server (axum) answering `GET /metrics` with the
//! Prometheus text exposition of the shared [`Metrics`].
//!
//! The page has no authentication and tells anyone who reads it what the mount is doing, so it
//! is served on loopback only, unless the address is explicitly non-loopback *and*
//! `--metrics-allow-remote` is given; otherwise the mount refuses to start with a message that
//! says so. The unspecified addresses (`0.0.0.0`, `::`) count as non-loopback, and an
//! IPv4-mapped IPv6 loopback (`::ffff:127.0.0.1`) as loopback.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;

/// Content type of the metrics page (OpenMetrics text, which Prometheus scrapes natively).
pub const PROMETHEUS_CONTENT_TYPE: &str = super::metrics::EXPOSITION_CONTENT_TYPE;

/// The metrics options of `vagonfs mount` (flatten into its arguments).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464). Loopback
    /// addresses only, unless --metrics-allow-remote is given.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Allow --metrics-addr to be a non-loopback address. The page has no authentication:
    /// anyone who can reach it sees what the mount is doing.
    #[arg(long, requires = "metrics_addr")]
    pub metrics_allow_remote: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsServerError {
    #[error(
        "refusing to serve metrics on {0}: it is not a loopback address and the page has no \
         authentication; use 127.0.0.1:PORT, or pass --metrics-allow-remote to expose it"
    )]
    NotLoopback(SocketAddr),
    #[error("cannot serve metrics on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Whether `addr` may be served given `--metrics-allow-remote`.
pub fn check_metrics_addr(addr: SocketAddr, allow_remote: bool) -> Result<(), MetricsServerError> {
    if is_loopback(addr.ip()) || allow_remote {
        Ok(())
    } else {
        Err(MetricsServerError::NotLoopback(addr))
    }
}

/// A running metrics server. Dropping it stops it.
pub struct MetricsServer {
    local_addr: SocketAddr,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Checks the address, binds, and serves in the background (within a Tokio runtime).
    pub async fn start(
        args: &MetricsArgs,
        metrics: Arc<Metrics>,
    ) -> Result<Option<MetricsServer>, MetricsServerError> {
        match args.metrics_addr {
            Some(addr) => Self::serve(addr, args.metrics_allow_remote, metrics)
                .await
                .map(Some),
            None => Ok(None),
        }
    }

    pub async fn serve(
        addr: SocketAddr,
        allow_remote: bool,
        metrics: Arc<Metrics>,
    ) -> Result<MetricsServer, MetricsServerError> {
        check_metrics_addr(addr, allow_remote)?;
        let bind_error = |source| MetricsServerError::Bind { addr, source };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let app = Router::new()
            .route("/metrics", get(render))
            .with_state(metrics);
        let cancel = CancellationToken::new();
        let stop = cancel.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::warn!(error = %e, "metrics server stopped");
            }
        });
        tracing::info!(addr = %local_addr, "serving metrics at http://{local_addr}/metrics");
        Ok(MetricsServer {
            local_addr,
            cancel,
            task: Some(task),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn render(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
        metrics.render_prometheus(),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::daemon::metrics::Endpoint;

    #[test]
    fn loopback_rule() {
        let ok = [
            "127.0.0.1:9464",
            "127.8.9.10:1",
            "[::1]:9464",
            "[::ffff:127.0.0.1]:80",
        ];
        for a in ok {
            assert!(check_metrics_addr(a.parse().unwrap(), false).is_ok(), "{a}");
        }
        let remote = [
            "0.0.0.0:9464",
            "192.168.1.5:9464",
            "[::]:9464",
            "[2001:db8::1]:1",
        ];
        for a in remote {
            let addr: SocketAddr = a.parse().unwrap();
            let err = check_metrics_addr(addr, false).unwrap_err();
            assert!(err.to_string().contains("--metrics-allow-remote"), "{err}");
            assert!(check_metrics_addr(addr, true).is_ok());
        }
    }

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        metrics: MetricsArgs,
    }

    #[test]
    fn flags_parse_and_allow_remote_needs_an_address() {
        let cli = Cli::try_parse_from([
            "x",
            "--metrics-addr",
            "127.0.0.1:9",
            "--metrics-allow-remote",
        ])
        .unwrap();
        assert_eq!(
            cli.metrics.metrics_addr,
            Some("127.0.0.1:9".parse().unwrap())
        );
        assert!(cli.metrics.metrics_allow_remote);
        assert!(Cli::try_parse_from(["x", "--metrics-allow-remote"]).is_err());
        assert!(Cli::try_parse_from(["x", "--metrics-addr", "localhost"]).is_err());
    }

    #[tokio::test]
    async fn serves_the_exposition_on_loopback() {
        let metrics = Arc::new(Metrics::new());
        metrics.record_request(Endpoint::Capacity, Duration::from_millis(1), None);
        let args = MetricsArgs {
            metrics_addr: Some("127.0.0.1:0".parse().unwrap()),
            metrics_allow_remote: false,
        };
        let server = MetricsServer::start(&args, metrics.clone())
            .await
            .unwrap()
            .unwrap();
        let base = format!("http://{}", server.local_addr());
        let client = vagonfs_api::http::tls::client();
        let resp = client.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()[reqwest::header::CONTENT_TYPE],
            PROMETHEUS_CONTENT_TYPE
        );
        let body = resp.text().await.unwrap();
        assert!(
            body.contains("vagonfs_api_requests_total{endpoint=\"capacity\"} 1\n"),
            "{body}"
        );
        assert_eq!(
            client
                .get(format!("{base}/other"))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        server.shutdown().await;
        assert!(client.get(format!("{base}/metrics")).send().await.is_err());

        let none = MetricsServer::start(&MetricsArgs::default(), metrics)
            .await
            .unwrap();
        assert!(none.is_none());
    }
}
