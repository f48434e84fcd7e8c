//! tc programs: encapsulation on the way out of a container, decapsulation
//! and delivery on the underlay.

use aya_ebpf::bindings::{bpf_tunnel_key, BPF_NOEXIST};
use aya_ebpf::helpers::generated::bpf_skb_set_tunnel_key;
use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_ADJ_ROOM_ENCAP_L2_SHIFT,
        BPF_F_ADJ_ROOM_ENCAP_L2_ETH, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L4_UDP,
        BPF_F_ADJ_ROOM_FIXED_GSO, TC_ACT_OK, TC_ACT_SHOT, TC_ACT_UNSPEC,
    },
    helpers::generated::{
        bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer, bpf_skb_change_head,
    },
    macros::classifier,
    programs::TcContext,
};
use aya_log_ebpf::warn;
use overlay_common::{
    encap_pushes_head,
    observe::{EventKind, Hook},
    rules,
    vxlan::{self, off, ETH_P_IP, IPPROTO_UDP},
    Config, Counter, DropReason, EndpointValue, PeerValue, XdpDecapMeta, CONFIG_F_DECAP_TWO_STEP,
    CONFIG_F_DELIVER_VETH, CONFIG_F_LEARN_ENDPOINTS, CONFIG_F_PER_PORT, ENCAP_HLEN, ETH_HLEN,
    IPV4_HLEN, VXLAN_OVERHEAD, XDP_DECAP_MAGIC,
};

use crate::{
    maps::{self, count, count_drop, ENDPOINTS, PORT_LEARNED},
    observe::{self, Layout},
    packet::Packet,
    underlay::{classify, PeerHost, Underlay},
};

/// What a tc program does with a packet it does not drop.
pub(crate) enum Verdict {
    /// Not overlay traffic: on to the next tc program of the interface
    /// (other tools' programs still run), then the kernel.
    Next,
    /// Overlay traffic this program changed for the kernel: decapsulated
    /// (to the host, or to a macvlan endpoint), or encapsulated on the
    /// underlay's egress.
    Kernel,
    /// The return value of a redirect helper (TC_ACT_REDIRECT on success).
    Redirect(i64),
}

#[inline(always)]
pub(crate) fn verdict(ctx: &TcContext, hook: Hook, r: Result<Verdict, DropReason>) -> i32 {
    match r {
        Ok(Verdict::Next) => TC_ACT_UNSPEC,
        Ok(Verdict::Kernel) => TC_ACT_OK,
        Ok(Verdict::Redirect(ret)) => ret as i32,
        Err(reason) => {
            count_drop(reason);
            observe::drop_event(ctx, hook, reason);
            TC_ACT_SHOT
        }
    }
}

/// tc ingress of a container's host-side veth (or of the bridge).
#[classifier]
pub fn ovl_from_container(ctx: TcContext) -> i32 {
    verdict(&ctx, Hook::FromContainer, try_from_container(&ctx, false))
}

/// tc egress of the underlay interface, for containers on macvlans of it
/// (they send through the underlay device): the host's own packets pass,
/// the containers' are encapsulated in place. Loaded, not attached by
/// overlayd: `cargo xtask bench --modes ebpf-macvlan` attaches it.
#[classifier]
pub fn ovl_to_underlay(ctx: TcContext) -> i32 {
    verdict(&ctx, Hook::FromContainer, try_from_container(&ctx, true))
}

/// tc ingress of the underlay interface.
#[classifier]
pub fn ovl_from_underlay(ctx: TcContext) -> i32 {
    verdict(&ctx, Hook::FromUnderlay, try_from_underlay(&ctx))
}

pub(crate) const ENCAP_FLAGS: u64 = (BPF_F_ADJ_ROOM_FIXED_GSO
    | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4
    | BPF_F_ADJ_ROOM_ENCAP_L4_UDP
    | BPF_F_ADJ_ROOM_ENCAP_L2_ETH) as u64
    | ((ETH_HLEN as u64) << BPF_ADJ_ROOM_ENCAP_L2_SHIFT);

