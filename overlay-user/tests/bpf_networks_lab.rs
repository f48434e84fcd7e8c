//! Overlay networks on the BPF dataplane, end to end on 3 simulated hosts
//! (lab namespaces, no Docker, no etcd): each host's `BpfDataplane` is
//! started in its namespace and told the networks and endpoints as the
//! agent would (local ones behind hand-made veths, the others remote), then
//! stopped without cleanup, so the pinned programs forward on their own
//! (and every later session is a restart over the pins).
//!
//! Shows: ping between containers of one network across hosts and on one
//! host, 64 MiB with equal SHA-256 across hosts, isolation between two
//! networks (drops counted with their reasons, also with a forged source),
//! traffic to an address outside the overlay leaving NATed through the host
//! (to an `out` namespace the test made, which has no route back to the
//! network), and removal of everything on cleanup. Needs root (fails loudly
//! in CI without).

use std::net::Ipv4Addr;

use aya::maps::{Array, Map, MapData};
use overlay_common::net::{
    maps as names, net_endpoint_slot, net_port_slot, NetEndpointSlot, NetEndpointValue, NetKey,
    NetPortSlot, NET_PORT_SLOTS,
};
use overlay_common::MAPS_VERSION;
use overlay_lab::{
    agent_config, exec, exec_ok, need_root_or_skip, ping, transfer, AgentOptions, Lab, LabSpec,
};
use overlay_user::dataplane::bpf::BpfDataplane;
use overlay_user::dataplane::Dataplane;
use overlay_user::model::config::Config;
use overlay_user::model::overlay_network::{NetEndpointSpec, NetLocation, NetworkSpec};
use overlay_user::model::status::Stats;

const WEB: u32 = 4096;
const DB: u32 = 4097;

fn network(name: &str, vni: u32, third: u8) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        vni,
        subnet: format!("10.103.{third}.0/24").parse().unwrap(),
        gateway: Ipv4Addr::new(10, 103, third, 1),
    }
}

/// A hand-made container on a network: a namespace with `eth0`, its peer
/// `ovn<name>` in the host's namespace.
#[derive(Clone)]
struct NetContainer {
    ns: String,
    host: usize,
    vni: u32,
    ip: Ipv4Addr,
    mac: [u8; 6],
    veth: String,
    ifindex: u32,
}

fn add_container(
    lab: &mut Lab,
    host: usize,
    name: &str,
    net: &NetworkSpec,
    last: u8,
) -> NetContainer {
    add_container_at(lab, host, name, net, last, None)
}

/// [`add_container`] with the host-side veth at ifindex `index`, if given.
fn add_container_at(
    lab: &mut Lab,
    host: usize,
    name: &str,
    net: &NetworkSpec,
    last: u8,
    index: Option<u32>,
) -> NetContainer {
    let ns = lab.add_namespace(name).unwrap();
    let host_ns = lab.host(host).ns.clone();
    let veth = format!("ovn{name}");
    let o = net.gateway.octets();
    let ip = Ipv4Addr::new(o[0], o[1], o[2], last);
    let mac = [0x02, 0x42, o[0], o[1], o[2], last];
    let mac_s = overlay_user::model::validation::format_mac(&mac);
    let run = |ns: &str, args: &[&str]| {
        exec_ok(ns, args).unwrap_or_else(|e| panic!("{args:?} in {ns}: {e:#}"));
    };
    let index = index.map(|i| i.to_string());
    let mut add = vec!["ip", "link", "add", &veth];
    if let Some(i) = &index {
        add.extend(["index", i.as_str()]);
    }
    add.extend([
        "mtu", "1450", "type", "veth", "peer", "name", "eth0", "mtu", "1450", "netns", &ns,
    ]);
    run(&host_ns, &add);
    run(&ns, &["ip", "link", "set", "eth0", "address", &mac_s, "up"]);
    run(
        &ns,
        &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
    );
    run(
        &ns,
        &[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &net.gateway.to_string(),
        ],
    );
    run(&host_ns, &["ip", "link", "set", &veth, "up"]);
    let line = exec_ok(&host_ns, &["ip", "-o", "link", "show", "dev", &veth]).unwrap();
    let ifindex = line.split(':').next().unwrap().trim().parse().unwrap();
    NetContainer {
        ns,
        host,
        vni: net.vni,
        ip,
        mac,
        veth,
        ifindex,
    }
}

