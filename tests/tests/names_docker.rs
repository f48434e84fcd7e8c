//! Names across hosts with real dockerd (issue 13, point 6): two simulated
//! hosts (host 1 BPF, host 2 kernel mode), each dockerd started with
//! `--dns <its host's underlay address>` and the plugin `ovl` of its host's
//! overlayd, which runs the resolver (`[dns]`); real etcd, networks `web`
//! and `db` made with the plugin.
//!
//! The first test: a container on `web` on host 1 pings and fetches from a
//! container on host 2 by its name and by its alias; a container on `db`
//! does not resolve it; a name outside the overlay comes from the lab's
//! resolver; a removed container stops resolving.
//!
//! The second: a new container resolves on the other host within 1 s of
//! its endpoint record (both directions), a re-created container resolves
//! to its new address within 1 s of its new record, the same name on `web`
//! and `db` resolves on each network to its own container, and with etcd
//! killed the names known keep resolving. Times are taken from the record
//! appearing in the store (an `etcdctl watch` in the lab) to the host's
//! resolver answering a question asked from a container's namespace (what
//! Docker's embedded resolver forwards); each case is checked through the
//! embedded resolver too (`nslookup` in the container).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use overlay_lab::{
    need_docker_or_skip, need_etcd_or_skip, run_in_netns, Binaries, DockerOptions, Dockerd, Etcd,
    EtcdOptions, Host, Lab, LabSpec, Overlayd, Proc,
};
use overlay_tests::{cluster_init, cluster_opts};

#[path = "../../overlay-user/tests/common/dns.rs"]
mod dns;
use dns::{ask_on, FakeUpstream};

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

/// Two hosts with etcd, dockerd and overlayd each, and the networks `web`
/// (10.110.240.0/24) and `db` (10.110.241.0/24). Dropped in field order:
/// agents, dockerds, the upstream, etcd, the lab.
struct Setup {
    agents: Vec<Overlayd>,
    dockers: Vec<Dockerd>,
    _upstream: FakeUpstream,
    etcd: Etcd,
    hosts: [Host; 2],
    lab: Lab,
}

fn setup() -> Setup {
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
    let upstream = FakeUpstream::serve(
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
    // Host 2's overlayd creates the store's networks on its dockerd in the
    // store's order ("db" before "web"): wait for both.
    let started = Instant::now();
    loop {
        let ls = d2.cli_ok(&["network", "ls"]).unwrap();
        if ls.contains(" db ") && ls.contains(" web ") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "web and db not both on host 2:\n{ls}\n{}",
            agents[1].proc.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Setup {
        agents,
        dockers,
        _upstream: upstream,
        etcd,
        hosts: [h1, h2],
        lab,
    }
}

#[test]
fn docker_containers_reach_each_other_by_name_across_hosts() {
    if !need_docker_or_skip() || !need_etcd_or_skip() {
        return;
    }
    let s = setup();
    let (d1, d2) = (&s.dockers[0], &s.dockers[1]);
    d2.run(
        "bb",
        &["--network", "web", "--network-alias", "bee"],
        &["httpd", "-f", "-p", "8080", "-h", "/etc"],
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n--- overlayd 1\n{}\n--- overlayd 2\n{}\n--- dockerd 2\n{}",
            s.agents[0].proc.log(),
            s.agents[1].proc.log(),
            d2.log()
        )
    });
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
        s.agents[0].proc.log()
    );
    // The name and the aliases come in one record: the alias resolves as
    // soon as the name does.
    let (ok, out) = run_rm(
        d1,
        &["--network", "web"],
        &["wget", "-qO-", "http://bee:8080/hostname"],
    );
    assert!(
        ok && !out.trim().is_empty(),
        "wget http://bee:8080/: {out}\n--- host 1 agent:\n{}\n--- host 2 agent:\n{}",
        s.agents[0].proc.log(),
        s.agents[1].proc.log()
    );
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

