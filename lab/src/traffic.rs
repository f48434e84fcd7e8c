//! Traffic generators: ICMP echo (ping) and TCP bulk transfer. Both run
//! in-process on threads that joined the lab namespaces, so they need no
//! external tools; traffic only ever flows between lab namespaces.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::netns::run_in_netns;

/// Interval between echo requests sent by [`ping`].
pub const PING_INTERVAL: Duration = Duration::from_millis(200);
/// Default ICMP payload size (as iputils `ping`).
pub const PING_DEFAULT_SIZE: u32 = 56;
/// Default overall timeout of [`transfer`].
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);

static PING_ID: AtomicU32 = AtomicU32::new(0);

/// Outcome of [`ping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PingResult {
    /// Echo requests attempted (including those whose send failed).
    pub transmitted: u32,
    /// Distinct echo replies received from the target.
    pub received: u32,
    /// Errors: failed sends (e.g. `EMSGSIZE` for a too-big don't-fragment
    /// packet, `ENETUNREACH`) plus ICMP errors (unreachable, fragmentation
    /// needed, time exceeded) quoting one of our requests.
    pub errors: u32,
    /// Of `errors`, how many were local send failures with `EMSGSIZE` or ICMP
    /// "fragmentation needed" messages.
    pub too_big: u32,
}

impl PingResult {
    /// Every request got a reply.
    pub fn all_received(&self) -> bool {
        self.transmitted > 0 && self.received == self.transmitted
    }
}

/// Send `count` ICMP echo requests from namespace `from_ns` to `to`, one every
/// [`PING_INTERVAL`], and count the replies, waiting at most `timeout_s`
/// seconds after the last request (or until all replies are in).
///
/// `size` is the ICMP payload size (default 56, so the IP packet is
/// `size + 28` bytes). With `dont_fragment` the packets carry DF and are
/// never fragmented locally (like `ping -M do`): too-big sends fail and are
/// counted in [`PingResult::errors`]/[`PingResult::too_big`]. Without it
/// they never carry DF (like `ping -M dont`) and are fragmented as needed.
///
/// Implemented natively with a raw ICMP socket (iputils `ping` is not
/// needed).
pub fn ping(
    from_ns: &str,
    to: Ipv4Addr,
    count: u32,
    size: Option<u32>,
    dont_fragment: bool,
    timeout_s: u32,
) -> Result<PingResult> {
    let size = size.unwrap_or(PING_DEFAULT_SIZE);
    if size > 65507 {
        bail!("ping payload {size} too large");
    }
    let id = (std::process::id() as u16)
        ^ (PING_ID.fetch_add(1, Ordering::Relaxed) as u16).wrapping_mul(40503);
    run_in_netns(from_ns, || {
        ping_here(
            to,
            count,
            size as usize,
            dont_fragment,
            Duration::from_secs(timeout_s.into()),
            id,
            PING_INTERVAL,
            false,
        )
    })?
    .map(|(res, _)| res)
    .with_context(|| format!("ping from {from_ns} to {to}"))
}

