//! Writing responses: one JSON document a line, within the idle timeout.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::sources::api::wire::Response;

pub(super) fn line_of(resp: &Response) -> Vec<u8> {
    let mut json = serde_json::to_vec(resp).expect("responses serialize");
    json.push(b'\n');
    json
}

/// Writes `resp`; a client that does not read it within `idle` is dropped.
pub(super) async fn send(
    write: &mut (impl AsyncWriteExt + Unpin),
    resp: &Response,
    idle: Duration,
) -> std::io::Result<()> {
    match tokio::time::timeout(idle, write.write_all(&line_of(resp))).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the client read no answer for {idle:?}"),
        )),
    }
}