/// A long-running container that asks questions: a UDP socket made in its
/// namespace (so the questions come from its address, as Docker's embedded
/// resolver forwards them) and its host's resolver.
struct Probe {
    name: &'static str,
    socket: UdpSocket,
    server: SocketAddr,
}

impl Probe {
    fn start(d: &Dockerd, host: &Host, name: &'static str, net: &str) -> Probe {
        d.run(name, &["--network", net], &["sleep", "3600"])
            .unwrap();
        let ns = d.container_netns(name).unwrap();
        let socket = run_in_netns(&ns, || UdpSocket::bind("0.0.0.0:0"))
            .unwrap()
            .unwrap();
        Probe {
            name,
            socket,
            server: SocketAddr::new(host.underlay_ip.into(), 53),
        }
    }

    /// The addresses the host's resolver answers for `name` (none on an error).
    fn addresses(&self, name: &str) -> Vec<Ipv4Addr> {
        ask_on(
            &self.socket,
            self.server,
            name,
            RecordType::A,
            Duration::from_secs(1),
        )
        .map(|a| a.addresses)
        .unwrap_or_default()
    }

    /// `nslookup name` in the container, through Docker's embedded resolver.
    fn nslookup(&self, d: &Dockerd, name: &str) -> String {
        let out = d.exec(self.name, &["nslookup", name]).unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

/// Runs `action` while watching `probe` ask for `name` and `watch`'s log
/// for the record `key`; returns how long after the record appeared in the
/// store the resolver answered exactly `ip` (zero when the answer was seen
/// first).
fn after_record(
    watch: &Proc,
    key: &str,
    probe: &Probe,
    name: &str,
    ip: Ipv4Addr,
    action: impl FnOnce(),
) -> Duration {
    let limit = Duration::from_secs(30);
    std::thread::scope(|s| {
        let record = s.spawn(|| {
            let started = Instant::now();
            while !watch.log().contains(key) {
                assert!(started.elapsed() < limit, "no {key} in the store");
                std::thread::sleep(Duration::from_millis(2));
            }
            Instant::now()
        });
        let answer = s.spawn(|| {
            let started = Instant::now();
            loop {
                let got = probe.addresses(name);
                if got == [ip] {
                    return Instant::now();
                }
                assert!(
                    started.elapsed() < limit,
                    "{name} from {}: {got:?}, expected {ip}",
                    probe.name
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        action();
        let (record, answer) = (record.join().unwrap(), answer.join().unwrap());
        answer.saturating_duration_since(record)
    })
}

#[test]
fn docker_names_follow_new_and_recreated_containers_per_network_without_the_store() {
    if !need_docker_or_skip() || !need_etcd_or_skip() {
        return;
    }
    let mut s = setup();
    let (h1, h2) = (s.hosts[0].clone(), s.hosts[1].clone());
    let eps = s.etcd.endpoints().join(",");
    let watch = s
        .lab
        .spawn(
            &h1.ns,
            &[
                "etcdctl",
                &format!("--endpoints={eps}"),
                "watch",
                "--prefix",
                "/overlay/endpoints/",
            ],
            "names-watch.log",
        )
        .unwrap();
    let (d1, d2) = (&s.dockers[0], &s.dockers[1]);
    let p1 = Probe::start(d1, &h1, "p1", "web");
    let q1 = Probe::start(d1, &h1, "q1", "db");
    let p2 = Probe::start(d2, &h2, "p2", "web");
    let key = |net: &str, ip: Ipv4Addr| format!("/overlay/endpoints/{net}/{ip}");
    let mut times = Vec::new();

    // A new container on host 2 resolves on host 1 (BPF) from its record.
    let new = Ipv4Addr::new(10, 110, 240, 80);
    let took = after_record(&watch, &key("web", new), &p1, "new", new, || {
        d2.run(
            "new",
            &["--network", "web", "--ip", "10.110.240.80"],
            &["sleep", "3600"],
        )
        .unwrap();
    });
    times.push(("new on host 2, from host 1", took));

    // The same name on both networks: cc on web on host 1, cc on db on host 2;
    // host 2's web (kernel host) gets host 1's, host 1's db gets host 2's.
    let (c_web, c_db) = (
        Ipv4Addr::new(10, 110, 240, 70),
        Ipv4Addr::new(10, 110, 241, 70),
    );
    let took = after_record(&watch, &key("web", c_web), &p2, "cc", c_web, || {
        d1.run(
            "cc",
            &["--network", "web", "--ip", "10.110.240.70"],
            &["sleep", "3600"],
        )
        .unwrap();
    });
    times.push(("cc on web on host 1, from host 2", took));
    let took = after_record(&watch, &key("db", c_db), &q1, "cc", c_db, || {
        d2.run(
            "cc",
            &["--network", "db", "--ip", "10.110.241.70"],
            &["sleep", "3600"],
        )
        .unwrap();
    });
    times.push(("cc on db on host 2, from host 1", took));
    assert_eq!(p1.addresses("cc"), [c_web]);
    assert_eq!(p2.addresses("cc"), [c_web]);
    assert_eq!(q1.addresses("cc"), [c_db]);
    let out = p2.nslookup(d2, "cc");
    assert!(
        out.contains(&c_web.to_string()) && !out.contains(&c_db.to_string()),
        "p2: {out}"
    );
    let out = q1.nslookup(d1, "cc");
    assert!(
        out.contains(&c_db.to_string()) && !out.contains(&c_web.to_string()),
        "q1: {out}"
    );

    // Re-created: bb on host 2 gets another address; host 1 follows.
    let (old, moved) = (
        Ipv4Addr::new(10, 110, 240, 50),
        Ipv4Addr::new(10, 110, 240, 60),
    );
    let took = after_record(&watch, &key("web", old), &p1, "bb", old, || {
        d2.run(
            "bb",
            &["--network", "web", "--ip", "10.110.240.50"],
            &["sleep", "3600"],
        )
        .unwrap();
    });
    times.push(("bb on host 2, from host 1", took));
    d2.cli_ok(&["rm", "-f", "bb"]).unwrap();
    let took = after_record(&watch, &key("web", moved), &p1, "bb", moved, || {
        d2.run(
            "bb",
            &["--network", "web", "--ip", "10.110.240.60"],
            &["sleep", "3600"],
        )
        .unwrap();
    });
    times.push((
        "bb re-created on host 2 with a new address, from host 1",
        took,
    ));
    let out = p1.nslookup(d1, "bb");
    assert!(
        out.contains(&moved.to_string()) && !out.contains(&old.to_string()),
        "p1: {out}"
    );
    for (what, took) in &times {
        eprintln!("{what}: resolves {took:?} after its record appeared in the store");
    }
    for (what, took) in &times {
        assert!(*took < Duration::from_secs(1), "{what}: {took:?}");
    }

    // The store goes away: the names known keep resolving on both hosts.
    drop(watch);
    s.etcd.kill(0).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(p1.addresses("bb"), [moved]);
    assert_eq!(p1.addresses("new"), [new]);
    assert_eq!(p2.addresses("cc"), [c_web]);
    assert_eq!(q1.addresses("cc"), [c_db]);
    let (d1, d2) = (&s.dockers[0], &s.dockers[1]);
    let out = p1.nslookup(d1, "bb");
    assert!(out.contains(&moved.to_string()), "p1 without etcd: {out}");
    let out = p2.nslookup(d2, "cc");
    assert!(out.contains(&c_web.to_string()), "p2 without etcd: {out}");
    let out = q1.nslookup(d1, "cc");
    assert!(out.contains(&c_db.to_string()), "q1 without etcd: {out}");
    assert!(
        s.agents[0].proc.log().contains("names known are kept"),
        "{}",
        s.agents[0].proc.log()
    );
}