/// Send an echo request from `from_ns` to `to` every `every` until the first
/// reply, for at most `within`; returns the time from the first request to
/// that reply, or `None` if none came. For measuring how soon something
/// becomes reachable.
pub fn first_reply(
    from_ns: &str,
    to: Ipv4Addr,
    every: Duration,
    within: Duration,
) -> Result<Option<Duration>> {
    let every = every.max(Duration::from_millis(1));
    let count = (within.as_nanos() / every.as_nanos()).clamp(1, 65535) as u32;
    let id = (std::process::id() as u16)
        ^ (PING_ID.fetch_add(1, Ordering::Relaxed) as u16).wrapping_mul(40503);
    run_in_netns(from_ns, || {
        ping_here(
            to,
            count,
            PING_DEFAULT_SIZE as usize,
            false,
            every,
            id,
            every,
            true,
        )
    })?
    .map(|(_, first)| first)
    .with_context(|| format!("probing {to} from {from_ns}"))
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        sum += u32::from(*b) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[allow(clippy::too_many_arguments)]
fn ping_here(
    to: Ipv4Addr,
    count: u32,
    size: usize,
    df: bool,
    timeout: Duration,
    id: u16,
    interval: Duration,
    until_first: bool,
) -> Result<(PingResult, Option<Duration>)> {
    // SAFETY: plain syscalls; the fd is owned by `sock` right away.
    let raw = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    if raw < 0 {
        bail!("raw ICMP socket: {}", std::io::Error::last_os_error());
    }
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let fd = sock.as_raw_fd();
    let pmtu: libc::c_int = if df {
        libc::IP_PMTUDISC_DO
    } else {
        libc::IP_PMTUDISC_DONT
    };
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&pmtu as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        bail!("IP_MTU_DISCOVER: {}", std::io::Error::last_os_error());
    }
    let dst = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(to).to_be(),
        },
        sin_zero: [0; 8],
    };

    let mut res = PingResult::default();
    let mut seen = vec![false; count as usize];
    let mut pkt = vec![0u8; 8 + size];
    for (i, b) in pkt[8..].iter_mut().enumerate() {
        *b = (i & 0xff) as u8;
    }
    let mut buf = vec![0u8; 65536 + 512];
    let start = Instant::now();
    let mut next_send = start;
    let mut deadline = start + timeout;

    loop {
        let now = Instant::now();
        if res.transmitted < count && now >= next_send {
            let seq = res.transmitted as u16;
            pkt[0] = 8; // echo request
            pkt[1] = 0;
            pkt[2..4].copy_from_slice(&[0, 0]);
            pkt[4..6].copy_from_slice(&id.to_be_bytes());
            pkt[6..8].copy_from_slice(&seq.to_be_bytes());
            let ck = checksum(&pkt);
            pkt[2..4].copy_from_slice(&ck.to_be_bytes());
            let n = unsafe {
                libc::sendto(
                    fd,
                    pkt.as_ptr().cast(),
                    pkt.len(),
                    0,
                    (&dst as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            res.transmitted += 1;
            if n < 0 {
                res.errors += 1;
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EMSGSIZE) {
                    res.too_big += 1;
                }
            }
            next_send += interval;
            if res.transmitted == count {
                deadline = Instant::now() + timeout;
            }
        }
        if until_first && res.received > 0 {
            return Ok((res, Some(start.elapsed())));
        }
        if res.transmitted == count && (res.received == count || Instant::now() >= deadline) {
            break;
        }
        let wake = if res.transmitted < count {
            next_send
        } else {
            deadline
        };
        let wait_ms = wake
            .saturating_duration_since(Instant::now())
            .as_millis()
            .min(1000) as libc::c_int;
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        unsafe { libc::poll(&mut pfd, 1, wait_ms) };
        // Drain everything that is queued.
        loop {
            let mut from: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            let mut flen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let n = unsafe {
                libc::recvfrom(
                    fd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_in).cast(),
                    &mut flen,
                )
            };
            if n <= 0 {
                break;
            }
            classify(&buf[..n as usize], to, id, &mut seen, &mut res);
        }
    }
    let first = (until_first && res.received > 0).then(|| start.elapsed());
    Ok((res, first))
}

/// Look at one received IPv4 packet (raw ICMP sockets get the IP header).
fn classify(p: &[u8], to: Ipv4Addr, id: u16, seen: &mut [bool], res: &mut PingResult) {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    if p.len() < ihl + 8 {
        return;
    }
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let icmp = &p[ihl..];
    match icmp[0] {
        0 => {
            // Echo reply.
            let rid = u16::from_be_bytes([icmp[4], icmp[5]]);
            let seq = usize::from(u16::from_be_bytes([icmp[6], icmp[7]]));
            if src == to && rid == id && seq < seen.len() && !seen[seq] {
                seen[seq] = true;
                res.received += 1;
            }
        }
        3 | 11 | 12 => {
            // Error quoting the offending packet: IP header + 8 bytes.
            let inner = &icmp[8..];
            if inner.len() < 20 || inner[0] >> 4 != 4 {
                return;
            }
            let ihl2 = usize::from(inner[0] & 0x0f) * 4;
            if inner.len() < ihl2 + 8 || inner[9] != 1 {
                return;
            }
            let idst = Ipv4Addr::new(inner[16], inner[17], inner[18], inner[19]);
            let q = &inner[ihl2..];
            if idst == to && q[0] == 8 && u16::from_be_bytes([q[4], q[5]]) == id {
                res.errors += 1;
                if icmp[0] == 3 && icmp[1] == 4 {
                    res.too_big += 1;
                }
            }
        }
        _ => {}
    }
}

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

    #[test]
    fn icmp_checksum() {
        // Echo request id=1 seq=1 with no payload: checksum 0xf7fd.
        let p = [8u8, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(checksum(&p), 0xf7fd);
    }
}
