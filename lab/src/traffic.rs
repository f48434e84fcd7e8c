//! Traffic generators: ICMP echo (ping) and TCP bulk transfer. Both run
//! in-process on threads that joined the lab namespaces, so they need no
//! external tools; traffic only ever flows between lab namespaces.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
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
        )
    })?
    .with_context(|| format!("ping from {from_ns} to {to}"))
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

fn ping_here(
    to: Ipv4Addr,
    count: u32,
    size: usize,
    df: bool,
    timeout: Duration,
    id: u16,
) -> Result<PingResult> {
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
            next_send += PING_INTERVAL;
            if res.transmitted == count {
                deadline = Instant::now() + timeout;
            }
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
    Ok(res)
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
    /// Time from connection to the receiver seeing EOF.
    pub elapsed: Duration,
}

impl Transfer {
    /// All bytes arrived and the hashes match.
    pub fn is_intact(&self) -> bool {
        self.bytes_received == self.bytes_sent && self.sent_sha256 == self.received_sha256
    }

    /// Goodput in Gbit/s.
    pub fn gbit_per_s(&self) -> f64 {
        self.bytes_received as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e9
    }
}

/// Deterministic pseudo-random byte stream (xorshift64*), never all zeros.
pub struct PatternReader {
    state: u64,
    remaining: u64,
    carry: [u8; 8],
    carry_len: usize,
}

impl PatternReader {
    /// A stream of exactly `len` bytes from the fixed default seed.
    pub fn new(len: u64) -> Self {
        Self::with_seed(len, 0x9E37_79B9_7F4A_7C15)
    }

    /// A stream of exactly `len` bytes from `seed` (0 is replaced by 1).
    pub fn with_seed(len: u64, seed: u64) -> Self {
        PatternReader {
            state: seed.max(1),
            remaining: len,
            carry: [0; 8],
            carry_len: 0,
        }
    }

    #[inline]
    fn next_word(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl Read for PatternReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = (buf.len() as u64).min(self.remaining) as usize;
        let buf = &mut buf[..want];
        let mut off = 0;
        while self.carry_len > 0 && off < buf.len() {
            buf[off] = self.carry[8 - self.carry_len];
            self.carry_len -= 1;
            off += 1;
        }
        let mut chunks = buf[off..].chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_word().to_le_bytes());
        }
        let rem = chunks.into_remainder();
        if !rem.is_empty() {
            self.carry = self.next_word().to_le_bytes();
            let k = rem.len();
            rem.copy_from_slice(&self.carry[..k]);
            self.carry_len = 8 - k;
        }
        self.remaining -= want as u64;
        Ok(want)
    }
}

/// Hex SHA-256 of the first `len` bytes of the [`PatternReader`] stream that
/// [`transfer`] sends.
pub fn pattern_sha256(len: u64) -> String {
    let mut r = PatternReader::new(len);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).expect("infallible");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex(&h.finalize())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Send `bytes` bytes of deterministic pseudo-random data over TCP from
/// namespace `from_ns` to a receiver listening in `to_ns`, connecting to
/// `to_ip`, and hash both sides. Gives up after [`TRANSFER_TIMEOUT`] (120 s).
///
/// Connection failures, timeouts and resets are errors; corrupted data is
/// not (compare the hashes, or use [`Transfer::is_intact`]).
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
        let receiver = s.spawn(move || receive(listener, deadline, cancel));

        let sent = (|| -> Result<(u64, String)> {
            let addr = SocketAddr::V4(SocketAddrV4::new(to_ip, port));
            let connect_timeout = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(10))
                .max(Duration::from_millis(1));
            let mut stream =
                run_in_netns(from_ns, || TcpStream::connect_timeout(&addr, connect_timeout))?
                    .with_context(|| format!("connecting from {from_ns} to {addr}"))?;
            let mut data = PatternReader::new(bytes);
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                let n = data.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
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
            Ok((total, hex(&h.finalize())))
        })();
        if sent.is_err() {
            cancel.store(true, Ordering::Relaxed);
        }

        let received = receiver
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        let (bytes_sent, sent_sha256) = sent.context("transfer sender")?;
        let (bytes_received, received_sha256, elapsed) = received.context("transfer receiver")?;
        Ok(Transfer {
            bytes_sent,
            bytes_received,
            sent_sha256,
            received_sha256,
            elapsed,
        })
    })
    .with_context(|| format!("TCP transfer of {bytes} bytes {from_ns} -> {to_ns} ({to_ip})"))
}

fn receive(
    listener: TcpListener,
    deadline: Instant,
    cancel: &AtomicBool,
) -> Result<(u64, String, Duration)> {
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
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("timed out having received {total} bytes");
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                total += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(|| format!("receiving (after {total} bytes)")),
        }
    }
    let elapsed = start.elapsed();
    Ok((total, hex(&h.finalize()), elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_deterministic_and_chunking_independent() {
        let mut a = Vec::new();
        PatternReader::new(1000).read_to_end(&mut a).unwrap();
        assert_eq!(a.len(), 1000);
        assert!(a.iter().any(|&b| b != 0));
        let mut b = Vec::new();
        let mut r = PatternReader::new(1000);
        let mut small = [0u8; 7];
        loop {
            let n = r.read(&mut small[..3]).unwrap();
            if n == 0 {
                break;
            }
            b.extend_from_slice(&small[..n]);
        }
        assert_eq!(a, b);
        let digest = Sha256::digest(&a);
        assert_eq!(pattern_sha256(1000), hex(&digest));
    }

    #[test]
    fn icmp_checksum() {
        // Echo request id=1 seq=1 with no payload: checksum 0xf7fd.
        let p = [8u8, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(checksum(&p), 0xf7fd);
    }
}
