//! Types shared by the overlay eBPF programs and user space.
//!
//! Every map key and value is `#[repr(C)]` with explicit padding so that the
//! layout is identical on both sides; `tests` at the bottom pin the sizes.
//! The packet helpers (`csum`, `vxlan`) are plain functions over byte slices
//! that compile for the host too, so `cargo test` covers them.
#![cfg_attr(not(test), no_std)]

mod config_flags;
pub mod csum;
pub mod net;
pub mod observe;
pub mod peer_slot;
pub mod rules;
pub mod vxlan;

pub use config_flags::*;

/// Default VXLAN UDP port (IANA, RFC 7348).
pub const DEFAULT_VXLAN_PORT: u16 = 4789;
/// Bytes VXLAN adds in front of an inner IPv4 packet's Ethernet frame:
/// outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const VXLAN_OVERHEAD: u32 = 50;
/// Ethernet header length.
pub const ETH_HLEN: usize = 14;
/// IPv4 header length without options.
pub const IPV4_HLEN: usize = 20;
/// UDP header length.
pub const UDP_HLEN: usize = 8;
/// VXLAN header length.
pub const VXLAN_HLEN: usize = 8;
/// Everything in front of the inner IPv4 header of an encapsulated frame.
pub const ENCAP_HLEN: usize = ETH_HLEN + IPV4_HLEN + UDP_HLEN + VXLAN_HLEN + ETH_HLEN;
/// Outer UDP source ports are taken from this range, as the kernel's `udp_flow_src_port`.
pub const SRC_PORT_MIN: u16 = 49152;
/// Upper end (inclusive) of the outer UDP source port range.
pub const SRC_PORT_MAX: u16 = 65535;

/// Maximum number of peer subnets the dataplane holds.
pub const MAX_PEERS: u32 = 16384;
/// Maximum number of local endpoints the dataplane holds.
pub const MAX_ENDPOINTS: u32 = 131072;
/// Slots of `OVL_EP_SLOTS` (one per endpoint `OVL_ENDPOINTS` can hold,
/// 2 MiB; a power of two): see [`EndpointSlot`].
pub const ENDPOINT_SLOTS: u32 = MAX_ENDPOINTS;

/// Map names, as they appear in the object file and under the pin directory.
pub mod maps {
    /// `Array<Config>` with one entry: this host's settings.
    pub const CONFIG: &str = "OVL_CONFIG";
    /// `LpmTrie<[u8; 4], PeerValue>`: remote container subnet -> remote host.
    pub const PEERS: &str = "OVL_PEERS";
    /// `HashMap<u32, u32>`: remote host underlay IP (network order) -> number of subnets behind it.
    pub const PEER_HOSTS: &str = "OVL_PEER_HOSTS";
    /// `HashMap<u32, EndpointValue>`: local container IP (network order) -> delivery target.
    pub const ENDPOINTS: &str = "OVL_ENDPOINTS";
    /// `Array<EndpointSlot>` of [`super::ENDPOINT_SLOTS`]: the endpoints
    /// overlayd added, each in the slot of [`super::endpoint_slot`].
    pub const ENDPOINT_SLOTS: &str = "OVL_EP_SLOTS";
    /// `Array<PeerSlot>` of [`crate::peer_slot::PEER_SLOTS`]: `OVL_PEERS`' answers per /24 block.
    pub const PEER_SLOTS: &str = "OVL_PEER_SLOTS";
    /// `PerCpuArray<u64>` indexed by [`super::Counter`].
    pub const COUNTERS: &str = "OVL_COUNTERS";
    /// `PerCpuArray<u64>` indexed by [`super::DropReason`].
    pub const DROPS: &str = "OVL_DROPS";
    /// `HashMap<u32, u64>`: host-side port ifindex -> endpoints learned on it
    /// (the cap of [`super::Config::learn_limit`] is checked against it).
    pub const PORT_LEARNED: &str = "OVL_PORT_LEARNED";
}

/// Version of the map layouts above. Pins live under `<pin_dir>/v<N>`, so a
/// release that changes a key, value or map type never reuses maps pinned by
/// an older one (user space migrates or refuses them by name).
pub const MAPS_VERSION: u32 = 4;