enum Op {
    Network(NetworkSpec),
    Endpoint(NetEndpointSpec),
    DelEndpoint(u32, Ipv4Addr),
    /// What overlayd does once its sources re-reported after a start.
    ForgetUnowned,
}

/// One overlayd session on `host`: start over the pins, apply `ops`, read
/// the counters, stop (with `cleanup`: removing everything).
fn session(lab: &Lab, host: usize, ops: Vec<Op>, cleanup: bool) -> Stats {
    let text = agent_config(lab, host, &AgentOptions::default());
    let cfg = Config::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let ns = lab.host(host).ns.clone();
    overlay_lab::run_in_netns(&ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut dp = BpfDataplane::start(&cfg)
                .await
                .expect("BPF dataplane starts");
            for op in ops {
                match op {
                    Op::Network(n) => dp.add_network(&n).await.expect("add_network"),
                    Op::Endpoint(e) => dp.add_net_endpoint(&e).await.expect("add_net_endpoint"),
                    Op::DelEndpoint(vni, ip) => dp
                        .del_net_endpoint(vni, ip)
                        .await
                        .expect("del_net_endpoint"),
                    Op::ForgetUnowned => dp.forget_unowned().await.expect("forget_unowned"),
                }
            }
            let stats = dp.stats().unwrap();
            dp.shutdown(cleanup).await.expect("shutdown");
            stats
        })
    })
    .unwrap()
}

/// What host `host` is told: the networks, then every container, its own
/// as local and the others as remote.
fn ops_for(lab: &Lab, host: usize, nets: &[NetworkSpec], all: &[NetContainer]) -> Vec<Op> {
    let mut ops: Vec<Op> = nets.iter().cloned().map(Op::Network).collect();
    for c in all {
        let location = if c.host == host {
            NetLocation::Local {
                ifname: c.veth.clone(),
                ifindex: c.ifindex,
            }
        } else {
            NetLocation::Remote {
                host: lab.host(c.host).underlay_ip,
            }
        };
        ops.push(Op::Endpoint(NetEndpointSpec {
            vni: c.vni,
            ip: c.ip,
            mac: c.mac,
            location,
        }));
    }
    ops
}

fn pings(from: &NetContainer, to: Ipv4Addr) -> u32 {
    ping(&from.ns, to, 3, None, false, 2).unwrap().received
}

