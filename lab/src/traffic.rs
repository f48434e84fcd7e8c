//! TCP bulk transfer of a deterministic pattern, checked by its SHA-256 on
//! the receiving side. Like [`crate::ping`] it runs in-process on threads
//! that joined the lab namespaces, so it needs no external tools; traffic
//! only ever flows between lab namespaces.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::netns::run_in_netns;

/// Default overall timeout of [`transfer`].
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);

/// Outcome of [`transfer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// Bytes the sender wrote.
    pub bytes_sent: u64,
    /// Bytes the receiver read before EOF.
    pub bytes_received: u64,
    /// Hex SHA-256 of the sent data.
    pub sent_sha256: String,
    /// Hex SHA-256 of the received data.
    pub received_sha256: String,
    /// Offset of the first received byte that differs from what was sent
    /// (or of the first extra byte); `None` if the received data is a prefix
    /// of (normally: equal to) the sent data.
    pub first_mismatch: Option<u64>,
    /// Time from connection to the receiver seeing EOF.
    pub elapsed: Duration,
}

impl Transfer {
    /// All bytes arrived and the hashes match.
    pub fn is_intact(&self) -> bool {
        self.bytes_received == self.bytes_sent
            && self.first_mismatch.is_none()
            && self.sent_sha256 == self.received_sha256
    }

    /// Goodput in Gbit/s.
    pub fn gbit_per_s(&self) -> f64 {
        self.bytes_received as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e9
    }
}

/// Size of one block of the transfer pattern.
const PATTERN_CHUNK: usize = 1 << 20;

/// 1 MiB of xorshift64* output, computed once.
fn pattern_base() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut v = Vec::with_capacity(PATTERN_CHUNK);
        while v.len() < PATTERN_CHUNK {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        v
    })
}

/// Fill `buf` with bytes `[offset, offset + buf.len())` of the pattern.
///
/// Block `c` (1 MiB each) is the base block rotated by a per-block amount,
/// with its first 8 bytes replaced by `c` (little endian): pseudo-random,
/// never all zeros, every block distinct, and cheap (memcpy) even in debug
/// builds.
fn fill_pattern(offset: u64, buf: &mut [u8]) {
    let base = pattern_base();
    let mut off = offset;
    let mut out = buf;
    while !out.is_empty() {
        let c = off / PATTERN_CHUNK as u64;
        let p0 = (off % PATTERN_CHUNK as u64) as usize;
        let n = (PATTERN_CHUNK - p0).min(out.len());
        let (dst, rest) = out.split_at_mut(n);
        let rot = (c.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 44) as usize; // < 2^20
        let stamp = c.to_le_bytes();
        let mut p = p0;
        let mut d = 0;
        while p < 8 && d < n {
            dst[d] = stamp[p];
            p += 1;
            d += 1;
        }
        while d < n {
            let src = (p + rot) % PATTERN_CHUNK;
            let k = (PATTERN_CHUNK - src).min(n - d);
            dst[d..d + k].copy_from_slice(&base[src..src + k]);
            p += k;
            d += k;
        }
        off += n as u64;
        out = rest;
    }
}

/// The deterministic pseudo-random byte stream sent by [`transfer`]
/// (exactly `len` bytes, never all zeros), as a [`Read`]er.
pub struct PatternReader {
    pos: u64,
    len: u64,
}

impl PatternReader {
    /// The first `len` bytes of the pattern.
    pub fn new(len: u64) -> Self {
        PatternReader { pos: 0, len }
    }
}

