//! Request/response latency in the way of netperf's TCP_RR: one byte each
//! way, one transaction in flight, counted for a fixed time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::run_in_netns;

/// Transactions per second of a 1-byte request/response exchange from
/// `client_ns` to `connect` for `duration`, answered by a server listening
/// on `listen_port` (all addresses) in `server_ns`. `connect` may differ
/// from the server's own address (a published port behind DNAT).
pub fn tcp_rr(
    client_ns: &str,
    server_ns: &str,
    listen_port: u16,
    connect: SocketAddr,
    duration: Duration,
) -> Result<f64> {
    let listener = run_in_netns(server_ns, || TcpListener::bind(("0.0.0.0", listen_port)))?
        .with_context(|| format!("listening on port {listen_port} in {server_ns}"))?;
    std::thread::scope(|s| {
        let server = s.spawn(move || -> Result<()> {
            let (mut conn, _) = listener.accept()?;
            conn.set_nodelay(true)?;
            conn.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut b = [0u8; 1];
            loop {
                match conn.read(&mut b) {
                    Ok(0) => return Ok(()),
                    Ok(_) => conn.write_all(&b)?,
                    Err(e) => return Err(e.into()),
                }
            }
        });
        let mut stream = run_in_netns(client_ns, || {
            TcpStream::connect_timeout(&connect, Duration::from_secs(5))
        })?
        .with_context(|| format!("connecting to {connect} from {client_ns}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut b = [0u8; 1];
        // Warm-up, then the measured run.
        for _ in 0..100 {
            stream.write_all(&b)?;
            stream.read_exact(&mut b)?;
        }
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < duration {
            for _ in 0..64 {
                stream.write_all(&b)?;
                stream.read_exact(&mut b)?;
            }
            n += 64;
        }
        let tps = n as f64 / start.elapsed().as_secs_f64();
        drop(stream);
        server
            .join()
            .map_err(|_| anyhow::anyhow!("rr server panicked"))??;
        Ok(tps)
    })
}