/// `on_underlay`: run on the underlay's egress (a constant per entry
/// function, so `ovl_from_container` carries none of its branches).
#[inline(always)]
fn try_from_container(ctx: &TcContext, on_underlay: bool) -> Result<Verdict, DropReason> {
    let Some(cfg) = maps::config() else {
        return Ok(Verdict::Next);
    };
    // SAFETY: ptr_at checked Ethernet plus a minimal IPv4 header are in bounds.
    let Some(hdr) = ctx.ptr_at::<[u8; ETH_HLEN + IPV4_HLEN]>(0) else {
        count(Counter::FromContainerPass, 1);
        return Ok(Verdict::Next);
    };
    // SAFETY: in bounds (checked above), byte array.
    let hdr = unsafe { &*hdr };
    if u16::from_be_bytes([hdr[12], hdr[13]]) != ETH_P_IP {
        count(Counter::FromContainerPass, 1);
        return Ok(Verdict::Next);
    }
    if on_underlay && hosts_own(cfg, hdr) {
        count(Counter::FromContainerPass, 1);
        return Ok(Verdict::Next);
    }
    if hdr[23] == IPPROTO_UDP && to_vxlan_port(ctx, cfg, hdr) {
        return Err(DropReason::ContainerVxlan);
    }
    let dst = [hdr[30], hdr[31], hdr[32], hdr[33]];
    let tos = hdr[15];
    let Some(peer) = maps::peer_of(dst) else {
        count(Counter::FromContainerPass, 1);
        return Ok(Verdict::Next);
    };
    check_source(ctx, cfg, hdr)?;
    if cfg.encap_ifindex != 0 {
        return encapsulate_via_device(ctx, cfg, peer, tos);
    }
    // Map values stay valid while the packet is resized: no copy.
    let hash = flow_hash(ctx, hdr);
    push_headers(ctx, cfg, peer, tos, hdr[23], hash)?;
    if on_underlay && peer.nexthop_mac != [0; 6] {
        // Already on its way out of the underlay: no redirect.
        return Ok(Verdict::Kernel);
    }
    Ok(send_encapsulated(cfg, peer))
}

/// On the underlay's egress, a packet whose source is not in the container
/// subnet is the host's own (its VXLAN among them): left to the kernel.
#[inline(always)]
fn hosts_own(cfg: &Config, hdr: &[u8; ETH_HLEN + IPV4_HLEN]) -> bool {
    !rules::in_subnet(cfg, &[hdr[26], hdr[27], hdr[28], hdr[29]])
}

/// True for a UDP datagram (first or only fragment) to the VXLAN port.
#[inline(always)]
pub(crate) fn to_vxlan_port(
    ctx: &TcContext,
    cfg: &Config,
    hdr: &[u8; ETH_HLEN + IPV4_HLEN],
) -> bool {
    if u16::from_be_bytes([hdr[20], hdr[21]]) & 0x1fff != 0 {
        return false; // a later fragment: no UDP header
    }
    let ihl = usize::from(hdr[14] & 0x0f) * 4;
    if ihl < IPV4_HLEN {
        return false;
    }
    // SAFETY: ptr_at checked the 4 bytes (ports) after the IPv4 header.
    match ctx.ptr_at::<[u8; 4]>(ETH_HLEN + ihl) {
        // SAFETY: in bounds (checked above), byte array.
        Some(ports) => unsafe {
            u16::from_ne_bytes([(*ports)[2], (*ports)[3]]) == cfg.vxlan_port_be
        },
        None => false,
    }
}

/// Anti-spoofing: the packet's source must be a container address that
/// belongs to the port it came in on (`attach = "veth"`: bound in
/// `OVL_ENDPOINTS` to this ifindex, or learned for it now), or, on the
/// bridge, an address of this host's subnet whose endpoint MAC matches.
#[inline(always)]
fn check_source(
    ctx: &TcContext,
    cfg: &Config,
    hdr: &[u8; ETH_HLEN + IPV4_HLEN],
) -> Result<(), DropReason> {
    let src = [hdr[26], hdr[27], hdr[28], hdr[29]];
    if !rules::in_subnet(cfg, &src) {
        return Err(DropReason::SourceNotLocal);
    }
    if rules::is_host_address(cfg, &src) {
        return Err(DropReason::SourceSpoofed);
    }
    let known = maps::endpoint(&src);
    if cfg.flags & CONFIG_F_PER_PORT == 0 {
        // MACs compared as integers: a slice compare is a memcmp call.
        let mac = |m: &[u8]| u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0]);
        return match known {
            Some(ep) if mac(&ep.mac) != 0 && mac(&ep.mac) != mac(&hdr[6..12]) => {
                Err(DropReason::SourceSpoofed)
            }
            _ => Ok(()),
        };
    }
    // SAFETY: reading a field of the program's own context.
    let port = unsafe { (*ctx.skb.skb).ingress_ifindex };
    match known {
        Some(ep) if ep.ifindex == port => Ok(()),
        Some(_) => Err(DropReason::SourceSpoofed),
        None if cfg.flags & CONFIG_F_LEARN_ENDPOINTS != 0 => learn_endpoint(cfg, port, hdr, src),
        None => Err(DropReason::SourceSpoofed),
    }
}

