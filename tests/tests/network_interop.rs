//! Issue 12, point 5: a BPF host and a kernel host on the same overlay
//! network reach each other. Host 1 runs the BPF dataplane, host 2 the
//! kernel one (bridge `ovb4096`, VXLAN device `ovx4096`), each driven per
//! network by `netdp`; one container on each. Both ways: ping and 64 MiB
//! with equal SHA-256, and on the wire VXLAN with the network's VNI, the
//! cluster's port and the containers' real MACs inside, between the hosts'
//! underlay addresses. A container of another network on the kernel host
//! does not reach the BPF host's container.

use std::net::Ipv4Addr;

use overlay_lab::{decode_vxlan, exec_ok, need_root_or_skip, ping, transfer, Lab, LabSpec};
use overlay_tests::netdp::{net_container, web_pair, WebPair, WEB};

const DB: u32 = 4097;

fn interop(port: u16) {
    if !need_root_or_skip() {
        return;
    }
    let mut lab = Lab::new(LabSpec {
        hosts: 2,
        containers_per_host: 0,
        ..LabSpec::default()
    })
    .unwrap();
    let WebPair {
        h1: bpf,
        h2: mut kern,
        a,
        b,
    } = web_pair(
        &mut lab,
        env!("CARGO_BIN_EXE_netdp"),
        ["ebpf", "kernel"],
        port,
    )
    .unwrap();
    assert!(
        bpf.proc.log().contains("started Ebpf"),
        "{}",
        bpf.proc.log()
    );
    assert!(
        kern.proc.log().contains("started Kernel"),
        "{}",
        kern.proc.log()
    );
    let other = net_container(&mut lab, 2, "o", Ipv4Addr::new(10, 104, 2, 2)).unwrap();
    kern.add_network("db", DB, "10.104.2.0/24", Ipv4Addr::new(10, 104, 2, 1))
        .unwrap();
    kern.add_local(&lab.host(2).ns, DB, other.ip, &other.mac, &other.veth)
        .unwrap();
    let (u1, u2) = (lab.host(1).underlay_ip, lab.host(2).underlay_ip);
    assert!(
        exec_ok(&lab.host(2).ns, &["ip", "-d", "link", "show", "ovx4096"])
            .unwrap()
            .contains(&format!("dstport {port}"))
    );

    let wire = lab.capture(lab.underlay_ns(), "br0", "udp", None).unwrap();
    let r = ping(&a.ns, b.ip, 3, None, false, 3).unwrap();
    assert_eq!(r.received, 3, "BPF host -> kernel host: {r:?}");
    let r = ping(&b.ns, a.ip, 3, None, false, 3).unwrap();
    assert_eq!(r.received, 3, "kernel host -> BPF host: {r:?}");
    let pcap = wire.finish().unwrap();
    let mac_of = |ip: Ipv4Addr| if ip == a.ip { &a.mac } else { &b.mac };
    let host_of = |ip: Ipv4Addr| if ip == a.ip { u1 } else { u2 };
    let mut directions = std::collections::BTreeSet::new();
    for p in decode_vxlan(&pcap, port).unwrap() {
        assert_eq!(p.vni, Some(WEB), "{p}");
        assert_eq!(p.udp_dst_port, Some(port), "{p}");
        let (src, dst) = (p.inner_src.unwrap(), p.inner_dst.unwrap());
        assert_eq!(
            p.inner_eth_src.as_deref(),
            Some(mac_of(src).as_str()),
            "{p}"
        );
        assert_eq!(
            p.inner_eth_dst.as_deref(),
            Some(mac_of(dst).as_str()),
            "{p}"
        );
        assert_eq!(
            (p.outer_src, p.outer_dst),
            (host_of(src), host_of(dst)),
            "{p}"
        );
        directions.insert((p.outer_src, p.outer_dst));
    }
    assert_eq!(directions.len(), 2, "VXLAN seen only {directions:?}");

    for (from, to) in [(&a, &b), (&b, &a)] {
        let t = transfer(&from.ns, &to.ns, to.ip, 64 << 20).unwrap();
        assert_eq!(
            t.bytes_received,
            64 << 20,
            "host {} -> host {}: {t:?}",
            from.host,
            to.host
        );
        assert_eq!(
            t.sent_sha256, t.received_sha256,
            "host {} -> host {}: 64 MiB arrived changed",
            from.host, to.host
        );
    }
    // Another network's container on the kernel host does not get through.
    let r = ping(&other.ns, a.ip, 2, None, false, 2).unwrap();
    assert_eq!(r.received, 0, "db reached web across hosts: {r:?}");

    for dp in [bpf, kern] {
        dp.shutdown(true).unwrap();
    }
    assert!(exec_ok(&lab.host(2).ns, &["ip", "-o", "link"])
        .map(|l| !l.contains("ovx4096"))
        .unwrap());
}

#[test]
fn bpf_host_and_kernel_host_on_one_network() {
    interop(4789);
}

#[test]
fn bpf_host_and_kernel_host_on_one_network_port_8472() {
    interop(8472);
}
