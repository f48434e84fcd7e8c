//! Per-device offload settings of the endpoint hop: NAPI GRO on a veth
//! (the `ETHTOOL_SGRO` ioctl, what `ethtool -K DEV gro on` does) and IPv4
//! BIG TCP (`IFLA_GSO_IPV4_MAX_SIZE` / `IFLA_GRO_IPV4_MAX_SIZE` over
//! rtnetlink, which iproute2 6.1 can neither set nor print). Never by
//! running `ethtool` or `ip`.

use futures::TryStreamExt;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_utils::nla::{DefaultNla, Nla};
use rtnetlink::Handle;

use crate::sys::error::SysError;

/// `IFLA_GSO_IPV4_MAX_SIZE` (linux/if_link.h, since 6.3).
const IFLA_GSO_IPV4_MAX_SIZE: u16 = 63;
/// `IFLA_GRO_IPV4_MAX_SIZE` (linux/if_link.h, since 6.3).
const IFLA_GRO_IPV4_MAX_SIZE: u16 = 64;
/// The classic limit both sizes have by default (64 KB).
pub const GSO_LEGACY_MAX_SIZE: u32 = 65536;

const ETHTOOL_GGRO: u32 = 0x2b;
const ETHTOOL_SGRO: u32 = 0x2c;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

fn plumbing(what: String, reason: impl ToString) -> SysError {
    SysError::Plumbing {
        what,
        reason: reason.to_string(),
    }
}

/// One `SIOCETHTOOL` call with an `ethtool_value` on `ifname`.
fn ethtool_value(ifname: &str, cmd: u32, data: u32) -> std::io::Result<u32> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::from_raw_os_error(libc::ENODEV));
    }
    let mut value = EthtoolValue { cmd, data };
    // SAFETY: a plain datagram socket, closed by OwnedFd below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
    // SAFETY: SIOCETHTOOL with a valid ifreq whose data points at an
    // ethtool_value that outlives the call.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::SIOCETHTOOL as _,
            &mut req,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(value.data)
}

/// Whether GRO is on for `ifname` (`ethtool -k`'s generic-receive-offload).
pub fn gro(ifname: &str) -> Result<bool, SysError> {
    ethtool_value(ifname, ETHTOOL_GGRO, 0)
        .map(|v| v != 0)
        .map_err(|e| plumbing(format!("reading GRO of {ifname}"), e))
}

/// Turns GRO on or off for `ifname`; on a veth, on also gives its receive
/// side a NAPI instance (the kernel then takes eligible packets through
/// NAPI and GRO instead of the per-CPU backlog).
pub fn set_gro(ifname: &str, on: bool) -> Result<(), SysError> {
    if gro(ifname)? == on {
        return Ok(());
    }
    ethtool_value(ifname, ETHTOOL_SGRO, u32::from(on))
        .map(|_| ())
        .map_err(|e| plumbing(format!("setting GRO {} on {ifname}", onoff(on)), e))
}

fn onoff(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

/// The IPv4 GSO and GRO maximum sizes of a link, each absent when the
/// kernel does not report it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpSizes {
    /// `gso_ipv4_max_size`.
    pub gso_ipv4_max: Option<u32>,
    /// `gro_ipv4_max_size`.
    pub gro_ipv4_max: Option<u32>,
}

fn u32_of(nla: &DefaultNla) -> Option<u32> {
    let mut buf = vec![0u8; nla.value_len()];
    nla.emit_value(&mut buf);
    <[u8; 4]>::try_from(buf.as_slice())
        .ok()
        .map(u32::from_ne_bytes)
}

/// The sizes of the link `index` (see [`IpSizes`]).
pub async fn ip_sizes(handle: &Handle, index: u32) -> Result<IpSizes, SysError> {
    let mut req = handle.link().get().match_index(index).execute();
    let msg = req
        .try_next()
        .await
        .map_err(|e| plumbing(format!("reading link {index}"), e))?
        .ok_or(SysError::IndexNotFound(index))?;
    let mut s = IpSizes::default();
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::Other(nla) if nla.kind() == IFLA_GSO_IPV4_MAX_SIZE => {
                s.gso_ipv4_max = u32_of(nla)
            }
            LinkAttribute::Other(nla) if nla.kind() == IFLA_GRO_IPV4_MAX_SIZE => {
                s.gro_ipv4_max = u32_of(nla)
            }
            _ => {}
        }
    }
    Ok(s)
}

/// Sets `gso_ipv4_max_size` and `gro_ipv4_max_size` of the link `index`
/// of `handle`'s namespace to `size`. The kernel refuses a GSO size above
/// the device's `tso_max_size`. (Never with `IFLA_TARGET_NETNSID` to reach
/// a peer in another namespace: in RTM_SETLINK that attribute moves the
/// link there.)
pub async fn set_ip_sizes(handle: &Handle, index: u32, size: u32) -> Result<(), SysError> {
    let mut req = handle.link().set(index);
    let msg = req.message_mut();
    for kind in [IFLA_GSO_IPV4_MAX_SIZE, IFLA_GRO_IPV4_MAX_SIZE] {
        msg.attributes.push(LinkAttribute::Other(DefaultNla::new(
            kind,
            size.to_ne_bytes().to_vec(),
        )));
    }
    req.execute().await.map_err(|e| {
        plumbing(
            format!("setting gso/gro_ipv4_max_size {size} on link {index}"),
            e,
        )
    })
}
