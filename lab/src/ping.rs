//! ICMP echo (ping) from a raw socket, run in-process on a thread that
//! joined a lab namespace, so it needs no external tool; traffic only ever
//! flows between lab namespaces.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::netns::run_in_netns;

/// Interval between echo requests sent by [`ping`].
pub const PING_INTERVAL: Duration = Duration::from_millis(200);
/// Default ICMP payload size (as iputils `ping`).
pub const PING_DEFAULT_SIZE: u32 = 56;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_checksum() {
        // Echo request id=1 seq=1 with no payload: checksum 0xf7fd.
        let p = [8u8, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(checksum(&p), 0xf7fd);
    }
}