/// Binds an unknown source to the port it came in on, so the answers to a
/// container's first packets are delivered straight into it (before
/// overlayd discovered it), at most `learn_limit` addresses per port.
#[inline(always)]
fn learn_endpoint(
    cfg: &Config,
    port: u32,
    hdr: &[u8; ETH_HLEN + IPV4_HLEN],
    src: [u8; 4],
) -> Result<(), DropReason> {
    match PORT_LEARNED.get_ptr_mut(&port) {
        Some(n) => {
            // SAFETY: a valid map value pointer for the program's run. Not an
            // atomic add (this target has none for Rust): two CPUs learning on
            // one port at the same instant may count one less, and overlayd
            // recounts from OVL_ENDPOINTS on every refresh.
            unsafe {
                if *n >= u64::from(cfg.learn_limit) {
                    return Err(DropReason::LearnLimit);
                }
                *n += 1;
            }
        }
        None => {
            if cfg.learn_limit == 0 {
                return Err(DropReason::LearnLimit);
            }
            // Another CPU may have created it first: then it counts one less.
            let _ = PORT_LEARNED.insert(&port, &1, BPF_NOEXIST as u64);
        }
    }
    let ep = EndpointValue {
        ifindex: port,
        mac: [hdr[6], hdr[7], hdr[8], hdr[9], hdr[10], hdr[11]],
        _pad: [0; 2],
    };
    if ENDPOINTS.insert(&src, &ep, BPF_NOEXIST as u64).is_ok() {
        count(Counter::EndpointsLearned, 1);
        return Ok(());
    }
    // Another CPU learned it at the same moment, or the table is full.
    // SAFETY: the value is copied out at once.
    match unsafe { ENDPOINTS.get(&src) }.copied() {
        Some(ep) if ep.ifindex == port => Ok(()),
        Some(_) => Err(DropReason::SourceSpoofed),
        None => Err(DropReason::LearnLimit),
    }
}

/// The skb's hash when its socket set one (TCP does), else a cheap hash of
/// the inner addresses, protocol and ports. Not `bpf_get_hash_recalc`: that
/// runs the flow dissector, the most expensive step of encapsulation.
#[inline(always)]
pub(crate) fn flow_hash(ctx: &TcContext, hdr: &[u8; ETH_HLEN + IPV4_HLEN]) -> u32 {
    // SAFETY: reading a field of the program's own context.
    let hash = unsafe { (*ctx.skb.skb).hash };
    if hash != 0 {
        return hash;
    }
    let l4 = if hdr[14] == 0x45 {
        // SAFETY: ptr_at checked the 4 bytes after a 20-byte IPv4 header.
        match ctx.ptr_at::<[u8; 4]>(ETH_HLEN + IPV4_HLEN) {
            // SAFETY: in bounds (checked above), byte array.
            Some(p) => unsafe { *p },
            None => [0; 4],
        }
    } else {
        [0; 4]
    };
    vxlan::flow_hash(
        [hdr[26], hdr[27], hdr[28], hdr[29]],
        [hdr[30], hdr[31], hdr[32], hdr[33]],
        hdr[23],
        l4,
    )
}

