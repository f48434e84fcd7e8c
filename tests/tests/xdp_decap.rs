//! `xdp = "decap"`, `deliver = "veth"` and `tunnel_gro` on a NIC-like
//! underlay (segmentation offloads off on the senders, so receivers get
//! MTU-sized frames, GRO on as on a NIC): ping and a checksummed transfer
//! pass, and the container receives GRO-merged frames larger than the MTU,
//! which tc's decapsulation alone (`bpf_redirect_peer` after GRO ran on the
//! outer frames) never delivers, not even with `rx-udp-gro-forwarding` on
//! the underlay: our outer UDP checksum is 0. With `tunnel_gro` the VXLAN
//! socket of `ovl.md` lets the underlay's GRO merge the VXLAN frames
//! themselves (UDP tunnel GRO), and tc decapsulates the merged frame once.

use overlay_lab::{exec_ok, need_root_or_skip, ping, transfer, AgentOptions, LabSpec};
use overlay_tests::cluster;

/// Frames captured in `pcap` (a classic pcap file), by their length on the wire.
fn frame_lengths(pcap: &std::path::Path) -> Vec<u32> {
    let b = std::fs::read(pcap).unwrap();
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= b.len() {
        let incl = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
        out.push(u32::from_le_bytes(b[at + 12..at + 16].try_into().unwrap()));
        at += 16 + incl;
    }
    out
}

/// What the receiving host saw during a NIC-like transfer.
struct Seen {
    /// Lengths of the VXLAN frames over 1600 bytes on host 2's underlay
    /// (merged by the underlay's GRO before tc).
    outer: Vec<u32>,
    /// Lengths of the TCP frames over 1600 bytes the container received.
    merged: Vec<u32>,
    /// How many packets host 2's programs decapsulated during the transfers.
    decapsulated: u64,
}

/// Runs a 64 MiB transfer (and 16 MiB back) on a NIC-like underlay with
/// `setting`, after checking ping both ways and a DF ping at the path MTU;
/// checks the transfers' bytes and returns what host 2 saw.
fn nic_like_transfer(setting: &str, udp_gro_forwarding: bool, container_gro: bool) -> Seen {
    // Each mechanism alone: tunnel_gro (on by default) only where asked.
    let (xdp, extra) = match setting {
        "deliver=veth" => ("off", "deliver = \"veth\"\ntunnel_gro = false\n"),
        "tunnel_gro" => ("off", "tunnel_gro = true\n"),
        xdp => (xdp, "tunnel_gro = false\n"),
    };
    let c = cluster(
        LabSpec::default(),
        "ebpf",
        AgentOptions {
            xdp: Some(xdp.into()),
            extra: extra.into(),
            ..Default::default()
        },
    )
    .unwrap();
    for h in 1..=2 {
        exec_ok(
            &c.lab.host(h).ns,
            &[
                "ethtool",
                "-K",
                "eth1",
                "tso",
                "off",
                "gso",
                "off",
                "tx-udp_tnl-segmentation",
                "off",
            ],
        )
        .unwrap();
        c.lab.underlay_gro_like_a_nic(h).unwrap();
    }
    if udp_gro_forwarding {
        for h in 1..=2 {
            let ns = &c.lab.host(h).ns;
            exec_ok(
                ns,
                &["ethtool", "-K", "eth1", "rx-udp-gro-forwarding", "on"],
            )
            .unwrap();
        }
    }
    let (a, b) = (c.lab.container(1, 1).clone(), c.lab.container(2, 1).clone());
    if container_gro {
        // veth only uses its peer's NAPI (and GRO) for skbs sent by a
        // device without TSO (veth_skb_is_eligible_for_gro).
        for x in [&a, &b] {
            exec_ok(&x.ns, &["ethtool", "-K", &x.iface, "gro", "on"]).unwrap();
            let host = &c.lab.host(x.host).ns;
            exec_ok(host, &["ethtool", "-K", &x.host_veth, "tso", "off"]).unwrap();
        }
    }
    let ab = ping(&a.ns, b.ip, 5, None, false, 3).unwrap();
    assert_eq!(ab.received, 5, "{setting}: ping host1 -> host2: {ab:?}");
    let ba = ping(&b.ns, a.ip, 5, None, false, 3).unwrap();
    assert_eq!(ba.received, 5, "{setting}: ping host2 -> host1: {ba:?}");
    let df = ping(&a.ns, b.ip, 3, Some(1422), true, 3).unwrap();
    assert_eq!(
        (df.received, df.errors),
        (3, 0),
        "{setting}: DF 1422: {df:?}"
    );
    let big = c
        .lab
        .capture(
            &b.ns,
            &b.iface,
            &format!("tcp and dst host {} and greater 1600", b.ip),
            Some(200),
        )
        .unwrap();
    let wire = c
        .lab
        .capture(&c.lab.host(2).ns, "eth1", "udp and greater 1600", Some(200))
        .unwrap();
    let before = c.agent(2).counter("decap_packets").unwrap();
    let t = transfer(&a.ns, &b.ns, b.ip, 64 << 20).unwrap();
    assert!(t.is_intact(), "{setting}: 64 MiB arrived intact: {t:?}");
    let t = transfer(&b.ns, &a.ns, a.ip, 16 << 20).unwrap();
    assert!(t.is_intact(), "{setting}: 16 MiB back intact: {t:?}");
    let after = c.agent(2).counter("decap_packets").unwrap();
    if setting == "tunnel_gro" {
        // ovl.md on the port is ours: no conflict, nothing unhealthy.
        let doctor = c.agent(2).ctl_ok(&["doctor"]).unwrap();
        assert!(
            doctor.contains("UDP port 4789: no other VXLAN device or socket uses it"),
            "{doctor}"
        );
        let status = c.agent(2).ctl_ok(&["status"]).unwrap();
        assert!(status.contains("tunnel gro   on (ovl.md)\n"), "{status}");
    }
    Seen {
        outer: frame_lengths(&wire.finish().unwrap()),
        merged: frame_lengths(&big.finish().unwrap()),
        decapsulated: after - before,
    }
}

