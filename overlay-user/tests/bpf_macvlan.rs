//! BPF_PROG_TEST_RUN tests of the macvlan endpoint (issue 17's last
//! candidate for the endpoint hop): a container whose interface is a
//! macvlan of the underlay sends through the underlay's tc egress, where
//! the from-container program encapsulates in place (no redirect); a frame
//! for it is decapsulated and left to the macvlan's rx handler, addressed
//! to its MAC. Needs root (fails loudly in CI without).

use std::net::Ipv4Addr;

use overlay_common::{programs, vtep_mac, EndpointValue};

#[path = "common/packets.rs"]
mod packets;
use packets::*;
#[path = "common/fixture.rs"]
mod fixture;
use fixture::*;

/// The fixture host (bridge mode: sources checked by MAC) with C1 as a
/// macvlan endpoint: on the underlay interface, with its MAC.
fn macvlan_fixture() -> Option<Fixture> {
    let mut f = fixture(0)?;
    f.maps
        .add_endpoint(
            Ipv4Addr::from(C1),
            &EndpointValue {
                ifindex: host_config(0).underlay_ifindex,
                mac: C1_MAC,
                _pad: [0; 2],
            },
        )
        .unwrap();
    Some(f)
}

#[test]
fn container_traffic_on_the_underlay_egress_is_encapsulated_in_place() {
    let Some(mut f) = macvlan_fixture() else {
        return;
    };
    let input = from_container(REMOTE, 6, &tcp_segment());
    let (ret, out) = f.run_tc(programs::TO_UNDERLAY, &input);
    assert_eq!(ret, TC_ACT_OK, "on its way out already: no redirect");
    assert_encapsulated(&input, &out);
    assert_eq!(f.counter("encap_packets"), 1);
}

#[test]
fn the_hosts_own_traffic_on_the_underlay_egress_passes_untouched() {
    let Some(mut f) = macvlan_fixture() else {
        return;
    };
    let inner = inner_frame(REMOTE);
    // The host's own VXLAN to PEER (a source outside the container subnet
    // to the VXLAN port): from a container it would be dropped.
    let own = eth(
        PEER_MAC,
        UNDERLAY_MAC,
        0x0800,
        &ipv4(LOCAL, PEER, 17, &udp_datagram(50000, PORT, &inner)),
    );
    let (ret, out) = f.run_tc(programs::TO_UNDERLAY, &own);
    assert_eq!(ret, TC_ACT_NEXT);
    assert_eq!(out, own);
    // The host's own packet to a container behind a peer.
    let to_peer_subnet = eth(
        PEER_MAC,
        UNDERLAY_MAC,
        0x0800,
        &ipv4(LOCAL, REMOTE, 6, &tcp_segment()),
    );
    let (ret, out) = f.run_tc(programs::TO_UNDERLAY, &to_peer_subnet);
    assert_eq!(ret, TC_ACT_NEXT);
    assert_eq!(out, to_peer_subnet);
    assert_eq!(f.drops("container_vxlan"), 0);
    assert_eq!(f.drops("source_not_local"), 0);
    assert_eq!(f.counter("encap_packets"), 0);
    // A spoofed container source on the same egress is still refused.
    let mut spoofed = from_container(REMOTE, 6, &tcp_segment());
    spoofed[6..12].copy_from_slice(&[0x02, 0x42, 0, 0, 0, 0x66]);
    let (ret, _) = f.run_tc(programs::TO_UNDERLAY, &spoofed);
    assert_eq!(ret, TC_ACT_SHOT);
    assert_eq!(f.drops("source_spoofed"), 1);
}

#[test]
fn a_frame_for_a_macvlan_endpoint_is_left_to_its_rx_handler() {
    let Some(mut f) = macvlan_fixture() else {
        return;
    };
    let inner = eth(
        vtep_mac(LOCAL, VNI),
        vtep_mac(PEER, VNI),
        0x0800,
        &ipv4(REMOTE, C1, 6, &tcp_segment()),
    );
    let input = vxlan_frame(PEER, VNI, 0x08, &inner);
    let (ret, out) = f.run_tc(programs::FROM_UNDERLAY, &input);
    assert_eq!(
        ret, TC_ACT_OK,
        "no redirect: the macvlan's rx handler delivers"
    );
    assert_eq!(&out[0..6], &C1_MAC, "addressed to the endpoint's MAC");
    assert_eq!(&out[6..12], &GW_MAC, "from the gateway");
    assert_eq!(&out[14..], &inner[14..], "the inner IPv4 packet, untouched");
    assert_eq!(f.counter("decap_packets"), 1);
    assert_eq!(f.counter("decap_to_kernel"), 0);
}