#[test]
fn networks_across_three_hosts_isolated_and_natted() {
    if !need_root_or_skip() {
        return;
    }
    let mut lab = Lab::new(LabSpec {
        hosts: 3,
        containers_per_host: 0,
        ..LabSpec::default()
    })
    .unwrap();
    let (web, db) = (network("web", WEB, 240), network("db", DB, 241));
    let w1 = add_container(&mut lab, 1, "w1", &web, 2);
    let w2 = add_container(&mut lab, 2, "w2", &web, 3);
    let w3 = add_container(&mut lab, 3, "w3", &web, 4);
    let w1b = add_container(&mut lab, 1, "w1b", &web, 5);
    let d1 = add_container(&mut lab, 1, "d1", &db, 2);
    let d2 = add_container(&mut lab, 2, "d2", &db, 3);
    let all = vec![
        w1.clone(),
        w2.clone(),
        w3.clone(),
        w1b.clone(),
        d1.clone(),
        d2.clone(),
    ];
    // 'outside': a namespace behind host 1 only, with no route to the networks.
    let out = lab.add_namespace("out").unwrap();
    let h1 = lab.host(1).ns.clone();
    exec_ok(
        &h1,
        &[
            "ip", "link", "add", "ovtout", "type", "veth", "peer", "name", "eth0", "netns", &out,
        ],
    )
    .unwrap();
    exec_ok(
        &h1,
        &["ip", "addr", "add", "198.51.100.1/24", "dev", "ovtout"],
    )
    .unwrap();
    exec_ok(&h1, &["ip", "link", "set", "ovtout", "up"]).unwrap();
    exec_ok(
        &out,
        &["ip", "addr", "add", "198.51.100.7/24", "dev", "eth0"],
    )
    .unwrap();
    exec_ok(&out, &["ip", "link", "set", "eth0", "up"]).unwrap();

    for host in 1..=3 {
        session(
            &lab,
            host,
            ops_for(&lab, host, &[web.clone(), db.clone()], &all),
            false,
        );
    }

    // One network across hosts and on one host.
    for (a, b) in [(&w1, &w2), (&w1, &w3), (&w2, &w3), (&w3, &w1), (&w1, &w1b)] {
        assert_eq!(pings(a, b.ip), 3, "{} -> {}", a.ip, b.ip);
    }
    assert_eq!(pings(&d1, d2.ip), 3, "db across hosts");
    let t = transfer(&w1.ns, &w2.ns, w2.ip, 64 << 20).unwrap();
    assert!(t.is_intact(), "64 MiB w1 -> w2: {t:?}");
    assert_eq!(t.sent_sha256, t.received_sha256);
    let t = transfer(&w3.ns, &w1b.ns, w1b.ip, 64 << 20).unwrap();
    assert!(t.is_intact(), "64 MiB w3 -> w1b: {t:?}");

    // Isolation: web reaches nothing of db and back, on its host or another.
    for (a, b) in [(&w1, &d1), (&w1, &d2), (&d1, &w1), (&d2, &w3)] {
        assert_eq!(pings(a, b.ip), 0, "{} -> {} must be isolated", a.ip, b.ip);
    }
    let s1 = session(&lab, 1, vec![], false);
    let s2 = session(&lab, 2, vec![], false);
    assert!(s1.drops["net_isolation"] >= 9, "{:?}", s1.drops);
    assert!(s2.drops["net_isolation"] >= 3, "{:?}", s2.drops);
    // A forged source: w1 claims w2's address towards w3 (and db's).
    exec_ok(
        &w1.ns,
        &["ip", "addr", "add", "10.103.240.3/32", "dev", "eth0"],
    )
    .unwrap();
    for dst in ["10.103.240.4", "10.103.241.3"] {
        let _ = exec(
            &w1.ns,
            &["ping", "-c", "2", "-W", "1", "-I", "10.103.240.3", dst],
        );
    }
    exec_ok(
        &w1.ns,
        &["ip", "addr", "del", "10.103.240.3/32", "dev", "eth0"],
    )
    .unwrap();
    let s1 = session(&lab, 1, vec![], false);
    assert!(s1.drops["net_source_spoofed"] >= 4, "{:?}", s1.drops);
    assert!(s1.counters["arp_replies"] >= 1, "{:?}", s1.counters);

    // Outside the overlay: routed out through host 1 and NATed (the
    // outside namespace has no route back to 10.103.240.0/24).
    assert_eq!(pings(&w1, "198.51.100.7".parse().unwrap()), 3, "NATed out");
    let t = transfer(&w1.ns, &out, "198.51.100.7".parse().unwrap(), 1 << 20).unwrap();
    assert!(t.is_intact(), "{t:?}");
    let s1 = session(&lab, 1, vec![], false);
    assert!(s1.counters["net_to_host"] >= 3, "{:?}", s1.counters);

    // Removing an endpoint: w2 is gone on every host at once.
    for host in 1..=3 {
        session(&lab, host, vec![Op::DelEndpoint(WEB, w2.ip)], false);
    }
    assert_eq!(pings(&w1, w2.ip), 0, "w2 removed");
    assert_eq!(pings(&w1, w3.ip), 3, "w3 still there");

    // A restart that re-adds everything but db (removed while overlayd was
    // away): web goes on forwarding through the re-attached programs, db's
    // entries, port and link on host 1 are forgotten.
    let web_only: Vec<NetContainer> = all
        .iter()
        .filter(|c| c.vni == WEB && c.ip != w2.ip)
        .cloned()
        .collect();
    let mut ops = ops_for(&lab, 1, std::slice::from_ref(&web), &web_only);
    ops.push(Op::ForgetUnowned);
    session(&lab, 1, ops, false);
    assert_eq!(pings(&w1, w3.ip), 3, "web after the restart");
    assert_eq!(pings(&w1, w1b.ip), 3, "web on one host after the restart");
    assert_eq!(pings(&d2, d1.ip), 0, "db is gone from host 1");
    let links = std::fs::read_dir(
        lab.bpffs_dir()
            .join("h1")
            .join(format!("v{}", overlay_common::MAPS_VERSION))
            .join("links"),
    )
    .unwrap()
    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
    .filter(|n| n.starts_with("net-"))
    .count();
    assert_eq!(links, 2, "the links of w1 and w1b only");

    // Cleanup on host 1: programs, pins, routes and neighbours gone.
    session(
        &lab,
        1,
        ops_for(&lab, 1, &[web.clone(), db.clone()], &all),
        true,
    );
    let routes = exec_ok(&h1, &["ip", "route", "show", "proto", "79"]).unwrap();
    assert_eq!(routes.trim(), "", "no /32 routes left");
    let neigh = exec_ok(&h1, &["ip", "neigh", "show", "dev", &w1.veth]).unwrap();
    assert_eq!(neigh.trim(), "", "no neighbour entries left");
    assert_eq!(pings(&w1, w3.ip), 0, "no program on w1's veth any more");
    assert_eq!(
        pings(&w1, "198.51.100.7".parse().unwrap()),
        0,
        "no NAT any more"
    );
}

