//! Observability: per-peer traffic counters on the packet path, and the
//! monitor's events (drops, sampled encap/decap) into the `OVL_EVENTS` ring
//! buffer, rate-limited per CPU.
//!
//! While nobody monitors, `OVL_MONITOR`'s flags are 0 and an emit point
//! costs one array lookup and a test: no event is built, no time read.

use aya_ebpf::{
    helpers::generated::{bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
    programs::{TcContext, XdpContext},
};
use overlay_common::{
    observe::{
        Event, EventKind, Hook, MonitorConfig, MonitorState, PeerStats, EVENTS_RING_BYTES,
        EVENT_F_INNER, EVENT_F_OUTER, EVENT_F_PORTS, MONITOR_F_DROP, MONITOR_F_TRACE,
        PEER_STATS_SLOTS,
    },
    vxlan::{ETH_P_IP, IPPROTO_UDP},
    DropReason, ETH_HLEN, IPV4_HLEN, NO_STATS_SLOT, UDP_HLEN,
};

use crate::{maps::CONFIG, packet::Packet, underlay::INNER_ETH};

#[map(name = "OVL_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::pinned(EVENTS_RING_BYTES, 0);

#[map(name = "OVL_MONITOR")]
pub static MONITOR: Array<MonitorConfig> = Array::pinned(1, 0);

#[map(name = "OVL_MONITOR_STATE")]
pub static MONITOR_STATE: PerCpuArray<MonitorState> = PerCpuArray::pinned(1, 0);

#[map(name = "OVL_PEER_STATS")]
pub static PEER_STATS: PerCpuArray<PeerStats> = PerCpuArray::pinned(PEER_STATS_SLOTS, 0);

#[map(name = "OVL_PEER_RX_TICK")]
pub static PEER_RX_TICK: PerCpuArray<u64> = PerCpuArray::pinned(PEER_STATS_SLOTS, 0);

/// A packet context that knows the interface it arrived on.
pub trait Observed: Packet {
    fn ifindex(&self) -> u32;
}

impl Observed for TcContext {
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: reading a field of the program's own context.
        unsafe { (*self.skb.skb).ifindex }
    }
}

impl Observed for XdpContext {
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: reading a field of the program's own context.
        unsafe { (*self.ctx).ingress_ifindex }
    }
}

/// Counts a packet of `bytes` encapsulated to the peer host of `slot`
/// (its [`overlay_common::PeerValue::stats_slot`]).
#[inline(always)]
pub fn count_tx(slot: u32, bytes: u64) {
    if slot == NO_STATS_SLOT {
        return;
    }
    if let Some(s) = PEER_STATS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU value is only touched by this CPU, and the
        // pointer is valid for the program's run.
        unsafe {
            (*s).tx_packets += 1;
            (*s).tx_bytes += bytes;
        }
    }
}

/// Counts a packet of `bytes` from the peer host of `slot`, and when it
/// came: the coarse clock, which moves only at ticks, is read when the
/// jiffy moved since this CPU last stamped the slot, or the slot was never
/// stamped (user space zeroes a slot it gives). Between the jiffy's
/// increment and the coarse clock's update a stamp may lag one tick.
#[inline(always)]
pub fn count_rx(slot: u32, bytes: u64) {
    if slot == NO_STATS_SLOT {
        return;
    }
    if let Some(s) = PEER_STATS.get_ptr_mut(slot) {
        // SAFETY: as in `count_tx`; the coarse clock is a helper without arguments.
        unsafe {
            (*s).rx_packets += 1;
            (*s).rx_bytes += bytes;
            if new_tick(slot) || (*s).last_rx_ns == 0 {
                (*s).last_rx_ns = bpf_ktime_get_coarse_ns();
            }
        }
    }
}

/// Whether the jiffy moved since `slot` was last stamped on this CPU, and
/// records it. `bpf_jiffies64` is inlined by the verifier on 64-bit JITs
/// (one load), unlike the clock helpers (a call each, 28 ns on an AMD EPYC).
#[inline(always)]
fn new_tick(slot: u32) -> bool {
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_jiffies64() };
    match PEER_RX_TICK.get_ptr_mut(slot) {
        // SAFETY: a per-CPU value is only touched by this CPU, and the
        // pointer is valid for the program's run.
        Some(t) => unsafe {
            if *t == now {
                false
            } else {
                *t = now;
                true
            }
        },
        None => true,
    }
}

/// How to read an event's packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A container's packet: the inner headers at offset 0.
    Inner,
    /// From the underlay, or encapsulated: VXLAN to our port has outer
    /// headers, anything else is read as `Inner`.
    Wire,
    /// Decapsulated already, or to be encapsulated by the kernel's device:
    /// the inner headers at 0, the outer ones are this host's and the peer's.
    Tunnelled,
}

/// A drop under `reason`, when drops are monitored.
#[inline(always)]
pub fn drop_event<P: Observed>(p: &P, hook: Hook, reason: DropReason) {
    let Some(mc) = MONITOR.get(0) else {
        return;
    };
    if mc.flags & MONITOR_F_DROP == 0 {
        return;
    }
    let layout = if hook == Hook::FromContainer {
        Layout::Inner
    } else {
        Layout::Wire
    };
    emit(p, mc, hook, EventKind::Drop, reason as u32, 0, layout);
}

/// An encapsulation or decapsulation to or from `peer`, when traced (sampled).
#[inline(always)]
pub fn trace_event<P: Observed>(p: &P, hook: Hook, kind: EventKind, peer: u32, layout: Layout) {
    let Some(mc) = MONITOR.get(0) else {
        return;
    };
    if mc.flags & MONITOR_F_TRACE == 0 {
        return;
    }
    emit(p, mc, hook, kind, 0, peer, layout);
}