/// Makes room for and writes the 64 header bytes of `peer`'s template in
/// front of the inner IPv4 packet, and counts the packet. Returns the
/// start of the headers, valid until the packet is resized again.
#[inline(always)]
pub(crate) fn push_headers(
    ctx: &TcContext,
    cfg: &Config,
    peer: &PeerValue,
    tos: u8,
    proto: u8,
    hash: u32,
) -> Result<*mut u8, DropReason> {
    let inner_ip_len = ctx.len() - ETH_HLEN as u32;
    let (ip_len, ip_csum, udp_len) = vxlan::template_fields(&peer.template, inner_ip_len, tos);
    let sport = vxlan::flow_src_port(hash).to_be();
    resize_for_headers(ctx, cfg, proto)?;
    // SAFETY: ptr_at checked the 64 header bytes just made room for.
    let Some(out) = ctx.ptr_at::<[u8; ENCAP_HLEN]>(0) else {
        return Err(DropReason::HeaderWriteFailed);
    };
    let out = out as *mut u8;
    // SAFETY: all writes below lie inside the 64 bytes checked above; the
    // target allows misaligned access (the verifier does on this arch).
    unsafe {
        // Eight word stores; an array copy would become a memcpy call.
        let w = &peer.template.words;
        let o = out as *mut u64;
        core::ptr::write_unaligned(o, w[0]);
        core::ptr::write_unaligned(o.add(1), w[1]);
        core::ptr::write_unaligned(o.add(2), w[2]);
        core::ptr::write_unaligned(o.add(3), w[3]);
        core::ptr::write_unaligned(o.add(4), w[4]);
        core::ptr::write_unaligned(o.add(5), w[5]);
        core::ptr::write_unaligned(o.add(6), w[6]);
        core::ptr::write_unaligned(o.add(7), w[7]);
        *out.add(off::IP_TOS) = tos;
        core::ptr::write_unaligned(out.add(off::IP_LEN) as *mut u16, ip_len);
        core::ptr::write_unaligned(out.add(off::IP_CSUM) as *mut u16, ip_csum);
        core::ptr::write_unaligned(out.add(off::UDP_SPORT) as *mut u16, sport);
        core::ptr::write_unaligned(out.add(off::UDP_LEN) as *mut u16, udp_len);
    }
    let bytes = u64::from(inner_ip_len) + ETH_HLEN as u64;
    count(Counter::EncapPackets, 1);
    count(Counter::EncapBytes, bytes);
    let to = u32::from_ne_bytes(peer.underlay_ip);
    observe::count_tx(peer.stats_slot, bytes);
    observe::trace_event(ctx, Hook::FromContainer, EventKind::Encap, to, Layout::Wire);
    Ok(out)
}

/// Makes room for the 50 bytes of outer headers in front of the frame, a
/// packet of inner IP protocol `proto`: `bpf_skb_change_head` where
/// [`encap_pushes_head`] says so, else `bpf_skb_adjust_room`.
#[inline(always)]
fn resize_for_headers(ctx: &TcContext, cfg: &Config, proto: u8) -> Result<(), DropReason> {
    // SAFETY: reading a field of the program's own context.
    let gso_size = || unsafe { (*ctx.skb.skb).gso_size };
    let ret = if encap_pushes_head(cfg.flags, proto, gso_size) {
        // SAFETY: plain helper call on the program's own skb, no flags.
        unsafe { bpf_skb_change_head(ctx.skb.skb, VXLAN_OVERHEAD, 0) }
    } else {
        match ctx.adjust_room(VXLAN_OVERHEAD as i32, BPF_ADJ_ROOM_MAC, ENCAP_FLAGS) {
            Ok(()) => 0,
            Err(e) => e,
        }
    };
    if ret != 0 {
        warn!(ctx, "encap: making room for the headers failed: {}", ret);
        return Err(DropReason::EncapAdjustFailed);
    }
    Ok(())
}

/// Redirects an encapsulated packet to the underlay: straight out with the
/// template's next-hop MAC, or through the neighbour subsystem while the
/// next hop is unresolved.
#[inline(always)]
pub(crate) fn send_encapsulated(cfg: &Config, peer: &PeerValue) -> Verdict {
    let ret = if peer.nexthop_mac == [0; 6] {
        count(Counter::EncapViaNeigh, 1);
        // SAFETY: no neighbour parameters: the kernel looks up the route itself.
        unsafe { bpf_redirect_neigh(cfg.underlay_ifindex, core::ptr::null_mut(), 0, 0) }
    } else {
        // SAFETY: plain helper call with an ifindex and no flags (egress).
        unsafe { bpf_redirect(cfg.underlay_ifindex, 0) }
    };
    Verdict::Redirect(ret)
}

