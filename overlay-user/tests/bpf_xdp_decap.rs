//! BPF_PROG_TEST_RUN tests of `xdp = "decap"`: the XDP program on the
//! underlay decapsulates good VXLAN itself (the endpoint's ifindex in the
//! metadata for tc, the inner frame addressed as tc's decapsulation does),
//! hands local addresses without an endpoint to the kernel, and drops
//! truncated and hostile frames under the same reasons as without the
//! flag; and `deliver = "veth"`, which redirects the same bytes after the
//! same checks. Needs root (fails loudly in CI without).

use aya::maps::{MapData, PerCpuArray};
use overlay_common::observe::PeerStats;
use overlay_common::{
    programs, XdpDecapMeta, CONFIG_F_DELIVER_VETH, CONFIG_F_XDP_DECAP, CONFIG_F_XDP_VALIDATES,
    XDP_DECAP_MAGIC,
};

#[path = "common/packets.rs"]
mod packets;
use packets::*;
#[path = "common/fixture.rs"]
mod fixture;
use fixture::*;

const DECAP: u32 = CONFIG_F_XDP_VALIDATES | CONFIG_F_XDP_DECAP;

fn meta(out: &[u8]) -> XdpDecapMeta {
    XdpDecapMeta {
        magic: u32::from_ne_bytes(out[0..4].try_into().unwrap()),
        ifindex: u32::from_ne_bytes(out[4..8].try_into().unwrap()),
    }
}

fn rx(stats: &PerCpuArray<MapData, PeerStats>) -> (u64, u64) {
    let t = peer_total(stats);
    (t.rx_packets, t.rx_bytes)
}

#[test]
fn decapsulates_in_xdp_with_the_endpoint_in_the_metadata() {
    let Some(mut f) = fixture(DECAP) else { return };
    let stats = peer_stats(&mut f.ebpf);
    let inner = inner_frame(C1);
    let input = vxlan_frame(PEER, VNI, 0x08, &inner);
    let (ret, out) = f.run_xdp(&input);
    assert_eq!(ret, XDP_PASS, "passed on to GRO and tc");
    assert_eq!(out.len(), 8 + inner.len(), "metadata, then the inner frame");
    assert_eq!(
        meta(&out),
        XdpDecapMeta {
            magic: XDP_DECAP_MAGIC,
            ifindex: 77
        },
        "C1's host-side veth for tc"
    );
    let frame = &out[8..];
    assert_eq!(&frame[0..6], &C1_MAC, "to the container's MAC");
    assert_eq!(&frame[6..12], &GW_MAC, "from its gateway");
    assert_eq!(&frame[12..], &inner[12..], "inner IPv4 packet untouched");
    assert_eq!(f.counter("decap_packets"), 1);
    assert_eq!(f.counter("decap_bytes"), inner.len() as u64);
    assert_eq!(f.counter("xdp_vxlan_pass"), 0);
    assert_eq!(rx(&stats), (1, inner.len() as u64), "per-peer rx counted");
}

#[test]
fn the_same_bytes_as_tc_decapsulation() {
    let Some(mut f) = fixture(DECAP) else { return };
    for dst in [C1, C_UNKNOWN] {
        let input = vxlan_frame(PEER, VNI, 0x08, &inner_frame(dst));
        let (_, by_tc) = f.run_tc(programs::FROM_UNDERLAY, &input);
        let (ret, by_xdp) = f.run_xdp(&input);
        assert_eq!(ret, XDP_PASS);
        let skip = by_xdp.len() - by_tc.len();
        assert_eq!(&by_xdp[skip..], &by_tc[..], "to {dst:?}");
    }
}

#[test]
fn a_local_address_without_endpoint_goes_to_the_kernel_without_metadata() {
    let Some(mut f) = fixture(DECAP) else { return };
    let inner = inner_frame(C_UNKNOWN);
    let (ret, out) = f.run_xdp(&vxlan_frame(PEER, VNI, 0x08, &inner));
    assert_eq!(ret, XDP_PASS);
    assert_eq!(
        out.len(),
        inner.len(),
        "no metadata: tc leaves it to the kernel"
    );
    assert_eq!(&out[0..6], &UNDERLAY_MAC, "addressed to this host");
    assert_eq!(&out[12..], &inner[12..]);
    assert_eq!(f.counter("decap_to_kernel"), 1);
    // tc sees an ordinary frame (not to the VXLAN port) and passes it.
    assert_eq!(f.run_tc(programs::FROM_UNDERLAY, &out).0, TC_ACT_NEXT);
}