#[inline(always)]
fn emit<P: Observed>(
    p: &P,
    mc: &MonitorConfig,
    hook: Hook,
    kind: EventKind,
    reason: u32,
    peer: u32,
    layout: Layout,
) {
    let Some(st) = MONITOR_STATE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU value is only touched by this CPU, and the pointer
    // is valid for the program's run.
    let st = unsafe { &mut *st };
    if kind != EventKind::Drop && mc.sample_every > 1 {
        st.sample_count += 1;
        if st.sample_count < u64::from(mc.sample_every) {
            return;
        }
        st.sample_count = 0;
    }
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut credit = st.credit_ns.saturating_add(now.wrapping_sub(st.last_ns));
    if credit > mc.max_credit_ns {
        credit = mc.max_credit_ns;
    }
    st.last_ns = now;
    if credit < mc.ns_per_event {
        st.credit_ns = credit;
        st.suppressed += 1;
        return;
    }
    st.credit_ns = credit - mc.ns_per_event;
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        st.ring_full += 1;
        return;
    };
    let mut ev = Event {
        ts_ns: now,
        kind: kind as u8,
        hook: hook as u8,
        reason,
        ifindex: p.ifindex(),
        len: (p.end() - p.start()) as u32,
        peer: peer.to_ne_bytes(),
        ..Event::default()
    };
    fill(p, &mut ev, layout);
    entry.write(ev);
    entry.submit(0);
}

/// Fills in what the packet's headers say: the outer addresses and VNI of a
/// VXLAN frame to our port, and the inner addresses, protocol and ports.
#[inline(always)]
fn fill<P: Packet>(p: &P, ev: &mut Event, layout: Layout) {
    // SAFETY: ptr_at checked Ethernet plus a minimal IPv4 header are in bounds.
    let Some(hdr) = p.ptr_at::<[u8; ETH_HLEN + IPV4_HLEN]>(0) else {
        return;
    };
    // SAFETY: in bounds (checked above), byte array.
    let hdr = unsafe { &*hdr };
    if u16::from_be_bytes([hdr[12], hdr[13]]) != ETH_P_IP {
        return;
    }
    let Some(cfg) = CONFIG.get(0) else {
        return;
    };
    if layout == Layout::Tunnelled {
        ev.flags |= EVENT_F_OUTER;
        ev.vni = cfg.vni;
        if ev.kind == EventKind::Decap as u8 {
            ev.outer_src = ev.peer;
            ev.outer_dst = cfg.local_ip;
        } else {
            ev.outer_src = cfg.local_ip;
            ev.outer_dst = ev.peer;
        }
        fill_inner(p, ev, 0);
        return;
    }
    let port = cfg.vxlan_port_be;
    if layout == Layout::Wire && hdr[23] == IPPROTO_UDP && hdr[14] == 0x45 {
        // SAFETY: ptr_at checked the UDP and VXLAN headers after a 20-byte IPv4 header.
        if let Some(udp) = p.ptr_at::<[u8; UDP_HLEN + 8]>(ETH_HLEN + IPV4_HLEN) {
            // SAFETY: in bounds (checked above), byte array.
            let udp = unsafe { &*udp };
            if u16::from_ne_bytes([udp[2], udp[3]]) == port {
                ev.flags |= EVENT_F_OUTER;
                ev.outer_src = [hdr[26], hdr[27], hdr[28], hdr[29]];
                ev.outer_dst = [hdr[30], hdr[31], hdr[32], hdr[33]];
                ev.vni = u32::from_be_bytes([0, udp[12], udp[13], udp[14]]);
                fill_inner(p, ev, INNER_ETH);
                return;
            }
        }
    }
    fill_inner(p, ev, 0);
}

/// The inner Ethernet + IPv4 header at `at`, and the ports after it.
#[inline(always)]
fn fill_inner<P: Packet>(p: &P, ev: &mut Event, at: usize) {
    // SAFETY: ptr_at checked Ethernet plus a minimal IPv4 header at `at`.
    let Some(hdr) = p.ptr_at::<[u8; ETH_HLEN + IPV4_HLEN]>(at) else {
        return;
    };
    // SAFETY: in bounds (checked above), byte array.
    let hdr = unsafe { &*hdr };
    if u16::from_be_bytes([hdr[12], hdr[13]]) != ETH_P_IP {
        return;
    }
    ev.flags |= EVENT_F_INNER;
    ev.proto = hdr[23];
    ev.inner_src = [hdr[26], hdr[27], hdr[28], hdr[29]];
    ev.inner_dst = [hdr[30], hdr[31], hdr[32], hdr[33]];
    let first = u16::from_be_bytes([hdr[20], hdr[21]]) & 0x1fff == 0;
    if hdr[14] != 0x45 || !first || (ev.proto != 6 && ev.proto != IPPROTO_UDP) {
        return;
    }
    // SAFETY: ptr_at checked the 4 port bytes after a 20-byte IPv4 header.
    if let Some(ports) = p.ptr_at::<[u8; 4]>(at + ETH_HLEN + IPV4_HLEN) {
        // SAFETY: in bounds (checked above), byte array.
        let ports = unsafe { &*ports };
        ev.flags |= EVENT_F_PORTS;
        ev.sport = u16::from_ne_bytes([ports[0], ports[1]]);
        ev.dport = u16::from_ne_bytes([ports[2], ports[3]]);
    }
}
