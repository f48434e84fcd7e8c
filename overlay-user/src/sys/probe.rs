//! Read-only probes of this host for `overlayctl doctor`: sysctls, the
//! firewall's rules, UDP sockets, VXLAN devices, an ICMP echo to underlay
//! addresses and what a pinned BPF link is attached to.
//!
//! Nothing here changes the host; every probe reports what it saw, and the
//! agent decides whether that is a problem.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo};
use rtnetlink::Handle;

use crate::sys::error::SysError;

fn probe_error(what: impl Into<String>, reason: impl ToString) -> SysError {
    SysError::Probe {
        what: what.into(),
        reason: reason.to_string(),
    }
}

/// A sysctl under /proc/sys by its path components, e.g.
/// `["net", "ipv4", "conf", "ovl.42", "rp_filter"]` (interface names may
/// hold dots, so the dotted form is ambiguous), trimmed.
pub fn sysctl(parts: &[&str]) -> Result<String, SysError> {
    let path = Path::new("/proc/sys").join(parts.join("/"));
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| probe_error(format!("reading {}", path.display()), e))
}

/// `iptables -S CHAIN` of the filter table: the rules as `-A CHAIN ...`
/// lines (the first line is the policy, `-P CHAIN ACCEPT`). `None` when
/// the chain does not exist.
pub fn iptables_rules(chain: &str) -> Result<Option<Vec<String>>, SysError> {
    let out = Command::new("iptables")
        .args(["-w", "5", "-t", "filter", "-S", chain])
        .output()
        .map_err(|e| probe_error("running iptables", e))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No chain") || err.contains("does not exist") {
            return Ok(None);
        }
        return Err(probe_error(
            format!("iptables -S {chain}"),
            err.trim().to_string(),
        ));
    }
    Ok(Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
    ))
}

/// `nft -a list ruleset` (rules with their handles), or `None` when nft
/// is not installed.
pub fn nft_ruleset() -> Result<Option<String>, SysError> {
    match Command::new("nft").args(["-a", "list", "ruleset"]).output() {
        Ok(out) if out.status.success() => {
            Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
        }
        Ok(out) => Err(probe_error(
            "nft list ruleset",
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(probe_error("running nft", e)),
    }
}

/// How many IPv4 UDP sockets of this namespace are bound to `port`
/// (/proc/net/udp; a kernel VXLAN device's socket counts too).
pub fn udp_sockets_on(port: u16) -> Result<usize, SysError> {
    let text = std::fs::read_to_string("/proc/net/udp")
        .map_err(|e| probe_error("reading /proc/net/udp", e))?;
    Ok(count_udp_port(&text, port))
}

/// The sockets of a /proc/net/udp table bound to `port`.
pub fn count_udp_port(table: &str, port: u16) -> usize {
    table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|local| local.split(':').nth(1))
        .filter(|p| u16::from_str_radix(p, 16).ok() == Some(port))
        .count()
}

/// A kernel VXLAN device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanDevice {
    /// Its name.
    pub name: String,
    /// Its VNI, unless it is a collect-metadata (external) device.
    pub vni: Option<u32>,
    /// Its UDP port.
    pub port: u16,
    /// Its alias (IFLA_IFALIAS), if any.
    pub alias: Option<String>,
}