/// Asserts that host 2's BPF decapsulated every MTU-sized frame of the
/// 80 MiB one by one (no outer frame merged) and returns the container's
/// merged frames.
fn one_by_one(setting: &str, seen: Seen) -> Vec<u32> {
    assert!(
        seen.outer.is_empty(),
        "{setting}: merged outer frames {:?}",
        seen.outer
    );
    assert!(
        seen.decapsulated >= 40_000,
        "{setting}: every MTU-sized frame decapsulated by BPF: {}",
        seen.decapsulated
    );
    seen.merged
}

#[test]
fn xdp_decap_on_a_nic_like_underlay_passes_traffic_and_gets_gro() {
    if !need_root_or_skip() {
        return;
    }
    let merged = one_by_one("decap", nic_like_transfer("decap", false, false));
    assert!(
        !merged.is_empty() && merged.iter().all(|&n| n > 1600),
        "GRO-merged frames reach the container: {} seen",
        merged.len()
    );
    eprintln!(
        "xdp = decap: {} frames over 1600 bytes, largest {}",
        merged.len(),
        merged.iter().max().unwrap()
    );
    let tc = one_by_one("off", nic_like_transfer("off", false, false));
    assert!(
        tc.is_empty(),
        "tc's decapsulation delivers MTU-sized frames: {tc:?}"
    );
    let fwd = one_by_one("off", nic_like_transfer("off", true, false));
    assert!(
        fwd.is_empty(),
        "rx-udp-gro-forwarding merges none of our VXLAN: {fwd:?}"
    );
}

#[test]
fn deliver_veth_on_a_nic_like_underlay_passes_traffic_and_gets_gro_in_the_container() {
    if !need_root_or_skip() {
        return;
    }
    let merged = one_by_one(
        "deliver=veth",
        nic_like_transfer("deliver=veth", false, true),
    );
    assert!(
        !merged.is_empty() && merged.iter().all(|&n| n > 1600),
        "GRO-merged frames reach the container: {} seen",
        merged.len()
    );
    eprintln!(
        "deliver = veth: {} frames over 1600 bytes, largest {}",
        merged.len(),
        merged.iter().max().unwrap()
    );
    // Without GRO in the container: the backlog queue, intact, no merging.
    let plain = one_by_one(
        "deliver=veth",
        nic_like_transfer("deliver=veth", false, false),
    );
    assert!(plain.is_empty(), "no GRO without it: {plain:?}");
}

#[test]
fn tunnel_gro_merges_vxlan_on_the_underlay_and_tc_decapsulates_the_merged_frames() {
    if !need_root_or_skip() {
        return;
    }
    let seen = nic_like_transfer("tunnel_gro", false, false);
    assert!(
        !seen.outer.is_empty() && seen.outer.iter().all(|&n| n > 1600),
        "the underlay's GRO merged VXLAN frames: {} seen",
        seen.outer.len()
    );
    assert!(
        !seen.merged.is_empty() && seen.merged.iter().all(|&n| n > 1600),
        "the container receives merged frames: {} seen",
        seen.merged.len()
    );
    // 80 MiB are over 57,000 MTU-sized frames; merged, a few thousand.
    assert!(
        seen.decapsulated > 0 && seen.decapsulated < 20_000,
        "tc decapsulated merged frames, not each MTU-sized one: {}",
        seen.decapsulated
    );
    eprintln!(
        "tunnel_gro: {} packets decapsulated; outer frames up to {}, container frames up to {}",
        seen.decapsulated,
        seen.outer.iter().max().unwrap(),
        seen.merged.iter().max().unwrap()
    );
}
