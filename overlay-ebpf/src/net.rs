//! Overlay networks: their maps, the tc program on a network container's
//! host-side veth, and the receive path's checks and delivery for a
//! network's VNI.
//!
//! From a container: ARP for an endpoint of its network or its gateway is
//! answered in place; IPv4 from any source but its own is dropped; to a
//! local endpoint of the network -> `bpf_redirect_peer`; to a remote one
//! -> VXLAN with the network's VNI (the per-host encapsulation with the
//! container's MAC as inner source); to another network's subnet ->
//! dropped (isolation); to outside every network -> the host stack (NAT).

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::generated::{bpf_redirect, bpf_redirect_peer},
    macros::{classifier, map},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie},
    programs::TcContext,
};
use overlay_common::{
    net::{
        arp, net_endpoint_slot, net_port_slot, NetEndpointSlot, NetEndpointValue, NetKey,
        NetPortSlot, NetPortValue, NetValue, MAX_NETWORKS, MAX_NET_ENDPOINTS, MAX_NET_PORTS,
        NET_ENDPOINT_SLOTS, NET_PORT_SLOTS,
    },
    observe::Hook,
    vxlan::{ETH_P_ARP, ETH_P_IP, IPPROTO_UDP},
    Config, Counter, DropReason, ETH_HLEN, IPV4_HLEN,
};

use crate::{
    maps::{self, count},
    packet::Packet,
    tc::{
        flow_hash, into_container, push_headers, send_encapsulated, strip_outer, to_vxlan_port,
        verdict, Verdict,
    },
    underlay::{PeerHost, Underlay, INNER_ETH},
};

#[map(name = "OVL_NET_NETWORKS")]
pub static NETWORKS: HashMap<u32, NetValue> = HashMap::pinned(MAX_NETWORKS, 0);

#[map(name = "OVL_NET_SUBNETS")]
pub static SUBNETS: LpmTrie<[u8; 4], u32> = LpmTrie::pinned(MAX_NETWORKS, BPF_F_NO_PREALLOC);

#[map(name = "OVL_NET_ENDPOINTS")]
pub static ENDPOINTS: HashMap<NetKey, NetEndpointValue> =
    HashMap::pinned(MAX_NET_ENDPOINTS, BPF_F_NO_PREALLOC);

#[map(name = "OVL_NET_EP_SLOTS")]
pub static EP_SLOTS: Array<NetEndpointSlot> = Array::pinned(NET_ENDPOINT_SLOTS, 0);

#[map(name = "OVL_NET_PORTS")]
pub static PORTS: HashMap<u32, NetPortValue> = HashMap::pinned(MAX_NET_PORTS, 0);

#[map(name = "OVL_NET_PORT_SLOTS")]
pub static PORT_SLOTS: Array<NetPortSlot> = Array::pinned(NET_PORT_SLOTS, 0);

/// The endpoint behind host-side veth `ifindex`: from its slot in
/// `OVL_NET_PORT_SLOTS` (an array load the verifier inlines) when overlayd
/// put it there, else from `OVL_NET_PORTS` (a hash lookup: the later of two
/// ports that share a slot). Copied out.
#[inline(always)]
fn port(ifindex: u32) -> Option<NetPortValue> {
    if let Some(s) = PORT_SLOTS.get(net_port_slot(ifindex)) {
        // An empty slot holds ifindex 0, which no device has.
        if s.ifindex == ifindex && ifindex != 0 {
            return Some(s.value);
        }
    }
    // SAFETY: the value is copied out at once.
    unsafe { PORTS.get(&ifindex) }.copied()
}

/// Endpoint `key`: from its slot in `OVL_NET_EP_SLOTS` (an array load the
/// verifier inlines) when overlayd put it there, else from
/// `OVL_NET_ENDPOINTS` (a hash lookup: the later of two endpoints that
/// share a slot). The value stays valid for the program's run (map values
/// are not freed under a running program); callers only read it.
#[inline(always)]
fn endpoint(key: &NetKey) -> Option<&'static NetEndpointValue> {
    if let Some(s) = EP_SLOTS.get(net_endpoint_slot(key.ip)) {
        if s.key.vni == key.vni
            && u32::from_ne_bytes(s.key.ip) == u32::from_ne_bytes(key.ip)
            && s.value.kind != 0
        {
            return Some(&s.value);
        }
    }
    // SAFETY: see above; the reference is only read.
    unsafe { ENDPOINTS.get(key) }
}

/// Offset of the inner source MAC in an encapsulated frame.
const INNER_SRC_MAC: usize = INNER_ETH + 6;

