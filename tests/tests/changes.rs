//! Changes while running (issue 10): the underlay flapping, its address
//! changing, the underlay and the bridge deleted and re-created, a peer's
//! next-hop MAC changing. After each, traffic between the containers is back
//! within 1 s of the link being usable, with no restart of overlayd: with
//! the eBPF dataplane (tc alone, and with XDP in front) and with the kernel's
//! VXLAN device (which the kernel deletes with the underlay).

use std::time::{Duration, Instant};

use overlay_lab::{exec_ok, first_reply, need_root_or_skip, AgentOptions, LabSpec};
use overlay_tests::{cluster, Cluster};

fn ipn(ns: &str, args: &[&str]) {
    let mut all = vec!["ip"];
    all.extend_from_slice(args);
    exec_ok(ns, &all).unwrap_or_else(|e| panic!("ip {}: {e}", args.join(" ")));
}

/// Time from now to the first echo reply from container 1.1 to 2.1 (and
/// back the other way), probing every 10 ms; panics past 1 s.
fn back_within_1s(c: &Cluster, what: &str) -> Duration {
    let (a, b) = (c.lab.container(1, 1), c.lab.container(2, 1));
    let start = Instant::now();
    let first = first_reply(
        &a.ns,
        b.ip,
        Duration::from_millis(10),
        Duration::from_secs(3),
    )
    .unwrap();
    let took = start.elapsed();
    eprintln!("{what}: first reply after {took:?} (probe said {first:?})");
    assert!(
        first.is_some() && took <= Duration::from_secs(1),
        "{what}: traffic not back within 1 s (first reply: {first:?}, {took:?})\n{}",
        c.agent(1).proc.log()
    );
    let back = first_reply(
        &b.ns,
        a.ip,
        Duration::from_millis(10),
        Duration::from_secs(1),
    )
    .unwrap();
    assert!(back.is_some(), "{what}: and back");
    took
}

#[test]
fn ebpf_follows_changes_without_a_restart() {
    changes(Mode::Ebpf);
}

#[test]
fn ebpf_with_xdp_follows_changes_without_a_restart() {
    changes(Mode::EbpfXdp);
}

#[test]
fn kernel_follows_changes_without_a_restart() {
    changes(Mode::Kernel);
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Ebpf,
    EbpfXdp,
    Kernel,
}

