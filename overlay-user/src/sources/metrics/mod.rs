//! Prometheus metrics: with `metrics_address`, overlayd serves `GET /metrics`
//! in the text exposition format (version 0.0.4, through the
//! `prometheus-client` crate). Everything is read at scrape time: the
//! dataplane's per-CPU counters summed, the core's tables, the cluster
//! store's and Docker's connection state, and the reconcile durations the
//! core measured ([`render`] lists the metrics).
//!
//! Owns: the HTTP endpoint (a minimal HTTP/1.1 server: one GET per
//! connection) and the metric names. Must not touch: the dataplane (it reads
//! through the core), the other sources (the cluster through [`ClusterView`],
//! Docker through its [`ConnectionState`]); it reports no changes.

pub mod render;

pub use render::Extra;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::agent::handle::Core;
use crate::sources::ControlSource;

/// The longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of the metrics endpoint.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address could not be bound.
    #[error("metrics_address {address}: cannot listen: {source}; expected a free local address and port like 127.0.0.1:9642")]
    Bind {
        /// The configured address.
        address: SocketAddr,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
}

/// The `/metrics` endpoint, served beside the control sources.
pub struct MetricsSource {
    listener: TcpListener,
    extra: Extra,
}

impl MetricsSource {
    /// Listen on `address` (bound now, so a bad address fails the start).
    pub async fn bind(address: SocketAddr, extra: Extra) -> Result<MetricsSource, MetricsError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| MetricsError::Bind { address, source })?;
        log::info!("metrics: serving http://{address}/metrics");
        Ok(MetricsSource { listener, extra })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }
}

#[async_trait::async_trait]
impl ControlSource for MetricsSource {
    fn name(&self) -> &'static str {
        "metrics"
    }

    async fn run(self: Box<Self>, core: Core) {
        loop {
            let stream = match self.listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    log::warn!("metrics: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let core = core.clone();
            let extra = self.extra.clone();
            tokio::spawn(async move {
                if let Err(e) = serve(stream, &core, &extra).await {
                    log::debug!("metrics: {e}");
                }
            });
        }
    }
}

/// One request: `GET /metrics` is answered with the metrics, anything else with 404 or 405.
async fn serve(mut stream: TcpStream, core: &Core, extra: &Extra) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, kind, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => (
            "200 OK",
            render::CONTENT_TYPE,
            render::render(core, extra).await,
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "not found; metrics are at /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET is served\n".to_string(),
        ),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}
