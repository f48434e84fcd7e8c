//! Anti-spoofing end to end (issue 10): forged packets sent over the lab's
//! real underlay and from real container namespaces reach nothing, and each
//! drop is counted under its own reason; the same packets, unforged, arrive
//! (so "nothing arrived" means the check, not a broken sender).

use std::net::Ipv4Addr;
use std::sync::atomic::AtomicBool;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use overlay_lab::{arp_scan, exec_ok, need_root_or_skip, ping, AgentOptions, LabSpec};
use overlay_tests::{cluster, Cluster};

fn forge() -> String {
    format!("{}/tools/forge.py", env!("CARGO_MANIFEST_DIR"))
}

/// Counts UDP datagrams to `port` in `ns` for 15 seconds, in the background.
fn listen(ns: &str, port: u16) -> JoinHandle<u64> {
    let ns = ns.to_string();
    thread::spawn(move || {
        exec_ok(
            &ns,
            &["python3", &forge(), "listen", &port.to_string(), "15"],
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap()
    })
}

fn run(ns: &str, args: &[&str]) {
    let f = forge();
    let mut all = vec!["python3", f.as_str()];
    all.extend_from_slice(args);
    exec_ok(ns, &all).unwrap();
}

/// Sends with `send`, then waits until host `h` counts one more `reason`.
fn expect_drop(c: &Cluster, h: usize, reason: &str, send: impl FnOnce()) {
    let before = c.agent(h).drops(reason).unwrap();
    send();
    c.agent(h)
        .wait_status(Duration::from_secs(3), |s| {
            s["stats"]["drops"][reason].as_u64().unwrap_or(0) > before
        })
        .unwrap_or_else(|e| panic!("{reason} not counted on host {h}: {e}"));
}

#[test]
fn forged_packets_reach_nothing() {
    if !need_root_or_skip() {
        return;
    }
    let c = cluster(
        LabSpec {
            hosts: 3,
            containers_per_host: 2,
            ..Default::default()
        },
        "ebpf",
        AgentOptions::default(),
    )
    .unwrap();
    let (h1, h2) = (c.lab.host(1).clone(), c.lab.host(2).clone());
    let (c11, c12) = (c.lab.container(1, 1).clone(), c.lab.container(1, 2).clone());
    let c21 = c.lab.container(2, 1).clone();
    let c31 = c.lab.container(3, 1).clone();
    let to = h1.underlay_ip.to_string();
    let vxlan = |isrc: &str, idst: &str, dport: &str| {
        let h2ns = h2.ns.clone();
        let to = to.clone();
        let (isrc, idst, dport) = (isrc.to_string(), idst.to_string(), dport.to_string());
        move || run(&h2ns, &["vxlan", &to, "4789", "42", &isrc, &idst, &dport])
    };

    // Decapsulation on host 1: listeners in container 1.1 and on host 1 itself.
    let in_c11 = listen(&c11.ns, 7000);
    let on_h1 = listen(&h1.ns, 7001);
    // Encapsulation on host 1: a listener in container 2.1.
    let in_c21 = listen(&c21.ns, 7002);
    thread::sleep(Duration::from_millis(700));

    // Host 2, a peer, claims a source of host 3's subnet.
    let c31_ip = c31.ip.to_string();
    let c11_ip = c11.ip.to_string();
    expect_drop(
        &c,
        1,
        "inner_source_spoofed",
        vxlan(&c31_ip, &c11_ip, "7000"),
    );
    // Host 2 sends to host 1's gateway, network and broadcast addresses.
    let c21_ip = c21.ip.to_string();
    let net = h1.subnet_addr.to_string();
    let bcast = {
        let o = h1.subnet_addr.octets();
        format!("{}.{}.{}.255", o[0], o[1], o[2])
    };
    for dst in [h1.gateway.to_string(), net, bcast] {
        expect_drop(&c, 1, "to_host_address", vxlan(&c21_ip, &dst, "7001"));
    }
    // The genuine packet from host 2 arrives.
    run(
        &h2.ns,
        &["vxlan", &to, "4789", "42", &c21_ip, &c11_ip, "7000"],
    );

    // Container 1.1 claims container 1.2's address (bound to 1.2's port
    // since 1.2's first packet), and one outside the subnet.
    assert_eq!(
        ping(&c12.ns, c21.ip, 1, None, false, 2).unwrap().received,
        1
    );
    // Container 1.1 also claims 1.2's address, and 20 unused ones, by ARP in
    // their names (the host records each with 1.1's MAC): discovery keeps
    // 1.2 where it is and gives 1.1's port at most learn_limit addresses.
    let base = h1.subnet_addr.octets();
    let mut claimed: Vec<Ipv4Addr> = (100..120)
        .map(|i| Ipv4Addr::new(base[0], base[1], base[2], i))
        .collect();
    claimed.push(c12.ip);
    let stop = AtomicBool::new(false);
    arp_scan(
        &c11.ns,
        &c11.iface,
        c11.ip,
        &claimed,
        Some(h1.gateway),
        Duration::from_millis(100),
        &stop,
        Duration::from_millis(1500),
    )
    .unwrap();
    thread::sleep(Duration::from_millis(1200));
    let eps: serde_json::Value =
        serde_json::from_str(&c.agent(1).ctl_ok(&["--json", "endpoint", "list"]).unwrap()).unwrap();
    let eps = eps.as_array().unwrap();
    let dev_of = |ip: Ipv4Addr| {
        eps.iter()
            .find(|e| e["ip"] == ip.to_string())
            .map(|e| e["dev"].as_str().unwrap().to_string())
    };
    assert_eq!(
        dev_of(c12.ip).as_deref(),
        Some(c12.host_veth.as_str()),
        "{eps:?}"
    );
    let behind_c11 = eps
        .iter()
        .filter(|e| e["dev"] == c11.host_veth.as_str())
        .count();
    assert!(
        (1..=4).contains(&behind_c11),
        "container 1.1's port holds {behind_c11} addresses: {eps:?}"
    );
    let c12_ip = c12.ip.to_string();
    expect_drop(&c, 1, "source_spoofed", || {
        run(&c11.ns, &["raw", &c12_ip, &c21_ip, "7002"])
    });
    expect_drop(&c, 1, "source_not_local", || {
        run(&c11.ns, &["raw", "10.9.9.9", &c21_ip, "7002"])
    });
    // Container 1.1 sends VXLAN to host 2's VXLAN port (it would leave
    // masqueraded as host 1 and carry any inner source).
    let h2_ip = h2.underlay_ip.to_string();
    expect_drop(&c, 1, "container_vxlan", || {
        run(
            &c11.ns,
            &["vxlan", &h2_ip, "4789", "42", &c21_ip, &c21_ip, "7002"],
        )
    });
    // Its genuine packet arrives.
    run(&c11.ns, &["raw", &c11_ip, &c21_ip, "7002"]);

    assert_eq!(
        in_c11.join().unwrap(),
        1,
        "container 1.1: only the genuine packet"
    );
    assert_eq!(on_h1.join().unwrap(), 0, "host 1's services: nothing");
    assert_eq!(
        in_c21.join().unwrap(),
        1,
        "container 2.1: only the genuine packet"
    );
}
