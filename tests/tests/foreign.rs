//! Issue 10: kernel mode never replaces or deletes a route or a device it
//! did not make. overlay's routes carry `proto 79` and its devices the alias
//! `overlay`; a foreign route to a peer subnet survives (peer add is
//! refused, the refresh reports it instead of overwriting it, peer del
//! leaves it) and a foreign `ovl.42`, `ovl.7` or `ovl.md` device is never
//! deleted.

use std::time::{Duration, Instant};

use overlay_lab::{exec_ok, need_root_or_skip, ping, AgentOptions, Binaries, LabSpec, Overlayd};
use overlay_tests::cluster;
use serde_json::Value;

fn ipn(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["ip"];
    all.extend_from_slice(args);
    exec_ok(ns, &all).unwrap_or_else(|e| panic!("ip {}: {e}", args.join(" ")))
}

/// The routes of the main table to `dst`, as `ip -j` prints them.
fn routes_to(ns: &str, dst: &str) -> Vec<Value> {
    let out = ipn(ns, &["-j", "-4", "route", "show", "exact", dst]);
    serde_json::from_str::<Vec<Value>>(&out).unwrap_or_default()
}

fn link_kind(ns: &str, dev: &str) -> Option<String> {
    let out = exec_ok(ns, &["ip", "-j", "-d", "link", "show", "dev", dev]).ok()?;
    let v: Vec<Value> = serde_json::from_str(&out).ok()?;
    Some(v.first()?["linkinfo"]["info_kind"].as_str()?.to_string())
}

#[test]
fn foreign_devices_are_never_deleted() {
    if !need_root_or_skip() {
        return;
    }
    let lab = overlay_lab::Lab::new(LabSpec {
        hosts: 2,
        containers_per_host: 1,
        ..Default::default()
    })
    .unwrap();
    let bins = Binaries::locate().unwrap();
    let kernel = AgentOptions {
        dataplane: Some("kernel".into()),
        ..Default::default()
    };
    let h1 = lab.host(1).ns.clone();
    // A bridge called like our device for VNI 42: overlayd refuses to start and leaves it.
    ipn(&h1, &["link", "add", "ovl.42", "type", "bridge"]);
    let Err(e) = Overlayd::start(&lab, 1, &bins, &kernel) else {
        panic!("overlayd started over a foreign ovl.42");
    };
    assert!(
        format!("{e:#}").contains(
            "ovl.42 exists and was not made by overlay (a bridge device without an alias; ours are \
             VXLAN devices with the alias \"overlay\"); refusing to change or delete it: delete or \
             rename it, or choose another vni"
        ),
        "{e:#}"
    );
    assert_eq!(link_kind(&h1, "ovl.42").as_deref(), Some("bridge"));
    ipn(&h1, &["link", "del", "ovl.42"]);

    // A VXLAN device of someone else's (learning on) called like our device
    // for another VNI survives a kernel-mode start (which removes our devices
    // of other VNIs), a --cleanup exit, and an eBPF start (which removes the
    // kernel mode's devices).
    ipn(
        &h1,
        &[
            "link", "add", "ovl.7", "type", "vxlan", "id", "7", "dstport", "4790", "learning",
        ],
    );
    // And a bridge called like the eBPF mode's collect-metadata device.
    ipn(&h1, &["link", "add", "ovl.md", "type", "bridge"]);
    let kernel_cleanup = AgentOptions {
        args: vec!["--cleanup".into()],
        ..kernel.clone()
    };
    let a = Overlayd::start(&lab, 1, &bins, &kernel_cleanup).unwrap();
    assert_eq!(link_kind(&h1, "ovl.42").as_deref(), Some("vxlan"));
    let alias = ipn(&h1, &["-j", "link", "show", "dev", "ovl.42"]);
    assert!(alias.contains("\"ifalias\":\"overlay\""), "{alias}");
    assert!(a.stop().unwrap().success());
    assert_eq!(link_kind(&h1, "ovl.42"), None, "--cleanup removes ours");
    assert_eq!(link_kind(&h1, "ovl.7").as_deref(), Some("vxlan"));
    let a = Overlayd::start(&lab, 1, &bins, &kernel).unwrap();
    assert!(a.stop().unwrap().success());
    let ebpf = AgentOptions {
        dataplane: Some("ebpf".into()),
        ..Default::default()
    };
    let a = Overlayd::start(&lab, 1, &bins, &ebpf).unwrap();
    assert_eq!(
        link_kind(&h1, "ovl.42"),
        None,
        "eBPF removes kernel mode's device"
    );
    assert_eq!(link_kind(&h1, "ovl.7").as_deref(), Some("vxlan"));
    assert_eq!(link_kind(&h1, "ovl.md").as_deref(), Some("bridge"));
    // tunnel_gro (on by default) goes without its device, and says so.
    let path = &a.status().unwrap()["path"];
    assert_eq!(
        (&path["tunnel_gro"], &path["tunnel_device"]),
        (&serde_json::json!(true), &serde_json::json!(false)),
        "{path}"
    );
    drop(a);
}

