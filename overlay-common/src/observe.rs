//! Observability shared by the programs and user space: the monitor's
//! event ring buffer and its switch, and the per-peer traffic counters.
//!
//! The monitor costs nothing while nobody watches: the programs read
//! [`MonitorConfig::flags`] (one array lookup) only where they would emit,
//! and build an event only when its kind is switched on. overlayd switches
//! kinds on while `overlayctl monitor` clients subscribe to them. Events are
//! rate-limited per CPU ([`MonitorState`], a token bucket), so a flood of
//! hostile packets costs the agent at most `rate_per_sec` events per CPU.

/// Map names, as they appear in the object file and under the pin directory.
pub mod maps {
    /// `RingBuf` of [`super::Event`]s.
    pub const EVENTS: &str = "OVL_EVENTS";
    /// `Array<MonitorConfig>` with one entry: which events to emit, how often.
    pub const MONITOR: &str = "OVL_MONITOR";
    /// `PerCpuArray<MonitorState>` with one entry: the token bucket and what it suppressed.
    pub const MONITOR_STATE: &str = "OVL_MONITOR_STATE";
    /// `PerCpuArray<PeerStats>` of [`super::PEER_STATS_SLOTS`] entries:
    /// traffic to and from each peer host, in the slot user space gives the
    /// host when it adds it and writes into every `PeerValue` towards it
    /// ([`crate::PeerValue::stats_slot`]). Slot 0 is never given.
    pub const PEER_STATS: &str = "OVL_PEER_STATS";
    /// `PerCpuArray<u64>` of [`super::PEER_STATS_SLOTS`] entries: the
    /// jiffy in which each slot's `last_rx_ns` was last written, so the
    /// clock (a helper call, 28 ns on an AMD EPYC) is read at most once
    /// per tick per peer host and CPU, not for every packet.
    pub const PEER_RX_TICK: &str = "OVL_PEER_RX_TICK";
}

/// Size of the `OVL_EVENTS` ring buffer in bytes (a power of two, page multiple).
pub const EVENTS_RING_BYTES: u32 = 1 << 20;

/// `MonitorConfig::flags`: emit an event for every drop (rate-limited).
pub const MONITOR_F_DROP: u32 = 1;
/// `MonitorConfig::flags`: emit sampled encapsulation and decapsulation events.
pub const MONITOR_F_TRACE: u32 = 2;

/// Default events per second each CPU may emit.
pub const DEFAULT_EVENT_RATE: u32 = 1_000;
/// Default burst: events a CPU may emit at once after being quiet.
pub const DEFAULT_EVENT_BURST: u32 = 1_000;

/// The single entry of `OVL_MONITOR`, written by overlayd.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorConfig {
    /// `MONITOR_F_*` bits; 0 (nobody watches) emits nothing.
    pub flags: u32,
    /// Trace events: one encap/decap in `sample_every` is emitted (0 and 1: each).
    pub sample_every: u32,
    /// Nanoseconds of credit one event costs (10^9 / events per second per CPU).
    pub ns_per_event: u64,
    /// Most credit a CPU saves up (`ns_per_event` × burst).
    pub max_credit_ns: u64,
}

impl MonitorConfig {
    /// Emit `flags` at `rate` events per second per CPU with bursts of `burst`.
    pub fn new(flags: u32, sample_every: u32, rate: u32, burst: u32) -> Self {
        let ns_per_event = 1_000_000_000 / u64::from(rate.max(1));
        MonitorConfig {
            flags,
            sample_every,
            ns_per_event,
            max_credit_ns: ns_per_event * u64::from(burst.max(1)),
        }
    }
}

/// The single per-CPU entry of `OVL_MONITOR_STATE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorState {
    /// Credit of the token bucket, in nanoseconds.
    pub credit_ns: u64,
    /// When the credit was last topped up (`bpf_ktime_get_ns`).
    pub last_ns: u64,
    /// Events not emitted because the bucket was empty.
    pub suppressed: u64,
    /// Events not emitted because the ring buffer was full.
    pub ring_full: u64,
    /// Trace candidates seen since the last sampled one.
    pub sample_count: u64,
}

