//! Discovery through the cluster store (issue 11, points 2 and 5): three
//! hosts register the subnets their bridges have (two BPF, one kernel mode)
//! and find each other with no `peer add`: every other host becomes a peer
//! with source `cluster` on both dataplanes and containers reach each
//! other. Static peers keep working beside them (and win a conflict). The
//! CLI lists the hosts, the store's state, Docker's options and the subnet
//! file; `hosts rm` removes a dead host from everyone at once.

use std::time::{Duration, Instant};

use overlay_lab::{
    exec_ok, need_etcd_or_skip, ping, subnet_file, Binaries, Etcd, EtcdOptions, Lab, LabSpec,
    Overlayd,
};
use overlay_tests::{
    cluster_init, cluster_opts, cluster_peers, ctl_on, peers_of, wait_cluster_peers,
};

const S1: &str = "10.103.100.0/24";
const S2: &str = "10.103.200.0/24";
const S3: &str = "10.103.150.0/24";

#[test]
fn hosts_find_each_other_on_both_dataplanes() {
    if !need_etcd_or_skip() {
        return;
    }
    let lab = Lab::new(LabSpec {
        hosts: 3,
        containers_per_host: 1,
        ..Default::default()
    })
    .unwrap();
    let bins = Binaries::locate().unwrap();
    let etcd = Etcd::start(&lab, &[1], &EtcdOptions::default()).unwrap();
    cluster_init(&lab, 1, &bins, &etcd, "10.103.0.0/16", 24).unwrap();
    let modes = ["ebpf", "kernel", "ebpf"];
    let start = |h: usize| {
        Overlayd::start(
            &lab,
            h,
            &bins,
            &cluster_opts(&etcd, h, modes[h - 1], false, ""),
        )
        .unwrap()
    };
    let (a1, a2, mut a3) = (start(1), start(2), start(3));
    let took = wait_cluster_peers(&a1, &[S2, S3], Duration::from_secs(10)).unwrap();
    eprintln!("host 1 knew both others {took:?} after the last start");
    wait_cluster_peers(&a2, &[S1, S3], Duration::from_secs(10)).unwrap();
    wait_cluster_peers(&a3, &[S1, S2], Duration::from_secs(10)).unwrap();

    // Traffic between every pair, through BPF and kernel hosts alike.
    for (from, to) in [(1, 2), (2, 3), (3, 1), (2, 1)] {
        let (a, b) = (lab.container(from, 1), lab.container(to, 1));
        let r = ping(&a.ns, b.ip, 3, None, false, 5).unwrap();
        assert_eq!(r.received, 3, "ping host {from} -> host {to}: {r:?}");
    }
    // The kernel host has the neighbour, FDB entry and route of each peer.
    let ns2 = &lab.host(2).ns;
    let route = exec_ok(ns2, &["ip", "route", "show", S1]).unwrap();
    assert!(route.contains("dev ovl.42"), "{route}");
    let fdb = exec_ok(ns2, &["bridge", "fdb", "show", "dev", "ovl.42"]).unwrap();
    assert!(
        fdb.contains("dst 192.168.56.4") && fdb.contains("dst 192.168.56.6"),
        "{fdb}"
    );

    // Static peers beside the cluster's; a static peer wins a conflict.
    a1.ctl_ok(&["peer", "add", "10.99.0.0/24", "192.168.56.99"])
        .unwrap();
    etcd.etcdctl_ok(&[
        "put",
        "/overlay/subnets/10.99.0.0-24",
        r#"{"name":"ghost","underlay_ip":"192.168.56.98","subnet":"10.99.0.0/24","vtep_mac":"02:2a:c0:a8:38:62"}"#,
    ])
    .unwrap();
    wait_cluster_peers(&a2, &[S1, S3, "10.99.0.0/24"], Duration::from_secs(5)).unwrap();
    let mut p1 = peers_of(&a1).unwrap();
    p1.sort();
    let pair = |s: &str, src: &str| (s.to_string(), src.to_string());
    assert_eq!(
        p1,
        vec![
            pair(S3, "cluster"),
            pair(S2, "cluster"),
            pair("10.99.0.0/24", "api")
        ]
    );
    assert!(a1
        .proc
        .log()
        .contains("already a peer from api; keeping that one"));
    etcd.etcdctl_ok(&["del", "/overlay/subnets/10.99.0.0-24"])
        .unwrap();
    wait_cluster_peers(&a2, &[S1, S3], Duration::from_secs(5)).unwrap();
    assert!(peers_of(&a1)
        .unwrap()
        .contains(&("10.99.0.0/24".to_string(), "api".to_string())));

    // overlayctl hosts: the three, this one marked, modes and lease time left.
    let table = a1.ctl_ok(&["hosts"]).unwrap();
    eprintln!("{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].ends_with("LEASE LEFT"),
        "{table}"
    );
    assert_eq!(lines.len(), 4, "{table}");
    assert!(
        table.contains("h1 (this host)  192.168.56.4  10.103.100.0/24  ebpf"),
        "{table}"
    );
    assert!(
        table.contains("h2              192.168.56.5  10.103.200.0/24  kernel      23h5"),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&a1.ctl_ok(&["--json", "hosts"]).unwrap()).unwrap();
    let hosts = json.as_array().unwrap();
    assert_eq!(hosts.len(), 3);
    for h in hosts {
        let ttl = h["lease_ttl"].as_i64().unwrap();
        assert!(ttl > 86_000 && ttl <= 86_400, "{h}");
        assert_eq!(h["this_host"] == true, h["name"] == "h1", "{h}");
        assert_eq!(h["vtep_mac"].as_str().unwrap().len(), 17);
    }

    // overlayctl cluster status and the store's line in status.
    let st: serde_json::Value =
        serde_json::from_str(&a1.ctl_ok(&["--json", "cluster", "status"]).unwrap()).unwrap();
    assert_eq!(st["connected"], true, "{st}");
    assert_eq!(st["endpoints"][0], "http://192.168.56.4:2379");
    assert!(
        st["member"]
            .as_str()
            .unwrap()
            .starts_with("m1 (http://192.168.56.4:2379)"),
        "{st}"
    );
    assert_eq!(st["leader"], "m1");
    assert!(st["revision"].as_i64().unwrap() > 3, "{st}");
    assert!(st["lease_ttl"].as_i64().unwrap() > 86_000, "{st}");
    assert_eq!(st["last_error"], serde_json::Value::Null);
    let text = a1.ctl_ok(&["cluster", "status"]).unwrap();
    assert!(text.contains("connected    yes"), "{text}");
    let status = a1.status().unwrap();
    assert_eq!(status["cluster"]["connected"], true, "{status}");
    assert_eq!(status["cluster"]["hosts"], 2, "{status}");
    assert!(a1
        .ctl_ok(&["status"])
        .unwrap()
        .contains("cluster store  connected to m1"));

    // The subnet file and Docker's options.
    let env = std::fs::read_to_string(subnet_file(&lab, 2)).unwrap();
    assert_eq!(
        env,
        "OVERLAY_NETWORK=10.103.0.0/16\nOVERLAY_SUBNET=10.103.200.1/24\nOVERLAY_MTU=1450\n"
    );
    let file = subnet_file(&lab, 2).display().to_string();
    let out = ctl_on(&lab, 2, &bins, &["docker-opts", "--subnet-file", &file]).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "--bip=10.103.200.1/24 --mtu=1450\n"
    );
    let out = ctl_on(
        &lab,
        2,
        &bins,
        &["docker-opts", "--subnet-file", "/nonexistent/subnet.env"],
    )
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .starts_with("error: cannot read the subnet file /nonexistent/subnet.env: "));

    // A dead host: its record stays until its lease expires (24 h) or `hosts rm`.
    a3.proc.kill().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(cluster_peers(&a1).unwrap().contains(&S3.to_string()));
    let refused = a1.ctl(&["hosts", "rm", "h1"]).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr).trim(),
        "error: h1 is this host; stop it with `overlayd --cleanup` to leave the cluster"
    );
    let unknown = a1.ctl(&["hosts", "rm", "h9"]).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&unknown.stderr).trim(),
        "error: no host named h9 in the cluster store; expected a name from `overlayctl hosts`"
    );
    let removed = Instant::now();
    let out = a1.ctl_ok(&["hosts", "rm", "h3"]).unwrap();
    assert_eq!(
        out.trim(),
        "host h3 (192.168.56.6, 10.103.150.0/24) removed"
    );
    wait_cluster_peers(&a1, &[S2], Duration::from_secs(2)).unwrap();
    wait_cluster_peers(&a2, &[S1], Duration::from_secs(2)).unwrap();
    eprintln!("hosts rm: gone everywhere after {:?}", removed.elapsed());
    let route = exec_ok(ns2, &["ip", "route", "show", S3]).unwrap();
    assert!(
        route.trim().is_empty(),
        "the kernel host's route to the removed host: {route}"
    );
    let hosts: serde_json::Value =
        serde_json::from_str(&a1.ctl_ok(&["--json", "hosts"]).unwrap()).unwrap();
    assert_eq!(hosts.as_array().unwrap().len(), 2);
    // Still forwarding between the two left.
    let r = ping(
        &lab.container(1, 1).ns,
        lab.container(2, 1).ip,
        2,
        None,
        false,
        5,
    )
    .unwrap();
    assert_eq!(r.received, 2);
}
