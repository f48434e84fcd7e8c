//! Issue 3's interop acceptance: one lab of three hosts. Host 1 runs overlayd
//! on eBPF, host 2 overlayd on the kernel path, host 3 no overlayd at all,
//! only a Linux VXLAN device, neighbour, FDB entries and routes set up with
//! `ip` and `bridge` as flannel would. Every pair of containers pings both
//! ways and moves 64 MiB each way with matching SHA-256, and the wire shows
//! VXLAN with our VNI and port whose inner destination MAC is the receiving
//! VTEP's.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use overlay_lab::{
    decode_vxlan, exec_ok, need_root_or_skip, ping, transfer, AgentOptions, Binaries, Host, Lab,
    LabSpec, Overlayd,
};

/// The network address of a lab host's subnet: flannel's on-link gateway.
fn dot0(h: &Host) -> String {
    h.subnet_addr.to_string()
}

/// Sets host `h` up as flannel's VXLAN backend would, towards `peers`
/// (host, VTEP MAC), and returns the device's MAC (chosen by the kernel).
fn flannel_host(lab: &Lab, h: usize, vni: u32, port: u16, peers: &[(usize, String)]) -> String {
    let host = lab.host(h);
    let ns = &host.ns;
    let dev = format!("flannel.{vni}");
    let run = |args: &[&str]| {
        exec_ok(ns, args).unwrap_or_else(|e| panic!("host {h}: {}: {e}", args.join(" ")))
    };
    run(&[
        "ip",
        "link",
        "add",
        &dev,
        "type",
        "vxlan",
        "id",
        &vni.to_string(),
        "dev",
        &host.underlay_if,
        "local",
        &host.underlay_ip.to_string(),
        "dstport",
        &port.to_string(),
        "nolearning",
    ]);
    run(&[
        "ip",
        "link",
        "set",
        &dev,
        "mtu",
        &(host.underlay_mtu - 50).to_string(),
        "up",
    ]);
    for (p, mac) in peers {
        let peer = lab.host(*p);
        let gw = dot0(peer);
        run(&[
            "ip",
            "neigh",
            "replace",
            &gw,
            "lladdr",
            mac,
            "dev",
            &dev,
            "nud",
            "permanent",
        ]);
        run(&[
            "bridge",
            "fdb",
            "append",
            mac,
            "dev",
            &dev,
            "dst",
            &peer.underlay_ip.to_string(),
            "self",
            "permanent",
        ]);
        run(&[
            "ip",
            "route",
            "replace",
            &peer.subnet,
            "via",
            &gw,
            "dev",
            &dev,
            "onlink",
        ]);
    }
    let json = run(&["ip", "-j", "link", "show", "dev", &dev]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v[0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address in {json}"))
        .to_string()
}

fn interop(vni: u32, port: u16) {
    if !need_root_or_skip() {
        return;
    }
    let lab = Lab::new(LabSpec {
        hosts: 3,
        containers_per_host: 1,
        ..LabSpec::default()
    })
    .unwrap();
    let bins = Binaries::locate().unwrap();
    let opts = |mode: &str| AgentOptions {
        dataplane: Some(mode.into()),
        vni,
        port,
        ..AgentOptions::default()
    };
    let a = Overlayd::start(&lab, 1, &bins, &opts("ebpf")).unwrap();
    let b = Overlayd::start(&lab, 2, &bins, &opts("kernel")).unwrap();
    let status_a = a.status().unwrap();
    let status_b = b.status().unwrap();
    assert_eq!(status_a["mode"], "ebpf", "{status_a}");
    assert_eq!(status_b["mode"], "kernel", "{status_b}");
    let mac_a = status_a["vtep_mac"].as_str().unwrap().to_string();
    let mac_b = status_b["vtep_mac"].as_str().unwrap().to_string();
    // The documented rule: 02:VV:A:B:C:D.
    let rule = |ip: Ipv4Addr| {
        let o = ip.octets();
        format!(
            "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            vni & 0xff,
            o[0],
            o[1],
            o[2],
            o[3]
        )
    };
    assert_eq!(mac_a, rule(lab.host(1).underlay_ip));
    assert_eq!(mac_b, rule(lab.host(2).underlay_ip));
    // Host 2's kernel VXLAN device carries that MAC, or the kernel would drop
    // what host 1's BPF sends it as not for this host.
    let dev_b: serde_json::Value = serde_json::from_str(
        &exec_ok(
            &lab.host(2).ns,
            &["ip", "-j", "link", "show", "dev", &format!("ovl.{vni}")],
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(dev_b[0]["address"], mac_b.as_str(), "{dev_b}");

    let mac_c = flannel_host(&lab, 3, vni, port, &[(1, mac_a), (2, mac_b.clone())]);
    assert_ne!(mac_c, rule(lab.host(3).underlay_ip));

    let (h1, h2, h3) = (lab.host(1), lab.host(2), lab.host(3));
    a.ctl_ok(&["peer", "add", &h2.subnet, &h2.underlay_ip.to_string()])
        .unwrap();
    b.ctl_ok(&["peer", "add", &h1.subnet, &h1.underlay_ip.to_string()])
        .unwrap();
    for agent in [&a, &b] {
        agent
            .ctl_ok(&[
                "peer",
                "add",
                &h3.subnet,
                &h3.underlay_ip.to_string(),
                "--vtep-mac",
                &mac_c,
            ])
            .unwrap();
    }

    let wire = lab.capture(lab.underlay_ns(), "br0", "udp", None).unwrap();
    let pairs = [(1, 2), (1, 3), (2, 3)];
    for (x, y) in pairs {
        let (cx, cy) = (lab.container(x, 1), lab.container(y, 1));
        let r = ping(&cx.ns, cy.ip, 3, None, false, 3).unwrap();
        assert_eq!(r.received, 3, "ping host {x} -> host {y}: {r:?}");
        let r = ping(&cy.ns, cx.ip, 3, None, false, 3).unwrap();
        assert_eq!(r.received, 3, "ping host {y} -> host {x}: {r:?}");
    }
    let pcap = wire.finish().unwrap();

    // Every direction between the three VTEPs is on the wire as VXLAN with
    // our VNI and port, and carries the receiver's MAC as inner destination.
    let vtep_of = |ip: Ipv4Addr| -> Option<String> {
        if ip == h2.underlay_ip {
            Some(mac_b.clone())
        } else if ip == h3.underlay_ip {
            Some(mac_c.clone())
        } else {
            None // a BPF receiver accepts any inner destination MAC
        }
    };
    let mut seen = BTreeSet::new();
    for p in decode_vxlan(&pcap, port).unwrap() {
        if p.udp_dst_port != Some(port) {
            continue;
        }
        assert_eq!(p.vni, Some(vni), "{p}");
        if let Some(mac) = vtep_of(p.outer_dst) {
            assert_eq!(p.inner_eth_dst.as_deref(), Some(mac.as_str()), "{p}");
        }
        seen.insert((p.outer_src, p.outer_dst));
    }
    for (x, y) in pairs {
        let (ux, uy) = (lab.host(x).underlay_ip, lab.host(y).underlay_ip);
        assert!(seen.contains(&(ux, uy)), "no VXLAN {ux} -> {uy}: {seen:?}");
        assert!(seen.contains(&(uy, ux)), "no VXLAN {uy} -> {ux}: {seen:?}");
    }

    for (x, y) in pairs {
        for (from, to) in [(x, y), (y, x)] {
            let (cf, ct) = (lab.container(from, 1), lab.container(to, 1));
            let t = transfer(&cf.ns, &ct.ns, ct.ip, 64 << 20).unwrap();
            assert_eq!(
                t.bytes_received,
                64 << 20,
                "host {from} -> host {to}: {t:?}"
            );
            assert_eq!(
                t.sent_sha256, t.received_sha256,
                "host {from} -> host {to}: 64 MiB arrived changed"
            );
        }
    }
}

#[test]
fn ebpf_kernel_and_flannel_hosts() {
    interop(42, 4789);
}

#[test]
fn ebpf_kernel_and_flannel_hosts_port_8472_vni_1() {
    interop(1, 8472);
}
