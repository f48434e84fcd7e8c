//! Issue 10's learned endpoints: a container's first packet to a peer
//! binds it (veth attach), `overlayctl endpoint list` shows it with source
//! `learned`, and `learn_limit` counts per port, freeing a slot when a
//! learned entry is removed.

use std::time::Duration;

use overlay_lab::{
    exec_ok, first_reply, need_root_or_skip, ping, AgentOptions, Container, LabSpec,
};
use overlay_tests::{cluster, Cluster};

fn ipn(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["ip"];
    all.extend_from_slice(args);
    exec_ok(ns, &all).unwrap_or_else(|e| panic!("ip {}: {e}", args.join(" ")))
}

/// A new container on host 1 that never ARPs for its gateway (a permanent
/// neighbour entry for it), so host 1 gets no neighbour entry for it and
/// discovery cannot see it.
fn silent_container(c: &mut Cluster) -> Container {
    let a = c.lab.add_container(1).unwrap();
    pin_gateway(c, &a);
    a
}

/// A permanent neighbour entry for the gateway in `a` (removing a
/// container's last address flushes it).
fn pin_gateway(c: &Cluster, a: &Container) {
    let host = c.lab.host(1).clone();
    let link: serde_json::Value =
        serde_json::from_str(&ipn(&host.ns, &["-j", "link", "show", &host.bridge])).unwrap();
    let bridge_mac = link[0]["address"].as_str().unwrap().to_string();
    ipn(
        &a.ns,
        &[
            "neigh",
            "replace",
            &a.gateway.to_string(),
            "lladdr",
            &bridge_mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ],
    );
}

/// `overlayctl --json endpoint list` as (ip, dev, mac, source).
fn endpoints(c: &Cluster) -> Vec<(String, String, String, String)> {
    let out = c.agent(1).ctl_ok(&["--json", "endpoint", "list"]).unwrap();
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
            (s("ip"), s("dev"), s("mac"), s("source"))
        })
        .collect()
}

fn source_of(c: &Cluster, ip: &str) -> Option<String> {
    endpoints(c).into_iter().find(|e| e.0 == ip).map(|e| e.3)
}

/// The host has no neighbour entry for `ip`: discovery has nothing to go by.
fn host_has_no_neighbour(c: &Cluster, ip: &str) {
    let host = c.lab.host(1);
    let neigh = ipn(&host.ns, &["neigh", "show", ip, "dev", &host.bridge]);
    assert_eq!(neigh.trim(), "", "host 1 has a neighbour entry for {ip}");
}

#[test]
fn first_packet_makes_a_learned_endpoint() {
    if !need_root_or_skip() {
        return;
    }
    let spec = LabSpec {
        hosts: 2,
        containers_per_host: 1,
        ..Default::default()
    };
    let mut c = cluster(spec, "ebpf", AgentOptions::default()).unwrap();
    let a = silent_container(&mut c);
    let b = c.lab.container(2, 1).clone();
    let ip = a.ip.to_string();
    assert_eq!(source_of(&c, &ip), None);

    let p = ping(&a.ns, b.ip, 3, None, false, 3).unwrap();
    assert_eq!(p.received, 3, "{p:?}");
    assert_eq!(
        endpoints(&c).into_iter().find(|e| e.0 == ip),
        Some((
            ip.clone(),
            a.host_veth.clone(),
            a.mac.clone(),
            "learned".into()
        ))
    );
    let table = c.agent(1).ctl_ok(&["endpoint", "list"]).unwrap();
    let row = table.lines().find(|l| l.starts_with(&ip)).unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1], a.host_veth, "{table}");
    assert_eq!(cols.last(), Some(&"learned"), "{table}");
    assert!(c.agent(1).counter("endpoints_learned").unwrap() >= 1);

    // Discovery ticks every second and still has nothing to register.
    std::thread::sleep(Duration::from_millis(2500));
    host_has_no_neighbour(&c, &ip);
    assert_eq!(source_of(&c, &ip).as_deref(), Some("learned"));

    // A registration replaces it: listed once, with its source.
    c.agent(1)
        .ctl_ok(&["endpoint", "add", &ip, "--dev", &a.host_veth])
        .unwrap();
    let rows: Vec<_> = endpoints(&c).into_iter().filter(|e| e.0 == ip).collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].3, "api");
    let p = ping(&a.ns, b.ip, 2, None, false, 3).unwrap();
    assert_eq!(p.received, 2, "{p:?}");
}

#[test]
fn a_removed_learned_endpoint_frees_its_slot() {
    if !need_root_or_skip() {
        return;
    }
    let spec = LabSpec {
        hosts: 2,
        containers_per_host: 1,
        ..Default::default()
    };
    let opts = AgentOptions {
        extra: "learn_limit = 1\n".into(),
        ..Default::default()
    };
    let mut c = cluster(spec, "ebpf", opts).unwrap();
    let a = silent_container(&mut c);
    let b = c.lab.container(2, 1).clone();
    let first = a.ip.to_string();
    let p = ping(&a.ns, b.ip, 2, None, false, 3).unwrap();
    assert_eq!(p.received, 2, "{p:?}");
    assert_eq!(source_of(&c, &first).as_deref(), Some("learned"));

    // The container moves to a second address: the port's one slot is taken.
    let second = "10.103.100.77";
    ipn(&a.ns, &["addr", "flush", "dev", "eth0"]);
    ipn(
        &a.ns,
        &["addr", "add", &format!("{second}/24"), "dev", "eth0"],
    );
    ipn(
        &a.ns,
        &["route", "replace", "default", "via", &a.gateway.to_string()],
    );
    pin_gateway(&c, &a);
    let refused = c.agent(1).drops("learn_limit").unwrap();
    let p = ping(&a.ns, b.ip, 2, None, false, 2).unwrap();
    assert_eq!(p.received, 0, "{p:?}");
    assert!(c.agent(1).drops("learn_limit").unwrap() >= refused + 2);
    // Still refused after refreshes: the count is right, not just stale.
    std::thread::sleep(Duration::from_millis(1500));
    let p = ping(&a.ns, b.ip, 1, None, false, 1).unwrap();
    assert_eq!(p.received, 0, "{p:?}");
    assert_eq!(source_of(&c, second), None);

    // Removing the learned entry frees the slot within a refresh.
    let said = c.agent(1).ctl_ok(&["endpoint", "del", &first]).unwrap();
    assert_eq!(said.trim(), format!("endpoint {first} deleted"));
    assert_eq!(source_of(&c, &first), None);
    let back = first_reply(
        &a.ns,
        b.ip,
        Duration::from_millis(50),
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(back.is_some(), "{}", c.agent(1).proc.log());
    assert_eq!(source_of(&c, second).as_deref(), Some("learned"));
    host_has_no_neighbour(&c, second);
}
