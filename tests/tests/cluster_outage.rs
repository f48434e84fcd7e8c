//! The store is not on the packet path (issue 11, point 3): with etcd
//! killed, traffic goes on (ping, and 64 MiB with equal SHA-256), the
//! outage is logged once, `status` shows it, and an agent restarted during
//! the outage comes back with its last-known peers and forwards. When etcd
//! returns, both agents resynchronise without restarting: the restarted one
//! registers again, and changes made after the return reach both.

use std::time::{Duration, Instant};

use overlay_lab::{
    need_etcd_or_skip, ping, transfer, Binaries, Etcd, EtcdOptions, Lab, LabSpec, Overlayd,
};
use overlay_tests::{cluster_init, cluster_opts, wait_cluster_peers};

const S1: &str = "10.103.100.0/24";
const S2: &str = "10.103.200.0/24";
const OUTAGE_LINE: &str = "forwarding continues with the";
const CONNECTED_LINE: &str = "cluster: connected to etcd";

fn wait_store(agent: &Overlayd, connected: bool) {
    agent
        .wait_status(Duration::from_secs(15), |s| {
            s["cluster"]["connected"] == connected
        })
        .unwrap_or_else(|e| panic!("host {}: {e}\n{}", agent.host, agent.proc.log()));
}

fn pings(lab: &Lab) {
    for (from, to) in [(1, 2), (2, 1)] {
        let r = ping(
            &lab.container(from, 1).ns,
            lab.container(to, 1).ip,
            3,
            None,
            false,
            5,
        )
        .unwrap();
        assert_eq!(r.received, 3, "ping host {from} -> host {to}: {r:?}");
    }
}

#[test]
fn forwarding_survives_etcd_going_away_and_agents_resync_when_it_returns() {
    if !need_etcd_or_skip() {
        return;
    }
    let lab = Lab::new(LabSpec {
        hosts: 2,
        containers_per_host: 1,
        ..Default::default()
    })
    .unwrap();
    let bins = Binaries::locate().unwrap();
    let mut etcd = Etcd::start(&lab, &[1], &EtcdOptions::default()).unwrap();
    cluster_init(&lab, 1, &bins, &etcd, "10.103.0.0/16", 24).unwrap();
    let opts = |h: usize, mode: &str| cluster_opts(&etcd, h, mode, false, "");
    let (o1, o2) = (opts(1, "ebpf"), opts(2, "kernel"));
    let a1 = Overlayd::start(&lab, 1, &bins, &o1).unwrap();
    let mut a2 = Overlayd::start(&lab, 2, &bins, &o2).unwrap();
    wait_cluster_peers(&a1, &[S2], Duration::from_secs(10)).unwrap();
    wait_cluster_peers(&a2, &[S1], Duration::from_secs(10)).unwrap();
    pings(&lab);
    let pid1 = a1.proc.pid();

    // etcd goes away.
    etcd.kill(0).unwrap();
    wait_store(&a1, false);
    wait_store(&a2, false);
    let status = a1.status().unwrap();
    let err = status["cluster"]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.contains("http://192.168.56.4:2379"), "{status}");
    let text = a1.ctl_ok(&["status"]).unwrap();
    assert!(
        text.contains("cluster store  1 other hosts; etcd"),
        "{text}"
    );
    pings(&lab);
    let (c1, c2) = (lab.container(1, 1), lab.container(2, 1));
    let t = transfer(&c1.ns, &c2.ns, c2.ip, 64 << 20).unwrap();
    assert!(t.is_intact(), "{t:?}");
    assert_eq!(t.sent_sha256, t.received_sha256);
    eprintln!(
        "64 MiB with etcd down: {:.2} Gbit/s, sha256 {}",
        t.gbit_per_s(),
        t.received_sha256
    );

    // An agent restarted during the outage: last-known peers, forwarding.
    let (config, socket) = (a2.config.clone(), a2.socket.clone());
    a2.proc.kill().unwrap();
    let started = Instant::now();
    a2 = Overlayd::start_with(&lab, 2, &bins, &config, &socket, &[]).unwrap();
    eprintln!(
        "restart during the outage: ready after {:?}",
        started.elapsed()
    );
    let log = a2.proc.log();
    assert!(log.contains("etcd is unreachable"), "{log}");
    assert!(
        log.contains("1 last-known hosts are used until it is back"),
        "{log}"
    );
    wait_cluster_peers(&a2, &[S1], Duration::from_secs(2)).unwrap();
    pings(&lab);

    // The outage was logged once, not once per retry.
    std::thread::sleep(Duration::from_secs(3));
    let log1 = a1.proc.log();
    assert_eq!(log1.matches(OUTAGE_LINE).count(), 1, "{log1}");

    // etcd is back: both resynchronise, without restarting.
    let back = Instant::now();
    etcd.restart(&lab, 0).unwrap();
    etcd.wait_healthy(Duration::from_secs(20)).unwrap();
    wait_store(&a1, true);
    wait_store(&a2, true);
    eprintln!(
        "both agents resynchronised {:?} after etcd's restart",
        back.elapsed()
    );
    assert_eq!(a1.proc.pid(), pid1, "host 1's agent was not restarted");
    assert_eq!(a1.proc.log().matches(CONNECTED_LINE).count(), 2);
    let key2 = etcd
        .etcdctl_ok(&["get", "/overlay/subnets/10.103.200.0-24"])
        .unwrap();
    assert!(
        key2.contains("\"mode\":\"kernel\""),
        "host 2 registered again: {key2}"
    );
    // The watch is live again: a host joining now reaches both.
    etcd.etcdctl_ok(&[
        "put",
        "/overlay/subnets/10.103.7.0-24",
        r#"{"name":"late","underlay_ip":"192.168.56.77","subnet":"10.103.7.0/24","vtep_mac":"02:2a:c0:a8:38:4d"}"#,
    ])
    .unwrap();
    wait_cluster_peers(&a1, &[S2, "10.103.7.0/24"], Duration::from_secs(5)).unwrap();
    wait_cluster_peers(&a2, &[S1, "10.103.7.0/24"], Duration::from_secs(5)).unwrap();
    etcd.etcdctl_ok(&["del", "/overlay/subnets/10.103.7.0-24"])
        .unwrap();
    wait_cluster_peers(&a1, &[S2], Duration::from_secs(5)).unwrap();
    pings(&lab);
    let st: serde_json::Value =
        serde_json::from_str(&a2.ctl_ok(&["--json", "cluster", "status"]).unwrap()).unwrap();
    assert_eq!(st["connected"], true, "{st}");
    assert_eq!(st["last_error"], serde_json::Value::Null, "{st}");
}
