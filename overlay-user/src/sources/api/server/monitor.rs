//! The `monitor` request: the dataplane's events streamed to one client,
//! filtered, with what was lost each second, until the client goes.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::sync::broadcast::error::RecvError;

use super::lines::send;
use crate::agent::handle::Core;
use crate::model::observe::{MonitorFilter, MonitorLoss};
use crate::model::validation::{parse_ipv4, parse_underlay_ip, InputError};
use crate::sources::api::wire::Response;

/// The answer when the dataplane has no event stream.
pub const NO_MONITOR: &str =
    "the kernel dataplane has no event monitor; overlayctl monitor needs dataplane = \"ebpf\"";

/// The fields of a [`Request::Monitor`](crate::sources::api::wire::Request::Monitor), parsed.
pub(super) fn filter(
    drop: bool,
    trace: bool,
    reasons: Vec<String>,
    ip: Option<String>,
    peer: Option<String>,
) -> Result<MonitorFilter, Response> {
    let known: Vec<&str> = overlay_common::DropReason::ALL
        .iter()
        .map(|r| r.name())
        .collect();
    if let Some(bad) = reasons.iter().find(|r| !known.contains(&r.as_str())) {
        return Err(Response::error(format!(
            "unknown drop reason {bad:?}; expected one of {}",
            known.join(", ")
        )));
    }
    let parsed = (|| {
        let ip = ip.as_deref().map(parse_ipv4).transpose()?;
        let peer = peer.as_deref().map(parse_underlay_ip).transpose()?;
        Ok::<_, InputError>((ip, peer))
    })();
    let (ip, peer) = parsed.map_err(Response::error)?;
    Ok(MonitorFilter {
        // Neither asked for: drops, as `cilium monitor` shows by default.
        drops: drop || !trace,
        trace,
        reasons,
        ip,
        peer,
    })
}

/// Streams events matching `filter` until the client closes the connection
/// (or reads nothing for `idle`).
pub(super) async fn stream(
    core: &Core,
    filter: MonitorFilter,
    sample: u32,
    mut read: impl AsyncReadExt + Unpin,
    write: impl AsyncWriteExt + Unpin,
    idle: Duration,
) -> std::io::Result<()> {
    let mut write = BufWriter::new(write);
    let monitor = core.lock().await.monitor();
    let Some(monitor) = monitor else {
        send(&mut write, &Response::error(NO_MONITOR), idle).await?;
        return write.flush().await;
    };
    let loss = || monitor.loss().unwrap_or((0, 0));
    let mut seen = loss();
    let mut sub = match monitor.subscribe(&filter, sample.max(1)) {
        Ok(sub) => sub,
        Err(e) => {
            send(&mut write, &Response::error(e), idle).await?;
            return write.flush().await;
        }
    };
    send(&mut write, &Response::Ok, idle).await?;
    write.flush().await?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut lagged = 0;
    let mut byte = [0u8; 1];
    loop {
        tokio::select! {
            ev = sub.events.recv() => match ev {
                Ok(ev) if filter.matches(&ev) => {
                    send(&mut write, &Response::Event(Box::new(ev)), idle).await?;
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => lagged += n,
                Err(RecvError::Closed) => return write.flush().await,
            },
            _ = tick.tick() => {
                let now = loss();
                let lost = MonitorLoss {
                    suppressed: now.0 - seen.0.min(now.0),
                    ring_full: now.1 - seen.1.min(now.1),
                    lagged: std::mem::take(&mut lagged),
                };
                seen = now;
                if lost != MonitorLoss::default() {
                    send(&mut write, &Response::Lost(lost), idle).await?;
                }
            }
            n = read.read(&mut byte) => {
                if matches!(n, Ok(0) | Err(_)) {
                    return Ok(());
                }
            }
        }
        if sub.events.is_empty() {
            tokio::time::timeout(idle, write.flush())
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "client not reading")
                })??;
        }
    }
}