/// Waits until host 1's `eth1` is usable: its operational state is up
/// (the kernel has turned its carrier on and activated its queue) and its
/// peer, a port of the underlay's bridge, forwards. Until then frames sent
/// on it, the first ARP request among them, are dropped, and the kernel
/// asks again only a second later. Panics past 3 s.
fn wait_usable(ns: &str, ul: &str, peer: &str) {
    let start = Instant::now();
    loop {
        let own = exec_ok(ns, &["ip", "-o", "link", "show", "dev", "eth1"]).unwrap();
        let port = exec_ok(ul, &["ip", "-d", "-o", "link", "show", "dev", peer]).unwrap();
        if own.contains("state UP")
            && port.contains("state UP")
            && port.contains("state forwarding")
        {
            eprintln!("eth1 usable after {:?}", start.elapsed());
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "eth1 not usable within 3 s:\n{own}\n{port}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// What `ip -d link show eth1` says about XDP on host 1.
fn xdp_on_eth1(ns: &str) -> bool {
    exec_ok(ns, &["ip", "-d", "link", "show", "dev", "eth1"])
        .unwrap()
        .contains("xdpgeneric")
}

fn changes(mode: Mode) {
    if !need_root_or_skip() {
        return;
    }
    let opts = AgentOptions {
        xdp: (mode == Mode::EbpfXdp).then(|| "generic".to_string()),
        ..Default::default()
    };
    let c = cluster(
        LabSpec {
            hosts: 2,
            containers_per_host: 1,
            ..Default::default()
        },
        if mode == Mode::Kernel {
            "kernel"
        } else {
            "ebpf"
        },
        opts,
    )
    .unwrap();
    eprintln!("--- {mode:?}");
    let h1 = c.lab.host(1).clone();
    let h2 = c.lab.host(2).clone();
    let ul = c.lab.underlay_ns().to_string();
    let pid = c.agent(1).proc.pid();
    back_within_1s(&c, "start");

    // 1. Underlay link flap: down 2 s, up.
    ipn(&h1.ns, &["link", "set", "eth1", "down"]);
    std::thread::sleep(Duration::from_secs(2));
    ipn(&h1.ns, &["link", "set", "eth1", "up"]);
    wait_usable(&h1.ns, &ul, &h1.underlay_peer);
    back_within_1s(&c, "underlay flap");

    // 2. The bridge deleted and re-created (the containers' veths re-plugged).
    let cveth = &h1.container(1).host_veth;
    ipn(&h1.ns, &["link", "del", "docker0"]);
    std::thread::sleep(Duration::from_millis(500));
    let mtu = h1.bridge_mtu.to_string();
    ipn(
        &h1.ns,
        &["link", "add", "docker0", "mtu", &mtu, "type", "bridge"],
    );
    ipn(
        &h1.ns,
        &[
            "addr",
            "add",
            &format!("{}/24", h1.gateway),
            "dev",
            "docker0",
        ],
    );
    ipn(&h1.ns, &["link", "set", "docker0", "up"]);
    ipn(&h1.ns, &["link", "set", cveth, "master", "docker0", "up"]);
    back_within_1s(&c, "bridge re-created");

    // 3. The underlay deleted and re-created.
    ipn(&h1.ns, &["link", "del", "eth1"]);
    std::thread::sleep(Duration::from_millis(500));
    let umtu = h1.underlay_mtu.to_string();
    ipn(
        &h1.ns,
        &[
            "link",
            "add",
            "eth1",
            "mtu",
            &umtu,
            "type",
            "veth",
            "peer",
            "name",
            &h1.underlay_peer,
            "mtu",
            &umtu,
            "netns",
            &ul,
        ],
    );
    ipn(
        &ul,
        &["link", "set", &h1.underlay_peer, "master", "br0", "up"],
    );
    ipn(
        &h1.ns,
        &[
            "addr",
            "add",
            &format!("{}/24", h1.underlay_ip),
            "dev",
            "eth1",
        ],
    );
    ipn(&h1.ns, &["link", "set", "eth1", "up"]);
    wait_usable(&h1.ns, &ul, &h1.underlay_peer);
    back_within_1s(&c, "underlay re-created");
    assert_eq!(
        xdp_on_eth1(&h1.ns),
        mode == Mode::EbpfXdp,
        "XDP on the new eth1"
    );

    // 4. The peer's next-hop MAC changes (host 2's eth1 gets a new MAC and
    //    announces it, as a replaced NIC would).
    ipn(
        &h2.ns,
        &["link", "set", "eth1", "address", "02:00:00:00:99:05"],
    );
    exec_ok(
        &h2.ns,
        &[
            "arping",
            "-U",
            "-c",
            "1",
            "-I",
            "eth1",
            &h2.underlay_ip.to_string(),
        ],
    )
    .unwrap();
    back_within_1s(&c, "peer MAC changed");

    // 5. The underlay address changes; host 2 is told the new one.
    let new_ip = "192.168.56.44";
    ipn(
        &h1.ns,
        &[
            "addr",
            "del",
            &format!("{}/24", h1.underlay_ip),
            "dev",
            "eth1",
        ],
    );
    ipn(
        &h1.ns,
        &["addr", "add", &format!("{new_ip}/24"), "dev", "eth1"],
    );
    c.agent(2)
        .ctl_ok(&["peer", "add", &h1.subnet, new_ip])
        .unwrap();
    back_within_1s(&c, "underlay address changed");
    // The agent follows too: status, and the own-address check of peers.
    c.agent(1)
        .wait_status(Duration::from_secs(1), |s| s["underlay_ip"] == new_ip)
        .unwrap();

    assert_eq!(c.agent(1).proc.pid(), pid, "no restart");
    assert!(c.agent(1).proc.is_running());
}