/// Program names, as they appear in the object file.
pub mod programs {
    /// tc ingress on a container's host-side veth (or the bridge): encapsulation.
    pub const FROM_CONTAINER: &str = "ovl_from_container";
    /// tc ingress on the underlay interface: decapsulation and delivery.
    pub const FROM_UNDERLAY: &str = "ovl_from_underlay";
    /// tc egress on the underlay interface, for containers on macvlans of
    /// it: encapsulation in place (loaded; attached only by the bench).
    pub const TO_UNDERLAY: &str = "ovl_to_underlay";
    /// XDP on the underlay interface: early verdicts on VXLAN.
    pub const XDP_UNDERLAY: &str = "ovl_xdp_underlay";
    /// tc ingress on the host-side veth of an overlay network's container:
    /// ARP answered, local delivery, encapsulation with the network's VNI,
    /// isolation, the rest to the host stack (NAT).
    pub const FROM_NET_CONTAINER: &str = "ovl_from_net_container";
    /// Benchmark baseline: a tc program that returns TC_ACT_OK.
    pub const BENCH_NOOP_TC: &str = "ovl_bench_noop_tc";
    /// Benchmark baseline: an XDP program that returns XDP_PASS.
    pub const BENCH_NOOP_XDP: &str = "ovl_bench_noop_xdp";
    /// Benchmark: encapsulation's `bpf_skb_adjust_room(+50)` alone.
    pub const BENCH_ADJUST_GROW: &str = "ovl_bench_adjust_grow";
    /// Benchmark: decapsulation's `bpf_skb_adjust_room(-50)` alone.
    pub const BENCH_ADJUST_SHRINK: &str = "ovl_bench_adjust_shrink";
    /// Benchmark: the two calls of `decap_resize = "two-step"` alone.
    pub const BENCH_ADJUST_TWO_STEP: &str = "ovl_bench_adjust_two_step";
    /// Benchmark: encapsulation's `bpf_skb_change_head(50)` alone
    /// (`encap_resize = "head"`).
    pub const BENCH_PUSH_HEAD: &str = "ovl_bench_push_head";
}

/// This host's settings, in the single entry of the `OVL_CONFIG` array.
///
/// Addresses and ports are stored in network byte order, exactly as they
/// appear on the wire, so the programs compare and copy them without swaps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Underlay IPv4 address of this host (network order bytes).
    pub local_ip: [u8; 4],
    /// VXLAN network identifier, host order, lower 24 bits used.
    pub vni: u32,
    /// ifindex of the underlay interface.
    pub underlay_ifindex: u32,
    /// VXLAN UDP destination port, network order.
    pub vxlan_port_be: u16,
    /// MAC of the underlay interface (outer source MAC).
    pub underlay_mac: [u8; 6],
    /// This host's VTEP MAC (inner source MAC of what we send).
    pub vtep_mac: [u8; 6],
    /// MAC of the bridge holding the containers' gateway (source MAC of what we deliver).
    pub gateway_mac: [u8; 6],
    /// This host's container subnet (network order bytes).
    pub subnet: [u8; 4],
    /// Its netmask (network order bytes).
    pub subnet_mask: [u8; 4],
    /// `CONFIG_F_*` bits.
    pub flags: u32,
    /// ifindex of a collect-metadata VXLAN device to encapsulate through
    /// (`encap = "device"`); 0: the program encapsulates itself.
    pub encap_ifindex: u32,
    /// The containers' gateway address (on the bridge), network order bytes:
    /// never learned as an endpoint, never a decapsulated packet's target.
    pub gateway_ip: [u8; 4],
    /// How many endpoints the from-container program may learn on one port
    /// (host-side veth); 0 learns none.
    pub learn_limit: u32,
}

/// Default of [`Config::learn_limit`]: a container interface normally has
/// one IPv4 address; a few more allow secondary addresses.
pub const DEFAULT_LEARN_LIMIT: u32 = 4;

/// The XDP metadata in front of a frame that `ovl_xdp_underlay` has
/// decapsulated (`xdp = "decap"`): tc redirects it into the container
/// behind host-side veth `ifindex`. Only XDP and tc programs of the
/// underlay can write metadata; `magic` tells ours from another tool's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpDecapMeta {
    /// [`XDP_DECAP_MAGIC`].
    pub magic: u32,
    /// The host-side veth of the container the frame is for.
    pub ifindex: u32,
}

