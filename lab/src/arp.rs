//! An ARP scan from a raw packet socket, run in-process in a lab
//! namespace (no external tool): ARP requests for every given address,
//! round after round, as `arp-scan` sends them. The frames are broadcast
//! on the namespace's interface only, so they stay inside the lab.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::netns::run_in_netns;

const ETH_P_ARP: u16 = 0x0806;

/// What [`arp_scan`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ArpScan {
    /// ARP requests sent.
    pub requests: u64,
    /// Complete rounds over every target.
    pub rounds: u64,
}

/// Sends, from interface `iface` of namespace `ns` (as `sender_ip` and the
/// interface's MAC), one broadcast ARP request for each of `targets`, then
/// pauses `pause` and starts the next round, until `stop` is set or `max`
/// has passed. With `claim` = the gateway's address, each round also asks
/// for the gateway once in the name of every target (sender address =
/// target, MAC = ours), as a scanner with forged senders does: the host
/// answers each and makes a neighbour entry for each.
#[allow(clippy::too_many_arguments)]
pub fn arp_scan(
    ns: &str,
    iface: &str,
    sender_ip: Ipv4Addr,
    targets: &[Ipv4Addr],
    claim: Option<Ipv4Addr>,
    pause: Duration,
    stop: &AtomicBool,
    max: Duration,
) -> Result<ArpScan> {
    let (fd, ifindex, mac) = run_in_netns(ns, || open(iface))??;
    let mut frame = [0u8; 60];
    frame[0..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    // Ethernet, IPv4, 6-byte MACs, 4-byte addresses, request.
    frame[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    frame[22..28].copy_from_slice(&mac);
    // SAFETY: a zeroed sockaddr_ll is valid; the fields are set below.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = ETH_P_ARP.to_be();
    to.sll_ifindex = ifindex;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    let start = Instant::now();
    let mut done = ArpScan::default();
    while !stop.load(Ordering::Relaxed) && start.elapsed() < max {
        let asks = targets.iter().map(|t| (sender_ip, *t));
        let claims = claim
            .into_iter()
            .flat_map(|gw| targets.iter().map(move |t| (*t, gw)));
        for (sender, target) in asks.chain(claims) {
            frame[28..32].copy_from_slice(&sender.octets());
            frame[38..42].copy_from_slice(&target.octets());
            // SAFETY: a valid socket, buffer and address of the given sizes.
            let n = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&to as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                // A full queue: let it drain rather than fail the scan.
                if e.raw_os_error() == Some(libc::ENOBUFS) {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                bail!("sending an ARP request from {ns}: {e}");
            }
            done.requests += 1;
        }
        done.rounds += 1;
        std::thread::sleep(pause);
    }
    Ok(done)
}

/// A packet socket for ARP, `iface`'s index and MAC (in the caller's namespace).
fn open(iface: &str) -> Result<(OwnedFd, i32, [u8; 6])> {
    // SAFETY: plain socket call; the fd is owned at once.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from(ETH_P_ARP.to_be()),
        )
    };
    if raw < 0 {
        bail!("packet socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: a zeroed ifreq is valid; the name fits (checked).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if iface.is_empty() || iface.len() >= req.ifr_name.len() {
        bail!("bad interface name {iface:?}");
    }
    for (d, s) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFINDEX and SIOCGIFHWADDR fill the union of a valid ifreq.
    let ifindex = unsafe {
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFINDEX, &mut req) != 0 {
            bail!("{iface}: {}", std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_ifindex
    };
    // SAFETY: as above.
    let mac = unsafe {
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) != 0 {
            bail!("{iface}: {}", std::io::Error::last_os_error());
        }
        let data = req.ifr_ifru.ifru_hwaddr.sa_data;
        [data[0], data[1], data[2], data[3], data[4], data[5]].map(|b| b as u8)
    };
    Ok((fd, ifindex, mac))
}
