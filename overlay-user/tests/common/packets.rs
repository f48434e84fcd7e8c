//! Crafted packets and the fixture host they are addressed to, shared by
//! the BPF program tests and the per-packet benchmark (`examples/progbench.rs`).
#![allow(dead_code)]

use aya::maps::{MapData, PerCpuArray};
use overlay_common::observe::{maps as observe_maps, PeerStats};
use overlay_common::{csum, vtep_mac, Config, EndpointValue, PeerValue};
use overlay_user::dataplane::bpf::maps::Maps;

pub const LOCAL: [u8; 4] = [192, 168, 56, 4];
pub const PEER: [u8; 4] = [192, 168, 56, 5];
pub const STRANGER: [u8; 4] = [192, 168, 56, 99];
pub const UNDERLAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x04];
pub const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x05];
pub const GW_MAC: [u8; 6] = [0x02, 0x42, 0, 0, 0, 0x01];
pub const C1_MAC: [u8; 6] = [0x02, 0x42, 0x0a, 0x67, 0x64, 0x02];
pub const C1: [u8; 4] = [10, 103, 100, 2];
/// C1's host-side veth (its endpoint's ifindex).
pub const C1_PORT: u32 = 77;
pub const GW: [u8; 4] = [10, 103, 100, 1];
pub const C_UNKNOWN: [u8; 4] = [10, 103, 100, 9];
pub const REMOTE: [u8; 4] = [10, 103, 200, 2];
pub const VNI: u32 = 42;
pub const PORT: u16 = 4789;
/// PEER's slot in `OVL_PEER_STATS`, in its peer entries.
pub const PEER_SLOT: u32 = 1;

/// `OVL_PEER_STATS`, taken out of the loaded object.
pub fn peer_stats(ebpf: &mut aya::Ebpf) -> PerCpuArray<MapData, PeerStats> {
    PerCpuArray::try_from(ebpf.take_map(observe_maps::PEER_STATS).unwrap()).unwrap()
}

/// PEER's traffic, summed over CPUs.
pub fn peer_total(stats: &PerCpuArray<MapData, PeerStats>) -> PeerStats {
    let v = stats.get(&PEER_SLOT, 0).unwrap();
    v.iter().fold(PeerStats::default(), |a, s| PeerStats {
        tx_packets: a.tx_packets + s.tx_packets,
        tx_bytes: a.tx_bytes + s.tx_bytes,
        rx_packets: a.rx_packets + s.rx_packets,
        rx_bytes: a.rx_bytes + s.rx_bytes,
        last_rx_ns: a.last_rx_ns.max(s.last_rx_ns),
    })
}

/// This host's settings in the fixture (host 1, subnet 10.103.100.0/24).
pub fn host_config(flags: u32) -> Config {
    Config {
        local_ip: LOCAL,
        vni: VNI,
        underlay_ifindex: 1,
        vxlan_port_be: PORT.to_be(),
        underlay_mac: UNDERLAY_MAC,
        vtep_mac: vtep_mac(LOCAL, VNI),
        gateway_mac: GW_MAC,
        subnet: [10, 103, 100, 0],
        subnet_mask: [255, 255, 255, 0],
        flags,
        encap_ifindex: 0,
        gateway_ip: GW,
        learn_limit: overlay_common::DEFAULT_LEARN_LIMIT,
    }
}

/// Writes the fixture host: config, the peer 10.103.200.0/24 behind PEER,
/// and the endpoint C1.
pub fn install(maps: &mut Maps, flags: u32) {
    maps.set_config(&host_config(flags)).unwrap();
    maps.add_peer(
        "10.103.200.0/24".parse().unwrap(),
        &PeerValue::new(&host_config(flags), PEER, PEER_MAC, vtep_mac(PEER, VNI))
            .with_stats_slot(PEER_SLOT),
    )
    .unwrap();
    maps.set_peer_host(std::net::Ipv4Addr::from(PEER), 1)
        .unwrap();
    maps.add_endpoint(
        std::net::Ipv4Addr::from(C1),
        &EndpointValue {
            ifindex: C1_PORT,
            mac: C1_MAC,
            _pad: [0; 2],
        },
    )
    .unwrap();
}

// ---- packet builders ------------------------------------------------------

pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&dst);
    v.extend_from_slice(&src);
    v.extend_from_slice(&ethertype.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[1] = 0x10;
    h[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src);
    h[16..20].copy_from_slice(&dst);
    let c = csum::ipv4_header(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    let mut v = h.to_vec();
    v.extend_from_slice(payload);
    v
}

pub fn tcp_segment() -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&5201u16.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x18; // PSH|ACK
    t.extend_from_slice(b"hello over the overlay");
    t
}

pub fn udp_datagram(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

pub fn icmp_echo() -> Vec<u8> {
    let mut i = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1];
    i.extend_from_slice(&[0xab; 56]);
    let c = csum::fold(csum::sum16(&i, 0));
    i[2..4].copy_from_slice(&c.to_be_bytes());
    i
}

pub fn arp() -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&C1_MAC);
    a.extend_from_slice(&C1);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&[10, 103, 100, 1]);
    eth([0xff; 6], C1_MAC, 0x0806, &a)
}

/// A frame as a container sends it to its gateway.
pub fn from_container(dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    eth(GW_MAC, C1_MAC, 0x0800, &ipv4(C1, dst, proto, l4))
}

/// A VXLAN frame from `src` carrying `inner` (an Ethernet frame).
pub fn vxlan_frame(src: [u8; 4], vni: u32, flags: u8, inner: &[u8]) -> Vec<u8> {
    let mut vx = vec![flags, 0, 0, 0];
    vx.extend_from_slice(&(vni << 8).to_be_bytes());
    vx.extend_from_slice(inner);
    eth(
        UNDERLAY_MAC,
        PEER_MAC,
        0x0800,
        &ipv4(src, LOCAL, 17, &udp_datagram(51000, PORT, &vx)),
    )
}

pub fn inner_frame(dst: [u8; 4]) -> Vec<u8> {
    eth(
        vtep_mac(LOCAL, VNI),
        vtep_mac(PEER, VNI),
        0x0800,
        &ipv4(REMOTE, dst, 6, &tcp_segment()),
    )
}

/// `out` is `input` (a frame from a container to REMOTE) encapsulated
/// towards PEER: every outer field, the inner frame untouched.
pub fn assert_encapsulated(input: &[u8], out: &[u8]) {
    assert_eq!(out.len(), input.len() + 50, "50 bytes of VXLAN overhead");
    assert_eq!(&out[0..6], &PEER_MAC, "outer destination: the next hop");
    assert_eq!(
        &out[6..12],
        &UNDERLAY_MAC,
        "outer source: the underlay interface"
    );
    assert_eq!(&out[12..14], &[0x08, 0x00]);
    let ip = &out[14..34];
    assert_eq!(ip[0], 0x45);
    assert_eq!(ip[1], input[15], "TOS inherited from the inner header");
    assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, out.len() - 14);
    assert_eq!(ip[6] & 0x40, 0x40, "DF set");
    assert_eq!(ip[8], 64);
    assert_eq!(ip[9], 17);
    assert!(csum::verifies(ip), "outer IPv4 checksum verifies");
    assert_eq!(&ip[12..16], &LOCAL);
    assert_eq!(&ip[16..20], &PEER);
    let udp = &out[34..42];
    let sport = u16::from_be_bytes([udp[0], udp[1]]);
    assert!(sport >= 49152, "source port {sport} in 49152..=65535");
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), PORT);
    assert_eq!(
        u16::from_be_bytes([udp[4], udp[5]]) as usize,
        out.len() - 34
    );
    assert_eq!(&udp[6..8], &[0, 0], "outer UDP checksum 0");
    assert_eq!(
        &out[42..50],
        &[0x08, 0, 0, 0, 0, 0, 42, 0],
        "VXLAN I flag and VNI 42"
    );
    assert_eq!(
        &out[50..56],
        &vtep_mac(PEER, VNI),
        "inner destination: the peer's VTEP MAC"
    );
    assert_eq!(
        &out[56..62],
        &vtep_mac(LOCAL, VNI),
        "inner source: our VTEP MAC"
    );
    assert_eq!(&out[62..64], &[0x08, 0x00]);
    assert_eq!(&out[64..], &input[14..], "inner IPv4 packet untouched");
}