/// [`XdpDecapMeta::magic`]: "ovl1" in ASCII.
pub const XDP_DECAP_MAGIC: u32 = 0x6f76_6c31;

/// Value of the `OVL_PEERS` LPM trie: where a remote subnet lives, and the
/// outer headers to put in front of packets for it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerValue {
    /// Underlay IPv4 address of the remote host (network order bytes).
    pub underlay_ip: [u8; 4],
    /// MAC of the underlay next hop towards it; all zero while unresolved,
    /// in which case the kernel's neighbour subsystem fills in the header.
    pub nexthop_mac: [u8; 6],
    /// Inner destination MAC: the remote VTEP's MAC.
    pub vtep_mac: [u8; 6],
    /// The remote host's slot in `OVL_PEER_STATS` (a per-CPU array, so the
    /// programs count its traffic without a lookup of their own);
    /// [`NO_STATS_SLOT`] while it has none.
    pub stats_slot: u32,
    /// Explicit padding to the 8-byte alignment of `template`.
    pub _pad: u32,
    /// The 64 header bytes with every per-peer constant filled in.
    pub template: EncapTemplate,
}

/// [`PeerValue::stats_slot`] of a host whose traffic is not counted.
pub const NO_STATS_SLOT: u32 = 0;

/// The outer Ethernet, IPv4, UDP and VXLAN headers and the inner Ethernet
/// header for one peer, built once by user space (as ONCache caches them),
/// so the program only copies eight words and patches the length, TOS,
/// source port and checksum fields. See [`vxlan::encap_template`].
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncapTemplate {
    /// The header bytes, as eight words for aligned copies.
    pub words: [u64; 8],
    /// Ones'-complement sum (unfolded) of the outer IPv4 header with the
    /// length, TOS and checksum fields zero.
    pub csum_base: u32,
    /// Explicit padding to a multiple of 8 bytes.
    pub _pad: u32,
}

impl PeerValue {
    /// A peer entry for this host's `cfg`, with its header template.
    pub fn new(
        cfg: &Config,
        underlay_ip: [u8; 4],
        nexthop_mac: [u8; 6],
        vtep_mac: [u8; 6],
    ) -> Self {
        let mut v = PeerValue {
            underlay_ip,
            nexthop_mac,
            vtep_mac,
            stats_slot: NO_STATS_SLOT,
            _pad: 0,
            template: EncapTemplate::default(),
        };
        v.template = vxlan::encap_template(cfg, &v);
        v
    }

    /// The same entry, counted in slot `slot` of `OVL_PEER_STATS`.
    pub fn with_stats_slot(self, slot: u32) -> Self {
        PeerValue {
            stats_slot: slot,
            ..self
        }
    }
}

/// Key data of the `OVL_PEERS` LPM trie (the prefix length travels beside it).
pub type PeerKey = [u8; 4];

/// Value of the `OVL_ENDPOINTS` map: how to deliver to a local container.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointValue {
    /// ifindex of the container's host-side veth (its peer is the container's interface).
    pub ifindex: u32,
    /// MAC of the container's interface.
    pub mac: [u8; 6],
    /// Explicit padding to a multiple of 4 bytes.
    pub _pad: [u8; 2],
}

/// An entry of `OVL_EP_SLOTS`, the array that spares the programs the
/// `OVL_ENDPOINTS` hash lookup (16 ns of a decapsulation's 108, measured
/// with perf) for the endpoints overlayd added: an endpoint sits in slot
/// [`endpoint_slot`] of its address, with that address, so the programs
/// load it with the verifier's inlined array access and compare the
/// address. A slot holds an endpoint only while `OVL_ENDPOINTS` holds the
/// same one (overlayd writes the hash first and clears the slot first).
/// A slot goes only to an endpoint when it is empty or already that
/// endpoint's, and no write changes its address and its value at once
/// (the address is replaced by its complement, which no lookup there
/// matches, while the value changes): an array write is not atomic, and a
/// program must never pair an address with another endpoint's interface
/// or a half-written one. The later of two addresses that share a slot
/// stays in the hash. On an empty slot, another address in it, or an endpoint the
/// from-container program learned, they look in `OVL_ENDPOINTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointSlot {
    /// The endpoint's address (network order bytes); all zero: empty.
    pub ip: [u8; 4],
    /// Its entry, as in `OVL_ENDPOINTS`.
    pub value: EndpointValue,
}

