//! BPF_PROG_TEST_RUN tests of the overlay networks' dataplane on crafted
//! packets: the from-net-container program (ARP in BPF, local redirect,
//! encapsulation with the network's VNI, forged sources, isolation, NAT
//! path) and the receive path for network VNIs (tc and XDP: delivery,
//! unknown VNI, forged inner source, forged VNI, truncated and hostile
//! frames). Each asserts the verdict, the output bytes and the counters.
//! Needs root (fails loudly in CI without).

use aya::maps::{MapData, PerCpuArray};
use overlay_common::observe::PeerStats;
use overlay_common::{
    programs, vtep_mac, CONFIG_F_ENCAP_PUSH_HEAD, CONFIG_F_XDP_DECAP, CONFIG_F_XDP_VALIDATES,
    XDP_DECAP_MAGIC,
};

#[path = "common/packets.rs"]
mod packets;
use packets::*;
#[path = "common/fixture.rs"]
mod fixture;
use fixture::*;
#[path = "common/net.rs"]
mod net;
use net::*;

fn arp_request(sha: [u8; 6], spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&tpa);
    eth([0xff; 6], sha, 0x0806, &a)
}

/// A frame container A sends to `dst` (to its gateway's MAC, as it would
/// for an address outside its subnet; the program sets the MACs it needs).
fn from_a(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    eth(VETH_A, MA, 0x0800, &ipv4(src, dst, proto, l4))
}

// ---- ARP ------------------------------------------------------------------

#[test]
fn arp_for_endpoints_and_the_gateway_is_answered_in_place() {
    let Some(mut n) = net_fixture() else { return };
    for (target, mac) in [(B, MB), (R, MR), (WEB_GW, VETH_A)] {
        let req = arp_request(MA, A, target);
        let (ret, out) = n.run_port(PORT_A, &req);
        assert_eq!(ret, TC_ACT_REDIRECT, "ARP for {target:?}: sent back out");
        assert_eq!(out.len(), req.len());
        assert_eq!(&out[0..6], &MA, "to the requester");
        assert_eq!(&out[6..12], &mac, "from the answered MAC");
        assert_eq!(&out[12..14], &[0x08, 0x06]);
        assert_eq!(&out[14..22], &[0, 1, 8, 0, 6, 4, 0, 2], "an ARP reply");
        assert_eq!(&out[22..28], &mac, "sender hardware address");
        assert_eq!(&out[28..32], &target, "sender protocol address");
        assert_eq!(&out[32..38], &MA, "target hardware address");
        assert_eq!(&out[38..42], &A, "target protocol address");
    }
    assert_eq!(n.counter("arp_replies"), 3);
    assert_eq!(n.total_drops(), 0);
}

#[test]
fn unknown_foreign_forged_and_truncated_arp_is_dropped_and_counted() {
    let Some(mut n) = net_fixture() else { return };
    // No endpoint there; another network's container; its own address.
    for target in [NOBODY, D, A] {
        let (ret, _) = n.run_port(PORT_A, &arp_request(MA, A, target));
        assert_eq!(ret, TC_ACT_SHOT, "ARP for {target:?}");
    }
    assert_eq!(n.drops("arp_unknown"), 3);
    // Asking in another container's name.
    let (ret, _) = n.run_port(PORT_A, &arp_request(MA, B, R));
    assert_eq!(ret, TC_ACT_SHOT);
    assert_eq!(n.drops("net_source_spoofed"), 1);
    // Cut inside the ARP header; not Ethernet/IPv4 ARP.
    let good = arp_request(MA, A, B);
    let (ret, _) = n.run_port(PORT_A, &good[..good.len() - 1]);
    assert_eq!(ret, TC_ACT_SHOT);
    let mut odd = good.clone();
    odd[16] = 0x86; // ptype 0x86dd
    let (ret, _) = n.run_port(PORT_A, &odd);
    assert_eq!(ret, TC_ACT_SHOT);
    assert_eq!(n.drops("arp_unknown"), 5);
    // A reply goes on to the kernel untouched.
    let mut reply = good.clone();
    reply[21] = 2;
    assert_eq!(n.run_port(PORT_A, &reply).0, TC_ACT_NEXT);
    assert_eq!(n.counter("arp_replies"), 0);
}

// ---- IPv4 from a container ----------------------------------------------------

