//! The API's client end, as `overlayctl` uses it.

use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::sources::api::wire::{ApiError, Request, Response, CLIENT_TIMEOUT};

/// Send one request to overlayd at `path` and read its answer.
pub async fn call(path: &Path, req: &Request) -> Result<Response, ApiError> {
    match tokio::time::timeout(CLIENT_TIMEOUT, call_inner(path, req)).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::Timeout {
            path: path.to_owned(),
        }),
    }
}

async fn call_inner(path: &Path, req: &Request) -> Result<Response, ApiError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ApiError::Connect {
            path: path.to_owned(),
            source,
        })?;
    let ioerr = |source| ApiError::Io {
        path: path.to_owned(),
        source,
    };
    let (read, mut write) = stream.into_split();
    let mut json = serde_json::to_vec(req).expect("requests serialize");
    json.push(b'\n');
    // A refusal (not root, too many connections) may arrive, and the
    // connection close, before the request is written: read it anyway.
    let written = write.write_all(&json).await;
    let mut line = String::new();
    let read = BufReader::new(read).read_line(&mut line).await;
    if line.is_empty() {
        written.map_err(ioerr)?;
        read.map_err(ioerr)?;
        return Err(ApiError::Closed {
            path: path.to_owned(),
        });
    }
    serde_json::from_str(&line).map_err(|e| ApiError::Protocol(format!("{e}: {}", line.trim())))
}

/// A stream of responses to one request (`monitor`), read line by line.
pub struct ResponseStream {
    path: std::path::PathBuf,
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    _write: tokio::net::unix::OwnedWriteHalf,
}

impl ResponseStream {
    /// The next response; `None` when overlayd closed the connection.
    pub async fn next(&mut self) -> Result<Option<Response>, ApiError> {
        let line = self
            .lines
            .next_line()
            .await
            .map_err(|source| ApiError::Io {
                path: self.path.clone(),
                source,
            })?;
        match line {
            None => Ok(None),
            Some(line) => serde_json::from_str(&line)
                .map(Some)
                .map_err(|e| ApiError::Protocol(format!("{e}: {}", line.trim()))),
        }
    }
}

/// Send `req` to overlayd at `path` and read its answers as they come.
pub async fn stream(path: &Path, req: &Request) -> Result<ResponseStream, ApiError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ApiError::Connect {
            path: path.to_owned(),
            source,
        })?;
    let (read, mut write) = stream.into_split();
    let mut json = serde_json::to_vec(req).expect("requests serialize");
    json.push(b'\n');
    // A refusal may arrive before the request is written: read it anyway.
    let _ = write.write_all(&json).await;
    Ok(ResponseStream {
        path: path.to_owned(),
        lines: BufReader::new(read).lines(),
        _write: write,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::testing::temp_dir;

    #[tokio::test]
    async fn client_connect_error_names_the_socket() {
        let path = temp_dir("api-none").join("nobody.sock");
        let e = call(&path, &Request::Status).await.unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "cannot connect to overlayd at {}: ",
                path.display()
            )),
            "{e}"
        );
        assert!(
            e.ends_with("is overlayd running? (use --socket PATH if it listens elsewhere)"),
            "{e}"
        );
    }
}
