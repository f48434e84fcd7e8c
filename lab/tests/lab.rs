//! End-to-end tests of the lab itself (need root; skipped otherwise, except
//! under CI=true where they fail loudly).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use overlay_lab::*;

fn netns_list() -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Names of the interfaces of the root network namespace.
fn root_ifaces() -> BTreeSet<String> {
    // /sys/class/net of this (root-namespace) process.
    std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

fn assert_gone(id: &str, namespaces: &[String]) {
    let list = netns_list();
    for ns in namespaces {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns)),
            "namespace {ns} still exists:\n{list}"
        );
    }
    assert!(!list.contains(id), "namespaces of {id} remain:\n{list}");
    assert!(!Path::new(&format!("{BPFFS_ROOT}/{id}")).exists());
    assert!(!Path::new(&format!("/tmp/overlay-lab-{id}")).exists());
}

#[test]
fn lab_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Lab>();
    check::<Proc>();
    check::<Capture>();
}

#[test]
fn two_host_lab_connectivity_and_cleanup() {
    if !need_root_or_skip() {
        return;
    }
    let before = root_ifaces();
    let lab = Lab::new(LabSpec::default()).unwrap();
    let id = lab.id().to_string();
    let namespaces = lab.namespaces().to_vec();
    assert_eq!(namespaces.len(), 1 + 2 + 4);
    assert!(id.starts_with(&format!("ovl{}x", std::process::id())));

    // Nothing in the root namespace.
    let after = root_ifaces();
    assert!(
        after.iter().all(|i| !i.contains(&id)),
        "root ns has a lab interface: {after:?}"
    );
    let new: Vec<_> = after.difference(&before).collect();
    assert!(new.is_empty(), "new interfaces in root ns: {new:?}");

    // Addressing.
    let h1 = lab.host(1);
    let h2 = lab.host(2);
    assert_eq!(h1.ns, format!("{id}-h1"));
    assert_eq!(h1.underlay_ip, Ipv4Addr::new(192, 168, 56, 4));
    assert_eq!(h2.underlay_ip, Ipv4Addr::new(192, 168, 56, 5));
    assert_eq!(h1.subnet, "10.103.100.0/24");
    assert_eq!(h2.subnet, "10.103.200.0/24");
    assert_eq!(h1.gateway, Ipv4Addr::new(10, 103, 100, 1));
    let c11 = lab.container(1, 1);
    let c12 = lab.container(1, 2);
    let c21 = lab.container(2, 1);
    assert_eq!(c11.ns, format!("{id}-h1c1"));
    assert_eq!(c11.ip, Ipv4Addr::new(10, 103, 100, 2));
    assert_eq!(c12.ip, Ipv4Addr::new(10, 103, 100, 3));
    assert_eq!(c21.ip, Ipv4Addr::new(10, 103, 200, 2));
    assert_eq!(c11.mac, "02:42:0a:67:64:02");

    let eth1 = exec_ok(&h1.ns, &["ip", "-o", "addr", "show", "dev", "eth1"]).unwrap();
    assert!(eth1.contains("192.168.56.4/24"), "{eth1}");
    let docker0 = exec_ok(&h1.ns, &["ip", "-d", "link", "show", "docker0"]).unwrap();
    assert!(docker0.contains("mtu 1450"), "{docker0}");
    let eth0 = exec_ok(&c11.ns, &["ip", "link", "show", "eth0"]).unwrap();
    assert!(
        eth0.contains("mtu 1450") && eth0.contains("02:42:0a:67:64:02"),
        "{eth0}"
    );
    let veth = exec_ok(&h1.ns, &["ip", "link", "show", "veth1"]).unwrap();
    assert!(
        veth.contains("master docker0") && veth.contains("mtu 1450"),
        "{veth}"
    );
    let port = exec_ok(lab.underlay_ns(), &["ip", "link", "show", "h2"]).unwrap();
    assert!(
        port.contains("master br0") && port.contains("mtu 1500"),
        "{port}"
    );
    assert_eq!(sysctl_get(&h1.ns, "net.ipv4.ip_forward").unwrap(), "1");
    assert_eq!(
        sysctl_get(&h1.ns, "net.ipv4.conf.all.rp_filter").unwrap(),
        "0"
    );
    assert_eq!(
        sysctl_get(&h1.ns, "net/ipv4/conf/eth1/rp_filter").unwrap(),
        "0"
    );
    let routes = exec_ok(&h1.ns, &["ip", "route"]).unwrap();
    assert!(!routes.contains("10.103.200"), "{routes}");
    assert!(!routes.contains("default"), "{routes}");

    // Same host, container to container and to the gateway.
    let r = ping(&c11.ns, c12.ip, 3, None, false, 2).unwrap();
    assert_eq!((r.transmitted, r.received), (3, 3), "{r:?}");
    let r = ping(&c11.ns, c11.gateway, 2, None, false, 2).unwrap();
    assert!(r.all_received(), "{r:?}");

    // Cross-host container traffic has no path without the overlay.
    let r = ping(&c11.ns, c21.ip, 2, None, false, 1).unwrap();
    assert_eq!(r.transmitted, 2);
    assert_eq!(r.received, 0, "{r:?}");

    // Underlay host to host.
    let r = ping(&h1.ns, h2.underlay_ip, 3, None, false, 2).unwrap();
    assert!(r.all_received(), "{r:?}");

    // Don't-fragment ping bigger than the container MTU fails locally;
    // without DF it is fragmented and gets through.
    let r = ping(&c11.ns, c12.ip, 2, Some(1450), true, 1).unwrap();
    assert_eq!(r.received, 0, "{r:?}");
    assert_eq!(r.too_big, 2, "{r:?}");
    let r = ping(&c11.ns, c12.ip, 2, Some(1450), false, 2).unwrap();
    assert!(r.all_received(), "{r:?}");
    let r = ping(&c11.ns, c12.ip, 2, Some(1422), true, 2).unwrap();
    assert!(r.all_received(), "{r:?}");

    // TCP transfer on the same host.
    let t = transfer(&c11.ns, &c12.ns, c12.ip, 8 << 20).unwrap();
    assert_eq!(t.bytes_received, 8 << 20);
    assert_eq!(t.sent_sha256, t.received_sha256);
    assert_eq!(t.sent_sha256, pattern_sha256(8 << 20));
    assert!(t.is_intact());

    // Transfers fail (fast, not hang) when there is no path.
    let start = std::time::Instant::now();
    let err = transfer_with_timeout(&c11.ns, &c21.ns, c21.ip, 1024, Duration::from_secs(5));
    assert!(err.is_err(), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(15));

    let bpffs = lab.bpffs_dir();
    assert!(bpffs.is_dir());
    let dir = lab.dir().to_path_buf();
    assert!(dir.is_dir());

    drop(lab);
    assert_gone(&id, &namespaces);
    assert!(!bpffs.exists() && !dir.exists());
    let after_drop = root_ifaces();
    assert!(after_drop.iter().all(|i| !i.contains(&id)));
}