#[test]
fn to_a_local_endpoint_of_the_network_is_redirected_to_its_peer() {
    let Some(mut n) = net_fixture() else { return };
    let input = from_a(A, B, 6, &tcp_segment());
    let (ret, out) = n.run_port(PORT_A, &input);
    assert_eq!(ret, TC_ACT_REDIRECT);
    assert_eq!(&out[0..6], &MB, "to B's MAC");
    assert_eq!(&out[6..12], &MA, "from A's own MAC");
    assert_eq!(&out[12..], &input[12..], "the packet itself untouched");
    assert_eq!(n.counter("net_local_packets"), 1);
    assert_eq!(n.counter("encap_packets"), 0);
}

#[test]
fn to_a_remote_endpoint_is_encapsulated_with_the_network_vni_and_real_macs() {
    // Either way of making room (encap_resize = "adjust-room", "head").
    for flags in [0, CONFIG_F_ENCAP_PUSH_HEAD] {
        remote_endpoint_encapsulated(flags);
    }
}

fn remote_endpoint_encapsulated(flags: u32) {
    let Some(mut n) = net_fixture_with(flags) else {
        return;
    };
    for input in [
        from_a(A, R, 6, &tcp_segment()),
        from_a(A, R, 17, &udp_datagram(5000, 53, b"q")),
        from_a(A, R, 1, &icmp_echo()),
    ] {
        let (ret, out) = n.run_port(PORT_A, &input);
        assert_eq!(ret, TC_ACT_REDIRECT);
        assert_eq!(out.len(), input.len() + 50);
        assert_eq!(&out[0..6], &PEER_MAC, "outer destination: the next hop");
        assert_eq!(&out[6..12], &UNDERLAY_MAC);
        let ip = &out[14..34];
        assert!(overlay_common::csum::verifies(ip), "outer checksum");
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, out.len() - 14);
        assert_eq!(&ip[12..16], &LOCAL, "outer source: this host");
        assert_eq!(&ip[16..20], &PEER, "outer destination: R's host");
        assert!(u16::from_be_bytes([out[34], out[35]]) >= 49152);
        assert_eq!(u16::from_be_bytes([out[36], out[37]]), PORT);
        assert_eq!(
            &out[42..50],
            &[0x08, 0, 0, 0, 0, 0x10, 0x00, 0],
            "VXLAN I flag, VNI 4096 (web), not the per-host 42"
        );
        assert_eq!(&out[50..56], &MR, "inner destination: R's own MAC");
        assert_eq!(&out[56..62], &MA, "inner source: A's own MAC");
        assert_eq!(&out[62..], &input[12..], "inner IPv4 untouched");
        assert_ne!(&out[50..56], &vtep_mac(PEER, VNI));
    }
    assert_eq!(n.counter("encap_packets"), 3);
}

#[test]
fn forged_sources_are_dropped_and_counted() {
    let Some(mut n) = net_fixture() else { return };
    // Another web container's address, a db address, the gateway, outside.
    for src in [B, D, WEB_GW, OUTSIDE] {
        for dst in [R, B, D, OUTSIDE] {
            let (ret, _) = n.run_port(PORT_A, &from_a(src, dst, 6, &tcp_segment()));
            assert_eq!(ret, TC_ACT_SHOT, "{src:?} -> {dst:?}");
        }
    }
    assert_eq!(n.drops("net_source_spoofed"), 16);
    assert_eq!(
        n.counter("encap_packets") + n.counter("net_local_packets"),
        0
    );
}

#[test]
fn another_networks_subnet_is_isolated_and_no_endpoint_is_dropped() {
    let Some(mut n) = net_fixture() else { return };
    // db's local and remote containers, and db's gateway.
    for dst in [D, DR, [10, 103, 241, 1]] {
        let (ret, _) = n.run_port(PORT_A, &from_a(A, dst, 1, &icmp_echo()));
        assert_eq!(ret, TC_ACT_SHOT, "to {dst:?}");
    }
    assert_eq!(n.drops("net_isolation"), 3);
    // The other way round: db's container to web's.
    let input = eth(MD, MD, 0x0800, &ipv4(D, A, 1, &icmp_echo()));
    assert_eq!(n.run_port(PORT_D, &input).0, TC_ACT_SHOT);
    assert_eq!(n.drops("net_isolation"), 4);
    // Its own subnet, nobody there (also the broadcast and the gateway).
    for dst in [NOBODY, [10, 103, 240, 255], WEB_GW] {
        assert_eq!(
            n.run_port(PORT_A, &from_a(A, dst, 1, &icmp_echo())).0,
            TC_ACT_SHOT
        );
    }
    assert_eq!(n.drops("no_endpoint"), 3);
    assert_eq!(
        n.counter("encap_packets") + n.counter("net_local_packets"),
        0
    );
}

