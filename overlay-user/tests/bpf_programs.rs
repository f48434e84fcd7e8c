//! BPF_PROG_TEST_RUN unit tests of every program on crafted packets: good,
//! truncated at every header boundary, and hostile. Each asserts the verdict,
//! the output bytes and the counters. Needs root (fails loudly in CI without).

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use overlay_common::{
    programs, vtep_mac, PeerValue, CONFIG_F_LEARN_ENDPOINTS, CONFIG_F_PER_PORT,
    CONFIG_F_XDP_VALIDATES,
};
use overlay_user::dataplane::bpf::loader;

#[path = "common/packets.rs"]
mod packets;
use packets::*;
#[path = "common/fixture.rs"]
mod fixture;
use fixture::*;

// ---- from_container: encapsulation -----------------------------------------

#[test]
fn encapsulates_tcp_udp_icmp_to_a_peer() {
    let Some(mut f) = fixture(0) else { return };
    let cases = [
        from_container(REMOTE, 6, &tcp_segment()),
        from_container(REMOTE, 17, &udp_datagram(5000, 53, b"query")),
        from_container(REMOTE, 1, &icmp_echo()),
    ];
    for (i, input) in cases.iter().enumerate() {
        let (ret, out) = f.run_tc(programs::FROM_CONTAINER, input);
        assert_eq!(ret, TC_ACT_REDIRECT, "case {i}");
        assert_encapsulated(input, &out);
    }
    assert_eq!(f.counter("encap_packets"), 3);
    let bytes: usize = cases.iter().map(Vec::len).sum();
    assert_eq!(f.counter("encap_bytes"), bytes as u64);
}

#[test]
fn learns_the_sender_of_the_first_packet_to_a_peer() {
    let Some(mut f) = fixture(CONFIG_F_LEARN_ENDPOINTS | CONFIG_F_PER_PORT) else {
        return;
    };
    let mac = [0x02, 0x42, 0x0a, 0x67, 0x64, 0x09];
    let frame = |src: [u8; 4]| eth(GW_MAC, mac, 0x0800, &ipv4(src, REMOTE, 6, &tcp_segment()));
    assert_eq!(
        f.run_tc_from(programs::FROM_CONTAINER, &frame(C_UNKNOWN), 1),
        TC_ACT_REDIRECT
    );
    assert_eq!(
        f.run_tc_from(programs::FROM_CONTAINER, &frame(C_UNKNOWN), 1),
        TC_ACT_REDIRECT
    );
    // Not from this host's subnet: not learned, not sent.
    assert_eq!(
        f.run_tc_from(programs::FROM_CONTAINER, &frame([10, 9, 9, 9]), 1),
        TC_ACT_SHOT
    );
    assert_eq!(f.drops("source_not_local"), 1);
    let learned: Vec<_> = f
        .maps
        .endpoints()
        .unwrap()
        .into_iter()
        .filter(|(ip, _)| ip.octets() == C_UNKNOWN || ip.octets() == [10, 9, 9, 9])
        .collect();
    assert_eq!(learned.len(), 1, "{learned:?}");
    assert_eq!(learned[0].1.ifindex, 1);
    assert_eq!(learned[0].1.mac, mac);
    assert_eq!(f.counter("endpoints_learned"), 1);
    // A known endpoint is never overwritten by a packet claiming its address,
    // and the packet is not sent.
    let spoof = eth(GW_MAC, mac, 0x0800, &ipv4(C1, REMOTE, 6, &tcp_segment()));
    assert_eq!(
        f.run_tc_from(programs::FROM_CONTAINER, &spoof, 1),
        TC_ACT_SHOT
    );
    assert_eq!(f.drops("source_spoofed"), 1);
    let c1 = f
        .maps
        .endpoints()
        .unwrap()
        .into_iter()
        .find(|(ip, _)| ip.octets() == C1)
        .unwrap();
    assert_eq!((c1.1.ifindex, c1.1.mac), (77, C1_MAC));
}