/// The IPv4 address at `off` in a header already bounds-checked, as one
/// 4-byte load: a key built byte by byte may land on a misaligned stack
/// slot, which the verifier refuses.
///
/// # Safety
/// `base + off .. base + off + 4` must lie inside a checked header.
#[inline(always)]
unsafe fn ip_at(base: *const u8, off: usize) -> [u8; 4] {
    // SAFETY: the caller guarantees the 4 bytes are in bounds.
    unsafe { core::ptr::read_unaligned(base.add(off) as *const u32) }.to_ne_bytes()
}

/// tc ingress of a network container's host-side veth.
#[classifier]
pub fn ovl_from_net_container(ctx: TcContext) -> i32 {
    verdict(&ctx, Hook::FromContainer, try_from_net_container(&ctx))
}

#[inline(always)]
fn try_from_net_container(ctx: &TcContext) -> Result<Verdict, DropReason> {
    // SAFETY: reading a field of the program's own context.
    let ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    let Some(port) = port(ifindex) else {
        return Ok(Verdict::Next);
    };
    // SAFETY: ptr_at checked the Ethernet header is in bounds.
    let Some(eth) = ctx.ptr_at::<[u8; ETH_HLEN]>(0) else {
        return Ok(Verdict::Next);
    };
    // SAFETY: in bounds (checked above), byte array.
    let ethertype = unsafe { u16::from_be_bytes([(*eth)[12], (*eth)[13]]) };
    if ethertype == ETH_P_ARP {
        return answer_arp(ctx, &port, ifindex);
    }
    if ethertype != ETH_P_IP {
        return Ok(Verdict::Next);
    }
    let Some(cfg) = maps::config() else {
        return Ok(Verdict::Next);
    };
    // SAFETY: ptr_at checked Ethernet plus a minimal IPv4 header are in bounds.
    let Some(hdr) = ctx.ptr_at::<[u8; ETH_HLEN + IPV4_HLEN]>(0) else {
        return Ok(Verdict::Next);
    };
    // SAFETY: in bounds (checked above), byte array.
    let hdr = unsafe { &mut *hdr };
    // SAFETY: the source lies inside the checked 34 bytes.
    let src = unsafe { ip_at(hdr.as_ptr(), 26) };
    if src != port.ip {
        return Err(DropReason::NetSourceSpoofed);
    }
    if hdr[23] == IPPROTO_UDP && to_vxlan_port(ctx, cfg, hdr) {
        return Err(DropReason::ContainerVxlan);
    }
    // SAFETY: the destination lies inside the checked 34 bytes.
    let dst = unsafe { ip_at(hdr.as_ptr(), 30) };
    let key = NetKey {
        vni: port.vni,
        ip: dst,
    };
    if let Some(ep) = endpoint(&key) {
        if ep.is_local() {
            hdr[0..6].copy_from_slice(&ep.mac);
            count(Counter::NetLocalPackets, 1);
            // SAFETY: plain helper call; the target is a veth whose peer is the container's.
            return Ok(Verdict::Redirect(unsafe {
                bpf_redirect_peer(ep.ifindex, 0)
            }));
        }
        if ep.is_remote() {
            let tos = hdr[15];
            let hash = flow_hash(ctx, hdr);
            let out = push_headers(ctx, cfg, &ep.remote, tos, hdr[23], hash)?;
            // SAFETY: `out` points at the 64 header bytes push_headers
            // checked; the inner source MAC lies inside them.
            unsafe {
                core::ptr::write_unaligned(out.add(INNER_SRC_MAC) as *mut [u8; 6], port.mac);
            }
            return Ok(send_encapsulated(cfg, &ep.remote));
        }
    }
    match SUBNETS.get(Key::new(32, dst)) {
        Some(vni) if *vni == port.vni => Err(DropReason::NoEndpoint),
        Some(_) => Err(DropReason::NetIsolation),
        None => {
            count(Counter::NetToHost, 1);
            Ok(Verdict::Kernel)
        }
    }
}

