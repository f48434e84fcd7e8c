//! Request/response latency in the way of netperf's TCP_RR: one byte each
//! way, one transaction in flight, counted for a fixed time; every
//! transaction is timed, for its percentiles.

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

/// Outcome of [`tcp_rr_stats`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RrStats {
    /// Transactions per second over the measured run.
    pub tps: f64,
    /// Median round trip of one transaction (write 1 byte, read 1 byte), µs.
    pub p50_us: f64,
    /// 99th percentile of the round trip, µs.
    pub p99_us: f64,
    /// Transactions measured.
    pub transactions: u64,
}

/// The `p`-th percentile (0 < p <= 100) of `sorted` (ascending) by the
/// nearest-rank method: the smallest value with at least p % of the values
/// at or below it. NaN for an empty slice.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
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
    Ok(tcp_rr_stats(client_ns, server_ns, listen_port, connect, duration)?.tps)
}

/// Like [`tcp_rr`], with the median and 99th percentile of the round trip
/// of each transaction (timed with the monotonic clock around its write and
/// read; the clock reads add well under 1 µs).
pub fn tcp_rr_stats(
    client_ns: &str,
    server_ns: &str,
    listen_port: u16,
    connect: SocketAddr,
    duration: Duration,
) -> Result<RrStats> {
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
        let client = s.spawn(move || -> Result<RrStats> {
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
            // Round trips in ns (u32: up to 4 s each, more than the read timeout).
            let mut rtt: Vec<u32> = Vec::with_capacity(1 << 20);
            let start = Instant::now();
            let mut t0 = start;
            while t0.duration_since(start) < duration {
                stream.write_all(&b)?;
                stream.read_exact(&mut b)?;
                let t1 = Instant::now();
                rtt.push(t1.duration_since(t0).as_nanos().min(u32::MAX as u128) as u32);
                t0 = t1;
            }
            let tps = rtt.len() as f64 / t0.duration_since(start).as_secs_f64();
            drop(stream);
            rtt.sort_unstable();
            let us: Vec<f64> = rtt.iter().map(|&ns| f64::from(ns) / 1e3).collect();
            Ok(RrStats {
                tps,
                p50_us: percentile(&us, 50.0),
                p99_us: percentile(&us, 99.0),
                transactions: us.len() as u64,
            })
        });
        let stats = client
            .join()
            .map_err(|_| anyhow::anyhow!("rr client panicked"))?;
        server
            .join()
            .map_err(|_| anyhow::anyhow!("rr server panicked"))??;
        stats
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&v, 0.5), 1.0);
        // 10 values: p50 is the 5th, p99 the 10th (ceil(9.9)).
        let w = [3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.0, 6.0, 5.5, 3.5];
        let mut s = w.to_vec();
        s.sort_by(f64::total_cmp);
        assert_eq!(percentile(&s, 50.0), 3.5);
        assert_eq!(percentile(&s, 99.0), 9.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
