//! XDP on the underlay interface: early verdicts on VXLAN frames, and with
//! `xdp = "decap"` the decapsulation itself, before GRO.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_adjust_meta},
    macros::xdp,
    programs::XdpContext,
};
use overlay_common::{
    observe::{EventKind, Hook},
    rules, Config, Counter, DropReason, XdpDecapMeta, CONFIG_F_XDP_DECAP, ETH_HLEN, VXLAN_OVERHEAD,
    XDP_DECAP_MAGIC,
};

use crate::{
    maps::{self, count, count_drop},
    observe::{self, Layout},
    packet::Packet,
    underlay::{classify, PeerHost, Underlay, INNER_ETH},
};

#[xdp]
pub fn ovl_xdp_underlay(ctx: XdpContext) -> u32 {
    match try_xdp_underlay(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            count_drop(reason);
            observe::drop_event(&ctx, Hook::XdpUnderlay, reason);
            xdp_action::XDP_DROP
        }
    }
}

#[inline(always)]
fn try_xdp_underlay(ctx: &XdpContext) -> Result<u32, DropReason> {
    let Some(cfg) = maps::config() else {
        return Ok(xdp_action::XDP_PASS);
    };
    let underlay = classify(ctx, cfg)?;
    // A driver without XDP metadata marks it invalid (data_meta past data):
    // then tc decapsulates, as without the flag.
    let decap = cfg.flags & CONFIG_F_XDP_DECAP != 0 && ctx.metadata() <= ctx.data();
    match underlay {
        Underlay::Other => count(Counter::XdpOtherPass, 1),
        Underlay::Vxlan { inner_dst, peer } if decap => {
            return decap_host(ctx, cfg, inner_dst.to_ne_bytes(), peer)
        }
        Underlay::Net { ifindex, mac, peer } if decap => {
            return decap_to(ctx, Some(ifindex), Some(mac), None, peer)
        }
        Underlay::Vxlan { .. } | Underlay::Net { .. } => count(Counter::XdpVxlanPass, 1),
    }
    Ok(xdp_action::XDP_PASS)
}

/// The per-host VNI: the same delivery rules as tc's decapsulation (an
/// endpoint, else a local address for the kernel to route, else a drop).
#[inline(always)]
fn decap_host(
    ctx: &XdpContext,
    cfg: &Config,
    inner_dst: [u8; 4],
    peer: PeerHost,
) -> Result<u32, DropReason> {
    let endpoint = maps::endpoint(&inner_dst);
    match endpoint {
        Some(ep) => {
            let mac = (ep.mac != [0; 6]).then_some(ep.mac);
            decap_to(ctx, Some(ep.ifindex), mac, Some(cfg.gateway_mac), peer)
        }
        None if rules::in_subnet(cfg, &inner_dst) => {
            decap_to(ctx, None, Some(cfg.underlay_mac), None, peer)
        }
        None => Err(DropReason::NotLocal),
    }
}

/// Addresses the inner Ethernet header as tc's decapsulation does (`dst`,
/// `src`; `None` keeps what the outer header had, as tc's shrink at the MAC
/// layer keeps it), drops the 50 outer bytes and, for an endpoint, puts
/// its ifindex in the metadata for tc. Without an endpoint the frame goes
/// to the kernel to route, as from tc.
#[inline(always)]
fn decap_to(
    ctx: &XdpContext,
    ifindex: Option<u32>,
    dst: Option<[u8; 6]>,
    src: Option<[u8; 6]>,
    peer: PeerHost,
) -> Result<u32, DropReason> {
    // SAFETY: ptr_at checked the outer Ethernet header.
    let Some(outer) = ctx.ptr_at::<[u8; ETH_HLEN]>(0) else {
        return Err(DropReason::TruncatedInner);
    };
    // SAFETY: in bounds (checked above), byte array, copied out.
    let outer = unsafe { *outer };
    // SAFETY: ptr_at checked the inner Ethernet header.
    let Some(inner) = ctx.ptr_at::<[u8; ETH_HLEN]>(INNER_ETH) else {
        return Err(DropReason::TruncatedInner);
    };
    // SAFETY: in bounds (checked above), byte array.
    let inner = unsafe { &mut *inner };
    match dst {
        Some(m) => inner[0..6].copy_from_slice(&m),
        None => inner[0..6].copy_from_slice(&outer[0..6]),
    }
    match src {
        Some(m) => inner[6..12].copy_from_slice(&m),
        None if dst.is_some() && ifindex.is_none() => inner[6..12].copy_from_slice(&outer[6..12]),
        None => {}
    }
    let inner_len = (ctx.end() - ctx.start() - INNER_ETH) as u64;
    // SAFETY: helper on the program's own context; the frame is longer than 50 bytes.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, VXLAN_OVERHEAD as i32) } != 0 {
        return Err(DropReason::DecapAdjustFailed);
    }
    observe::count_rx(peer.slot, inner_len);
    observe::trace_event(
        ctx,
        Hook::XdpUnderlay,
        EventKind::Decap,
        peer.ip,
        Layout::Tunnelled,
    );
    let Some(ifindex) = ifindex else {
        count(Counter::DecapToKernel, 1);
        return Ok(xdp_action::XDP_PASS);
    };
    let meta_len = core::mem::size_of::<XdpDecapMeta>();
    // SAFETY: helper on the program's own context (checked to support metadata).
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -(meta_len as i32)) } != 0 {
        return Err(DropReason::HeaderWriteFailed);
    }
    let meta = ctx.metadata();
    if meta + meta_len > ctx.data() {
        return Err(DropReason::HeaderWriteFailed);
    }
    // SAFETY: the metadata area checked above lies before the frame's data.
    unsafe {
        core::ptr::write_unaligned(
            meta as *mut XdpDecapMeta,
            XdpDecapMeta {
                magic: XDP_DECAP_MAGIC,
                ifindex,
            },
        )
    };
    count(Counter::DecapPackets, 1);
    count(Counter::DecapBytes, inner_len);
    Ok(xdp_action::XDP_PASS)
}