impl Read for PatternReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.len - self.pos) as usize;
        fill_pattern(self.pos, &mut buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

fn hash_pattern_into(h: &mut Sha256, len: u64) {
    let mut r = PatternReader::new(len);
    let mut buf = vec![0u8; PATTERN_CHUNK];
    loop {
        let n = r.read(&mut buf).expect("infallible");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
}

/// Hex SHA-256 of the first `len` bytes of the pattern that [`transfer`]
/// sends (memoized per length: hashing is slow in debug builds).
pub fn pattern_sha256(len: u64) -> String {
    static CACHE: OnceLock<Mutex<HashMap<u64, String>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(h) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&len) {
        return h.clone();
    }
    let mut h = Sha256::new();
    hash_pattern_into(&mut h, len);
    let hex = hex(&h.finalize());
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(len, hex.clone());
    hex
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Send `bytes` bytes of the deterministic pseudo-random pattern
/// ([`PatternReader`]) over TCP from namespace `from_ns` to a receiver
/// listening in `to_ns`, connecting to `to_ip`, and report the SHA-256 of
/// what was sent and of what was received. Gives up after
/// [`TRANSFER_TIMEOUT`] (120 s).
///
/// Connection failures, timeouts and resets are errors; corrupted data is
/// not (compare the hashes, or use [`Transfer::is_intact`]).
///
/// The receiver checks every byte against the expected stream as it arrives
/// (fast even in debug builds); while they agree, the received data *is* the
/// pattern, so its hash is the pattern's. From the first differing byte on
/// it hashes the actual bytes (seeded with the verified prefix), so
/// `received_sha256` is always the true hash of the received data.
pub fn transfer(from_ns: &str, to_ns: &str, to_ip: Ipv4Addr, bytes: u64) -> Result<Transfer> {
    transfer_with_timeout(from_ns, to_ns, to_ip, bytes, TRANSFER_TIMEOUT)
}

/// [`transfer`] with an explicit overall timeout.
pub fn transfer_with_timeout(
    from_ns: &str,
    to_ns: &str,
    to_ip: Ipv4Addr,
    bytes: u64,
    timeout: Duration,
) -> Result<Transfer> {
    let deadline = Instant::now() + timeout;
    let listener = run_in_netns(to_ns, || TcpListener::bind("0.0.0.0:0"))?
        .with_context(|| format!("binding receiver in {to_ns}"))?;
    let port = listener.local_addr()?.port();
    listener.set_nonblocking(true)?;

    let cancel = AtomicBool::new(false);
    std::thread::scope(|s| -> Result<Transfer> {
        let cancel = &cancel;
        // Hash what we send on another core while the transfer runs.
        let sent_hash = s.spawn(move || pattern_sha256(bytes));
        let receiver = s.spawn(move || receive(listener, bytes, deadline, cancel));

        let sent = (|| -> Result<u64> {
            let addr = SocketAddr::V4(SocketAddrV4::new(to_ip, port));
            let connect_timeout = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(10))
                .max(Duration::from_millis(1));
            let mut stream = run_in_netns(from_ns, || {
                TcpStream::connect_timeout(&addr, connect_timeout)
            })?
            .with_context(|| format!("connecting from {from_ns} to {addr}"))?;
            let mut data = PatternReader::new(bytes);
            let mut buf = vec![0u8; PATTERN_CHUNK];
            let mut total = 0u64;
            loop {
                let n = data.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    bail!("timed out after {timeout:?} having sent {total} bytes");
                }
                stream.set_write_timeout(Some(left))?;
                stream
                    .write_all(&buf[..n])
                    .with_context(|| format!("sending (after {total} bytes)"))?;
                total += n as u64;
            }
            stream.shutdown(std::net::Shutdown::Write)?;
            // Wait for the receiver to finish and close, so a reset surfaces.
            let left = deadline.saturating_duration_since(Instant::now());
            stream.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            let _ = stream.read(&mut buf);
            Ok(total)
        })();
        if sent.is_err() {
            cancel.store(true, Ordering::Relaxed);
        }

        let received = receiver
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        let sent_sha256 = sent_hash
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        let bytes_sent = sent.context("transfer sender")?;
        let r = received.context("transfer receiver")?;
        let received_sha256 = match r.sha256 {
            Some(h) => h,
            None if r.bytes == bytes => sent_sha256.clone(),
            None => pattern_sha256(r.bytes),
        };
        Ok(Transfer {
            bytes_sent,
            bytes_received: r.bytes,
            sent_sha256,
            received_sha256,
            first_mismatch: r.first_mismatch,
            elapsed: r.elapsed,
        })
    })
    .with_context(|| format!("TCP transfer of {bytes} bytes {from_ns} -> {to_ns} ({to_ip})"))
}

struct Received {
    bytes: u64,
    /// `None`: the data received is exactly the first `bytes` bytes of the
    /// pattern (so its hash is `pattern_sha256(bytes)`).
    sha256: Option<String>,
    first_mismatch: Option<u64>,
    elapsed: Duration,
}

