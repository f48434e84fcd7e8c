//! Issue 5's acceptance: Docker containers join the overlay by themselves.
//!
//! Two simulated hosts, each with a real dockerd (own data root, exec root,
//! socket and pidfile, started in the host's network namespace with
//! `nsenter --net`, `--bip` 10.103.100.1/24 and 10.103.200.1/24, default
//! iptables settings, so FORWARD policy DROP), the busybox-static image, and
//! overlayd following each. Tests that run dockerd are serialized: two
//! dockerds per test are enough for 2 cores.

use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use overlay_lab::{
    exec_ok, first_reply, need_docker_or_skip, ping, transfer, DockerOptions, Dockerd, Overlayd,
};
use overlay_tests::{docker_cluster, DockerCluster};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs httpd, and exits at once on SIGTERM (a shell as PID 1 ignores it otherwise).
const SERVE: &[&str] = &[
    "sh",
    "-c",
    "trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait",
];

/// The agent's endpoints as (ip, dev, source).
fn endpoints(agent: &Overlayd) -> Vec<(Ipv4Addr, String, String)> {
    let out = agent.ctl_ok(&["--json", "endpoint", "list"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["ip"].as_str().unwrap().parse().unwrap(),
                e["dev"].as_str().unwrap().to_string(),
                e["source"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn source_of(agent: &Overlayd, ip: Ipv4Addr) -> Option<String> {
    endpoints(agent)
        .into_iter()
        .find(|e| e.0 == ip)
        .map(|e| e.2)
}

/// Poll `cond` every 20 ms until it holds or `timeout` passes; returns the time it took.
fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until host `h`'s agent lists `ip` with source `source`.
fn wait_endpoint(c: &DockerCluster, h: usize, ip: Ipv4Addr, source: &str) {
    let ok = wait_for(Duration::from_secs(5), || {
        source_of(c.agent(h), ip).as_deref() == Some(source)
    });
    assert!(
        ok.is_some(),
        "host {h}: no {source} endpoint {ip}: {:?}\n{}",
        endpoints(c.agent(h)),
        c.agent(h).proc.log()
    );
}

/// `docker exec NAME ping -c COUNT IP` succeeded.
fn docker_ping(d: &Dockerd, name: &str, ip: Ipv4Addr, count: u32) -> bool {
    let out = d
        .exec(
            name,
            &["ping", "-c", &count.to_string(), "-W", "2", &ip.to_string()],
        )
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "docker exec {name} ping {ip}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.success()
}

/// Start a serving container `name` on host `h`, wait for its endpoint; returns its address.
fn serve(c: &DockerCluster, h: usize, name: &str) -> Ipv4Addr {
    c.docker(h).run(name, &[], SERVE).unwrap();
    let ip = c.docker(h).container_ip(name).unwrap();
    wait_endpoint(c, h, ip, "docker");
    ip
}

/// Containers on both hosts ping each other and move 64 MiB intact, with
/// dockerd's FORWARD policy DROP in place; in BPF mode the counters show
/// the traffic went through the programs, in kernel mode overlayd's
/// FORWARD rules let it through.
fn containers_reach_each_other(mode: &str) {
    let _serial = serial();
    if !need_docker_or_skip() {
        return;
    }
    let c = docker_cluster(mode, &DockerOptions::default()).unwrap();
    for h in 1..=2 {
        let rules = exec_ok(&c.lab.host(h).ns, &["iptables", "-S", "FORWARD"]).unwrap();
        assert!(
            rules.contains("-P FORWARD DROP"),
            "host {h}: dockerd did not set FORWARD to DROP:\n{rules}"
        );
        let bridge = exec_ok(
            &c.lab.host(h).ns,
            &["ip", "-4", "-o", "addr", "show", "docker0"],
        )
        .unwrap();
        assert!(
            bridge.contains(&format!("{}/24", c.lab.host(h).gateway)),
            "host {h}: docker0 is not dockerd's --bip bridge: {bridge}"
        );
    }
    let a = serve(&c, 1, "a1");
    let b = serve(&c, 2, "b1");
    assert!(a.octets()[2] == 100 && b.octets()[2] == 200, "{a} {b}");
    let list = c.agent(1).ctl_ok(&["endpoint", "list"]).unwrap();
    assert!(
        list.lines()
            .any(|l| l.starts_with(&a.to_string()) && l.trim_end().ends_with("docker")),
        "endpoint list does not show {a} from docker:\n{list}"
    );
    let counters = |h: usize| {
        (
            c.agent(h).counter("encap_packets").unwrap_or(0),
            c.agent(h).counter("decap_packets").unwrap_or(0),
        )
    };
    let before = [counters(1), counters(2)];

    assert!(docker_ping(c.docker(1), "a1", b, 3), "a1 -> b1");
    assert!(docker_ping(c.docker(2), "b1", a, 3), "b1 -> a1");

    let (na, nb) = (
        c.docker(1).container_netns("a1").unwrap(),
        c.docker(2).container_netns("b1").unwrap(),
    );
    let t = transfer(&na, &nb, b, 64 << 20).unwrap();
    assert_eq!(t.bytes_received, 64 << 20, "{t:?}");
    assert_eq!(t.sent_sha256, t.received_sha256, "64 MiB arrived intact");
    let t = transfer(&nb, &na, a, 64 << 20).unwrap();
    assert!(t.is_intact(), "{t:?}");

    if mode == "ebpf" {
        for h in 1..=2 {
            let (e0, d0) = before[h - 1];
            let (e, d) = counters(h);
            assert!(e >= e0 + 1000, "host {h} encap {e0} -> {e}");
            assert!(d >= d0 + 1000, "host {h} decap {d0} -> {d}");
        }
    } else {
        for h in 1..=2 {
            let rules = exec_ok(&c.lab.host(h).ns, &["iptables", "-S", "FORWARD"]).unwrap();
            assert!(
                rules.contains("-A FORWARD -i ovl.42") && rules.contains("-A FORWARD -o ovl.42"),
                "host {h}: no FORWARD rules for ovl.42:\n{rules}"
            );
            let nat = exec_ok(
                &c.lab.host(h).ns,
                &["iptables", "-t", "nat", "-S", "POSTROUTING"],
            )
            .unwrap();
            assert!(
                nat.contains("-A POSTROUTING -o ovl.42"),
                "host {h}: overlay traffic is masqueraded:\n{nat}"
            );
        }
    }
}

/// `docker stop` removes the endpoint within 1 s; a new container that gets
/// the same address is registered and reachable.
fn stop_removes_endpoint(mode: &str) {
    let _serial = serial();
    if !need_docker_or_skip() {
        return;
    }
    let c = docker_cluster(mode, &DockerOptions::default()).unwrap();
    let a = serve(&c, 1, "a1");
    let b = serve(&c, 2, "b1");
    assert!(docker_ping(c.docker(2), "b1", a, 2));

    c.docker(1).cli_ok(&["stop", "a1"]).unwrap();
    let gone = wait_for(Duration::from_secs(1), || {
        source_of(c.agent(1), a).is_none()
    });
    assert!(
        gone.is_some(),
        "endpoint {a} still there 1 s after docker stop: {:?}",
        endpoints(c.agent(1))
    );
    eprintln!(
        "endpoint removed {:?} after docker stop returned",
        gone.unwrap()
    );

    let a2 = serve(&c, 1, "a2");
    assert_eq!(a2, a, "the new container did not get the freed address");
    assert!(docker_ping(c.docker(2), "b1", a2, 3), "b1 -> a2 ({a2})");
    assert!(docker_ping(c.docker(1), "a2", b, 3), "a2 -> b1");
}

/// dockerd killed and restarted (live restore on): overlayd keeps
/// forwarding, logs the outage once, reconnects and reconciles: the endpoint
/// of the container that died meanwhile goes, the survivor stays reachable,
/// and a container started once Docker answers is reachable within 2 s.
fn dockerd_killed_and_restarted(mode: &str) {
    let _serial = serial();
    if !need_docker_or_skip() {
        return;
    }
    let opts = DockerOptions {
        live_restore: true,
        ..Default::default()
    };
    let mut c = docker_cluster(mode, &opts).unwrap();
    let survivor = serve(&c, 1, "a1");
    let victim = serve(&c, 1, "a2");
    let b = serve(&c, 2, "b1");
    let nb = c.docker(2).container_netns("b1").unwrap();
    let victim_pid = c.docker(1).container_pid("a2").unwrap();
    let victim_dev = endpoints(c.agent(1))
        .into_iter()
        .find(|e| e.0 == victim)
        .unwrap()
        .1;

    c.dockers[0].kill().unwrap();
    // The container dies while Docker is away.
    let st = std::process::Command::new("kill")
        .args(["-9", &victim_pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    c.agent(1)
        .proc
        .wait_for_log("forwarding continues", Duration::from_secs(5))
        .unwrap();
    // Forwarding does not depend on Docker.
    let r = ping(&nb, survivor, 3, None, false, 2).unwrap();
    assert_eq!(
        r.received, 3,
        "survivor unreachable while dockerd is down: {r:?}"
    );
    std::thread::sleep(Duration::from_secs(2));

    c.dockers[0].restart(&c.lab).unwrap();
    let t0 = Instant::now();
    c.docker(1).run("a3", &[], SERVE).unwrap();
    let fresh = c.docker(1).container_ip("a3").unwrap();
    let left = Duration::from_secs(2).saturating_sub(t0.elapsed());
    let reached = first_reply(&nb, fresh, Duration::from_millis(5), left).unwrap();
    assert!(
        reached.is_some(),
        "a3 ({fresh}) not reachable from host 2 within 2 s of docker run:\n{}",
        c.agent(1).proc.log()
    );
    eprintln!(
        "a3 reachable {:?} after Docker answered again",
        t0.elapsed()
    );

    // The dead container's endpoint is gone (its address may be a3's now).
    let gone = wait_for(Duration::from_secs(3), || {
        endpoints(c.agent(1)).iter().all(|e| e.1 != victim_dev)
    });
    assert!(
        gone.is_some(),
        "endpoint of the dead container ({victim} on {victim_dev}) not removed: {:?}",
        endpoints(c.agent(1))
    );
    assert_eq!(source_of(c.agent(1), fresh).as_deref(), Some("docker"));
    if fresh != victim {
        assert!(source_of(c.agent(1), victim).is_none());
    }
    assert_eq!(source_of(c.agent(1), survivor).as_deref(), Some("docker"));
    let r = ping(&nb, survivor, 5, None, false, 2).unwrap();
    assert_eq!(r.received, 5, "survivor after the restart: {r:?}");
    assert!(
        docker_ping(c.docker(1), "a1", b, 2),
        "a1 -> b1 after the restart"
    );

    let log = c.agent(1).proc.log();
    let outages = log.matches("forwarding continues").count();
    let connects = log.matches("docker: connected to").count();
    assert_eq!(outages, 1, "outage logged {outages} times:\n{log}");
    assert_eq!(connects, 2, "connections logged {connects} times:\n{log}");
}

/// overlayd restarted while containers run: nothing is lost, and a container
/// started while it was away is found.
fn overlayd_restarted(mode: &str) {
    let _serial = serial();
    if !need_docker_or_skip() {
        return;
    }
    let mut c = docker_cluster(mode, &DockerOptions::default()).unwrap();
    let a = serve(&c, 1, "a1");
    let _b = serve(&c, 2, "b1");
    let nb = c.docker(2).container_netns("b1").unwrap();
    assert_eq!(ping(&nb, a, 2, None, false, 2).unwrap().received, 2);

    let old = c.agents.remove(0);
    old.stop().unwrap();
    c.docker(1).run("a2", &[], SERVE).unwrap();
    let a2 = c.docker(1).container_ip("a2").unwrap();
    let agent = c.start_agent(1).unwrap();
    c.agents.insert(0, agent);
    wait_endpoint(&c, 1, a, "docker");
    wait_endpoint(&c, 1, a2, "docker");
    for ip in [a, a2] {
        let r = ping(&nb, ip, 10, None, false, 2).unwrap();
        assert_eq!(r.received, 10, "{ip} after overlayd's restart: {r:?}");
    }
}

/// `overlayctl attach` on a `--network none` container and on a named
/// namespace gives cross-host reachability; `detach` removes all it made.
fn attach_and_detach(mode: &str) {
    let _serial = serial();
    if !need_docker_or_skip() {
        return;
    }
    let mut c = docker_cluster(mode, &DockerOptions::default()).unwrap();
    let b = serve(&c, 2, "b1");
    let nb = c.docker(2).container_netns("b1").unwrap();
    c.docker(1)
        .run("n1", &["--network", "none"], SERVE)
        .unwrap();
    let ip: Ipv4Addr = "10.103.100.50".parse().unwrap();
    let out = c
        .agent(1)
        .ctl_ok(&["attach", "n1", "10.103.100.50/24"])
        .unwrap();
    assert!(
        out.starts_with("attached container n1: eth0 10.103.100.50/24"),
        "{out}"
    );
    let links = c.docker(1).exec("n1", &["ip", "-o", "link"]).unwrap();
    let links = String::from_utf8_lossy(&links.stdout).into_owned();
    assert!(
        links.contains("eth0") && links.contains("mtu 1450"),
        "{links}"
    );
    let routes = c.docker(1).exec("n1", &["ip", "route"]).unwrap();
    assert!(
        String::from_utf8_lossy(&routes.stdout).contains("default via 10.103.100.1"),
        "{routes:?}"
    );
    let eps = endpoints(c.agent(1));
    let ep = eps.iter().find(|e| e.0 == ip).expect("attach endpoint");
    assert_eq!(ep.2, "attach");
    let host_if = ep.1.clone();
    assert!(host_if.starts_with("ovlc"), "{host_if}");
    assert!(docker_ping(c.docker(2), "b1", ip, 3), "b1 -> attached n1");
    assert!(docker_ping(c.docker(1), "n1", b, 3), "attached n1 -> b1");
    assert_eq!(ping(&nb, ip, 3, None, false, 2).unwrap().received, 3);

    // A second attach is refused, changing nothing.
    let again = c
        .agent(1)
        .ctl(&["attach", "n1", "10.103.100.51/24"])
        .unwrap();
    assert!(!again.status.success());

    let out = c.agent(1).ctl_ok(&["detach", "n1"]).unwrap();
    assert!(out.starts_with("detached container n1"), "{out}");
    let links = c.docker(1).exec("n1", &["ip", "-o", "link"]).unwrap();
    let links = String::from_utf8_lossy(&links.stdout).into_owned();
    assert!(!links.contains("eth0"), "eth0 left in n1:\n{links}");
    let host_links = exec_ok(&c.lab.host(1).ns, &["ip", "-o", "link"]).unwrap();
    assert!(
        !host_links.contains("ovlc") && !host_links.contains("ovlt"),
        "host interface left:\n{host_links}"
    );
    assert!(source_of(c.agent(1), ip).is_none(), "endpoint left");
    let state = std::fs::read_to_string(c.lab.dir().join("h1-state/state.json")).unwrap();
    assert!(
        !state.contains("10.103.100.50"),
        "state file keeps it:\n{state}"
    );
    assert_eq!(ping(&nb, ip, 2, None, false, 1).unwrap().received, 0);

    // A named network namespace.
    let ns = c.lab.add_namespace("att1").unwrap();
    let ip2: Ipv4Addr = "10.103.100.60".parse().unwrap();
    c.agent(1)
        .ctl_ok(&["attach", "--netns", &ns, "10.103.100.60/24"])
        .unwrap();
    assert_eq!(source_of(c.agent(1), ip2).as_deref(), Some("attach"));
    assert_eq!(ping(&ns, b, 3, None, false, 2).unwrap().received, 3);
    assert_eq!(ping(&nb, ip2, 3, None, false, 2).unwrap().received, 3);
    c.agent(1).ctl_ok(&["detach", "--netns", &ns]).unwrap();
    let left = exec_ok(&ns, &["ip", "-o", "link"]).unwrap();
    assert!(!left.contains("eth0"), "{left}");
    assert!(source_of(c.agent(1), ip2).is_none());
    let again = c.agent(1).ctl(&["detach", "--netns", &ns]).unwrap();
    assert!(!again.status.success(), "second detach succeeded");
}

/// Time from `docker start` to the container answering pings from the other
/// host, five times; printed for docs/benchmarks.md. The probe (an echo
/// request every 2 ms from a container on host 2) starts just before
/// `docker start`, at the address the container gets (the bridge hands out
/// the lowest free one, checked after each start).
fn start_to_reachable(mode: &str) {
    let _serial = serial();
    if !need_docker_or_skip() {
        return;
    }
    let c = docker_cluster(mode, &DockerOptions::default()).unwrap();
    let _b = serve(&c, 2, "b1");
    let nb = c.docker(2).container_netns("b1").unwrap();
    let create = |name: &str| {
        c.docker(1)
            .cli_ok(
                &[
                    &["create", "--name", name, overlay_lab::BUSYBOX_IMAGE][..],
                    SERVE,
                ]
                .concat(),
            )
            .unwrap();
    };
    // Learn the address a lone container gets.
    let ip = serve(&c, 1, "first");
    c.docker(1).cli_ok(&["rm", "-f", "first"]).unwrap();
    let removed = wait_for(Duration::from_secs(2), || {
        source_of(c.agent(1), ip).is_none()
    });
    assert!(
        removed.is_some(),
        "{ip} not removed:\n{}",
        c.agent(1).proc.log()
    );
    let mut rows = Vec::new();
    for i in 0..5 {
        let name = format!("s{i}");
        create(&name);
        let probe = {
            let nb = nb.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                let r = first_reply(&nb, ip, Duration::from_millis(2), Duration::from_secs(5));
                (t, r)
            })
        };
        let t0 = Instant::now();
        c.docker(1).cli_ok(&["start", &name]).unwrap();
        let started = t0.elapsed();
        let (probe_start, reply) = probe.join().unwrap();
        let first = reply
            .unwrap()
            .unwrap_or_else(|| panic!("{name} ({ip}) not reachable within 5 s"));
        let total = (probe_start + first).saturating_duration_since(t0);
        assert_eq!(c.docker(1).container_ip(&name).unwrap(), ip, "{name}");
        rows.push((started, total));
        c.docker(1).cli_ok(&["rm", "-f", &name]).unwrap();
        let removed = wait_for(Duration::from_secs(2), || {
            source_of(c.agent(1), ip).is_none()
        });
        assert!(
            removed.is_some(),
            "{name} ({ip}) not removed:\n{}",
            c.agent(1).proc.log()
        );
    }
    println!("docker start -> reachable from the other host ({mode}):");
    println!("| run | `docker start` returned (ms) | first echo reply from host 2 (ms) |");
    println!("|---|---|---|");
    for (i, (s, t)) in rows.iter().enumerate() {
        println!(
            "| {} | {:.0} | {:.0} |",
            i + 1,
            s.as_secs_f64() * 1e3,
            t.as_secs_f64() * 1e3
        );
    }
    let mut totals: Vec<f64> = rows.iter().map(|r| r.1.as_secs_f64() * 1e3).collect();
    totals.sort_by(f64::total_cmp);
    println!("median {:.0} ms, max {:.0} ms", totals[2], totals[4]);
    assert!(totals[4] < 2000.0, "a container took {:.0} ms", totals[4]);
}

macro_rules! per_mode {
    ($mode:ident: $($test:ident),*) => {
        mod $mode {
            $(
                #[test]
                fn $test() {
                    super::$test(stringify!($mode));
                }
            )*
        }
    };
}

per_mode!(ebpf: containers_reach_each_other, stop_removes_endpoint,
    dockerd_killed_and_restarted, overlayd_restarted, attach_and_detach, start_to_reachable);
per_mode!(kernel: containers_reach_each_other, stop_removes_endpoint, start_to_reachable);
