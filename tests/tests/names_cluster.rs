//! Names across hosts with real overlayd and real etcd (issue 13, points 1
//! to 4 without Docker): two hosts, one BPF and one kernel-mode, each with
//! `[dns]` on its underlay address; the networks and endpoint records are
//! written to the store as the Docker plugin publishes them
//! (`<prefix>/networks/<name>`, `<prefix>/endpoints/<network>/<ip>`).
//! A container on one host resolves (and pings, through its resolv.conf) a
//! container of the other host by name and alias; a name of another
//! network is NXDOMAIN; names outside the overlay come from a fake upstream
//! resolver in the lab; an outsider is refused; records added, removed and
//! moved are followed within a second; with etcd killed the known names
//! still resolve.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use overlay_lab::{
    need_etcd_or_skip, run_in_netns, Binaries, Etcd, EtcdOptions, Lab, LabSpec, Overlayd,
};
use overlay_tests::{cluster_init, cluster_opts, wait_cluster_peers};

#[path = "../../overlay-user/tests/common/dns.rs"]
mod dns;
use dns::{a_from, until_a, FakeUpstream};

const UPSTREAM_PORT: u16 = 5353;

/// /etc/netns/<ns>/resolv.conf (what `ip netns exec` mounts over
/// /etc/resolv.conf), removed on drop.
struct NetnsResolvConf(PathBuf);

impl NetnsResolvConf {
    fn write(ns: &str, nameserver: Ipv4Addr) -> NetnsResolvConf {
        let dir = PathBuf::from("/etc/netns").join(ns);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {nameserver}\n"),
        )
        .unwrap();
        NetnsResolvConf(dir)
    }
}

impl Drop for NetnsResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
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
    until_a(ns, server, name, want, Duration::from_secs(5))
}

fn network_json(name: &str, vni: u32, subnet: &str, gateway: &str) -> String {
    format!(r#"{{"name":"{name}","vni":{vni},"subnet":"{subnet}","gateway":"{gateway}"}}"#)
}

fn endpoint_json(network: &str, ip: Ipv4Addr, host: usize, name: &str, aliases: &[&str]) -> String {
    let aliases: Vec<String> = aliases.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"{{"network":"{network}","ip":"{ip}","mac":[2,66,0,0,0,{}],"host":"h{host}","underlay_ip":"192.168.56.{}","container":"c-{name}","name":"{name}","aliases":[{}]}}"#,
        ip.octets()[3],
        3 + host,
        aliases.join(",")
    )
}