#[test]
fn no_learning_unless_enabled() {
    let Some(mut f) = fixture(0) else { return };
    let frame = eth(
        GW_MAC,
        C1_MAC,
        0x0800,
        &ipv4(C_UNKNOWN, REMOTE, 6, &tcp_segment()),
    );
    assert_eq!(
        f.run_tc_from(programs::FROM_CONTAINER, &frame, 1),
        TC_ACT_REDIRECT
    );
    assert_eq!(f.counter("endpoints_learned"), 0);
    assert_eq!(f.maps.endpoints().unwrap().len(), 1);
}

#[test]
fn same_flow_same_source_port() {
    let Some(mut f) = fixture(0) else { return };
    let input = from_container(REMOTE, 6, &tcp_segment());
    let (_, a) = f.run_tc(programs::FROM_CONTAINER, &input);
    let (_, b) = f.run_tc(programs::FROM_CONTAINER, &input);
    assert_eq!(&a[34..36], &b[34..36]);
}

#[test]
fn unresolved_next_hop_goes_through_the_neighbour_subsystem() {
    let Some(mut f) = fixture(0) else { return };
    f.maps
        .add_peer(
            "10.103.150.0/24".parse().unwrap(),
            &PeerValue::new(
                &host_config(0),
                [192, 168, 56, 6],
                [0; 6],
                vtep_mac([192, 168, 56, 6], VNI),
            ),
        )
        .unwrap();
    let input = from_container([10, 103, 150, 7], 1, &icmp_echo());
    let (ret, out) = f.run_tc(programs::FROM_CONTAINER, &input);
    assert_eq!(ret, TC_ACT_REDIRECT);
    assert_eq!(&out[30..34], &[192, 168, 56, 6]);
    assert_eq!(f.counter("encap_via_neigh"), 1);
}

#[test]
fn leaves_everything_else_to_the_kernel() {
    let Some(mut f) = fixture(0) else { return };
    let full = from_container(REMOTE, 6, &tcp_segment());
    let cases: Vec<Vec<u8>> = vec![
        from_container([10, 103, 100, 3], 6, &tcp_segment()), // same host
        from_container([8, 8, 8, 8], 17, &udp_datagram(5000, 53, b"q")), // not a peer
        arp(),
        eth(GW_MAC, C1_MAC, 0x86dd, &[0x60; 60]), // IPv6: not ours
        eth(GW_MAC, C1_MAC, 0x9000, &[]),         // bare Ethernet header
    ];
    for (i, input) in cases.iter().enumerate() {
        let (ret, out) = f.run_tc(programs::FROM_CONTAINER, input);
        assert_eq!(ret, TC_ACT_NEXT, "case {i}: on to the next program");
        assert_eq!(&out, input, "case {i}: untouched");
    }
    assert_eq!(f.counter("from_container_pass"), cases.len() as u64);
    assert_eq!(f.counter("encap_packets"), 0);
    // IPv4 frames cut inside the IPv4 header never reach tc: the stack (and
    // the kernel's test runner, with EINVAL) refuse them first. The shared
    // accessor meets such frames in the XDP tests below.
    for cut in [14, 14 + 19] {
        let prog: &mut SchedClassifier =
            loader::program(&mut f.ebpf, programs::FROM_CONTAINER).unwrap();
        let err = prog
            .test_run(TestRunOptions {
                data_in: Some(&full[..cut]),
                repeat: 1,
                ..Default::default()
            })
            .expect_err("the kernel refuses a truncated IPv4 skb");
        assert!(
            format!("{err:?}").contains("code: 22"),
            "EINVAL expected, got {err:?}"
        );
    }
}

// ---- from_underlay: decapsulation ---------------------------------------------