/// The `OVL_EP_SLOTS` index of local container address `ip`: its low bits,
/// so the addresses of one subnet up to a /15 never share a slot.
#[inline(always)]
pub const fn endpoint_slot(ip: [u8; 4]) -> u32 {
    u32::from_be_bytes(ip) & (ENDPOINT_SLOTS - 1)
}

/// Packet counters, indexes into `OVL_COUNTERS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Packets encapsulated and sent to a peer.
    EncapPackets = 0,
    /// Bytes (inner frame) encapsulated.
    EncapBytes = 1,
    /// Packets decapsulated and delivered into a container.
    DecapPackets = 2,
    /// Bytes (inner frame) decapsulated.
    DecapBytes = 3,
    /// Packets from containers left to the kernel (not for a peer).
    FromContainerPass = 4,
    /// Packets on the underlay that were not our VXLAN, left to the kernel.
    FromUnderlayPass = 5,
    /// Decapsulated packets for a local address with no endpoint, handed to the kernel to route.
    DecapToKernel = 6,
    /// Encapsulated packets sent through the neighbour subsystem (next hop MAC unresolved).
    EncapViaNeigh = 7,
    /// VXLAN frames the XDP program let through to tc.
    XdpVxlanPass = 8,
    /// Frames the XDP program let through that are not our VXLAN.
    XdpOtherPass = 9,
    /// Local endpoints learned by the from-container program from the first
    /// packet a container sent to a peer (before overlayd discovered them).
    EndpointsLearned = 10,
    /// Packets left to the kernel because overlayd has not written `OVL_CONFIG`.
    NoConfigPass = 11,
    /// ARP requests of network containers answered in BPF.
    ArpReplies = 12,
    /// Packets between two containers of one network on this host (redirected to the peer).
    NetLocalPackets = 13,
    /// Packets from network containers to outside every network, left to the host stack (NAT).
    NetToHost = 14,
}

impl Counter {
    /// Number of counters (size of `OVL_COUNTERS`).
    pub const COUNT: u32 = 15;
    /// All counters, in index order.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::EncapPackets,
        Counter::EncapBytes,
        Counter::DecapPackets,
        Counter::DecapBytes,
        Counter::FromContainerPass,
        Counter::FromUnderlayPass,
        Counter::DecapToKernel,
        Counter::EncapViaNeigh,
        Counter::XdpVxlanPass,
        Counter::XdpOtherPass,
        Counter::EndpointsLearned,
        Counter::NoConfigPass,
        Counter::ArpReplies,
        Counter::NetLocalPackets,
        Counter::NetToHost,
    ];

    /// Stable name used by `overlayctl status`.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::EncapPackets => "encap_packets",
            Counter::EncapBytes => "encap_bytes",
            Counter::DecapPackets => "decap_packets",
            Counter::DecapBytes => "decap_bytes",
            Counter::FromContainerPass => "from_container_pass",
            Counter::FromUnderlayPass => "from_underlay_pass",
            Counter::DecapToKernel => "decap_to_kernel",
            Counter::EncapViaNeigh => "encap_via_neigh",
            Counter::XdpVxlanPass => "xdp_vxlan_pass",
            Counter::XdpOtherPass => "xdp_other_pass",
            Counter::EndpointsLearned => "endpoints_learned",
            Counter::NoConfigPass => "no_config_pass",
            Counter::ArpReplies => "arp_replies",
            Counter::NetLocalPackets => "net_local_packets",
            Counter::NetToHost => "net_to_host",
        }
    }
}

