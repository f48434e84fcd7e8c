//! Issue 12, point 5: the kernel dataplane's network devices across
//! restarts and mode switches, and devices that are not ours. On one lab
//! host, driven per network by `netdp`:
//!
//! - a device called `ovb<VNI>` that overlay did not make is refused
//!   (naming it) and left alone, in every mode;
//! - a restart without cleanup leaves the network forwarding, and the next
//!   kernel-mode start takes its devices over (same ifindex);
//! - a start in BPF mode deletes the kernel mode's bridge and VXLAN device
//!   (the container's veth stays), and a start in kernel mode after a BPF
//!   run detaches BPF's program from the veth and removes its /32 route
//!   there when the endpoint joins the bridge.

use std::net::Ipv4Addr;

use overlay_lab::{exec, exec_ok, need_root_or_skip, ping, AgentOptions, Lab, LabSpec};
use overlay_tests::netdp::{net_container, NetCtr, NetDp};

const WEB: u32 = 4096;
const FOREIGN: u32 = 4098;

fn start(lab: &Lab, mode: &str) -> NetDp {
    let opts = AgentOptions {
        dataplane: Some(mode.into()),
        ..AgentOptions::default()
    };
    NetDp::start(lab, 1, env!("CARGO_BIN_EXE_netdp"), &opts).unwrap()
}

fn ifindex(ns: &str, dev: &str) -> Option<u32> {
    let out = exec(ns, &["cat", &format!("/sys/class/net/{dev}/ifindex")]).unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().parse().unwrap())
}

fn add_web(dp: &mut NetDp, host_ns: &str, c: &NetCtr) {
    dp.add_network("web", WEB, "10.104.1.0/24", Ipv4Addr::new(10, 104, 1, 1))
        .unwrap();
    dp.add_local(host_ns, WEB, c.ip, &c.mac, &c.veth).unwrap();
}

fn reaches_gateway(c: &NetCtr) -> bool {
    ping(&c.ns, Ipv4Addr::new(10, 104, 1, 1), 2, None, false, 2)
        .unwrap()
        .received
        > 0
}

#[test]
fn kernel_network_devices_across_restarts_and_modes() {
    if !need_root_or_skip() {
        return;
    }
    let mut lab = Lab::new(LabSpec {
        hosts: 1,
        containers_per_host: 0,
        ..LabSpec::default()
    })
    .unwrap();
    let c = net_container(&mut lab, 1, "c", Ipv4Addr::new(10, 104, 1, 2)).unwrap();
    let ns = lab.host(1).ns.clone();
    exec_ok(&ns, &["ip", "link", "add", "ovb4098", "type", "bridge"]).unwrap();

    let mut dp = start(&lab, "kernel");
    let err = dp
        .send(
            serde_json::json!({"add_network": {"name": "x", "vni": FOREIGN,
            "subnet": "10.104.9.0/24", "gateway": "10.104.9.1"}}),
        )
        .unwrap()
        .unwrap_err();
    assert!(
        err.contains(
            "ovb4098 exists and was not made by overlay (a bridge device without an alias"
        ),
        "{err}"
    );
    add_web(&mut dp, &ns, &c);
    assert!(reaches_gateway(&c));
    let (bridge, vxlan) = (ifindex(&ns, "ovb4096"), ifindex(&ns, "ovx4096"));
    assert!(bridge.is_some() && vxlan.is_some());

    // A restart without cleanup: the network forwards meanwhile, and the
    // next start takes the devices over.
    dp.shutdown(false).unwrap();
    assert!(
        reaches_gateway(&c),
        "the network stopped with the dataplane"
    );
    let mut dp = start(&lab, "kernel");
    add_web(&mut dp, &ns, &c);
    assert!(
        dp.proc.log().contains("taking over ovx4096"),
        "{}",
        dp.proc.log()
    );
    assert_eq!(
        (ifindex(&ns, "ovb4096"), ifindex(&ns, "ovx4096")),
        (bridge, vxlan)
    );
    assert!(reaches_gateway(&c));
    dp.shutdown(false).unwrap();

    // BPF mode removes the kernel mode's network devices, not the foreign one.
    let mut dp = start(&lab, "ebpf");
    assert!(dp.proc.log().contains("started Ebpf"), "{}", dp.proc.log());
    assert_eq!(ifindex(&ns, "ovb4096"), None);
    assert_eq!(ifindex(&ns, "ovx4096"), None);
    assert!(ifindex(&ns, "ovb4098").is_some(), "a foreign device went");
    assert!(ifindex(&ns, &c.veth).is_some(), "the container's veth went");
    add_web(&mut dp, &ns, &c);
    let routes = exec_ok(&ns, &["ip", "route", "show", "dev", &c.veth]).unwrap();
    assert!(
        routes.contains("10.104.1.2"),
        "BPF mode's /32 route: {routes}"
    );
    dp.shutdown(false).unwrap();

    // And kernel mode removes what BPF mode left on the veth.
    let mut dp = start(&lab, "kernel");
    let filters = exec_ok(&ns, &["tc", "filter", "show", "dev", &c.veth, "ingress"]).unwrap();
    assert!(filters.trim().is_empty(), "BPF's program stayed: {filters}");
    add_web(&mut dp, &ns, &c);
    let routes = exec_ok(&ns, &["ip", "route", "show", "dev", &c.veth]).unwrap();
    assert!(
        routes.trim().is_empty(),
        "routes left on the veth: {routes}"
    );
    assert!(reaches_gateway(&c));
    let err = dp
        .send(
            serde_json::json!({"add_network": {"name": "x", "vni": FOREIGN,
            "subnet": "10.104.9.0/24", "gateway": "10.104.9.1"}}),
        )
        .unwrap()
        .unwrap_err();
    assert!(
        err.contains("ovb4098 exists and was not made by overlay"),
        "{err}"
    );
    dp.shutdown(true).unwrap();
    assert_eq!(ifindex(&ns, "ovb4096"), None);
    assert!(ifindex(&ns, "ovb4098").is_some());
}