/// `encap = "device"`: hand the frame to a collect-metadata VXLAN device
/// with the tunnel key set; the kernel builds the outer headers.
#[inline(always)]
fn encapsulate_via_device(
    ctx: &TcContext,
    cfg: &Config,
    peer: &PeerValue,
    tos: u8,
) -> Result<Verdict, DropReason> {
    // SAFETY: bpf_tunnel_key is plain data; all zero is a valid value.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    key.tunnel_id = cfg.vni;
    key.__bindgen_anon_1.remote_ipv4 = u32::from_be_bytes(peer.underlay_ip);
    key.__bindgen_anon_3.local_ipv4 = u32::from_be_bytes(cfg.local_ip);
    key.tunnel_tos = tos;
    key.tunnel_ttl = vxlan::OUTER_TTL;
    // SAFETY: the key is a valid bpf_tunnel_key on the stack, size matches.
    let ret = unsafe {
        bpf_skb_set_tunnel_key(
            ctx.skb.skb,
            &mut key,
            core::mem::size_of::<bpf_tunnel_key>() as u32,
            0,
        )
    };
    if ret != 0 {
        return Err(DropReason::EncapAdjustFailed);
    }
    // SAFETY: ptr_at checked the Ethernet header.
    let Some(eth) = ctx.ptr_at::<[u8; ETH_HLEN]>(0) else {
        return Err(DropReason::HeaderWriteFailed);
    };
    // SAFETY: in bounds (checked above), byte array: inner MACs, VTEP to VTEP.
    let eth = unsafe { &mut *eth };
    eth[0..6].copy_from_slice(&peer.vtep_mac);
    eth[6..12].copy_from_slice(&cfg.vtep_mac);
    count(Counter::EncapPackets, 1);
    count(Counter::EncapBytes, u64::from(ctx.len()));
    let to = u32::from_ne_bytes(peer.underlay_ip);
    observe::count_tx(peer.stats_slot, u64::from(ctx.len()));
    observe::trace_event(
        ctx,
        Hook::FromContainer,
        EventKind::Encap,
        to,
        Layout::Tunnelled,
    );
    // SAFETY: plain helper call with an ifindex and no flags (egress).
    Ok(Verdict::Redirect(unsafe {
        bpf_redirect(cfg.encap_ifindex, 0)
    }))
}

#[inline(always)]
fn try_from_underlay(ctx: &TcContext) -> Result<Verdict, DropReason> {
    let Some(cfg) = maps::config() else {
        return Ok(Verdict::Next);
    };
    if let Some(ifindex) = xdp_decapsulated(ctx) {
        return Ok(into_container(cfg, ifindex));
    }
    let (inner_dst, peer) = match classify(ctx, cfg)? {
        Underlay::Other => {
            count(Counter::FromUnderlayPass, 1);
            return Ok(Verdict::Next);
        }
        Underlay::Vxlan { inner_dst, peer } => (inner_dst.to_ne_bytes(), peer),
        Underlay::Net { ifindex, mac, peer } => {
            return crate::net::deliver(ctx, cfg, ifindex, mac, peer)
        }
    };
    let endpoint = maps::endpoint(&inner_dst);
    let local = rules::in_subnet(cfg, &inner_dst);
    if endpoint.is_none() && !local {
        return Err(DropReason::NotLocal);
    }
    let (eth, inner_len) = strip_outer(ctx, cfg, peer)?;
    // SAFETY: `eth` is the Ethernet header strip_outer checked.
    let eth = unsafe { &mut *eth };
    match endpoint {
        Some(ep) => {
            if ep.mac != [0; 6] {
                eth[0..6].copy_from_slice(&ep.mac);
            }
            eth[6..12].copy_from_slice(&cfg.gateway_mac);
            count(Counter::DecapPackets, 1);
            count(Counter::DecapBytes, inner_len);
            if ep.ifindex == cfg.underlay_ifindex {
                // A macvlan endpoint on the underlay: its rx handler
                // delivers the frame by its destination MAC.
                return Ok(Verdict::Kernel);
            }
            Ok(into_container(cfg, ep.ifindex))
        }
        None => {
            // A local address the agent has not learned yet: let the kernel
            // route it to the bridge (which resolves it) until it has.
            eth[0..6].copy_from_slice(&cfg.underlay_mac);
            count(Counter::DecapToKernel, 1);
            Ok(Verdict::Kernel)
        }
    }
}

