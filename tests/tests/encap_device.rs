//! `encap = "device"`: the BPF dataplane hands frames to a collect-metadata
//! VXLAN device instead of writing the outer headers itself. Same wire
//! format, same delivery.

use overlay_lab::{
    decode_vxlan, exec_ok, need_root_or_skip, ping, transfer, AgentOptions, LabSpec,
};
use overlay_tests::cluster;

#[test]
fn collect_metadata_device_carries_traffic() {
    if !need_root_or_skip() {
        return;
    }
    let opts = AgentOptions {
        extra: "encap = \"device\"\n".into(),
        vni: 7,
        port: 8472,
        ..Default::default()
    };
    let c = cluster(LabSpec::default(), "ebpf", opts).unwrap();
    let (a, b) = (c.lab.container(1, 1).clone(), c.lab.container(2, 1).clone());
    let wire = c
        .lab
        .capture(
            c.lab.underlay_ns(),
            &c.lab.host(1).underlay_peer,
            "udp",
            None,
        )
        .unwrap();
    assert_eq!(ping(&a.ns, b.ip, 3, None, false, 3).unwrap().received, 3);
    assert_eq!(ping(&b.ns, a.ip, 3, None, false, 3).unwrap().received, 3);
    assert_eq!(
        ping(&a.ns, b.ip, 2, Some(1422), true, 3).unwrap().received,
        2,
        "DF 1422"
    );
    let t = transfer(&a.ns, &b.ns, b.ip, 64 << 20).unwrap();
    assert_eq!(t.sent_sha256, t.received_sha256);
    let packets = decode_vxlan(&wire.finish().unwrap(), 8472).unwrap();
    let vx: Vec<_> = packets.iter().filter(|p| p.vni.is_some()).collect();
    assert!(vx.len() > 10, "{} VXLAN packets", vx.len());
    assert!(vx
        .iter()
        .all(|p| p.vni == Some(7) && p.udp_dst_port == Some(8472)));
    for g in &c.agents {
        assert!(g.counter("encap_packets").unwrap() >= 5);
        assert!(g.counter("decap_packets").unwrap() >= 5);
    }
    let links = exec_ok(&c.lab.host(1).ns, &["ip", "-d", "link", "show", "ovl.md"]).unwrap();
    assert!(
        links.contains("external"),
        "collect-metadata device: {links}"
    );
}