#[test]
fn foreign_routes_to_peer_subnets_survive() {
    if !need_root_or_skip() {
        return;
    }
    let c = cluster(
        LabSpec {
            hosts: 2,
            containers_per_host: 1,
            ..Default::default()
        },
        "kernel",
        AgentOptions::default(),
    )
    .unwrap();
    let h1 = c.lab.host(1).ns.clone();
    let peer = c.lab.host(2).subnet.clone();
    let peer_ip = c.lab.host(2).underlay_ip.to_string();
    let (a, b) = (c.lab.container(1, 1).clone(), c.lab.container(2, 1).clone());
    assert_eq!(ping(&a.ns, b.ip, 2, None, false, 3).unwrap().received, 2);

    // A peer whose subnet has a route of someone else's is refused; the route stays.
    ipn(
        &h1,
        &[
            "route",
            "add",
            "10.103.250.0/24",
            "via",
            "192.168.56.1",
            "dev",
            "eth1",
        ],
    );
    let out = c
        .agent(1)
        .ctl(&["peer", "add", "10.103.250.0/24", "192.168.56.9"])
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "peer subnet 10.103.250.0/24 overlaps the route 10.103.250.0/24 via 192.168.56.1 dev \
             eth1 proto boot in the main table, which overlay did not make; expected a subnet no \
             other route covers (delete that route or choose another subnet)"
        ),
        "{stderr}"
    );
    let foreign = routes_to(&h1, "10.103.250.0/24");
    assert_eq!(foreign.len(), 1, "{foreign:?}");
    assert_eq!(foreign[0]["gateway"], "192.168.56.1");

    // Someone replaces our route to a peer subnet: the refresh reports it
    // and leaves it, and peer del does not remove it either.
    ipn(
        &h1,
        &[
            "route",
            "replace",
            &peer,
            "via",
            "192.168.56.1",
            "dev",
            "eth1",
        ],
    );
    let expected = format!(
        "route {peer} via 192.168.56.1 dev eth1 proto boot in the main table was not made by \
         overlay; refusing to replace it (delete that route, or the peer)"
    );
    c.agent(1)
        .proc
        .wait_for_log(&expected, Duration::from_secs(3))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let now = routes_to(&h1, &peer);
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!(now[0]["gateway"], "192.168.56.1", "{now:?}");
    // `ip -j` leaves out "boot", the protocol of `ip route add`.
    assert_ne!(now[0]["protocol"], "79", "{now:?}");
    c.agent(1).ctl_ok(&["peer", "del", &peer]).unwrap();
    assert_eq!(routes_to(&h1, &peer)[0]["gateway"], "192.168.56.1");

    // Once it is gone, the peer comes back and traffic flows.
    ipn(&h1, &["route", "del", &peer, "via", "192.168.56.1"]);
    c.agent(1)
        .ctl_ok(&["peer", "add", &peer, &peer_ip])
        .unwrap();
    let start = Instant::now();
    assert_eq!(ping(&a.ns, b.ip, 2, None, false, 3).unwrap().received, 2);
    eprintln!(
        "traffic back {:?} after the peer was re-added",
        start.elapsed()
    );
    // Ours is marked.
    let ours = routes_to(&h1, &peer);
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(ours[0]["protocol"], "79", "{ours:?}");
    assert_eq!(ours[0]["dev"], "ovl.42", "{ours:?}");
}