#[test]
fn decapsulates_and_delivers_to_the_endpoint() {
    let Some(mut f) = fixture(0) else { return };
    let inner = inner_frame(C1);
    let input = vxlan_frame(PEER, VNI, 0x08, &inner);
    let (ret, out) = f.run_tc(programs::FROM_UNDERLAY, &input);
    assert_eq!(ret, TC_ACT_REDIRECT);
    assert_eq!(out.len(), input.len() - 50);
    assert_eq!(&out[0..6], &C1_MAC, "to the container's MAC");
    assert_eq!(&out[6..12], &GW_MAC, "from its gateway");
    assert_eq!(&out[12..14], &[8, 0]);
    assert_eq!(&out[14..], &inner[14..], "inner IPv4 packet untouched");
    assert_eq!(f.counter("decap_packets"), 1);
    assert_eq!(f.counter("decap_bytes"), inner.len() as u64);
}

#[test]
fn unknown_local_address_is_decapsulated_for_the_kernel() {
    let Some(mut f) = fixture(0) else { return };
    let inner = inner_frame(C_UNKNOWN);
    let (ret, out) = f.run_tc(
        programs::FROM_UNDERLAY,
        &vxlan_frame(PEER, VNI, 0x08, &inner),
    );
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(&out[0..6], &UNDERLAY_MAC);
    assert_eq!(&out[14..], &inner[14..]);
    assert_eq!(f.counter("decap_to_kernel"), 1);
}

#[test]
fn hostile_vxlan_is_dropped_with_a_reason() {
    let Some(mut f) = fixture(0) else { return };
    let good = vxlan_frame(PEER, VNI, 0x08, &inner_frame(C1));
    let mut options = good.clone();
    options[14] = 0x46; // IHL 6: options
    let mut fragment = good.clone();
    fragment[20] = 0x20; // MF
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            vxlan_frame(STRANGER, VNI, 0x08, &inner_frame(C1)),
            "unknown_peer",
        ),
        (vxlan_frame(PEER, 43, 0x08, &inner_frame(C1)), "unknown_vni"),
        (
            vxlan_frame(PEER, VNI, 0x00, &inner_frame(C1)),
            "bad_vxlan_flags",
        ),
        (
            vxlan_frame(PEER, VNI, 0x08, &inner_frame([10, 9, 9, 9])),
            "not_local",
        ),
        (vxlan_frame(PEER, VNI, 0x08, &arp()), "inner_not_ipv4"),
        (options, "bad_outer_ip"),
        (fragment, "bad_outer_ip"),
        (good[..34].to_vec(), "truncated_udp"),
        (good[..41].to_vec(), "truncated_udp"),
        (good[..42].to_vec(), "truncated_vxlan"),
        (good[..49].to_vec(), "truncated_vxlan"),
        (good[..50].to_vec(), "truncated_inner"),
        (good[..64].to_vec(), "truncated_inner"),
        (good[..83].to_vec(), "truncated_inner"),
    ];
    for (i, (input, reason)) in cases.iter().enumerate() {
        let before = f.drops(reason);
        let (ret, _) = f.run_tc(programs::FROM_UNDERLAY, input);
        assert_eq!(ret, TC_ACT_SHOT, "case {i} ({reason})");
        assert_eq!(f.drops(reason), before + 1, "case {i} counted as {reason}");
    }
    assert_eq!(f.counter("decap_packets"), 0);
}

#[test]
fn underlay_traffic_that_is_not_ours_passes_untouched() {
    let Some(mut f) = fixture(0) else { return };
    let cases: Vec<Vec<u8>> = vec![
        arp(),
        eth(UNDERLAY_MAC, PEER_MAC, 0x86dd, &[0x60; 60]),
        eth(
            UNDERLAY_MAC,
            PEER_MAC,
            0x0800,
            &ipv4(PEER, LOCAL, 6, &tcp_segment()),
        ),
        eth(
            UNDERLAY_MAC,
            PEER_MAC,
            0x0800,
            &ipv4(PEER, LOCAL, 17, &udp_datagram(1, 53, b"dns")),
        ),
        eth(
            UNDERLAY_MAC,
            PEER_MAC,
            0x0800,
            &ipv4(PEER, LOCAL, 1, &icmp_echo()),
        ),
        // VXLAN port, but to another address: not for this host.
        eth(
            UNDERLAY_MAC,
            PEER_MAC,
            0x0800,
            &ipv4(
                PEER,
                [192, 168, 56, 7],
                17,
                &udp_datagram(1, PORT, &[8; 30]),
            ),
        ),
        vec![0u8; 14],
    ];
    for (i, input) in cases.iter().enumerate() {
        let (ret, out) = f.run_tc(programs::FROM_UNDERLAY, input);
        assert_eq!(ret, TC_ACT_NEXT, "case {i}: on to the next program");
        assert_eq!(&out, input, "case {i}");
    }
    assert_eq!(f.counter("from_underlay_pass"), cases.len() as u64);
}

