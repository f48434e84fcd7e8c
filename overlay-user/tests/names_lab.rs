//! The names resolver on a lab host, asked from lab namespaces over real
//! veths: containers inside the networks get their own network's names,
//! the same name on two networks answers per network, names outside the
//! overlay come from a fake upstream resolver on another lab host, an
//! asker outside every network is refused (and nothing is forwarded for
//! it), the names follow the view within a second, and busybox's nslookup,
//! a real client, gets the answers too. Needs root (network namespaces).
//!
//! Layout: host 1 runs the resolver on its underlay address
//! 192.168.56.4:53; its containers 10.103.100.2 and .3 are on network
//! `web` (10.103.100.0/30), .4 on `db` (10.103.100.4/30). Host 2
//! (192.168.56.5) runs the upstream resolver on :53 and is the outsider.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use overlay_lab::{need_root_or_skip, run_in_netns, Lab, LabSpec};
use overlay_user::model::overlay_network::{EndpointRecord, NetworkSpec, NetworkView};
use overlay_user::sources::names::server::{NamesServer, Settings};

#[path = "common/dns.rs"]
mod dns;
use dns::{a_from, ask_from, ask_tcp, until_a, FakeUpstream};

fn network(name: &str, subnet: &str, vni: u32) -> NetworkSpec {
    let subnet: ipnet::Ipv4Net = subnet.parse().unwrap();
    NetworkSpec {
        name: name.into(),
        vni,
        subnet,
        gateway: subnet.hosts().next().unwrap(),
    }
}

fn record(network: &str, ip: Ipv4Addr, name: &str, aliases: &[&str]) -> EndpointRecord {
    EndpointRecord {
        network: network.into(),
        ip,
        mac: [2, 0x42, 0, 0, 0, ip.octets()[3]],
        host: "h1".into(),
        underlay_ip: Ipv4Addr::new(192, 168, 56, 4),
        container: format!("id-{name}"),
        name: name.into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
    }
}

fn a(ns: &str, server: SocketAddr, name: &str) -> (ResponseCode, Vec<Ipv4Addr>) {
    a_from(ns, server, name)
}

fn until(
    ns: &str,
    server: SocketAddr,
    name: &str,
    want: (ResponseCode, Vec<Ipv4Addr>),
) -> Duration {
    until_a(ns, server, name, want, Duration::from_secs(3))
}