fn receive(
    listener: TcpListener,
    expected_len: u64,
    deadline: Instant,
    cancel: &AtomicBool,
) -> Result<Received> {
    let mut stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    bail!("no connection before the deadline");
                }
                if cancel.load(Ordering::Relaxed) {
                    bail!("sender gave up before connecting");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e).context("accept"),
        }
    };
    drop(listener);
    let start = Instant::now();
    stream.set_nonblocking(false)?;
    let mut buf = vec![0u8; PATTERN_CHUNK];
    let mut expect = vec![0u8; PATTERN_CHUNK];
    let mut total = 0u64;
    // Set once the data diverges from the pattern: hashes the real bytes.
    let mut mismatch: Option<(u64, Sha256)> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("timed out having received {total} bytes");
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("receiving (after {total} bytes)")),
        };
        let got = &buf[..n];
        match &mut mismatch {
            Some((_, h)) => h.update(got),
            None => {
                // Compare with the pattern; bytes past its end never match.
                let m = (expected_len.saturating_sub(total)).min(n as u64) as usize;
                fill_pattern(total, &mut expect[..m]);
                let bad = if got[..m] == expect[..m] {
                    (m < n).then_some(m)
                } else {
                    got[..m].iter().zip(&expect[..m]).position(|(a, b)| a != b)
                };
                if let Some(k) = bad {
                    let mut h = Sha256::new();
                    hash_pattern_into(&mut h, total);
                    h.update(got);
                    mismatch = Some((total + k as u64, h));
                }
            }
        }
        total += n as u64;
    }
    let elapsed = start.elapsed();
    Ok(match mismatch {
        Some((at, h)) => Received {
            bytes: total,
            sha256: Some(hex(&h.finalize())),
            first_mismatch: Some(at),
            elapsed,
        },
        None => Received {
            bytes: total,
            sha256: None,
            first_mismatch: None,
            elapsed,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(mut r: impl Read, step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; step];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn pattern_is_deterministic_and_chunking_independent() {
        let len = 3 * PATTERN_CHUNK as u64 + 12345;
        let a = read_all(PatternReader::new(len), 1 << 20);
        assert_eq!(a.len() as u64, len);
        assert_eq!(a, read_all(PatternReader::new(len), 4093));
        assert_eq!(a[..1000], read_all(PatternReader::new(1000), 3)[..]);
        assert!(a.iter().filter(|&&b| b == 0).count() < a.len() / 100);
        // Blocks differ from each other, beyond their stamps.
        let c = PATTERN_CHUNK;
        assert_ne!(a[8..c], a[c + 8..2 * c]);
        assert_eq!(a[c..c + 8], 1u64.to_le_bytes());
        let mut piece = vec![0u8; 777];
        fill_pattern(c as u64 - 5, &mut piece);
        assert_eq!(piece[..], a[c - 5..c - 5 + 777]);
        assert_eq!(pattern_sha256(len), hex(&Sha256::digest(&a)));
        assert_eq!(pattern_sha256(len), hex(&Sha256::digest(&a))); // memoized
    }

    fn receive_over_loopback(data: Vec<u8>, expected_len: u64) -> Received {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        l.set_nonblocking(true).unwrap();
        let cancel = AtomicBool::new(false);
        let deadline = Instant::now() + Duration::from_secs(20);
        std::thread::scope(|s| {
            let r = s.spawn(|| receive(l, expected_len, deadline, &cancel));
            let mut c = TcpStream::connect(addr).unwrap();
            for piece in data.chunks(10_000) {
                c.write_all(piece).unwrap();
            }
            drop(c);
            r.join().unwrap().unwrap()
        })
    }

    #[test]
    fn receiver_hashes_what_it_really_got() {
        let len = PATTERN_CHUNK as u64 + 5000;
        let good = read_all(PatternReader::new(len), 1 << 16);
        let r = receive_over_loopback(good.clone(), len);
        assert_eq!(r.bytes, len);
        assert_eq!(r.first_mismatch, None);
        assert_eq!(r.sha256, None);

        let mut bad = good.clone();
        bad[PATTERN_CHUNK + 17] ^= 0x40;
        let r = receive_over_loopback(bad.clone(), len);
        assert_eq!(r.first_mismatch, Some(PATTERN_CHUNK as u64 + 17));
        assert_eq!(r.sha256, Some(hex(&Sha256::digest(&bad))));

        let mut long = good.clone();
        long.extend_from_slice(b"extra");
        let r = receive_over_loopback(long.clone(), len);
        assert_eq!(r.first_mismatch, Some(len));
        assert_eq!(r.sha256, Some(hex(&Sha256::digest(&long))));

        let short = good[..1000].to_vec();
        let r = receive_over_loopback(short.clone(), len);
        assert_eq!((r.bytes, r.first_mismatch, r.sha256), (1000, None, None));
        assert_eq!(pattern_sha256(1000), hex(&Sha256::digest(&short)));
    }
}
