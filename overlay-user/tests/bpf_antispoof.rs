//! BPF_PROG_TEST_RUN tests of the anti-spoofing rules (issue 10): each
//! forged packet gets its own drop reason, in tc and (where it applies) XDP;
//! traffic that is not ours goes on to the next program; a host without
//! config passes everything. Needs root (fails loudly in CI without).

use overlay_common::{
    programs, vtep_mac, PeerValue, CONFIG_F_LEARN_ENDPOINTS, CONFIG_F_PER_PORT,
    CONFIG_F_XDP_VALIDATES, DEFAULT_LEARN_LIMIT,
};

#[path = "common/packets.rs"]
mod packets;
use packets::*;
#[path = "common/fixture.rs"]
mod fixture;
use fixture::*;

const VETH: u32 = CONFIG_F_LEARN_ENDPOINTS | CONFIG_F_PER_PORT;
/// A second peer host, 192.168.56.6, with 10.103.150.0/24 behind it.
const PEER2: [u8; 4] = [192, 168, 56, 6];
const REMOTE2: [u8; 4] = [10, 103, 150, 7];

fn add_second_peer(f: &mut Fixture, flags: u32) {
    f.maps
        .add_peer(
            "10.103.150.0/24".parse().unwrap(),
            &PeerValue::new(&host_config(flags), PEER2, PEER_MAC, vtep_mac(PEER2, VNI)),
        )
        .unwrap();
    f.maps
        .set_peer_host(std::net::Ipv4Addr::from(PEER2), 1)
        .unwrap();
}

/// An inner frame from `src` to `dst`.
fn inner(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    eth(
        vtep_mac(LOCAL, VNI),
        vtep_mac(PEER, VNI),
        0x0800,
        &ipv4(src, dst, 6, &tcp_segment()),
    )
}

/// Runs `input` through tc and XDP on the underlay; both must drop it
/// under `reason`.
fn assert_underlay_drop(f: &mut Fixture, input: &[u8], reason: &str, what: &str) {
    let before = f.drops(reason);
    let (ret, _) = f.run_tc(programs::FROM_UNDERLAY, input);
    assert_eq!(ret, TC_ACT_SHOT, "tc: {what}");
    assert_eq!(
        f.drops(reason),
        before + 1,
        "tc: {what} counted as {reason}"
    );
    let (ret, _) = f.run_xdp(input);
    assert_eq!(ret, XDP_DROP, "xdp: {what}");
    assert_eq!(
        f.drops(reason),
        before + 2,
        "xdp: {what} counted as {reason}"
    );
}

// ---- decapsulation ------------------------------------------------------------

#[test]
fn decap_takes_an_inner_source_only_from_the_peer_it_lies_behind() {
    let Some(mut f) = fixture(0) else { return };
    add_second_peer(&mut f, 0);
    // PEER claims a source of PEER2's subnet.
    let forged = vxlan_frame(PEER, VNI, 0x08, &inner(REMOTE2, C1));
    assert_underlay_drop(
        &mut f,
        &forged,
        "inner_source_spoofed",
        "other peer's source",
    );
    // PEER claims a source behind no peer at all, and one of our own.
    for src in [[8, 8, 8, 8], [10, 103, 100, 5]] {
        let forged = vxlan_frame(PEER, VNI, 0x08, &inner(src, C1));
        assert_underlay_drop(&mut f, &forged, "inner_source_spoofed", "unknown source");
    }
    // The genuine packets of both peers still pass.
    let (ret, _) = f.run_tc(
        programs::FROM_UNDERLAY,
        &vxlan_frame(PEER2, VNI, 0x08, &inner(REMOTE2, C1)),
    );
    assert_eq!(ret, TC_ACT_REDIRECT);
    let (ret, _) = f.run_tc(
        programs::FROM_UNDERLAY,
        &vxlan_frame(PEER, VNI, 0x08, &inner(REMOTE, C1)),
    );
    assert_eq!(ret, TC_ACT_REDIRECT);
    assert_eq!(f.counter("decap_packets"), 2);
}

#[test]
fn decap_never_targets_the_gateway_network_or_broadcast_address() {
    let Some(mut f) = fixture(0) else { return };
    for (dst, what) in [
        (GW, "gateway"),
        ([10, 103, 100, 0], "network"),
        ([10, 103, 100, 255], "broadcast"),
    ] {
        let forged = vxlan_frame(PEER, VNI, 0x08, &inner(REMOTE, dst));
        assert_underlay_drop(&mut f, &forged, "to_host_address", what);
    }
    assert_eq!(f.counter("decap_packets"), 0);
    assert_eq!(f.counter("decap_to_kernel"), 0);
}