#[test]
fn outside_every_network_goes_to_the_host_and_vxlan_port_is_refused() {
    let Some(mut n) = net_fixture() else { return };
    let input = from_a(A, OUTSIDE, 6, &tcp_segment());
    let (ret, out) = n.run_port(PORT_A, &input);
    assert_eq!(ret, TC_ACT_OK, "to the host stack (routed out, NATed)");
    assert_eq!(out, input, "untouched");
    // The per-host peers' subnet is outside every network too.
    assert_eq!(
        n.run_port(PORT_A, &from_a(A, REMOTE, 6, &tcp_segment())).0,
        TC_ACT_OK
    );
    assert_eq!(n.counter("net_to_host"), 2);
    let (ret, _) = n.run_port(
        PORT_A,
        &from_a(A, OUTSIDE, 17, &udp_datagram(1000, PORT, b"vx")),
    );
    assert_eq!(ret, TC_ACT_SHOT);
    assert_eq!(n.drops("container_vxlan"), 1);
    // Not a network port, IPv6: not this program's business.
    assert_eq!(n.run_port(99, &input).0, TC_ACT_NEXT);
    let v6 = eth(VETH_A, MA, 0x86dd, &[0x60; 40]);
    assert_eq!(n.run_port(PORT_A, &v6).0, TC_ACT_NEXT);
}

// ---- receive path -----------------------------------------------------------

#[test]
fn a_network_frame_from_the_endpoints_host_is_delivered_into_the_container() {
    let Some(mut n) = net_fixture() else { return };
    let inner = net_inner(MR, R, A);
    let frame = vxlan_frame(PEER, WEB, 0x08, &inner);
    let (ret, out) = n.f.run_tc(programs::FROM_UNDERLAY, &frame);
    assert_eq!(ret, TC_ACT_REDIRECT, "redirected into A");
    assert_eq!(out.len(), inner.len());
    assert_eq!(&out[0..6], &MA, "to A's MAC");
    assert_eq!(&out[6..12], &MR, "from R's own MAC");
    assert_eq!(&out[12..], &inner[12..]);
    assert_eq!(n.counter("decap_packets"), 1);
    let (ret, _) = n.f.run_xdp(&frame);
    assert_eq!(ret, XDP_PASS);
    assert_eq!(n.counter("xdp_vxlan_pass"), 1);
    assert_eq!(n.total_drops(), 0);
}

#[test]
fn network_decapsulation_counts_for_the_peer_host() {
    let Some(mut n) = net_fixture() else { return };
    let stats = peer_stats(&mut n.f.ebpf);
    let rx = |stats: &PerCpuArray<MapData, PeerStats>| {
        let t = peer_total(stats);
        (t.rx_packets, t.rx_bytes)
    };
    let inner = net_inner(MR, R, A);
    let frame = vxlan_frame(PEER, WEB, 0x08, &inner);
    assert_eq!(
        n.f.run_tc(programs::FROM_UNDERLAY, &frame).0,
        TC_ACT_REDIRECT
    );
    assert_eq!(rx(&stats), (1, inner.len() as u64), "tc: counted for PEER");
    // With xdp = "decap" the XDP program decapsulates and counts instead.
    n.f.maps
        .set_config(&host_config(CONFIG_F_XDP_VALIDATES | CONFIG_F_XDP_DECAP))
        .unwrap();
    let (ret, out) = n.f.run_xdp(&frame);
    assert_eq!(ret, XDP_PASS);
    assert_eq!(out.len(), 8 + inner.len(), "metadata, then the inner frame");
    assert_eq!(
        u32::from_ne_bytes(out[0..4].try_into().unwrap()),
        XDP_DECAP_MAGIC
    );
    assert_eq!(u32::from_ne_bytes(out[4..8].try_into().unwrap()), PORT_A);
    assert_eq!(&out[8..14], &MA, "to A's MAC");
    assert_eq!(&out[14..20], &MR, "from R's own MAC");
    assert_eq!(&out[20..], &inner[12..]);
    assert_eq!(rx(&stats), (2, 2 * inner.len() as u64), "XDP: counted too");
    assert_eq!(n.counter("decap_packets"), 2);
    // A forged inner source is dropped by the decapsulating XDP as before.
    both_drop(
        &mut n,
        &vxlan_frame(STRANGER, WEB, 0x08, &net_inner(MR, R, A)),
        "net_inner_spoofed",
    );
    assert_eq!(rx(&stats).0, 2, "a drop is not traffic");
}

/// Runs `frame` through tc and XDP; both must drop it under `reason`.
fn both_drop(n: &mut Net, frame: &[u8], reason: &str) {
    let before = n.drops(reason);
    let (ret, _) = n.f.run_tc(programs::FROM_UNDERLAY, frame);
    assert_eq!(ret, TC_ACT_SHOT, "tc: {reason}");
    let (ret, _) = n.f.run_xdp(frame);
    assert_eq!(ret, XDP_DROP, "xdp: {reason}");
    assert_eq!(
        n.drops(reason),
        before + 2,
        "{reason} counted by tc and XDP"
    );
}