/// Why a program dropped a packet; indexes into `OVL_DROPS`.
///
/// Modelled on Cilium's `drop_reasons.h`: every drop is counted under exactly
/// one reason, and user space decodes the index with [`DropReason::name`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A VXLAN frame for us ended inside the outer IPv4 header.
    TruncatedOuterIp = 0,
    /// A VXLAN frame for us ended inside the outer UDP header.
    TruncatedUdp = 1,
    /// A frame to our VXLAN port ended inside the VXLAN header.
    TruncatedVxlan = 2,
    /// A VXLAN frame ended inside the inner Ethernet or IPv4 header.
    TruncatedInner = 3,
    /// VXLAN header without the I flag (RFC 7348: VNI not valid).
    BadVxlanFlags = 4,
    /// VXLAN with a VNI other than ours and of no overlay network this host carries.
    UnknownVni = 5,
    /// VXLAN from an underlay address that is not a known peer.
    UnknownPeer = 6,
    /// Outer IPv4 header with options or fragmented: not produced by any VTEP we talk to.
    BadOuterIp = 7,
    /// Inner frame is not IPv4.
    InnerNotIpv4 = 8,
    /// `bpf_skb_adjust_room` failed (encapsulation).
    EncapAdjustFailed = 9,
    /// `bpf_skb_adjust_room` failed (decapsulation).
    DecapAdjustFailed = 10,
    /// The packet was too short after resizing (should not happen).
    HeaderWriteFailed = 11,
    /// Inner destination is not in this host's subnet and not an endpoint.
    NotLocal = 12,
    /// A decapsulated packet's inner source does not lie behind the peer
    /// that sent it (inner source -> peer -> underlay IP != outer source).
    InnerSourceSpoofed = 13,
    /// A decapsulated packet for this host's gateway, network or broadcast
    /// address: the overlay never hands remote traffic to the host's services.
    ToHostAddress = 14,
    /// A container's packet to a peer from a source outside this host's subnet.
    SourceNotLocal = 15,
    /// A container's packet from an address bound to another port (or MAC),
    /// or from the gateway, network or broadcast address.
    SourceSpoofed = 16,
    /// A container's packet from an unknown address on a port that already
    /// has `learn_limit` learned endpoints (or a full endpoint table).
    LearnLimit = 17,
    /// A container sent UDP to the VXLAN port: it could forge overlay frames
    /// (with Docker's masquerading they would leave as this host).
    ContainerVxlan = 18,
    /// A network container's ARP request for an address that is no
    /// endpoint of its network nor its gateway (or a malformed one).
    ArpUnknown = 19,
    /// A network container sent from an address other than its own (IPv4
    /// source or ARP sender).
    NetSourceSpoofed = 20,
    /// A network container's packet to another network's subnet.
    NetIsolation = 21,
    /// A packet for an address of a network with no endpoint there (from a
    /// container of the network, or decapsulated for it).
    NoEndpoint = 22,
    /// A decapsulated frame of a network VNI whose inner source is no remote
    /// endpoint of that VNI on the outer source host (forged source or VNI).
    NetInnerSpoofed = 23,
}

impl DropReason {
    /// Number of drop reasons (size of `OVL_DROPS`).
    pub const COUNT: u32 = 24;
    /// All reasons, in index order.
    pub const ALL: [DropReason; Self::COUNT as usize] = [
        DropReason::TruncatedOuterIp,
        DropReason::TruncatedUdp,
        DropReason::TruncatedVxlan,
        DropReason::TruncatedInner,
        DropReason::BadVxlanFlags,
        DropReason::UnknownVni,
        DropReason::UnknownPeer,
        DropReason::BadOuterIp,
        DropReason::InnerNotIpv4,
        DropReason::EncapAdjustFailed,
        DropReason::DecapAdjustFailed,
        DropReason::HeaderWriteFailed,
        DropReason::NotLocal,
        DropReason::InnerSourceSpoofed,
        DropReason::ToHostAddress,
        DropReason::SourceNotLocal,
        DropReason::SourceSpoofed,
        DropReason::LearnLimit,
        DropReason::ContainerVxlan,
        DropReason::ArpUnknown,
        DropReason::NetSourceSpoofed,
        DropReason::NetIsolation,
        DropReason::NoEndpoint,
        DropReason::NetInnerSpoofed,
    ];