#[test]
fn tc_checks_even_when_xdp_validates() {
    let Some(mut f) = fixture(CONFIG_F_XDP_VALIDATES) else {
        return;
    };
    // XDP can be detached under tc: tc repeats the peer and VNI checks.
    let (ret, _) = f.run_tc(
        programs::FROM_UNDERLAY,
        &vxlan_frame(STRANGER, VNI, 0x08, &inner_frame(C1)),
    );
    assert_eq!(ret, TC_ACT_SHOT);
    assert_eq!(f.drops("unknown_peer"), 1);
    let (ret, _) = f.run_tc(
        programs::FROM_UNDERLAY,
        &vxlan_frame(PEER, 43, 0x08, &inner_frame(C1)),
    );
    assert_eq!(ret, TC_ACT_SHOT);
    assert_eq!(f.drops("unknown_vni"), 1);
}

// ---- XDP: early verdicts ------------------------------------------------------

#[test]
fn xdp_passes_good_vxlan_and_other_traffic() {
    let Some(mut f) = fixture(0) else { return };
    let good = vxlan_frame(PEER, VNI, 0x08, &inner_frame(C1));
    let (ret, out) = f.run_xdp(&good);
    assert_eq!(ret, XDP_PASS);
    assert_eq!(out, good, "XDP does not modify");
    assert_eq!(f.counter("xdp_vxlan_pass"), 1);
    let others = [
        arp(),
        eth(
            UNDERLAY_MAC,
            PEER_MAC,
            0x0800,
            &ipv4(PEER, LOCAL, 6, &tcp_segment()),
        ),
        good[..14].to_vec(),      // cut after Ethernet
        good[..14 + 19].to_vec(), // cut inside the outer IPv4 header
    ];
    for (i, input) in others.iter().enumerate() {
        let (ret, out) = f.run_xdp(input);
        assert_eq!(ret, XDP_PASS, "case {i}");
        assert_eq!(&out, input, "case {i}");
    }
    assert_eq!(f.counter("xdp_other_pass"), others.len() as u64);
}

#[test]
fn xdp_drops_hostile_vxlan_with_a_reason() {
    let Some(mut f) = fixture(0) else { return };
    let good = vxlan_frame(PEER, VNI, 0x08, &inner_frame(C1));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            vxlan_frame(STRANGER, VNI, 0x08, &inner_frame(C1)),
            "unknown_peer",
        ),
        (vxlan_frame(PEER, 7, 0x08, &inner_frame(C1)), "unknown_vni"),
        (
            vxlan_frame(PEER, VNI, 0x80, &inner_frame(C1)),
            "bad_vxlan_flags",
        ),
        (good[..40].to_vec(), "truncated_udp"),
        (good[..45].to_vec(), "truncated_vxlan"),
        (good[..70].to_vec(), "truncated_inner"),
    ];
    for (i, (input, reason)) in cases.iter().enumerate() {
        let before = f.drops(reason);
        let (ret, _) = f.run_xdp(input);
        assert_eq!(ret, XDP_DROP, "case {i} ({reason})");
        assert_eq!(f.drops(reason), before + 1, "case {i} counted as {reason}");
    }
}