#[test]
fn names_across_a_bpf_and_a_kernel_host_follow_the_store() {
    if !need_etcd_or_skip() {
        return;
    }
    let lab = Lab::new(LabSpec {
        hosts: 2,
        containers_per_host: 2,
        ..Default::default()
    })
    .unwrap();
    let (h1, h2) = (lab.host(1).clone(), lab.host(2).clone());
    let (c11, c21, c22) = (
        lab.container(1, 1).clone(),
        lab.container(2, 1).clone(),
        lab.container(2, 2).clone(),
    );
    let bins = Binaries::locate().unwrap();
    let mut etcd = Etcd::start(&lab, &[1], &EtcdOptions::default()).unwrap();
    cluster_init(&lab, 1, &bins, &etcd, "10.103.0.0/16", 24).unwrap();

    let up_addr = SocketAddr::new(h2.underlay_ip.into(), UPSTREAM_PORT);
    let upstream = FakeUpstream::serve(
        run_in_netns(&h2.ns, move || UdpSocket::bind(up_addr))
            .unwrap()
            .unwrap(),
        vec![("outside.lab".into(), Ipv4Addr::new(192, 0, 2, 7))],
    );
    let dns = |h: &overlay_lab::Host| {
        format!(
            "[dns]\nlisten = \"{}:53\"\nupstream = [\"{up_addr}\"]\nttl = 1\n",
            h.underlay_ip
        )
    };
    let mut o1 = cluster_opts(&etcd, 1, "ebpf", false, "");
    o1.extra = dns(&h1);
    let mut o2 = cluster_opts(&etcd, 2, "kernel", false, "");
    o2.extra = dns(&h2);
    let a1 = Overlayd::start(&lab, 1, &bins, &o1).unwrap();
    let a2 = Overlayd::start(&lab, 2, &bins, &o2).unwrap();
    wait_cluster_peers(&a1, &[&h2.subnet], Duration::from_secs(10)).unwrap();
    wait_cluster_peers(&a2, &[&h1.subnet], Duration::from_secs(10)).unwrap();
    for agent in [&a1, &a2] {
        let log = agent.proc.log();
        assert!(
            log.contains("dns: answering the overlay networks' names on"),
            "{log}"
        );
    }

    // The store: web holds every lab container's address; db is another
    // network with its own b.
    let put = |key: &str, value: &str| {
        etcd.etcdctl_ok(&["put", &format!("/overlay/{key}"), value])
            .unwrap();
    };
    put(
        "networks/web",
        &network_json("web", 4096, "10.103.0.0/16", "10.103.0.1"),
    );
    put(
        "networks/db",
        &network_json("db", 4097, "10.104.1.0/24", "10.104.1.1"),
    );
    put(
        &format!("endpoints/web/{}", c11.ip),
        &endpoint_json("web", c11.ip, 1, "a", &[]),
    );
    put(
        &format!("endpoints/web/{}", c21.ip),
        &endpoint_json("web", c21.ip, 2, "b", &["api"]),
    );
    let db_b = Ipv4Addr::new(10, 104, 1, 5);
    put(
        &format!("endpoints/db/{db_b}"),
        &endpoint_json("db", db_b, 2, "b", &[]),
    );

    let (s1, s2) = (
        SocketAddr::new(h1.underlay_ip.into(), 53),
        SocketAddr::new(h2.underlay_ip.into(), 53),
    );
    let ok = |ip: Ipv4Addr| (ResponseCode::NoError, vec![ip]);
    let nx = (ResponseCode::NXDomain, vec![]);
    // On the BPF host: b is on host 2, by name, alias and name.network.
    let took = until(&c11.ns, s1, "b", ok(c21.ip));
    eprintln!("b resolves on host 1 {took:?} after the records were written");
    assert_eq!(a(&c11.ns, s1, "api"), ok(c21.ip));
    assert_eq!(a(&c11.ns, s1, "b.web"), ok(c21.ip));
    assert_eq!(a(&c11.ns, s1, "b.db"), nx);
    // On the kernel host: a is on host 1.
    until(&c21.ns, s2, "a", ok(c11.ip));
    assert_eq!(a(&c22.ns, s2, "a.web"), ok(c11.ip));
    // Outside the overlay: the lab's resolver; refused for an outsider.
    assert_eq!(
        a(&c11.ns, s1, "outside.lab"),
        ok(Ipv4Addr::new(192, 0, 2, 7))
    );
    assert_eq!(
        a(&c22.ns, s2, "outside.lab"),
        ok(Ipv4Addr::new(192, 0, 2, 7))
    );
    let asked = upstream.asked();
    assert_eq!(a(&h2.ns, s1, "b"), (ResponseCode::Refused, vec![]));
    assert_eq!(
        a(&h2.ns, s1, "outside.lab"),
        (ResponseCode::Refused, vec![])
    );
    assert_eq!(upstream.asked(), asked);

    // ping b, with the container's resolv.conf pointing at its host's resolver.
    let _conf = NetnsResolvConf::write(&c11.ns, h1.underlay_ip);
    let out =
        overlay_lab::exec_ok(&c11.ns, &["busybox", "ping", "-c", "2", "-W", "2", "b"]).unwrap();
    assert!(out.contains(&format!("PING b ({})", c21.ip)), "{out}");
    assert!(out.contains("2 packets received"), "{out}");

    // Records follow the store: new, removed, moved (restarted elsewhere).
    put(
        &format!("endpoints/web/{}", c22.ip),
        &endpoint_json("web", c22.ip, 2, "new", &[]),
    );
    let took_new = until(&c11.ns, s1, "new", ok(c22.ip));
    etcd.etcdctl_ok(&["del", &format!("/overlay/endpoints/web/{}", c21.ip)])
        .unwrap();
    let took_gone = until(&c11.ns, s1, "b", nx.clone());
    put(
        &format!("endpoints/web/{}", c22.ip),
        &endpoint_json("web", c22.ip, 2, "b", &["api"]),
    );
    let took_moved = until(&c11.ns, s1, "api", ok(c22.ip));
    eprintln!("new after {took_new:?}, removed after {took_gone:?}, moved after {took_moved:?}");
    for took in [took_new, took_gone, took_moved] {
        assert!(took < Duration::from_secs(1), "{took:?}");
    }

    // The store goes away: the names known keep resolving on both hosts.
    etcd.kill(0).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(a(&c11.ns, s1, "b"), ok(c22.ip));
    assert_eq!(a(&c21.ns, s2, "a"), ok(c11.ip));
    assert!(
        a1.proc.log().contains("names known are kept"),
        "{}",
        a1.proc.log()
    );
}