    /// Stable name used by `overlayctl status`.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::TruncatedOuterIp => "truncated_outer_ip",
            DropReason::TruncatedUdp => "truncated_udp",
            DropReason::TruncatedVxlan => "truncated_vxlan",
            DropReason::TruncatedInner => "truncated_inner",
            DropReason::BadVxlanFlags => "bad_vxlan_flags",
            DropReason::UnknownVni => "unknown_vni",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::BadOuterIp => "bad_outer_ip",
            DropReason::InnerNotIpv4 => "inner_not_ipv4",
            DropReason::EncapAdjustFailed => "encap_adjust_failed",
            DropReason::DecapAdjustFailed => "decap_adjust_failed",
            DropReason::HeaderWriteFailed => "header_write_failed",
            DropReason::NotLocal => "not_local",
            DropReason::InnerSourceSpoofed => "inner_source_spoofed",
            DropReason::ToHostAddress => "to_host_address",
            DropReason::SourceNotLocal => "source_not_local",
            DropReason::SourceSpoofed => "source_spoofed",
            DropReason::LearnLimit => "learn_limit",
            DropReason::ContainerVxlan => "container_vxlan",
            DropReason::ArpUnknown => "arp_unknown",
            DropReason::NetSourceSpoofed => "net_source_spoofed",
            DropReason::NetIsolation => "net_isolation",
            DropReason::NoEndpoint => "no_endpoint",
            DropReason::NetInnerSpoofed => "net_inner_spoofed",
        }
    }
}

/// The VTEP MAC of a host, derived from its underlay address and the VNI.
///
/// Rule (documented in docs/design.md): `02:VV:A:B:C:D` where `VV` is the
/// low byte of the VNI and `A.B.C.D` the underlay IPv4 address. The `02`
/// marks it locally administered unicast. Hosts running overlayd derive each
/// other's VTEP MAC with this rule; foreign VTEPs are given with `--vtep-mac`.
pub const fn vtep_mac(underlay_ip: [u8; 4], vni: u32) -> [u8; 6] {
    [
        0x02,
        (vni & 0xff) as u8,
        underlay_ip[0],
        underlay_ip[1],
        underlay_ip[2],
        underlay_ip[3],
    ]
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are #[repr(C)], Copy, made only of integers and byte
    // arrays, and have no implicit padding (the size tests below pin that).
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::PeerValue {}
    unsafe impl aya::Pod for super::EncapTemplate {}
    unsafe impl aya::Pod for super::EndpointValue {}
    unsafe impl aya::Pod for super::EndpointSlot {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn map_types_have_pinned_sizes() {
        assert_eq!(size_of::<Config>(), 56);
        assert_eq!(size_of::<PeerValue>(), 96);
        assert_eq!(size_of::<EncapTemplate>(), 72);
        assert_eq!(core::mem::align_of::<PeerValue>(), 8);
        assert_eq!(size_of::<EndpointValue>(), 12);
        assert_eq!(size_of::<EndpointSlot>(), 16);
        assert!(ENDPOINT_SLOTS.is_power_of_two());
        assert_eq!(size_of::<PeerKey>(), 4);
        assert_eq!(size_of::<XdpDecapMeta>(), 8);
        assert_eq!(ENCAP_HLEN, 64);
        assert_eq!(VXLAN_OVERHEAD as usize, ENCAP_HLEN - ETH_HLEN);
    }

    #[test]
    fn counter_and_drop_tables_are_dense() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn endpoint_slot_is_the_low_bits() {
        assert_eq!(endpoint_slot([10, 102, 100, 2]), 100 * 256 + 2);
        assert_eq!(endpoint_slot([10, 103, 100, 2]), 65536 + 100 * 256 + 2);
        assert_eq!(endpoint_slot([172, 17, 255, 255]), ENDPOINT_SLOTS - 1);
        // A /15 fills the slots once; the next /15 starts over.
        assert_eq!(endpoint_slot([172, 18, 0, 0]), 0);
    }

    #[test]
    fn vtep_mac_rule() {
        assert_eq!(vtep_mac([192, 168, 56, 5], 42), [0x02, 42, 192, 168, 56, 5]);
        assert_eq!(vtep_mac([10, 0, 0, 1], 0x1_0001), [2, 1, 10, 0, 0, 1]);
    }
}
