//! Issue 12, point 5: overlay networks served by the kernel dataplane, on
//! three simulated hosts (no Docker): the dataplane is driven per network by
//! `netdp` (as the agent will drive it), with Docker's FORWARD policy DROP
//! set in every host.
//!
//! Network `web` (VNI 4096) has a container on each host, network `db`
//! (VNI 4097) one on hosts 1 and 2. Asserted: Docker's overlay layout on the
//! host (bridge with the gateway, VXLAN device with VNI, port, nolearning,
//! proxy, MTU); every web pair pings and moves 64 MiB each way with equal
//! SHA-256; the wire carries VNI 4096 with the containers' real MACs inside;
//! web and db do not reach each other (same host or not, also with a forged
//! source), and the drops are counted; a container reaches an outside
//! namespace through NAT (seen there from the host's underlay address);
//! removing an endpoint or a network takes exactly its entries and devices;
//! `--cleanup` leaves nothing.

use std::net::Ipv4Addr;

use overlay_lab::{
    decode_vxlan, exec, exec_ok, need_root_or_skip, ping, transfer, AgentOptions, Lab, LabSpec,
};
use overlay_tests::netdp::{net_container, NetCtr, NetDp};

const WEB: u32 = 4096;
const DB: u32 = 4097;
const PORT: u16 = 4789;

/// `ip -d -j link show DEV` in `ns`, or `None` when there is no such device.
fn link(ns: &str, dev: &str) -> Option<serde_json::Value> {
    let out = exec(ns, &["ip", "-d", "-j", "link", "show", "dev", dev]).unwrap();
    out.status
        .success()
        .then(|| serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0].clone())
}