/// Answers an ARP request for an endpoint of the port's network or its
/// gateway in place and sends it back out of the veth; drops the others.
/// Replies (and other operations) go on to the kernel.
#[inline(always)]
fn answer_arp(ctx: &TcContext, port: &NetPortValue, ifindex: u32) -> Result<Verdict, DropReason> {
    // SAFETY: ptr_at checked the Ethernet header plus 28 bytes of ARP.
    let Some(frame) = ctx.ptr_at::<[u8; ETH_HLEN + arp::LEN]>(0) else {
        return Err(DropReason::ArpUnknown);
    };
    // SAFETY: in bounds (checked above), byte array.
    let frame = unsafe { &mut *frame };
    // SAFETY: the ARP part of the frame checked above, as its own array.
    let a = unsafe { &*(frame.as_ptr().add(ETH_HLEN) as *const [u8; arp::LEN]) };
    if !arp::is_ethernet_ipv4(a) {
        return Err(DropReason::ArpUnknown);
    }
    if arp::op(a) != arp::OP_REQUEST {
        return Ok(Verdict::Next);
    }
    // SAFETY: both addresses lie inside the checked 28 bytes of ARP.
    let (spa, tpa) = unsafe { (ip_at(a.as_ptr(), arp::SPA), ip_at(a.as_ptr(), arp::TPA)) };
    if spa != port.ip {
        return Err(DropReason::NetSourceSpoofed);
    }
    let mac = if tpa == port.gateway {
        port.veth_mac
    } else if tpa == port.ip {
        // Its own address (a duplicate address probe): no one else has it.
        return Err(DropReason::ArpUnknown);
    } else {
        let key = NetKey {
            vni: port.vni,
            ip: tpa,
        };
        match endpoint(&key) {
            Some(ep) => ep.mac,
            None => return Err(DropReason::ArpUnknown),
        }
    };
    arp::make_reply(frame, mac);
    count(Counter::ArpReplies, 1);
    // SAFETY: plain helper call: out of the veth the request came in on.
    Ok(Verdict::Redirect(unsafe { bpf_redirect(ifindex, 0) }))
}

/// Checks a VXLAN frame of VNI `vni` (not the per-host one) from
/// `outer_src`: the inner source must be a remote endpoint of that VNI on
/// that very host (which also refuses a forged VNI), the inner destination
/// a local endpoint of it. Only a drop looks the network up, to tell an
/// unknown VNI from the other reasons.
#[inline(always)]
pub fn classify<P: Packet>(p: &P, vni: u32, outer_src: [u8; 4]) -> Result<Underlay, DropReason> {
    let known = |reason| {
        // SAFETY: the value is only read for presence.
        if unsafe { NETWORKS.get(&vni) }.is_some() {
            reason
        } else {
            DropReason::UnknownVni
        }
    };
    // SAFETY: ptr_at checked the inner Ethernet header and 20 bytes of inner IPv4.
    let Some(inner) = p.ptr_at::<[u8; ETH_HLEN + IPV4_HLEN]>(INNER_ETH) else {
        return Err(known(DropReason::TruncatedInner));
    };
    // SAFETY: in bounds, byte array.
    let inner = unsafe { &*inner };
    if u16::from_be_bytes([inner[12], inner[13]]) != ETH_P_IP {
        return Err(known(DropReason::InnerNotIpv4));
    }
    let src = NetKey {
        vni,
        // SAFETY: the inner source lies inside the checked 34 bytes.
        ip: unsafe { ip_at(inner.as_ptr(), 26) },
    };
    let slot = match endpoint(&src) {
        Some(ep) if ep.is_remote() && ep.remote.underlay_ip == outer_src => ep.remote.stats_slot,
        _ => return Err(known(DropReason::NetInnerSpoofed)),
    };
    let dst = NetKey {
        vni,
        // SAFETY: the inner destination lies inside the checked 34 bytes.
        ip: unsafe { ip_at(inner.as_ptr(), 30) },
    };
    match endpoint(&dst) {
        Some(ep) if ep.is_local() => Ok(Underlay::Net {
            ifindex: ep.ifindex,
            mac: ep.mac,
            peer: PeerHost {
                ip: u32::from_ne_bytes(outer_src),
                slot,
            },
        }),
        _ => Err(DropReason::NoEndpoint),
    }
}

/// Decapsulates a checked network frame from peer host `peer` and
/// redirects it into the container behind `ifindex`, addressed to its
/// `mac` (the inner source MAC stays the sender's).
#[inline(always)]
pub fn deliver(
    ctx: &TcContext,
    cfg: &Config,
    ifindex: u32,
    mac: [u8; 6],
    peer: PeerHost,
) -> Result<Verdict, DropReason> {
    // Shrinking at the MAC layer keeps the outer Ethernet header and drops
    // the inner one: its source MAC (the sender's) is copied first.
    // SAFETY: ptr_at checked the 6 bytes of the inner source MAC.
    let Some(src_mac) = ctx.ptr_at::<[u8; 6]>(INNER_SRC_MAC) else {
        return Err(DropReason::TruncatedInner);
    };
    // SAFETY: in bounds (checked above), byte array, copied out.
    let src_mac = unsafe { *src_mac };
    let (eth, inner_len) = strip_outer(ctx, cfg, peer)?;
    // SAFETY: `eth` is the Ethernet header strip_outer checked.
    let eth = unsafe { &mut *eth };
    eth[0..6].copy_from_slice(&mac);
    eth[6..12].copy_from_slice(&src_mac);
    count(Counter::DecapPackets, 1);
    count(Counter::DecapBytes, inner_len);
    Ok(into_container(cfg, ifindex))
}
