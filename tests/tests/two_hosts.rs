//! Issue 2's acceptance: two simulated hosts, containers talking across them
//! through the overlay, in every dataplane mode.

use std::time::{Duration, Instant};

use overlay_lab::{
    decode_vxlan, exec_ok, need_root_or_skip, ping, transfer, AgentOptions, LabSpec,
};
use overlay_tests::cluster;

/// Cross-host ping both ways, a 256 MiB transfer with equal SHA-256, a DF
/// ping of 1422 bytes, a capture on the wire that decodes as VXLAN with our
/// VNI and port and holds no bare container packet, and counters that moved.
/// eBPF: no kernel route to the remote subnet. Kernel: the route to it goes
/// through the VXLAN device.
fn traffic_crosses_hosts(mode: &str, vni: u32, port: u16) {
    if !need_root_or_skip() {
        return;
    }
    let c = cluster(
        LabSpec::default(),
        mode,
        AgentOptions {
            vni,
            port,
            ..Default::default()
        },
    )
    .unwrap();
    let (a, b) = (c.lab.container(1, 1).clone(), c.lab.container(2, 1).clone());
    let ul = c.lab.underlay_ns().to_string();
    let wire = c
        .lab
        .capture(&ul, &c.lab.host(1).underlay_peer, "", None)
        .unwrap();

    for g in &c.agents {
        let st = g.status().unwrap();
        assert_eq!(st["mode"], mode, "host {}: {st}", g.host);
        assert_eq!(
            st["mode_reason"],
            format!("dataplane = {mode}"),
            "host {}: {st}",
            g.host
        );
    }
    // Packets out (encapsulated) and in (decapsulated), by mode.
    let (tx, rx) = match mode {
        "ebpf" => ("encap_packets", "decap_packets"),
        _ => ("vxlan_tx_packets", "vxlan_rx_packets"),
    };
    let before: Vec<(u64, u64)> = c
        .agents
        .iter()
        .map(|g| (g.counter(tx).unwrap(), g.counter(rx).unwrap()))
        .collect();

    let ab = ping(&a.ns, b.ip, 5, None, false, 3).unwrap();
    assert_eq!(ab.received, 5, "ping host1 -> host2: {ab:?}");
    let ba = ping(&b.ns, a.ip, 5, None, false, 3).unwrap();
    assert_eq!(ba.received, 5, "ping host2 -> host1: {ba:?}");
    let df = ping(&a.ns, b.ip, 3, Some(1422), true, 3).unwrap();
    assert_eq!(
        (df.received, df.errors),
        (3, 0),
        "DF ping with 1422 bytes: {df:?}"
    );
    // Containers 2 of each host too, the other way round.
    let (a2, b2) = (c.lab.container(1, 2).clone(), c.lab.container(2, 2).clone());
    assert_eq!(ping(&b2.ns, a2.ip, 3, None, false, 3).unwrap().received, 3);

    let t = transfer(&a.ns, &b.ns, b.ip, 256 << 20).unwrap();
    assert_eq!(t.bytes_received, 256 << 20);
    assert_eq!(t.sent_sha256, t.received_sha256, "256 MiB arrived intact");

    let pcap = wire.finish().unwrap();
    let packets = decode_vxlan(&pcap, port).unwrap();
    let overlay_net = |ip: std::net::Ipv4Addr| ip.octets()[0] == 10 && ip.octets()[1] == 103;
    let vxlan: Vec<_> = packets.iter().filter(|p| p.vni.is_some()).collect();
    assert!(
        vxlan.len() > 20,
        "VXLAN on the wire: {} of {} packets",
        vxlan.len(),
        packets.len()
    );
    for p in &packets {
        assert!(
            !overlay_net(p.outer_src) && !overlay_net(p.outer_dst),
            "bare container packet on the underlay: {p}"
        );
        if p.vni.is_some() {
            assert_eq!(p.vni, Some(vni), "{p}");
            assert_eq!(p.udp_dst_port, Some(port), "{p}");
            assert!(
                p.inner_src.is_some_and(overlay_net) && p.inner_dst.is_some_and(overlay_net),
                "{p}"
            );
        }
    }

    // 5 + 3 + 3 echo requests went each way at least (plus the transfer).
    // Kernel-mode counters are read once a second: wait for them.
    for (i, g) in c.agents.iter().enumerate() {
        let (t0, r0) = before[i];
        g.wait_status(Duration::from_secs(3), |_| {
            g.counter(tx).unwrap_or(0) >= t0 + 11 && g.counter(rx).unwrap_or(0) >= r0 + 11
        })
        .unwrap_or_else(|e| panic!("host {} {tx}/{rx} from {t0}/{r0}: {e}", i + 1));
    }
    for h in 1..=2 {
        let routes = exec_ok(
            &c.lab.host(h).ns,
            &["ip", "-4", "route", "show", "table", "all"],
        )
        .unwrap();
        let remote = &c.lab.host(3 - h).subnet;
        let net = remote.split('/').next().unwrap();
        if mode == "ebpf" {
            assert!(
                !routes.contains(net),
                "host {h} has a kernel route to {remote}:\n{routes}"
            );
        } else {
            let want = format!("{remote} via {net} dev ovl.{vni} ");
            assert!(
                routes
                    .lines()
                    .any(|l| l.starts_with(&want) && l.contains("onlink")),
                "host {h}: no route `{want}... onlink`:\n{routes}"
            );
        }
    }
}

/// `peer del` stops traffic to that subnet within 1 s; `peer add` restores it.
fn peer_del_and_add(mode: &str) {
    if !need_root_or_skip() {
        return;
    }
    let c = cluster(LabSpec::default(), mode, AgentOptions::default()).unwrap();
    let (a, b) = (c.lab.container(1, 1).clone(), c.lab.container(2, 1).clone());
    assert_eq!(ping(&a.ns, b.ip, 2, None, false, 2).unwrap().received, 2);
    let remote = c.lab.host(2).subnet.clone();
    let t0 = Instant::now();
    c.agent(1).ctl_ok(&["peer", "del", &remote]).unwrap();
    // Within 1 s of the command returning, nothing gets through.
    let elapsed = t0.elapsed();
    assert!(
        elapsed < Duration::from_secs(1),
        "peer del took {elapsed:?}"
    );
    let r = ping(&a.ns, b.ip, 3, None, false, 1).unwrap();
    assert_eq!(r.received, 0, "traffic after peer del: {r:?}");
    let list = c.agent(1).ctl_ok(&["peer", "list"]).unwrap();
    assert!(
        !list.contains(&remote),
        "peer list still shows {remote}:\n{list}"
    );

    c.agent(1)
        .ctl_ok(&[
            "peer",
            "add",
            &remote,
            &c.lab.host(2).underlay_ip.to_string(),
        ])
        .unwrap();
    let r = ping(&a.ns, b.ip, 3, None, false, 2).unwrap();
    assert_eq!(r.received, 3, "traffic after peer add: {r:?}");
}

macro_rules! per_mode {
    ($($mode:ident),*) => {$(
        mod $mode {
            #[test]
            fn traffic_crosses_hosts() {
                super::traffic_crosses_hosts(stringify!($mode), 42, 4789);
            }
            #[test]
            fn peer_del_and_add() {
                super::peer_del_and_add(stringify!($mode));
            }
        }
    )*};
}

per_mode!(ebpf, kernel);
