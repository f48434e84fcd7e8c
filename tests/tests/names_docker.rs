//! Names across hosts with real dockerd (issue 13, point 6): two simulated
//! hosts (host 1 BPF, host 2 kernel mode), each dockerd started with
//! `--dns <its host's underlay address>` and the plugin `ovl` of its host's
//! overlayd, which runs the resolver (`[dns]`); real etcd. A container on
//! `web` on host 1 pings and fetches from a container on host 2 by its
//! name and by its alias; a container on `db` does not resolve it; a name
//! outside the overlay comes from the lab's resolver; a removed container
//! stops resolving within a second.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use overlay_lab::{
    need_docker_or_skip, need_etcd_or_skip, run_in_netns, Binaries, DockerOptions, Dockerd, Etcd,
    EtcdOptions, Lab, LabSpec, Overlayd,
};
use overlay_tests::{cluster_init, cluster_opts};

#[path = "../../overlay-user/tests/common/dns.rs"]
mod dns;
use dns::FakeUpstream;

/// `docker run --rm` on `d` with `args` and `cmd`; (exit ok, output).
fn run_rm(d: &Dockerd, args: &[&str], cmd: &[&str]) -> (bool, String) {
    let mut all = vec!["run", "--rm"];
    all.extend_from_slice(args);
    all.push(overlay_lab::BUSYBOX_IMAGE);
    all.extend_from_slice(cmd);
    let out = d.cli(&all).unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn docker_containers_reach_each_other_by_name_across_hosts() {
    if !need_docker_or_skip() || !need_etcd_or_skip() {
        return;
    }
    let lab = Lab::new(LabSpec {
        hosts: 2,
        containers_per_host: 0,
        docker: true,
        ..Default::default()
    })
    .unwrap();
    let bins = Binaries::locate().unwrap();
    let etcd = Etcd::start(&lab, &[1], &EtcdOptions::default()).unwrap();
    cluster_init(&lab, 1, &bins, &etcd, "10.103.0.0/16", 24).unwrap();
    let (h1, h2) = (lab.host(1).clone(), lab.host(2).clone());
    let up_addr = SocketAddr::new(h2.underlay_ip.into(), 5353);
    let _upstream = FakeUpstream::serve(
        run_in_netns(&h2.ns, move || UdpSocket::bind(up_addr))
            .unwrap()
            .unwrap(),
        vec![("outside.lab".into(), Ipv4Addr::new(192, 0, 2, 7))],
    );
    let dockers: Vec<Dockerd> = [&h1, &h2]
        .iter()
        .map(|h| {
            let opts = DockerOptions {
                plugin_dir: true,
                extra_args: vec!["--dns".into(), h.underlay_ip.to_string()],
                ..Default::default()
            };
            let d = Dockerd::start(&lab, h.index, &opts).unwrap();
            d.import_busybox().unwrap();
            d
        })
        .collect();
    let agents: Vec<Overlayd> = [(&h1, "ebpf"), (&h2, "kernel")]
        .iter()
        .map(|(h, mode)| {
            let mut o = cluster_opts(&etcd, h.index, mode, false, "");
            o.extra = format!(
                "{}\n[dns]\nlisten = \"{}:53\"\nupstream = [\"{up_addr}\"]\n",
                dockers[h.index - 1].plugin_toml(),
                h.underlay_ip
            );
            Overlayd::start(&lab, h.index, &bins, &o).unwrap()
        })
        .collect();
    let (d1, d2) = (&dockers[0], &dockers[1]);

    for (net, subnet) in [("web", "10.110.240.0/24"), ("db", "10.110.241.0/24")] {
        // The plugin's socket comes once overlayd runs: try for a while.
        let started = Instant::now();
        let args = [
            "network",
            "create",
            "-d",
            "ovl",
            "--ipam-driver",
            "ovl",
            "--subnet",
            subnet,
            net,
        ];
        while let Err(e) = d1.cli_ok(&args) {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{e}\n{}",
                agents[0].proc.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let started = Instant::now();
    while !d2.cli_ok(&["network", "ls"]).unwrap().contains(" db ") {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "db not on host 2"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    d2.run(
        "bb",
        &["--network", "web", "--network-alias", "bee"],
        &["httpd", "-f", "-p", "8080", "-h", "/etc"],
    )
    .unwrap();
    let ip = d2
        .inspect("bb", "{{.NetworkSettings.Networks.web.IPAddress}}")
        .unwrap();

    let (ok, out) = run_rm(
        d1,
        &["--network", "web"],
        &["ping", "-c", "2", "-W", "2", "bb"],
    );
    assert!(
        ok && out.contains(&format!("({ip})")),
        "ping bb: {out}\n{}",
        agents[0].proc.log()
    );
    let (ok, out) = run_rm(
        d1,
        &["--network", "web"],
        &["wget", "-qO-", "http://bee:8080/hostname"],
    );
    assert!(ok && !out.trim().is_empty(), "wget http://bee:8080/: {out}");
    let (ok, out) = run_rm(d1, &["--network", "db"], &["nslookup", "bb"]);
    assert!(!ok || !out.contains(&ip), "db resolved web's bb: {out}");
    let (_, out) = run_rm(d1, &["--network", "web"], &["nslookup", "outside.lab"]);
    assert!(out.contains("192.0.2.7"), "outside.lab: {out}");

    d2.cli_ok(&["rm", "-f", "bb"]).unwrap();
    let gone = Instant::now();
    loop {
        let (ok, out) = run_rm(d1, &["--network", "web"], &["nslookup", "bb"]);
        if !ok || !out.contains(&ip) {
            eprintln!(
                "bb gone on host 1 after {:?} (docker run included)",
                gone.elapsed()
            );
            break;
        }
        assert!(
            gone.elapsed() < Duration::from_secs(10),
            "bb still resolves: {out}"
        );
    }
}