#[test]
fn names_per_network_upstream_refusal_and_updates_on_a_lab_host() {
    if !need_root_or_skip() {
        return;
    }
    let mut lab = Lab::new(LabSpec::default()).unwrap();
    let c3 = lab.add_container(1).unwrap();
    let (h1, h2) = (lab.host(1).clone(), lab.host(2).clone());
    let (c1, c2) = (lab.container(1, 1).clone(), lab.container(1, 2).clone());
    assert_eq!(
        (c1.ip, c2.ip, c3.ip),
        (
            Ipv4Addr::new(10, 103, 100, 2),
            Ipv4Addr::new(10, 103, 100, 3),
            Ipv4Addr::new(10, 103, 100, 4)
        )
    );

    // The upstream resolver on host 2, port 53.
    let up_addr = SocketAddr::new(h2.underlay_ip.into(), 53);
    let upstream = FakeUpstream::serve(
        run_in_netns(&h2.ns, move || UdpSocket::bind(up_addr))
            .unwrap()
            .unwrap(),
        vec![("outside.lab".into(), Ipv4Addr::new(192, 0, 2, 7))],
    );

    let view = NetworkView {
        networks: vec![
            network("web", "10.103.100.0/30", 4096),
            network("db", "10.103.100.4/30", 4097),
        ],
        endpoints: vec![
            record("web", c1.ip, "a", &[]),
            record("web", c2.ip, "b", &["api"]),
            record("db", c3.ip, "b", &["store"]),
        ],
    };
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(view.clone()));
    let server_addr = SocketAddr::new(h1.underlay_ip.into(), 53);
    let (udp, tcp) = run_in_netns(&h1.ns, move || {
        (
            UdpSocket::bind(server_addr).unwrap(),
            std::net::TcpListener::bind(server_addr).unwrap(),
        )
    })
    .unwrap();
    // The runtime's threads are made in host 1's namespace, so that the
    // sockets the resolver opens to forward (and everything else it does)
    // stay in the lab, as in an overlayd running there.
    let rt = run_in_netns(&h1.ns, || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
    .unwrap();
    let server = {
        let _entered = rt.enter();
        NamesServer::from_std(
            udp,
            tcp,
            Settings {
                upstream: vec![up_addr],
                ttl: 2,
                upstream_timeout: Duration::from_secs(1),
            },
            rx,
        )
        .unwrap()
    };
    let task = rt.spawn(server.run());

    let ok = |ips: &[Ipv4Addr]| (ResponseCode::NoError, ips.to_vec());
    let nx = (ResponseCode::NXDomain, vec![]);
    // web's containers: their network's names, short and qualified, aliases.
    assert_eq!(a(&c1.ns, server_addr, "b"), ok(&[c2.ip]));
    assert_eq!(a(&c1.ns, server_addr, "api"), ok(&[c2.ip]));
    assert_eq!(a(&c1.ns, server_addr, "b.web"), ok(&[c2.ip]));
    assert_eq!(a(&c2.ns, server_addr, "a"), ok(&[c1.ip]));
    let r = ask_from(&c1.ns, server_addr, "b", RecordType::AAAA);
    assert_eq!((r.code, r.data.len()), (ResponseCode::NoError, 0));
    assert!(r.authoritative);
    // db's container: its own b; web's names are not there.
    assert_eq!(a(&c3.ns, server_addr, "b"), ok(&[c3.ip]));
    assert_eq!(a(&c3.ns, server_addr, "a"), nx);
    assert_eq!(a(&c3.ns, server_addr, "api"), nx);
    assert_eq!(a(&c3.ns, server_addr, "b.web"), nx);
    assert_eq!(a(&c1.ns, server_addr, "store"), nx);
    assert_eq!(a(&c1.ns, server_addr, "nobody"), nx);
    // Names outside the overlay: from the upstream on host 2.
    let before = upstream.asked();
    assert_eq!(
        a(&c1.ns, server_addr, "outside.lab"),
        ok(&[Ipv4Addr::new(192, 0, 2, 7)])
    );
    assert_eq!(
        a(&c3.ns, server_addr, "outside.lab"),
        ok(&[Ipv4Addr::new(192, 0, 2, 7)])
    );
    assert_eq!(a(&c3.ns, server_addr, "missing.lab"), nx);
    assert_eq!(upstream.asked(), before + 3);
    // TCP too.
    let r = run_in_netns(&c2.ns, move || ask_tcp(server_addr, "a", RecordType::A))
        .unwrap()
        .unwrap();
    assert_eq!(r.addresses, [c1.ip]);
    // PTR of a web address, from web.
    let r = ask_from(
        &c1.ns,
        server_addr,
        "3.100.103.10.in-addr.arpa",
        RecordType::PTR,
    );
    assert_eq!(r.data, ["b.web."]);

    // Host 2 is outside every network: refused, and nothing forwarded.
    let before = upstream.asked();
    for name in ["b", "outside.lab", "b.db"] {
        assert_eq!(
            a(&h2.ns, server_addr, name),
            (ResponseCode::Refused, vec![]),
            "{name} from the outsider"
        );
    }
    assert_eq!(upstream.asked(), before, "a refused question was forwarded");

    // busybox nslookup, a real client, from a web container.
    let out = overlay_lab::exec_ok(
        &c1.ns,
        &[
            "busybox",
            "nslookup",
            "-type=a",
            "api",
            &h1.underlay_ip.to_string(),
        ],
    )
    .unwrap();
    assert!(out.contains("Address: 10.103.100.3"), "{out}");

    // Updates: a new name appears, a removed one goes, a moved one moves,
    // each within a second of the view's change.
    let mut v = view.clone();
    v.endpoints.push(record("web", c2.ip, "new", &[]));
    v.endpoints.retain(|r| r.name != "a");
    tx.send(Arc::new(v.clone())).unwrap();
    let took_new = until(&c1.ns, server_addr, "new", ok(&[c2.ip]));
    let took_gone = until(&c2.ns, server_addr, "a", nx.clone());
    v.endpoints
        .retain(|r| !(r.network == "web" && r.name == "b"));
    v.endpoints.push(record("web", c1.ip, "b", &["api"]));
    tx.send(Arc::new(v)).unwrap();
    let took_moved = until(&c2.ns, server_addr, "b", ok(&[c1.ip]));
    eprintln!("new after {took_new:?}, removed after {took_gone:?}, moved after {took_moved:?}");
    for took in [took_new, took_gone, took_moved] {
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
    // The store's side going away (the sender dropped) keeps the last view.
    drop(tx);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(a(&c2.ns, server_addr, "b"), ok(&[c1.ip]));
    assert!(!task.is_finished());
    task.abort();
    drop(rt);
}