/// Packet counters of the rules in `chain` whose line contains every word of `rule`.
fn counted(ns: &str, table: &str, chain: &str, rule: &[&str]) -> u64 {
    let out = exec_ok(
        ns,
        &["iptables", "-t", table, "-L", chain, "-n", "-v", "-x"],
    )
    .unwrap();
    out.lines()
        .filter(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            rule.iter().all(|w| words.contains(w))
        })
        .map(|l| l.split_whitespace().next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// The rules of `chain` (`iptables -S`), or `None` when it does not exist.
fn chain(ns: &str, table: &str, chain: &str) -> Option<String> {
    let out = exec(ns, &["iptables", "-t", table, "-S", chain]).unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn pings(from: &NetCtr, to: Ipv4Addr) -> bool {
    ping(&from.ns, to, 2, None, false, 2).unwrap().received > 0
}

fn start(lab: &Lab, host: usize, mode: &str) -> NetDp {
    let opts = AgentOptions {
        dataplane: Some(mode.into()),
        port: PORT,
        ..AgentOptions::default()
    };
    NetDp::start(lab, host, env!("CARGO_BIN_EXE_netdp"), &opts).unwrap()
}

#[test]
fn kernel_networks_across_three_hosts() {
    if !need_root_or_skip() {
        return;
    }
    let mut lab = Lab::new(LabSpec {
        hosts: 3,
        containers_per_host: 0,
        ..LabSpec::default()
    })
    .unwrap();
    let web_gw = Ipv4Addr::new(10, 104, 1, 1);
    let db_gw = Ipv4Addr::new(10, 104, 2, 1);
    let web: Vec<NetCtr> = (1..=3)
        .map(|h| {
            net_container(
                &mut lab,
                h,
                &format!("w{h}"),
                Ipv4Addr::new(10, 104, 1, 1 + h as u8),
            )
            .unwrap()
        })
        .collect();
    let db: Vec<NetCtr> = (1..=2)
        .map(|h| {
            net_container(
                &mut lab,
                h,
                &format!("d{h}"),
                Ipv4Addr::new(10, 104, 2, 1 + h as u8),
            )
            .unwrap()
        })
        .collect();
    // Outside every network: a namespace on the underlay, with no route to them.
    let outside = lab.add_namespace("out").unwrap();
    let outside_ip = Ipv4Addr::new(192, 168, 56, 250);
    let ul = lab.underlay_ns().to_string();
    exec_ok(
        &ul,
        &[
            "ip", "link", "add", "out0", "type", "veth", "peer", "name", "eth0", "netns", &outside,
        ],
    )
    .unwrap();
    exec_ok(&ul, &["ip", "link", "set", "out0", "master", "br0", "up"]).unwrap();
    exec_ok(
        &outside,
        &[
            "ip",
            "addr",
            "add",
            &format!("{outside_ip}/24"),
            "dev",
            "eth0",
        ],
    )
    .unwrap();
    exec_ok(&outside, &["ip", "link", "set", "eth0", "up"]).unwrap();
    for h in lab.hosts() {
        // What dockerd sets when it enables forwarding.
        exec_ok(&h.ns, &["iptables", "-P", "FORWARD", "DROP"]).unwrap();
    }

    let mut dps: Vec<NetDp> = (1..=3).map(|h| start(&lab, h, "kernel")).collect();
    for dp in dps.iter_mut() {
        dp.add_network("web", WEB, "10.104.1.0/24", web_gw).unwrap();
        if dp.host <= 2 {
            dp.add_network("db", DB, "10.104.2.0/24", db_gw).unwrap();
        }
    }
    let underlay = |h: usize| lab.host(h).underlay_ip;
    for (vni, ctrs) in [(WEB, &web), (DB, &db)] {
        for c in ctrs.iter() {
            for dp in dps.iter_mut() {
                if vni == DB && dp.host > 2 {
                    continue;
                }
                if dp.host == c.host {
                    dp.add_local(&lab.host(c.host).ns, vni, c.ip, &c.mac, &c.veth)
                        .unwrap();
                } else {
                    dp.add_remote(vni, c.ip, &c.mac, underlay(c.host)).unwrap();
                }
            }
        }
    }

    // Docker's overlay layout on every host.
    for h in lab.hosts() {
        let br = link(&h.ns, "ovb4096").expect("bridge ovb4096");
        assert_eq!(br["linkinfo"]["info_kind"], "bridge", "{br}");
        assert_eq!(br["ifalias"], "overlay", "{br}");
        let addrs = exec_ok(&h.ns, &["ip", "-4", "-o", "addr", "show", "dev", "ovb4096"]).unwrap();
        assert!(addrs.contains("inet 10.104.1.1/24"), "{addrs}");
        let vx = link(&h.ns, "ovx4096").expect("VXLAN device ovx4096");
        let data = &vx["linkinfo"]["info_data"];
        assert_eq!(data["id"], WEB, "{vx}");
        assert_eq!(data["port"], PORT, "{vx}");
        assert_eq!(data["local"], h.underlay_ip.to_string(), "{vx}");
        assert_eq!(data["learning"], false, "{vx}");
        assert_eq!(data["proxy"], true, "{vx}");
        assert_eq!(vx["mtu"], h.underlay_mtu - 50, "{vx}");
        assert_eq!(vx["master"], "ovb4096", "{vx}");
        assert_eq!(vx["ifalias"], "overlay", "{vx}");
        // The per-host device is there too, untouched.
        assert!(link(&h.ns, "ovl.42").is_some());
    }
    for c in web.iter().chain(&db) {
        let port = link(&lab.host(c.host).ns, &c.veth).unwrap();
        let bridge = if c.ip.octets()[2] == 1 {
            "ovb4096"
        } else {
            "ovb4097"
        };
        assert_eq!(port["master"], bridge, "{port}");
    }
    let fdb = exec_ok(
        &lab.host(1).ns,
        &["bridge", "fdb", "show", "dev", "ovx4096"],
    )
    .unwrap();
    for c in &web[1..] {
        let entry = format!("{} dst {} self permanent", c.mac, underlay(c.host));
        assert!(fdb.contains(&entry), "no `{entry}` in:\n{fdb}");
    }
    let neigh = exec_ok(&lab.host(1).ns, &["ip", "neigh", "show", "dev", "ovx4096"]).unwrap();
    for c in &web[1..] {
        let entry = format!("{} lladdr {} PERMANENT", c.ip, c.mac);
        assert!(neigh.contains(&entry), "no `{entry}` in:\n{neigh}");
    }

    // Every web pair, both ways; the wire shows VNI 4096, our port, real MACs.
    let wire = lab.capture(lab.underlay_ns(), "br0", "udp", None).unwrap();
    let pairs = [(0, 1), (0, 2), (1, 2)];
    for (x, y) in pairs {
        assert!(
            pings(&web[x], web[y].ip),
            "web: host {} -> host {}",
            x + 1,
            y + 1
        );
        assert!(
            pings(&web[y], web[x].ip),
            "web: host {} -> host {}",
            y + 1,
            x + 1
        );
    }
    assert!(pings(&db[0], db[1].ip), "db: host 1 -> host 2");
    let pcap = wire.finish().unwrap();
    let mut seen = 0;
    for p in decode_vxlan(&pcap, PORT).unwrap() {
        if p.vni != Some(WEB) {
            continue;
        }
        seen += 1;
        assert_eq!(p.udp_dst_port, Some(PORT), "{p}");
        let (src, dst) = (p.inner_src.unwrap(), p.inner_dst.unwrap());
        let by_ip = |ip: Ipv4Addr| {
            web.iter()
                .find(|c| c.ip == ip)
                .unwrap_or_else(|| panic!("{p}"))
        };
        assert_eq!(
            p.inner_eth_src.as_deref(),
            Some(by_ip(src).mac.as_str()),
            "{p}"
        );
        assert_eq!(
            p.inner_eth_dst.as_deref(),
            Some(by_ip(dst).mac.as_str()),
            "{p}"
        );
        assert_eq!(p.outer_src, underlay(by_ip(src).host), "{p}");
        assert_eq!(p.outer_dst, underlay(by_ip(dst).host), "{p}");
    }
    assert!(seen >= 24, "only {seen} VXLAN packets with VNI {WEB}");
    for (x, y) in pairs {
        for (from, to) in [(x, y), (y, x)] {
            let t = transfer(&web[from].ns, &web[to].ns, web[to].ip, 64 << 20).unwrap();
            assert_eq!(t.bytes_received, 64 << 20, "web {from} -> {to}: {t:?}");
            assert_eq!(
                t.sent_sha256, t.received_sha256,
                "web {from} -> {to}: 64 MiB changed"
            );
        }
    }

    // The gateway answers; the networks do not reach each other.
    assert!(pings(&web[0], web_gw));
    let h1 = lab.host(1).ns.clone();
    let isolation = |ns: &str| counted(ns, "filter", "OVERLAY-NETS", &["DROP", "10.104.2.0/24"]);
    let before = isolation(&h1);
    assert!(!pings(&web[0], db[0].ip), "web reached db on its own host");
    assert!(!pings(&web[0], db[1].ip), "web reached db on another host");
    assert!(!pings(&db[0], web[0].ip), "db reached web on its own host");
    assert!(!pings(&db[1], web[2].ip), "db reached web on another host");
    assert!(
        isolation(&h1) >= before + 4,
        "the isolation DROP did not count web -> db"
    );
    // A forged source (a db address, sent from a web container) is dropped as forged.
    let forged = |ns: &str| {
        counted(
            ns,
            "filter",
            "OVERLAY-NETS",
            &["DROP", "!10.104.1.0/24", "ovb4096"],
        )
    };
    let before = forged(&h1);
    exec_ok(
        &web[0].ns,
        &["ip", "addr", "add", "10.104.2.99/32", "dev", "eth0"],
    )
    .unwrap();
    let out = exec(
        &web[0].ns,
        &[
            "ping",
            "-c",
            "2",
            "-W",
            "1",
            "-I",
            "10.104.2.99",
            &db[0].ip.to_string(),
        ],
    )
    .unwrap();
    assert!(
        !out.status.success(),
        "a forged source reached db: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        forged(&h1) >= before + 2,
        "the forged-source DROP did not count"
    );

    // NAT out: the outside answers the host's underlay address.
    let cap = lab.capture(&outside, "eth0", "icmp", None).unwrap();
    for c in &web {
        assert!(pings(c, outside_ip), "host {}: no NAT out", c.host);
    }
    let pcap = cap.finish().unwrap();
    let sources: std::collections::BTreeSet<Ipv4Addr> = decode_vxlan(&pcap, PORT)
        .unwrap()
        .iter()
        .filter(|p| p.outer_dst == outside_ip)
        .map(|p| p.outer_src)
        .collect();
    assert_eq!(
        sources,
        (1..=3).map(underlay).collect(),
        "the outside saw other sources than the hosts' underlay addresses"
    );
    assert!(counted(&h1, "nat", "OVERLAY-NAT", &["MASQUERADE", "10.104.1.0/24"]) >= 1);

    // Removing a remote endpoint takes its entries, and only those.
    dps[0].del_endpoint(WEB, web[2].ip).unwrap();
    let fdb = exec_ok(&h1, &["bridge", "fdb", "show", "dev", "ovx4096"]).unwrap();
    // (The bridge's own learned entries, `master ovb4096`, age out by themselves.)
    assert!(!fdb.contains(&format!("{} dst", web[2].mac)), "{fdb}");
    assert!(fdb.contains(&format!("{} dst", web[1].mac)), "{fdb}");
    let neigh = exec_ok(&h1, &["ip", "neigh", "show", "dev", "ovx4096"]).unwrap();
    assert!(!neigh.contains(&web[2].ip.to_string()), "{neigh}");
    assert!(!pings(&web[0], web[2].ip), "reached a removed endpoint");
    assert!(pings(&web[0], web[1].ip));
    // Removing a network takes its devices and rules; its container's veth stays.
    dps[0].del_network(DB).unwrap();
    assert!(link(&h1, "ovb4097").is_none() && link(&h1, "ovx4097").is_none());
    let port = link(&h1, &db[0].veth).expect("the container's veth stays");
    assert!(port.get("master").is_none(), "{port}");
    let rules = chain(&h1, "filter", "OVERLAY-NETS").unwrap();
    assert!(
        !rules.contains("10.104.2.0/24") && rules.contains("10.104.1.0/24"),
        "{rules}"
    );
    assert!(pings(&web[0], web[1].ip), "web broke when db went");

    // A firewall reload flushing the chains: the keeper puts the rules back.
    let h2 = lab.host(2).ns.clone();
    let want = chain(&h2, "filter", "OVERLAY-NETS").unwrap();
    let want_nat = chain(&h2, "nat", "OVERLAY-NAT").unwrap();
    exec_ok(&h2, &["iptables", "-F", "OVERLAY-NETS"]).unwrap();
    exec_ok(&h2, &["iptables", "-t", "nat", "-F", "OVERLAY-NAT"]).unwrap();
    let start = std::time::Instant::now();
    // Both chains before the ping: the keeper writes the NAT chain after
    // the filter chain, and a ping sent in between would leave a conntrack
    // entry without NAT that its later echoes follow.
    while chain(&h2, "filter", "OVERLAY-NETS").as_ref() != Some(&want)
        || chain(&h2, "nat", "OVERLAY-NAT").as_ref() != Some(&want_nat)
    {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(12),
            "OVERLAY-NETS or OVERLAY-NAT not restored"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(pings(&web[1], outside_ip), "NAT not restored");

    // --cleanup leaves nothing of ours; the containers' veths stay.
    for dp in dps.drain(..) {
        dp.shutdown(true).unwrap();
    }
    for h in lab.hosts() {
        for dev in ["ovb4096", "ovx4096", "ovb4097", "ovx4097", "ovl.42"] {
            assert!(link(&h.ns, dev).is_none(), "host {}: {dev} left", h.index);
        }
        for (table, c) in [
            ("filter", "OVERLAY-NETS"),
            ("nat", "OVERLAY-NAT"),
            ("filter", "OVERLAY-VXLAN"),
        ] {
            assert!(
                chain(&h.ns, table, c).is_none(),
                "host {}: chain {c} left",
                h.index
            );
        }
        let all = exec_ok(&h.ns, &["iptables-save"]).unwrap();
        assert!(
            !all.contains("overlayd"),
            "host {}: rules left:\n{all}",
            h.index
        );
    }
    for c in web.iter().chain(&db) {
        assert!(link(&lab.host(c.host).ns, &c.veth).is_some());
    }
}
