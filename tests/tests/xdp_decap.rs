//! `xdp = "decap"` and `deliver = "veth"` on a NIC-like underlay (segmentation offloads off on
//! the senders, so receivers get MTU-sized frames, GRO on as on a NIC):
//! ping and a checksummed transfer pass, and the container receives
//! GRO-merged frames larger than the MTU, which tc's decapsulation
//! (`bpf_redirect_peer` after GRO ran on the outer frames) never delivers,
//! not even with `rx-udp-gro-forwarding` on the underlay.

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

/// Returns the frames longer than 1600 bytes the receiving container saw
/// during a 64 MiB transfer, after checking ping, the transfer's bytes and
/// that the outer frames were not merged on the underlay (our outer UDP
/// checksum is 0, and the kernel's UDP GRO only merges datagrams that have
/// one, `rx-udp-gro-forwarding` or not).
fn nic_like_transfer(setting: &str, udp_gro_forwarding: bool, container_gro: bool) -> Vec<u32> {
    let (xdp, extra) = match setting {
        "deliver=veth" => ("off", "deliver = \"veth\"\n"),
        xdp => (xdp, ""),
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
                "gro",
                "on",
            ],
        )
        .unwrap();
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
    assert!(
        after >= before + 40_000,
        "{setting}: every MTU-sized frame decapsulated by BPF: {before} -> {after}"
    );
    let outer = frame_lengths(&wire.finish().unwrap());
    assert!(outer.is_empty(), "{setting}: merged outer frames {outer:?}");
    frame_lengths(&big.finish().unwrap())
}

#[test]
fn xdp_decap_on_a_nic_like_underlay_passes_traffic_and_gets_gro() {
    if !need_root_or_skip() {
        return;
    }
    let merged = nic_like_transfer("decap", false, false);
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
    let tc = nic_like_transfer("off", false, false);
    assert!(
        tc.is_empty(),
        "tc's decapsulation delivers MTU-sized frames: {tc:?}"
    );
    let fwd = nic_like_transfer("off", true, false);
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
    let merged = nic_like_transfer("deliver=veth", false, true);
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
    let plain = nic_like_transfer("deliver=veth", false, false);
    assert!(plain.is_empty(), "no GRO without it: {plain:?}");
}
