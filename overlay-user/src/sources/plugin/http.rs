//! The plugin's HTTP/1.1 server on its Unix socket: every call is a POST
//! to `/<Interface>.<Method>` with a JSON body (and no Content-Type
//! header); every answer is JSON with Docker's plugin content type.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixListener;

use crate::sources::plugin::handler::{Plugin, PluginError};
use crate::sources::plugin::wire::{self, CONTENT_TYPE};

/// The largest request body read (Docker's are a few hundred bytes).
pub const MAX_BODY: usize = 1 << 20;

/// Listen on `socket`, replacing a stale socket file; its directory is made.
pub fn bind(socket: &Path) -> Result<UnixListener, PluginError> {
    let failed = |e: std::io::Error| PluginError::Socket {
        path: socket.to_path_buf(),
        reason: e.to_string(),
    };
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(e)),
    }
    UnixListener::bind(socket).map_err(failed)
}

/// Serve `plugin` on `listener` until the task is aborted.
pub async fn serve(listener: UnixListener, plugin: Arc<Plugin>, socket: PathBuf) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                log::warn!("plugin socket {}: accept: {e}", socket.display());
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let plugin = plugin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let plugin = plugin.clone();
                async move { Ok::<_, Infallible>(answer(&plugin, req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                log::debug!("plugin connection: {e}");
            }
        });
    }
}

async fn answer(plugin: &Plugin, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return reply(
                StatusCode::BAD_REQUEST,
                &wire::error(&format!("{path}: reading the request: {e}")),
            )
        }
    };
    if body.len() > MAX_BODY {
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            &wire::error(&format!(
                "{path}: the request has {} bytes; expected at most {MAX_BODY}",
                body.len()
            )),
        );
    }
    let call = path.trim_start_matches('/');
    match plugin.call(call, &body).await {
        Ok(v) => {
            log::debug!("plugin {call}: {} -> {v}", String::from_utf8_lossy(&body));
            reply(StatusCode::OK, &v)
        }
        Err(e) => {
            let status = match e {
                PluginError::UnknownCall(_) => StatusCode::NOT_FOUND,
                PluginError::BadRequest(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::OK,
            };
            log::warn!(
                "plugin {call}: {} refused: {e}",
                String::from_utf8_lossy(&body)
            );
            reply(status, &wire::error(&e.to_string()))
        }
    }
}

fn reply(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    r
}
