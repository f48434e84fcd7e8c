//! Overlay networks with Docker (issue 12, point 6): a real dockerd on each
//! of three simulated hosts (each in a private mount namespace with its own
//! plugin directory, where its host's overlayd serves plugin `ovl`) and a
//! real etcd. A network made on host 1 appears on the others' Docker; one
//! container per host gets a distinct address; every pair pings and moves
//! 64 MiB intact; `docker stop` removes the endpoint everywhere; two
//! networks are isolated; a restarted container is reachable again; a
//! `--network none` container joins through `overlayctl attach --network`;
//! `-d ovl` with Docker's default IPAM is refused with what to add; and
//! everything is removed at the end.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use overlay_lab::{
    need_docker_or_skip, need_etcd_or_skip, ping, transfer, Binaries, DockerOptions, Dockerd, Etcd,
    EtcdOptions, Lab, LabSpec, Overlayd,
};
use overlay_tests::{cluster_init, cluster_opts, peer_traffic};

const WEB: &str = "10.110.240.0/24";
const MIB_64: u64 = 64 << 20;

/// Wait until `check` holds, up to `timeout`; how long it took.
fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!("{what}: not within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `ovl` networks Docker on `d` has, by name.
fn ovl_networks(d: &Dockerd) -> Vec<String> {
    d.cli_ok(&[
        "network",
        "ls",
        "--filter",
        "driver=ovl",
        "--format",
        "{{.Name}}",
    ])
    .map(|s| s.lines().map(str::to_string).collect())
    .unwrap_or_default()
}

/// The address of container `name` on network `net`.
fn address(d: &Dockerd, name: &str, net: &str) -> Ipv4Addr {
    let s = d
        .inspect(
            name,
            &format!("{{{{.NetworkSettings.Networks.{net}.IPAddress}}}}"),
        )
        .unwrap();
    s.parse()
        .unwrap_or_else(|_| panic!("container {name} has no address on {net}: {s:?}"))
}

/// The endpoint addresses the store has on `net`, as `overlayctl network inspect` shows them.
fn store_endpoints(agent: &Overlayd, net: &str) -> Vec<Ipv4Addr> {
    let Ok(out) = agent.ctl_ok(&["--json", "network", "inspect", net]) else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    v["endpoints"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["ip"].as_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

struct Hosts {
    // Dropped in this order: agents, then dockerds, then etcd, then the lab.
    agents: Vec<Overlayd>,
    dockers: Vec<Dockerd>,
    _etcd: Etcd,
    lab: Lab,
}

fn three_hosts(mode: &str) -> Hosts {
    let lab = Lab::new(LabSpec {
        hosts: 3,
        containers_per_host: 0,
        docker: true,
        ..Default::default()
    })
    .unwrap();
    let bins = Binaries::locate().unwrap();
    let etcd = Etcd::start(&lab, &[1], &EtcdOptions::default()).unwrap();
    cluster_init(&lab, 1, &bins, &etcd, "10.103.0.0/16", 24).unwrap();
    let opts = DockerOptions {
        plugin_dir: true,
        ..Default::default()
    };
    let dockers: Vec<Dockerd> = (1..=3)
        .map(|h| {
            let d = Dockerd::start(&lab, h, &opts).unwrap();
            d.import_busybox().unwrap();
            d
        })
        .collect();
    let agents = (1..=3)
        .map(|h| {
            let mut o = cluster_opts(&etcd, h, mode, false, "");
            o.extra = dockers[h - 1].plugin_toml();
            Overlayd::start(&lab, h, &bins, &o).unwrap()
        })
        .collect();
    Hosts {
        agents,
        dockers,
        _etcd: etcd,
        lab,
    }
}

#[test]
fn networks_across_three_docker_hosts() {
    if !need_docker_or_skip() || !need_etcd_or_skip() {
        return;
    }
    let h = three_hosts("ebpf");
    let (d1, d2, d3) = (&h.dockers[0], &h.dockers[1], &h.dockers[2]);
    let (a1, a2, a3) = (&h.agents[0], &h.agents[1], &h.agents[2]);

    // -d ovl with Docker's default IPAM is refused, saying what to add.
    let out = d1
        .cli(&[
            "network",
            "create",
            "-d",
            "ovl",
            "--subnet",
            "10.110.9.0/24",
            "bad",
        ])
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("uses Docker's default IPAM (address space \"LocalDefault\"); the ovl network driver needs ovl's IPAM: add --ipam-driver ovl, as in `docker network create -d ovl --ipam-driver ovl --subnet 10.103.240.0/24 NAME`"),
        "{stderr}"
    );
    assert!(!ovl_networks(d1).contains(&"bad".to_string()));

    // A network made with docker on host 1 appears on hosts 2 and 3 within 2 s.
    d1.cli_ok(&[
        "network",
        "create",
        "-d",
        "ovl",
        "--ipam-driver",
        "ovl",
        "--subnet",
        WEB,
        "web",
    ])
    .unwrap();
    for d in [d2, d3] {
        let took = wait_for(
            "web on another host's Docker",
            Duration::from_secs(2),
            || ovl_networks(d).contains(&"web".to_string()),
        )
        .unwrap();
        eprintln!("web appeared on host {} after {took:?}", d.host());
    }
    // One made with overlayctl on host 2, from the default pool, appears everywhere.
    a2.ctl_ok(&["network", "create", "db"]).unwrap();
    for d in [d1, d2, d3] {
        wait_for("db on Docker", Duration::from_secs(2), || {
            ovl_networks(d).contains(&"db".to_string())
        })
        .unwrap();
    }

    // One container per host on web, each with its own address.
    for (d, name) in [(d1, "c1"), (d2, "c2"), (d3, "c3")] {
        d.run(name, &["--network", "web"], &["sleep", "3600"])
            .unwrap();
    }
    let ips = [
        address(d1, "c1", "web"),
        address(d2, "c2", "web"),
        address(d3, "c3", "web"),
    ];
    eprintln!("web: c1 {} c2 {} c3 {}", ips[0], ips[1], ips[2]);
    assert!(
        ips[0] != ips[1] && ips[1] != ips[2] && ips[0] != ips[2],
        "{ips:?}"
    );
    assert!(
        ips.iter().all(|ip| ip.octets()[..3] == [10, 110, 240]),
        "{ips:?} not all in {WEB}"
    );
    let ns = |d: &Dockerd, n: &str| d.container_netns(n).unwrap();
    let nss = [ns(d1, "c1"), ns(d2, "c2"), ns(d3, "c3")];

    // Every pair pings and moves 64 MiB intact.
    for (i, j) in [(0, 1), (1, 2), (2, 0), (1, 0), (2, 1), (0, 2)] {
        let r = ping(&nss[i], ips[j], 3, None, false, 5).unwrap();
        assert_eq!(r.received, 3, "ping c{} -> c{}: {r:?}", i + 1, j + 1);
    }
    for (i, j) in [(0, 1), (1, 2), (2, 0)] {
        let t = transfer(&nss[i], &nss[j], ips[j], MIB_64).unwrap();
        assert!(t.is_intact(), "c{} -> c{}: {t:?}", i + 1, j + 1);
        assert_eq!(t.sent_sha256, t.received_sha256);
        eprintln!(
            "c{} -> c{}: 64 MiB at {:.2} Gbit/s",
            i + 1,
            j + 1,
            t.gbit_per_s()
        );
    }
    // Network traffic counts for the peer hosts too (the remote endpoints
    // carry their host's counter slot): each host sent 64 MiB to the next
    // and received 64 MiB from the one before.
    for (i, j) in [(0, 1), (1, 2), (2, 0)] {
        let sent = peer_traffic(&h.agents[i], h.lab.host(j + 1).underlay_ip);
        assert!(
            sent["tx_bytes"].as_u64().unwrap() > MIB_64,
            "host {} to {}: {sent}",
            i + 1,
            j + 1
        );
        let got = peer_traffic(&h.agents[j], h.lab.host(i + 1).underlay_ip);
        assert!(
            got["rx_bytes"].as_u64().unwrap() > MIB_64,
            "host {} from {}: {got}",
            j + 1,
            i + 1
        );
    }

    // Isolation: a container on db reaches nothing on web, on its host or another.
    d1.run("x1", &["--network", "db"], &["sleep", "3600"])
        .unwrap();
    let x1 = address(d1, "x1", "db");
    let nx1 = ns(d1, "x1");
    for (from, to) in [(&nx1, ips[0]), (&nx1, ips[1]), (&nss[0], x1), (&nss[2], x1)] {
        let r = ping(from, to, 2, None, false, 2).unwrap();
        assert_eq!(r.received, 0, "{from} -> {to} crossed networks: {r:?}");
    }

    // docker stop removes the endpoint on every host.
    d3.cli_ok(&["stop", "-t", "0", "c3"]).unwrap();
    for a in [a1, a2, a3] {
        wait_for("c3's record gone", Duration::from_secs(2), || {
            !store_endpoints(a, "web").contains(&ips[2])
        })
        .unwrap();
    }
    let r = ping(&nss[0], ips[2], 2, None, false, 2).unwrap();
    assert_eq!(r.received, 0, "c3 still answers: {r:?}");

    // A restarted container is reachable again.
    d2.cli_ok(&["restart", "-t", "0", "c2"]).unwrap();
    let c2 = address(d2, "c2", "web");
    let n2 = ns(d2, "c2");
    wait_for(
        "c2 reachable after its restart",
        Duration::from_secs(5),
        || ping(&nss[0], c2, 1, None, false, 1).is_ok_and(|r| r.received == 1),
    )
    .unwrap();
    let r = ping(&n2, ips[0], 3, None, false, 5).unwrap();
    assert_eq!(r.received, 3, "{r:?}");

    // A --network none container joins web through overlayctl attach.
    d3.run("n3", &["--network", "none"], &["sleep", "3600"])
        .unwrap();
    let out = a3.ctl_ok(&["attach", "n3", "--network", "web"]).unwrap();
    assert!(
        out.starts_with("attached container n3 to network web: eth0 10.110.240."),
        "{out}"
    );
    let n3ip: Ipv4Addr = out
        .split_whitespace()
        .nth(7)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let nn3 = ns(d3, "n3");
    for from in [&nss[0], &n2] {
        let r = ping(from, n3ip, 3, None, false, 5).unwrap();
        assert_eq!(r.received, 3, "ping {from} -> n3 {n3ip}: {r:?}");
    }
    let t = transfer(&nn3, &nss[0], ips[0], MIB_64).unwrap();
    assert!(t.is_intact(), "{t:?}");
    let out = a3.ctl_ok(&["detach", "n3"]).unwrap();
    assert!(out.contains(&format!("endpoint {n3ip} deleted")), "{out}");

    // Everything goes: containers, then the networks, from the store and every Docker.
    d1.cli_ok(&["rm", "-f", "c1", "x1"]).unwrap();
    d2.cli_ok(&["rm", "-f", "c2"]).unwrap();
    d3.cli_ok(&["rm", "-f", "c3", "n3"]).unwrap();
    d1.cli_ok(&["network", "rm", "web"]).unwrap();
    a1.ctl_ok(&["network", "rm", "db"]).unwrap();
    for d in [d1, d2, d3] {
        wait_for("networks gone from Docker", Duration::from_secs(2), || {
            ovl_networks(d).is_empty()
        })
        .unwrap();
    }
    let ls = a3.ctl_ok(&["--json", "network", "ls"]).unwrap();
    assert_eq!(ls.trim(), "[]", "{ls}");
    eprintln!("lab {} done", h.lab.id());
}