#[test]
fn hostile_and_truncated_vxlan_is_dropped_under_the_same_reasons() {
    let Some(mut f) = fixture(DECAP) else { return };
    let good = vxlan_frame(PEER, VNI, 0x08, &inner_frame(C1));
    let mut options = good.clone();
    options[14] = 0x46;
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
        (options, "bad_outer_ip"),
        (
            vxlan_frame(PEER, VNI, 0x08, &inner_frame([10, 9, 9, 9])),
            "not_local",
        ),
        (
            vxlan_frame(PEER, VNI, 0x08, &inner_frame(GW)),
            "to_host_address",
        ),
        (good[..40].to_vec(), "truncated_udp"),
        (good[..45].to_vec(), "truncated_vxlan"),
        (good[..49].to_vec(), "truncated_vxlan"),
        (good[..70].to_vec(), "truncated_inner"),
        (good[..83].to_vec(), "truncated_inner"),
    ];
    for (i, (input, reason)) in cases.iter().enumerate() {
        let before = f.drops(reason);
        let (ret, _) = f.run_xdp(input);
        assert_eq!(ret, XDP_DROP, "case {i} ({reason})");
        assert_eq!(f.drops(reason), before + 1, "case {i} counted as {reason}");
    }
    assert_eq!(f.counter("decap_packets"), 0);
    // Cut before the UDP header: not ours to judge, passed untouched.
    for cut in [14, 33] {
        let (ret, out) = f.run_xdp(&good[..cut]);
        assert_eq!((ret, out.as_slice()), (XDP_PASS, &good[..cut]));
    }
}

#[test]
fn tc_without_metadata_still_checks_everything() {
    // XDP may be detached: a frame without our metadata gets tc's full path.
    let Some(mut f) = fixture(DECAP) else { return };
    let (ret, _) = f.run_tc(
        programs::FROM_UNDERLAY,
        &vxlan_frame(STRANGER, VNI, 0x08, &inner_frame(C1)),
    );
    assert_eq!(ret, TC_ACT_SHOT);
    assert_eq!(f.drops("unknown_peer"), 1);
    let (ret, out) = f.run_tc(
        programs::FROM_UNDERLAY,
        &vxlan_frame(PEER, VNI, 0x08, &inner_frame(C1)),
    );
    assert_eq!(ret, TC_ACT_REDIRECT);
    assert_eq!(&out[0..6], &C1_MAC);
}

#[test]
fn deliver_veth_redirects_the_same_bytes_and_drops_the_same_frames() {
    // `deliver = "veth"`: bpf_redirect to the host-side veth instead of
    // bpf_redirect_peer; verdict, bytes and every check are unchanged.
    let Some(mut peer) = fixture(0) else { return };
    let Some(mut veth) = fixture(CONFIG_F_DELIVER_VETH) else {
        return;
    };
    let good = vxlan_frame(PEER, VNI, 0x08, &inner_frame(C1));
    let (r1, o1) = peer.run_tc(programs::FROM_UNDERLAY, &good);
    let (r2, o2) = veth.run_tc(programs::FROM_UNDERLAY, &good);
    assert_eq!((r1, r2), (TC_ACT_REDIRECT, TC_ACT_REDIRECT));
    assert_eq!(o1, o2, "the same decapsulated frame");
    assert_eq!(veth.counter("decap_packets"), 1);
    for (input, reason) in [
        (
            vxlan_frame(STRANGER, VNI, 0x08, &inner_frame(C1)),
            "unknown_peer",
        ),
        (
            vxlan_frame(PEER, VNI, 0x08, &inner_frame([10, 9, 9, 9])),
            "not_local",
        ),
        (good[..70].to_vec(), "truncated_inner"),
    ] {
        let (ret, _) = veth.run_tc(programs::FROM_UNDERLAY, &input);
        assert_eq!(ret, TC_ACT_SHOT, "{reason}");
        assert_eq!(veth.drops(reason), 1, "{reason}");
    }
    let (ret, _) = veth.run_tc(
        programs::FROM_UNDERLAY,
        &vxlan_frame(PEER, VNI, 0x08, &inner_frame(C_UNKNOWN)),
    );
    assert_eq!(
        ret, TC_ACT_OK,
        "no endpoint: the kernel routes it, as before"
    );
}