#[test]
fn tc_keeps_its_own_checks_under_xdp() {
    // XDP validates, but can be detached under tc: every check runs again.
    let Some(mut f) = fixture(CONFIG_F_XDP_VALIDATES) else {
        return;
    };
    add_second_peer(&mut f, CONFIG_F_XDP_VALIDATES);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            vxlan_frame(STRANGER, VNI, 0x08, &inner(REMOTE, C1)),
            "unknown_peer",
        ),
        (
            vxlan_frame(PEER, VNI, 0x08, &inner(REMOTE2, C1)),
            "inner_source_spoofed",
        ),
        (
            vxlan_frame(PEER, VNI, 0x08, &inner(REMOTE, GW)),
            "to_host_address",
        ),
    ];
    for (input, reason) in cases {
        let before = f.drops(reason);
        let (ret, _) = f.run_tc(programs::FROM_UNDERLAY, &input);
        assert_eq!(ret, TC_ACT_SHOT, "{reason}");
        assert_eq!(f.drops(reason), before + 1, "{reason}");
    }
}

// ---- encapsulation ------------------------------------------------------------

fn frame_from(src: [u8; 4], mac: [u8; 6]) -> Vec<u8> {
    eth(GW_MAC, mac, 0x0800, &ipv4(src, REMOTE, 6, &tcp_segment()))
}

#[test]
fn veth_mode_binds_a_source_to_its_port() {
    let Some(mut f) = fixture(VETH) else { return };
    // C1 is bound to port 77.
    assert_eq!(
        f.run_tc_from(programs::FROM_CONTAINER, &frame_from(C1, C1_MAC), 77),
        TC_ACT_REDIRECT
    );
    // Another port claiming C1 (with C1's MAC or its own).
    for mac in [C1_MAC, [2, 0x42, 9, 9, 9, 9]] {
        assert_eq!(
            f.run_tc_from(programs::FROM_CONTAINER, &frame_from(C1, mac), 5),
            TC_ACT_SHOT
        );
    }
    assert_eq!(f.drops("source_spoofed"), 2);
    // The host's own addresses are never a container's source.
    for src in [GW, [10, 103, 100, 0], [10, 103, 100, 255]] {
        assert_eq!(
            f.run_tc_from(programs::FROM_CONTAINER, &frame_from(src, C1_MAC), 5),
            TC_ACT_SHOT
        );
    }
    assert_eq!(f.drops("source_spoofed"), 5);
    // A source outside this host's subnet.
    assert_eq!(
        f.run_tc_from(
            programs::FROM_CONTAINER,
            &frame_from([10, 103, 200, 9], C1_MAC),
            5
        ),
        TC_ACT_SHOT
    );
    assert_eq!(f.drops("source_not_local"), 1);
    // None of those was learned, and C1 is still on port 77.
    let eps = f.maps.endpoints().unwrap();
    assert_eq!(eps.len(), 1, "{eps:?}");
    assert_eq!(eps[0].1.ifindex, 77);
    assert_eq!(f.counter("encap_packets"), 1);
}

#[test]
fn learning_is_capped_per_port() {
    let Some(mut f) = fixture(VETH) else { return };
    let limit = DEFAULT_LEARN_LIMIT as u8;
    for i in 0..limit {
        let src = [10, 103, 100, 100 + i];
        assert_eq!(
            f.run_tc_from(programs::FROM_CONTAINER, &frame_from(src, C1_MAC), 9),
            TC_ACT_REDIRECT,
            "address {i} of {limit}"
        );
        // Once learned, the address stays bound to port 9.
        assert_eq!(
            f.run_tc_from(programs::FROM_CONTAINER, &frame_from(src, C1_MAC), 10),
            TC_ACT_SHOT
        );
    }
    let over = [10, 103, 100, 100 + limit];
    assert_eq!(
        f.run_tc_from(programs::FROM_CONTAINER, &frame_from(over, C1_MAC), 9),
        TC_ACT_SHOT,
        "one address over the cap"
    );
    assert_eq!(f.drops("learn_limit"), 1);
    assert_eq!(f.counter("endpoints_learned"), u64::from(limit));
    // Another port still learns.
    assert_eq!(
        f.run_tc_from(programs::FROM_CONTAINER, &frame_from(over, C1_MAC), 10),
        TC_ACT_REDIRECT
    );
    let on_9 = f
        .maps
        .endpoints()
        .unwrap()
        .into_iter()
        .filter(|(_, v)| v.ifindex == 9)
        .count();
    assert_eq!(on_9, limit as usize);
}