/// What an [`Event`] reports.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A packet was dropped; `reason` says why.
    Drop = 1,
    /// A container's packet was encapsulated to a peer.
    Encap = 2,
    /// A peer's packet was decapsulated (delivered or handed to the kernel).
    Decap = 3,
}

/// Where an event was produced.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// tc ingress of a container's port (or the bridge).
    FromContainer = 1,
    /// tc ingress of the underlay.
    FromUnderlay = 2,
    /// XDP on the underlay.
    XdpUnderlay = 3,
}

/// `Event::flags`: the outer (underlay) fields are filled in.
pub const EVENT_F_OUTER: u8 = 1;
/// `Event::flags`: the inner (container) addresses are filled in.
pub const EVENT_F_INNER: u8 = 2;
/// `Event::flags`: the inner ports are filled in (TCP or UDP, first fragment).
pub const EVENT_F_PORTS: u8 = 4;

/// One monitor event, as the programs write it into `OVL_EVENTS`.
/// Addresses and ports are in network order, as on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns` when it happened.
    pub ts_ns: u64,
    /// [`EventKind`].
    pub kind: u8,
    /// [`Hook`].
    pub hook: u8,
    /// `EVENT_F_*` bits.
    pub flags: u8,
    /// Inner IP protocol (6 TCP, 17 UDP, 1 ICMP, ...).
    pub proto: u8,
    /// [`crate::DropReason`] index for drops; 0 otherwise.
    pub reason: u32,
    /// The interface the packet arrived on.
    pub ifindex: u32,
    /// Packet length in bytes as the program saw it.
    pub len: u32,
    /// VNI of a VXLAN frame (outer), 0 otherwise.
    pub vni: u32,
    /// Outer source and destination (underlay).
    pub outer_src: [u8; 4],
    /// Outer destination.
    pub outer_dst: [u8; 4],
    /// Inner (container) source.
    pub inner_src: [u8; 4],
    /// Inner destination.
    pub inner_dst: [u8; 4],
    /// Inner source port (network order).
    pub sport: u16,
    /// Inner destination port (network order).
    pub dport: u16,
    /// The peer host the packet went to or came from, when known (else 0.0.0.0).
    pub peer: [u8; 4],
    /// Explicit padding to a multiple of 8 bytes.
    pub _pad: u32,
}

/// Slots of `OVL_PEER_STATS`: one per possible peer host, and the unused
/// slot 0 ([`crate::NO_STATS_SLOT`]).
pub const PEER_STATS_SLOTS: u32 = crate::MAX_PEERS + 1;

/// Traffic to and from one peer host, per CPU, in `OVL_PEER_STATS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Packets encapsulated to the peer.
    pub tx_packets: u64,
    /// Their inner frame bytes.
    pub tx_bytes: u64,
    /// Packets from the peer decapsulated.
    pub rx_packets: u64,
    /// Their inner frame bytes.
    pub rx_bytes: u64,
    /// `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC, coarse) of the last
    /// packet from the peer, read once per tick (the coarse clock moves
    /// only at ticks; `OVL_PEER_RX_TICK`); 0: never.
    pub last_rx_ns: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are #[repr(C)], Copy, made only of integers and byte
    // arrays, and have no implicit padding (the size tests below pin that).
    unsafe impl aya::Pod for super::MonitorConfig {}
    unsafe impl aya::Pod for super::MonitorState {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::PeerStats {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn observe_types_have_pinned_sizes() {
        assert_eq!(size_of::<MonitorConfig>(), 24);
        assert_eq!(size_of::<MonitorState>(), 40);
        assert_eq!(size_of::<Event>(), 56);
        assert_eq!(size_of::<PeerStats>(), 40);
    }

    #[test]
    fn monitor_config_rate() {
        let c = MonitorConfig::new(MONITOR_F_DROP, 1, 1000, 10);
        assert_eq!(c.ns_per_event, 1_000_000);
        assert_eq!(c.max_credit_ns, 10_000_000);
        // A rate of 0 is taken as 1 per second, never a division by zero.
        assert_eq!(MonitorConfig::new(0, 0, 0, 0).ns_per_event, 1_000_000_000);
    }
}
