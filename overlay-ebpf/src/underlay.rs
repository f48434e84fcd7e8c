//! Classification of frames arriving on the underlay, shared by the XDP
//! and the tc program.

use overlay_common::{
    rules,
    vxlan::{self, ETH_P_IP, IPPROTO_UDP},
    Config, DropReason, ETH_HLEN, IPV4_HLEN, UDP_HLEN, VXLAN_HLEN,
};

use crate::{maps, packet::Packet};

/// Offset of the inner Ethernet header in a VXLAN frame without IP options.
pub const INNER_ETH: usize = ETH_HLEN + IPV4_HLEN + UDP_HLEN + VXLAN_HLEN;

// Our header lengths agree with network-types' definitions.
const _: () = assert!(network_types::eth::EthHdr::LEN == ETH_HLEN);
const _: () = assert!(network_types::ip::Ipv4Hdr::LEN == IPV4_HLEN);
const _: () = assert!(network_types::udp::UdpHdr::LEN == UDP_HLEN);

/// What a frame on the underlay is. `repr(C)`: every variant's fields at
/// their natural alignment (Rust's layout may put `inner_dst` on an odd
/// offset, a misaligned stack load the verifier refuses).
#[repr(C)]
pub enum Underlay {
    /// Not VXLAN for this host: the kernel handles it.
    Other,
    /// Our VXLAN, checked; the inner IPv4 destination (its bytes as a
    /// native u32: byte arrays would sit unaligned after the enum's tag on
    /// the stack, which the verifier refuses) and the peer host it came from.
    Vxlan { inner_dst: u32, peer: PeerHost },
    /// VXLAN of an overlay network, checked: deliver to the local container
    /// behind host-side veth `ifindex`, whose MAC is `mac`; `peer` as in
    /// `Vxlan`.
    Net {
        ifindex: u32,
        mac: [u8; 6],
        peer: PeerHost,
    },
}

/// The peer host a checked frame came from: its underlay address (the
/// outer source, its bytes as a native u32) and its `OVL_PEER_STATS` slot,
/// both taken from the entry the check looked up.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PeerHost {
    pub ip: u32,
    pub slot: u32,
}

/// Reads the outer headers and checks a VXLAN frame for this host: the VNI,
/// the sender among the peer hosts, the inner source behind that very peer,
/// and an inner destination that is not the host's own. The XDP and the tc
/// program both run every check (XDP can be detached under tc).
#[inline(always)]
pub fn classify<P: Packet>(p: &P, cfg: &Config) -> Result<Underlay, DropReason> {
    // SAFETY: ptr_at checked that 14 bytes lie inside the packet.
    let Some(eth) = p.ptr_at::<[u8; ETH_HLEN]>(0) else {
        return Ok(Underlay::Other);
    };
    // SAFETY: `eth` is in bounds (checked above); byte arrays need no alignment.
    let eth = unsafe { &*eth };
    if u16::from_be_bytes([eth[12], eth[13]]) != ETH_P_IP {
        return Ok(Underlay::Other);
    }
    // SAFETY: ptr_at checked the 20 bytes of the IPv4 header.
    let Some(ip) = p.ptr_at::<[u8; IPV4_HLEN]>(ETH_HLEN) else {
        return Ok(Underlay::Other);
    };
    // SAFETY: in bounds, byte array.
    let ip = unsafe { &*ip };
    if ip[9] != IPPROTO_UDP || ip[16..20] != cfg.local_ip {
        return Ok(Underlay::Other);
    }
    let udp_off = ETH_HLEN + IPV4_HLEN;
    // SAFETY: ptr_at checked the 8 bytes of the UDP header.
    let Some(udp) = p.ptr_at::<[u8; UDP_HLEN]>(udp_off) else {
        return Err(DropReason::TruncatedUdp);
    };
    // SAFETY: in bounds, byte array.
    let udp = unsafe { &*udp };
    if u16::from_ne_bytes([udp[2], udp[3]]) != cfg.vxlan_port_be {
        return Ok(Underlay::Other);
    }
    // To our VXLAN port: from here on a malformed frame is dropped.
    if ip[0] != 0x45 || (u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff) != 0 {
        return Err(DropReason::BadOuterIp);
    }
    // SAFETY: ptr_at checked the 8 bytes of the VXLAN header.
    let Some(vx) = p.ptr_at::<[u8; VXLAN_HLEN]>(udp_off + UDP_HLEN) else {
        return Err(DropReason::TruncatedVxlan);
    };
    // SAFETY: in bounds, byte array.
    let vx = unsafe { &*vx };
    let Some(vni) = vxlan::vni(vx) else {
        return Err(DropReason::BadVxlanFlags);
    };
    let outer_src = [ip[12], ip[13], ip[14], ip[15]];
    if vni != cfg.vni {
        return crate::net::classify(p, vni, outer_src);
    }
    // The peer-host lookup only decides the reason of a drop: a frame whose
    // inner source lies behind the peer that sent it comes from a peer host,
    // so the good path pays for the LPM lookup alone.
    let from = |reason| {
        if maps::is_peer_host(&outer_src) {
            reason
        } else {
            DropReason::UnknownPeer
        }
    };
    // SAFETY: ptr_at checked the inner Ethernet header and 20 bytes of inner IPv4.
    let Some(inner) = p.ptr_at::<[u8; ETH_HLEN + IPV4_HLEN]>(INNER_ETH) else {
        return Err(from(DropReason::TruncatedInner));
    };
    // SAFETY: in bounds, byte array.
    let inner = unsafe { &*inner };
    if u16::from_be_bytes([inner[12], inner[13]]) != ETH_P_IP {
        return Err(from(DropReason::InnerNotIpv4));
    }
    let inner_src = [inner[26], inner[27], inner[28], inner[29]];
    let slot = match maps::peer_of(inner_src) {
        Some(p) if p.underlay_ip == outer_src => p.stats_slot,
        _ => return Err(from(DropReason::InnerSourceSpoofed)),
    };
    let inner_dst = [inner[30], inner[31], inner[32], inner[33]];
    if rules::is_host_address(cfg, &inner_dst) {
        return Err(DropReason::ToHostAddress);
    }
    Ok(Underlay::Vxlan {
        inner_dst: u32::from_ne_bytes(inner_dst),
        peer: PeerHost {
            ip: u32::from_ne_bytes(outer_src),
            slot,
        },
    })
}