/// Every VXLAN device of this namespace.
pub async fn vxlan_devices(handle: &Handle) -> Result<Vec<VxlanDevice>, SysError> {
    let msgs: Vec<_> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| SysError::Request {
            what: "dump of links".into(),
            source: Box::new(e),
        })?;
    let mut out = Vec::new();
    for msg in msgs {
        let mut dev = VxlanDevice {
            name: String::new(),
            vni: None,
            // The kernel's default when IFLA_VXLAN_PORT is absent.
            port: 8472,
            alias: None,
        };
        let mut vxlan = false;
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => dev.name = n.clone(),
                LinkAttribute::IfAlias(a) => dev.alias = Some(a.clone()),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(InfoKind::Vxlan) => vxlan = true,
                            LinkInfo::Data(InfoData::Vxlan(settings)) => {
                                for s in settings {
                                    match s {
                                        InfoVxlan::Id(v) => dev.vni = Some(*v),
                                        InfoVxlan::Port(p) => dev.port = *p,
                                        InfoVxlan::CollectMetadata(true) => dev.vni = None,
                                        _ => {}
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if vxlan {
            out.push(dev);
        }
    }
    Ok(out)
}

/// The ICMP checksum of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    let chunks = data.chunks_exact(2);
    if let [b] = chunks.remainder() {
        sum += u32::from(*b) << 8;
    }
    for c in chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends `tries` ICMP echo requests to each of `targets` (from this
/// namespace, one raw socket) and returns those that answered within
/// `timeout`. Blocking: run it on a blocking thread.
pub fn icmp_probe(
    targets: &[Ipv4Addr],
    tries: u16,
    timeout: Duration,
) -> Result<BTreeSet<Ipv4Addr>, SysError> {
    let mut answered = BTreeSet::new();
    if targets.is_empty() {
        return Ok(answered);
    }
    // SAFETY: a plain syscall; the fd is owned by `sock` right away.
    let raw = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    if raw < 0 {
        return Err(probe_error(
            "raw ICMP socket",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `raw` is a fresh fd that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let fd = sock.as_raw_fd();
    let id = (std::process::id() as u16) ^ 0x6f76;
    let wanted: BTreeSet<Ipv4Addr> = targets.iter().copied().collect();
    let start = Instant::now();
    let spacing = timeout / u32::from(tries.max(1)) / 2;
    let mut buf = vec![0u8; 2048];
    let mut sent = 0u16;
    let mut next_send = start;
    while start.elapsed() < timeout && answered.len() < wanted.len() {
        if sent < tries && Instant::now() >= next_send {
            for (i, to) in wanted.difference(&answered).enumerate() {
                let seq = (sent as usize * wanted.len() + i) as u16;
                let mut pkt = [0u8; 16];
                pkt[0] = 8;
                pkt[4..6].copy_from_slice(&id.to_be_bytes());
                pkt[6..8].copy_from_slice(&seq.to_be_bytes());
                pkt[8..16].copy_from_slice(b"overlay?");
                let sum = checksum(&pkt);
                pkt[2..4].copy_from_slice(&sum.to_be_bytes());
                let dst = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: 0,
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*to).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: `pkt` and `dst` outlive the call; lengths are theirs.
                // A failed send (no route, no neighbour) is the same as no answer.
                unsafe {
                    libc::sendto(
                        fd,
                        pkt.as_ptr().cast(),
                        pkt.len(),
                        0,
                        (&dst as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    )
                };
            }
            sent += 1;
            next_send = Instant::now() + spacing;
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 20) };
        loop {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                break;
            }
            let p = &buf[..n as usize];
            let ihl = usize::from(p[0] & 0x0f) * 4;
            if p.len() < ihl + 8 || p[ihl] != 0 {
                continue;
            }
            let from = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
            if u16::from_be_bytes([p[ihl + 4], p[ihl + 5]]) == id && wanted.contains(&from) {
                answered.insert(from);
            }
        }
    }
    Ok(answered)
}

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// What a pinned BPF link is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkState {
    /// The link's ID (as `bpftool link` shows it).
    pub id: u32,
    /// The program's ID.
    pub prog_id: u32,
    /// The interface it is attached to; 0 when it is detached (by
    /// `bpftool link detach`, or because its interface went away).
    pub ifindex: u32,
}

/// Reads the BPF link pinned at `path` (a tc/tcx or XDP link).
pub fn pinned_link(path: &Path) -> Result<LinkState, SysError> {
    use std::os::unix::ffi::OsStrExt;
    let what = || format!("BPF link {}", path.display());
    let cpath =
        std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|e| probe_error(what(), e))?;
    // union bpf_attr for BPF_OBJ_GET: pathname (u64), bpf_fd (u32), file_flags (u32).
    let mut attr = [0u64; 8];
    attr[0] = cpath.as_ptr() as u64;
    // SAFETY: `attr` is a zeroed bpf_attr that outlives the call; `cpath` too.
    let raw = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if raw < 0 {
        return Err(probe_error(what(), std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    // struct bpf_link_info: type, id, prog_id (u32 each), then a union at
    // offset 16 whose first u32 is the ifindex for tcx and XDP links.
    let mut info = [0u8; 128];
    let mut get = [0u64; 8];
    get[0] = u64::from(fd.as_raw_fd() as u32) | ((info.len() as u64) << 32);
    get[1] = info.as_mut_ptr() as u64;
    // SAFETY: `get` and `info` are valid for the lengths given and outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            get.as_mut_ptr(),
            std::mem::size_of_val(&get),
        )
    };
    if rc < 0 {
        return Err(probe_error(what(), std::io::Error::last_os_error()));
    }
    let u32_at = |o: usize| u32::from_ne_bytes([info[o], info[o + 1], info[o + 2], info[o + 3]]);
    Ok(LinkState {
        id: u32_at(4),
        prog_id: u32_at(8),
        ifindex: u32_at(16),
    })
}

/// The first IPv4 subnet and gateway of Docker network `name` (for the
/// default `bridge` network, what `dockerd --bip` set), or `None` when
/// there is no such network.
pub async fn docker_network_ipv4(
    socket: &Path,
    name: &str,
) -> Result<Option<(String, Option<String>)>, SysError> {
    let docker = crate::sys::docker::connect(socket).await?;
    let net = match docker.inspect_network(name, None).await {
        Ok(net) => net,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(None),
        Err(e) => return Err(crate::sys::docker::api_error(socket)(e)),
    };
    Ok(net
        .ipam
        .and_then(|i| i.config)
        .unwrap_or_default()
        .into_iter()
        .find_map(|c| {
            let subnet = c.subnet.filter(|s| !s.contains(':'))?;
            Some((subnet, c.gateway))
        }))
}

/// This process's command line, words joined by spaces.
pub fn own_command_line() -> String {
    std::fs::read("/proc/self/cmdline")
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|w| !w.is_empty())
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "overlayd".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_table() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                 \x20 1: 00000000:12B5 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 0 2 0000000000000000 0\n\
                 \x20 2: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 0\n";
        assert_eq!(count_udp_port(t, 4789), 1);
        assert_eq!(count_udp_port(t, 53), 1);
        assert_eq!(count_udp_port(t, 8472), 0);
    }

    #[test]
    fn icmp_checksum() {
        // An echo request with id 1, seq 1 and no payload.
        let pkt = [8u8, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(checksum(&pkt), 0xf7fd);
    }
}
