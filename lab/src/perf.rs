//! Request/response latency in the way of netperf's TCP_RR: one byte each
//! way, one transaction in flight, counted for a fixed time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::run_in_netns;

/// Pins the calling thread to `cpu` (as `netperf -T` does), so that a
/// transaction's two sides run on one core: otherwise, on an idle VM, the
/// wake-up of a halted vCPU (tens of µs) dominates and hides the stack's cost.
fn pin_to_cpu(cpu: usize) {
    // SAFETY: plain syscall on a zeroed, then filled, cpu_set_t for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

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
            pin_to_cpu(0);
            // Never wait for a client that failed to connect for more than 10 s.
            listener.set_nonblocking(true)?;
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut conn = loop {
                match listener.accept() {
                    Ok((c, _)) => break c,
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(e).context("rr server: no client"),
                }
            };
            conn.set_nonblocking(false)?;
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
        // The client on its own thread too, so the caller's affinity is untouched.
        let client = s.spawn(move || -> Result<f64> {
            pin_to_cpu(0);
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
            Ok(tps)
        });
        let tps = client
            .join()
            .map_err(|_| anyhow::anyhow!("rr client panicked"))?;
        server
            .join()
            .map_err(|_| anyhow::anyhow!("rr server panicked"))??;
        tps
    })
}