#[test]
fn panic_while_holding_a_lab_still_cleans_up() {
    if !need_root_or_skip() {
        return;
    }
    let info = std::sync::Mutex::new(None);
    let res = std::panic::catch_unwind(|| {
        let lab = Lab::new(LabSpec {
            hosts: 1,
            containers_per_host: 1,
            underlay_mtu: 1500,
            ..Default::default()
        })
        .unwrap();
        let p = lab
            .spawn(&lab.host(1).ns, &["sleep", "1000"], "sleep.log")
            .unwrap();
        *info.lock().unwrap() = Some((lab.id().to_string(), lab.namespaces().to_vec(), p.pid()));
        std::mem::forget(p); // only the lab can clean it up now
        assert_eq!(1 + 1, 3, "deliberate failure inside a lab test");
    });
    assert!(res.is_err());
    let (id, namespaces, pid) = info.lock().unwrap().take().unwrap();
    assert_gone(&id, &namespaces);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "spawned process {pid} survived: {stat}"
    );
}

#[test]
fn spawn_capture_and_decode() {
    if !need_root_or_skip() {
        return;
    }
    let lab = Lab::new(LabSpec::default()).unwrap();
    let h1 = lab.host(1).clone();
    let h2 = lab.host(2).clone();

    // spawn: runs in the host's network namespace but sees the real bpffs.
    let mut p = lab
        .spawn(
            &h1.ns,
            &[
                "sh",
                "-c",
                &format!(
                    "ip -o addr show dev eth1; ls -d {}; echo ready; exec sleep 1000",
                    lab.bpffs_dir().display()
                ),
            ],
            "probe.log",
        )
        .unwrap();
    p.wait_for_log("ready", Duration::from_secs(10)).unwrap();
    let log = p.log();
    assert!(log.contains("192.168.56.4/24"), "{log}");
    assert!(!log.contains("No such file"), "{log}");
    assert!(p.is_running());
    let st = p.stop().unwrap();
    assert!(!st.success());
    assert!(!p.is_running());

    // A process that ignores SIGTERM is killed after the grace period.
    let mut stubborn = lab
        .spawn(
            &h1.ns,
            &[
                "sh",
                "-c",
                "trap '' TERM; echo armed; while :; do sleep 1; done",
            ],
            "stubborn.log",
        )
        .unwrap();
    stubborn
        .wait_for_log("armed", Duration::from_secs(10))
        .unwrap();
    let t0 = std::time::Instant::now();
    stubborn.stop().unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(2));
    assert!(!stubborn.is_running());

    // capture on the underlay bridge while the hosts ping each other.
    let cap = lab.capture(lab.underlay_ns(), "br0", "icmp", None).unwrap();
    let r = ping(&h1.ns, h2.underlay_ip, 3, Some(100), true, 2).unwrap();
    assert!(r.all_received(), "{r:?}");
    let pcap = cap.finish().unwrap();
    assert!(pcap.starts_with(lab.dir()));
    let pkts = decode_vxlan(&pcap, VXLAN_PORT).unwrap();
    let req: Vec<_> = pkts
        .iter()
        .filter(|p| p.outer_src == h1.underlay_ip && p.outer_dst == h2.underlay_ip)
        .collect();
    assert_eq!(req.len(), 3, "{pkts:?}");
    assert!(req
        .iter()
        .all(|p| p.outer_proto == 1 && p.outer_df && p.vni.is_none()));
    assert!(req.iter().all(|p| p.frame_len == 14 + 128));

    // max_packets: tcpdump stops by itself.
    let cap = lab.capture(&h2.ns, "eth1", "icmp", Some(2)).unwrap();
    ping(&h1.ns, h2.underlay_ip, 2, None, false, 2).unwrap();
    let pcap = cap.finish_after(Duration::from_secs(5)).unwrap();
    let rows = tshark_fields(&pcap, &[], None, &["ip.src", "icmp.type"]).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");

    // Processes that a lab did not spawn itself but that run in its
    // namespaces are killed on drop too.
    let mut stray = nsenter_command(&h2.ns, "sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    let ns = lab.namespaces().to_vec();
    let id = lab.id().to_string();
    drop(lab);
    assert!(
        stray.try_wait().unwrap().is_some(),
        "stray process survived"
    );
    assert_gone(&id, &ns);
}