/// Hands a decapsulated packet to the container behind host-side veth
/// `ifindex`: into its namespace (`bpf_redirect_peer`), or with
/// `deliver = "veth"` out of the host-side veth (`bpf_redirect`), whose
/// peer's NAPI merges the frames of a flow when GRO is on in the container.
#[inline(always)]
pub(crate) fn into_container(cfg: &Config, ifindex: u32) -> Verdict {
    let ret = if cfg.flags & CONFIG_F_DELIVER_VETH != 0 {
        // SAFETY: plain helper call with an ifindex and no flags (egress).
        unsafe { bpf_redirect(ifindex, 0) }
    } else {
        // SAFETY: plain helper call; the target is a veth whose peer is the container's.
        unsafe { bpf_redirect_peer(ifindex, 0) }
    };
    Verdict::Redirect(ret)
}

/// The endpoint's host-side veth when `ovl_xdp_underlay` has decapsulated
/// this frame already (`xdp = "decap"`): our magic in the skb's metadata,
/// which only the underlay's XDP and tc programs can write.
#[inline(always)]
fn xdp_decapsulated(ctx: &TcContext) -> Option<u32> {
    // SAFETY: reading a field of the program's own context.
    let meta = unsafe { (*ctx.skb.skb).data_meta } as usize;
    if meta + core::mem::size_of::<XdpDecapMeta>() > ctx.data() {
        return None;
    }
    // SAFETY: the metadata checked above lies before the packet's data.
    let m = unsafe { core::ptr::read_unaligned(meta as *const XdpDecapMeta) };
    (m.magic == XDP_DECAP_MAGIC).then_some(m.ifindex)
}

/// Removes the 50 bytes of outer IPv4, UDP and VXLAN headers and inner
/// Ethernet header of a checked VXLAN frame from `peer`
/// (`adjust_room` at the MAC layer keeps the outer Ethernet header; in one
/// or two calls, see [`CONFIG_F_DECAP_TWO_STEP`]), and
/// counts it for that peer. Returns the Ethernet header for the caller to
/// address, and the inner frame's length.
#[inline(always)]
pub(crate) fn strip_outer(
    ctx: &TcContext,
    cfg: &Config,
    peer: PeerHost,
) -> Result<(*mut [u8; ETH_HLEN], u64), DropReason> {
    let inner_len = u64::from(ctx.len()) - (ETH_HLEN + IPV4_HLEN + 16) as u64;
    let flags = BPF_F_ADJ_ROOM_FIXED_GSO as u64;
    // See CONFIG_F_DECAP_TWO_STEP: the header moves 14 bytes back, then 64
    // forward, both fast copies. A refused grow leaves the packet as it was
    // (the helper checks before it changes anything): then in one step.
    let shrink = if cfg.flags & CONFIG_F_DECAP_TWO_STEP != 0
        && ctx
            .adjust_room(ETH_HLEN as i32, BPF_ADJ_ROOM_MAC, flags)
            .is_ok()
    {
        VXLAN_OVERHEAD as i32 + ETH_HLEN as i32
    } else {
        VXLAN_OVERHEAD as i32
    };
    if ctx.adjust_room(-shrink, BPF_ADJ_ROOM_MAC, flags).is_err() {
        return Err(DropReason::DecapAdjustFailed);
    }
    // SAFETY: ptr_at checked the Ethernet header of the resized packet.
    let Some(eth) = ctx.ptr_at::<[u8; ETH_HLEN]>(0) else {
        return Err(DropReason::HeaderWriteFailed);
    };
    observe::count_rx(peer.slot, inner_len);
    observe::trace_event(
        ctx,
        Hook::FromUnderlay,
        EventKind::Decap,
        peer.ip,
        Layout::Tunnelled,
    );
    Ok((eth, inner_len))
}