/// When an endpoint goes, an endpoint and a port that shared its slots
/// (of `OVL_NET_EP_SLOTS` and `OVL_NET_PORT_SLOTS`) and so lived in the
/// hashes alone take them over: on one host, web's 10.103.240.2 behind
/// ifindex 5000 and api's 10.104.240.2 (the same low 14 bits) behind
/// ifindex 5000 + 4096, across restarts too.
#[test]
fn a_slot_given_up_goes_to_the_entry_that_shares_it() {
    if !need_root_or_skip() {
        return;
    }
    let mut lab = Lab::new(LabSpec {
        hosts: 1,
        containers_per_host: 0,
        ..LabSpec::default()
    })
    .unwrap();
    let web = network("web", WEB, 240);
    let api = NetworkSpec {
        name: "api".into(),
        vni: 4098,
        subnet: "10.104.240.0/24".parse().unwrap(),
        gateway: Ipv4Addr::new(10, 104, 240, 1),
    };
    let a = add_container_at(&mut lab, 1, "a", &web, 2, Some(5000));
    let t = add_container_at(&mut lab, 1, "t", &api, 2, Some(5000 + NET_PORT_SLOTS));
    assert_eq!((a.ifindex, t.ifindex), (5000, 5000 + NET_PORT_SLOTS));
    assert_eq!(
        net_endpoint_slot(a.ip.octets()),
        net_endpoint_slot(t.ip.octets())
    );
    let (ep_slot, port_slot) = (net_endpoint_slot(a.ip.octets()), net_port_slot(a.ifindex));
    let nets = [web.clone(), api.clone()];
    let all = [a.clone(), t.clone()];
    session(&lab, 1, ops_for(&lab, 1, &nets, &all), false);
    let maps = lab
        .bpffs_dir()
        .join("h1")
        .join(format!("v{MAPS_VERSION}"))
        .join("maps");
    let open = |name: &str| Map::Array(MapData::from_pin(maps.join(name)).unwrap());
    let ep_slots: Array<MapData, NetEndpointSlot> =
        Array::try_from(open(names::ENDPOINT_SLOTS)).unwrap();
    let port_slots: Array<MapData, NetPortSlot> = Array::try_from(open(names::PORT_SLOTS)).unwrap();
    let held = || {
        (
            ep_slots.get(&ep_slot, 0).unwrap(),
            port_slots.get(&port_slot, 0).unwrap(),
        )
    };
    // Both slots held by container `c` of network `vni`, with its values.
    let assert_held = |c: &NetContainer, vni: u32, what: &str| {
        let (ep, port) = held();
        assert_eq!(
            ep.key,
            NetKey {
                vni,
                ip: c.ip.octets()
            },
            "{what}"
        );
        assert_eq!(
            ep.value,
            NetEndpointValue::local(c.ifindex, c.mac),
            "{what}"
        );
        assert_eq!(port.ifindex, c.ifindex, "{what}: the port");
        assert_eq!(
            (port.value.vni, port.value.ip),
            (vni, c.ip.octets()),
            "{what}"
        );
    };
    assert_held(&a, WEB, "a holds the slots");
    // A restart (the sources report everything again), then a goes.
    let mut ops = ops_for(&lab, 1, &nets, &all);
    ops.push(Op::DelEndpoint(WEB, a.ip));
    session(&lab, 1, ops, false);
    assert_held(&t, api.vni, "t took the slots");
    // Another restart where only a is reported (behind t in the hashes):
    // t, left by the earlier run, is removed and a takes the slots back.
    let mut ops = ops_for(&lab, 1, &nets, std::slice::from_ref(&a));
    ops.push(Op::ForgetUnowned);
    session(&lab, 1, ops, false);
    assert_held(&a, WEB, "a took them back");
    session(&lab, 1, vec![], true);
}