#[test]
fn add_container_and_more_hosts() {
    if !need_root_or_skip() {
        return;
    }
    let mut lab = Lab::new(LabSpec {
        hosts: 4,
        containers_per_host: 1,
        underlay_mtu: 9000,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(lab.host(3).subnet, "10.103.150.0/24");
    assert_eq!(lab.host(4).subnet, "10.103.40.0/24");
    assert_eq!(lab.host(4).underlay_ip, Ipv4Addr::new(192, 168, 56, 7));
    assert_eq!(lab.host(4).bridge_mtu, 8950);
    let c = lab.add_container(3).unwrap();
    assert_eq!(c.index, 2);
    assert_eq!(c.ip, Ipv4Addr::new(10, 103, 150, 3));
    assert_eq!(c.ns, format!("{}-h3c2", lab.id()));
    assert_eq!(lab.host(3).containers.len(), 2);
    let first = lab.container(3, 1).clone();
    let r = ping(&first.ns, c.ip, 2, Some(8000), true, 2).unwrap();
    assert!(r.all_received(), "{r:?}");
    let r = ping(
        &lab.host(4).ns,
        lab.host(1).underlay_ip,
        2,
        Some(8900),
        true,
        2,
    )
    .unwrap();
    assert!(r.all_received(), "{r:?}");
    assert!(lab.add_container(9).is_err());
}

#[test]
fn stale_leftovers_of_dead_processes_are_swept() {
    if !need_root_or_skip() {
        return;
    }
    // A pid above the kernel's maximum (4194304) can never be alive; derive
    // it from ours so concurrent test processes do not collide.
    let dead = format!("ovl{}x7", 2_100_000_000 + std::process::id());
    let ns = format!("{dead}-h1");
    let bpf = format!("{BPFFS_ROOT}/{dead}");
    let tmp = format!("/tmp/overlay-lab-{dead}");
    let ok = std::process::Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .unwrap();
    assert!(ok.success());
    ensure_bpffs().unwrap();
    std::fs::create_dir_all(&bpf).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    let lab = Lab::new(LabSpec {
        hosts: 1,
        containers_per_host: 0,
        underlay_mtu: 1500,
        ..Default::default()
    })
    .unwrap();
    assert!(!netns_list().contains(&ns));
    assert!(!Path::new(&bpf).exists());
    assert!(!Path::new(&tmp).exists());
    drop(lab);
}

#[test]
fn transfer_256_mib() {
    if !need_root_or_skip() {
        return;
    }
    let lab = Lab::new(LabSpec::default()).unwrap();
    let (a, b) = (lab.container(1, 1), lab.container(1, 2));
    let t = transfer(&a.ns, &b.ns, b.ip, 256 << 20).unwrap();
    assert!(t.is_intact(), "{t:?}");
    eprintln!("256 MiB in {:?} ({:.2} Gbit/s)", t.elapsed, t.gbit_per_s());
}

/// Kernel VXLAN between the hosts (set up here, not by the lab) gives
/// cross-host container connectivity, and decode_vxlan sees the VNI and the
/// inner packets. This checks both that the topology suits an overlay and
/// that capture decoding works on real VXLAN traffic.
#[test]
fn kernel_vxlan_between_hosts_decodes() {
    if !need_root_or_skip() {
        return;
    }
    let lab = Lab::new(LabSpec::default()).unwrap();
    for (me, peer) in [(1, 2), (2, 1)] {
        let (h, p) = (lab.host(me), lab.host(peer));
        let (local, remote) = (h.underlay_ip.to_string(), p.underlay_ip.to_string());
        exec_ok(
            &h.ns,
            &[
                "ip", "link", "add", "vx0", "type", "vxlan", "id", "42", "local", &local, "remote",
                &remote, "dstport", "4789", "dev", "eth1",
            ],
        )
        .unwrap();
        exec_ok(&h.ns, &["ip", "link", "set", "vx0", "up"]).unwrap();
        exec_ok(
            &h.ns,
            &[
                "ip",
                "route",
                "add",
                &p.subnet,
                "via",
                &p.gateway.to_string(),
                "dev",
                "vx0",
                "onlink",
            ],
        )
        .unwrap();
    }
    let (c11, c21) = (lab.container(1, 1), lab.container(2, 1));
    let cap = lab
        .capture(lab.underlay_ns(), "br0", "udp port 4789", None)
        .unwrap();
    let r = ping(&c11.ns, c21.ip, 3, None, false, 3).unwrap();
    assert!(r.received >= 2, "{r:?}");
    let t = transfer(&c11.ns, &c21.ns, c21.ip, 1 << 20).unwrap();
    assert!(t.is_intact(), "{t:?}");
    let pcap = cap.finish().unwrap();
    let pkts = decode_vxlan(&pcap, VXLAN_PORT).unwrap();
    let icmp: Vec<_> = pkts
        .iter()
        .filter(|p| p.inner_proto == Some(1) && p.inner_src == Some(c11.ip))
        .collect();
    assert!(icmp.len() >= 2, "{pkts:#?}");
    for p in &icmp {
        assert_eq!(p.vni, Some(42));
        assert_eq!(p.udp_dst_port, Some(4789));
        assert_eq!(p.outer_src, lab.host(1).underlay_ip);
        assert_eq!(p.outer_dst, lab.host(2).underlay_ip);
        assert_eq!(p.inner_dst, Some(c21.ip));
        assert_eq!(p.to_string().split(' ').count(), 6);
    }
    assert!(pkts.iter().any(|p| p.inner_proto == Some(6)));
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| {
            String::from_utf8_lossy(c)
                .replace('\0', " ")
                .contains(needle)
        })
        .count()
}

#[test]
fn etcd_members_in_lab_namespaces_go_with_their_guard() {
    if !need_etcd_or_skip() {
        return;
    }
    let lab = Lab::new(LabSpec {
        hosts: 3,
        containers_per_host: 0,
        ..Default::default()
    })
    .unwrap();
    let mut etcd = Etcd::start(&lab, &[1, 2, 3], &EtcdOptions::default()).unwrap();
    assert_eq!(
        etcd.endpoints(),
        vec![
            "http://192.168.56.4:2379",
            "http://192.168.56.5:2379",
            "http://192.168.56.6:2379"
        ]
    );
    let token = format!("--initial-cluster-token {}", lab.id());
    assert_eq!(processes_with(&token), 3);
    etcd.etcdctl_ok(&["put", "k", "v1"]).unwrap();
    let leader = etcd.leader().unwrap();
    etcd.kill(leader).unwrap();
    assert!(!etcd.is_running(leader));
    etcd.wait_healthy(Duration::from_secs(20)).unwrap();
    assert_ne!(etcd.leader().unwrap(), leader);
    assert!(etcd.etcdctl_ok(&["get", "k"]).unwrap().contains("v1"));
    etcd.restart(&lab, leader).unwrap();
    etcd.wait_healthy(Duration::from_secs(20)).unwrap();
    assert!(etcd.is_running(leader));
    let dir = lab.dir().join("etcd-1-2-3");
    assert!(dir.join(format!("m{}", leader + 1)).is_dir());
    drop(etcd);
    assert_eq!(processes_with(&token), 0, "etcd members left running");
    assert!(!dir.exists(), "{} left behind", dir.display());
}