#[test]
fn unknown_vni_forged_inner_source_and_forged_vni_are_dropped() {
    let Some(mut n) = net_fixture() else { return };
    // A VNI no network has.
    both_drop(
        &mut n,
        &vxlan_frame(PEER, 5000, 0x08, &net_inner(MR, R, A)),
        "unknown_vni",
    );
    // S lives on STRANGER: PEER cannot send in its name.
    both_drop(
        &mut n,
        &vxlan_frame(PEER, WEB, 0x08, &net_inner(MS, S, A)),
        "net_inner_spoofed",
    );
    // R lives on PEER: STRANGER cannot send in its name.
    both_drop(
        &mut n,
        &vxlan_frame(STRANGER, WEB, 0x08, &net_inner(MR, R, A)),
        "net_inner_spoofed",
    );
    // A local container's address as source.
    both_drop(
        &mut n,
        &vxlan_frame(PEER, WEB, 0x08, &net_inner(MB, B, A)),
        "net_inner_spoofed",
    );
    // Forged VNI: web's R into db's D by putting db's VNI on it.
    both_drop(
        &mut n,
        &vxlan_frame(PEER, DB, 0x08, &net_inner(MR, R, D)),
        "net_inner_spoofed",
    );
    // db's DR to web's A under db's VNI: no such endpoint in db.
    both_drop(
        &mut n,
        &vxlan_frame(PEER, DB, 0x08, &net_inner(MDR, DR, A)),
        "no_endpoint",
    );
    // To a remote endpoint or nobody: not delivered, not forwarded.
    both_drop(
        &mut n,
        &vxlan_frame(PEER, WEB, 0x08, &net_inner(MR, R, S)),
        "no_endpoint",
    );
    both_drop(
        &mut n,
        &vxlan_frame(PEER, WEB, 0x08, &net_inner(MR, R, NOBODY)),
        "no_endpoint",
    );
    assert_eq!(n.counter("decap_packets"), 0);
}

#[test]
fn truncated_and_hostile_network_frames_are_dropped() {
    let Some(mut n) = net_fixture() else { return };
    let frame = vxlan_frame(PEER, WEB, 0x08, &net_inner(MR, R, A));
    // Cut inside the inner Ethernet or IPv4 header.
    for len in 50..(50 + 14 + 20) {
        let before = n.drops("truncated_inner");
        let (ret, _) = n.f.run_tc(programs::FROM_UNDERLAY, &frame[..len]);
        assert_eq!(ret, TC_ACT_SHOT, "cut at {len}");
        assert_eq!(n.drops("truncated_inner"), before + 1, "cut at {len}");
    }
    // ... of an unknown VNI: reported as such.
    let other = vxlan_frame(PEER, 5000, 0x08, &net_inner(MR, R, A));
    assert_eq!(
        n.f.run_tc(programs::FROM_UNDERLAY, &other[..60]).0,
        TC_ACT_SHOT
    );
    assert_eq!(n.drops("unknown_vni"), 1);
    // Inner ARP (no flooding over the underlay), no I flag.
    let mut arp = arp_request(MR, R, A);
    arp.resize(60, 0);
    both_drop(
        &mut n,
        &vxlan_frame(PEER, WEB, 0x08, &arp),
        "inner_not_ipv4",
    );
    both_drop(
        &mut n,
        &vxlan_frame(PEER, WEB, 0x00, &net_inner(MR, R, A)),
        "bad_vxlan_flags",
    );
    assert_eq!(n.counter("decap_packets"), 0);
}

#[test]
fn the_per_host_vni_is_unchanged_next_to_networks() {
    let Some(mut n) = net_fixture() else { return };
    let frame = vxlan_frame(PEER, VNI, 0x08, &inner_frame(C1));
    let (ret, out) = n.f.run_tc(programs::FROM_UNDERLAY, &frame);
    assert_eq!(ret, TC_ACT_REDIRECT);
    assert_eq!(&out[0..6], &C1_MAC);
    let input = from_container(REMOTE, 6, &tcp_segment());
    let (ret, out) = n.f.run_tc(programs::FROM_CONTAINER, &input);
    assert_eq!(ret, TC_ACT_REDIRECT);
    assert_eq!(&out[42..50], &[0x08, 0, 0, 0, 0, 0, 42, 0]);
    assert_eq!(n.counter("decap_packets"), 1);
    assert_eq!(n.counter("encap_packets"), 1);
}