#[test]
fn bridge_mode_checks_subnet_and_mac() {
    let Some(mut f) = fixture(0) else { return };
    assert_eq!(
        f.run_tc_from(programs::FROM_CONTAINER, &frame_from(C1, C1_MAC), 3),
        TC_ACT_REDIRECT
    );
    assert_eq!(
        f.run_tc_from(
            programs::FROM_CONTAINER,
            &frame_from(C1, [2, 0x42, 9, 9, 9, 9]),
            3
        ),
        TC_ACT_SHOT,
        "C1's address from another MAC"
    );
    assert_eq!(f.drops("source_spoofed"), 1);
    assert_eq!(
        f.run_tc_from(programs::FROM_CONTAINER, &frame_from(GW, C1_MAC), 3),
        TC_ACT_SHOT
    );
    assert_eq!(f.drops("source_spoofed"), 2);
    assert_eq!(
        f.run_tc_from(
            programs::FROM_CONTAINER,
            &frame_from([172, 17, 0, 2], C1_MAC),
            3
        ),
        TC_ACT_SHOT
    );
    assert_eq!(f.drops("source_not_local"), 1);
    // Unknown but plausible addresses pass (no learning on the bridge).
    assert_eq!(
        f.run_tc_from(programs::FROM_CONTAINER, &frame_from(C_UNKNOWN, C1_MAC), 3),
        TC_ACT_REDIRECT
    );
    assert_eq!(f.counter("endpoints_learned"), 0);
}

#[test]
fn a_containers_own_vxlan_is_dropped() {
    let Some(mut f) = fixture(VETH) else { return };
    let vx = udp_datagram(40000, PORT, &[0x08, 0, 0, 0, 0, 0, 42, 0]);
    let to_peer_host = eth(GW_MAC, C1_MAC, 0x0800, &ipv4(C1, PEER, 17, &vx));
    let to_remote = eth(GW_MAC, C1_MAC, 0x0800, &ipv4(C1, REMOTE, 17, &vx));
    // With IPv4 options (IHL 6): the UDP header sits 4 bytes later.
    let mut opts = ipv4(C1, PEER, 17, &[&[1, 1, 1, 1][..], &vx].concat());
    opts[0] = 0x46;
    let with_options = eth(GW_MAC, C1_MAC, 0x0800, &opts);
    for (i, input) in [to_peer_host, to_remote, with_options].iter().enumerate() {
        assert_eq!(
            f.run_tc_from(programs::FROM_CONTAINER, input, 77),
            TC_ACT_SHOT,
            "case {i}"
        );
    }
    assert_eq!(f.drops("container_vxlan"), 3);
    // Other UDP ports, and later fragments (no UDP header), are not VXLAN.
    let dns = eth(
        GW_MAC,
        C1_MAC,
        0x0800,
        &ipv4(C1, [8, 8, 8, 8], 17, &udp_datagram(40000, 53, b"q")),
    );
    assert_eq!(
        f.run_tc_from(programs::FROM_CONTAINER, &dns, 77),
        TC_ACT_NEXT
    );
    let mut frag = ipv4(C1, REMOTE, 17, &vx);
    frag[6] = 0x00;
    frag[7] = 0x10; // offset 128 bytes: a later fragment
    let frag = eth(GW_MAC, C1_MAC, 0x0800, &frag);
    assert_eq!(
        f.run_tc_from(programs::FROM_CONTAINER, &frag, 77),
        TC_ACT_REDIRECT
    );
    assert_eq!(f.drops("container_vxlan"), 3);
}

// ---- pass-through and no config ---------------------------------------------

#[test]
fn without_config_everything_passes_and_is_counted() {
    let Some(mut f) = empty_fixture() else { return };
    let good = vxlan_frame(PEER, VNI, 0x08, &inner_frame(C1));
    let (ret, out) = f.run_tc(programs::FROM_UNDERLAY, &good);
    assert_eq!((ret, &out), (TC_ACT_NEXT, &good));
    let (ret, out) = f.run_xdp(&good);
    assert_eq!((ret, &out), (XDP_PASS, &good));
    let c = from_container(REMOTE, 6, &tcp_segment());
    let (ret, out) = f.run_tc(programs::FROM_CONTAINER, &c);
    assert_eq!((ret, &out), (TC_ACT_NEXT, &c));
    assert_eq!(f.counter("no_config_pass"), 3);
    let drops: u64 = f.maps.stats().unwrap().drops.values().sum();
    assert_eq!(drops, 0);
}
