//! VXLAN that is not ours, sent over the real underlay, is dropped and
//! counted under its reason, with XDP in front and with tc alone; traffic
//! between the containers goes on.

use overlay_lab::{exec_ok, need_root_or_skip, ping, AgentOptions, LabSpec};
use overlay_tests::cluster;

/// Sends one UDP datagram with `payload` from `ns` to `dst:4789`.
fn send_udp(ns: &str, dst: &str, payload_hex: &str) {
    let script = format!(
        "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(bytes.fromhex('{payload_hex}'), ('{dst}', 4789))"
    );
    exec_ok(ns, &["python3", "-c", &script]).unwrap();
}

fn hostile_vxlan_is_dropped(xdp: &str) {
    if !need_root_or_skip() {
        return;
    }
    let opts = AgentOptions {
        xdp: Some(xdp.into()),
        ..Default::default()
    };
    let c = cluster(
        LabSpec {
            hosts: 3,
            containers_per_host: 1,
            ..Default::default()
        },
        "ebpf",
        opts,
    )
    .unwrap();
    // Host 3 stops being a peer of host 1: its VXLAN is now from a stranger.
    c.agent(1)
        .ctl_ok(&["peer", "del", &c.lab.host(3).subnet])
        .unwrap();
    let target = c.lab.host(1).underlay_ip.to_string();
    let inner = "0242c0a838050242c0a838040800".to_string() + &"45".repeat(20);
    let cases = [
        (2, format!("08000000{:06x}00{inner}", 99), "unknown_vni"),
        (2, format!("00000000{:06x}00{inner}", 42), "bad_vxlan_flags"),
        (2, "0800000000".to_string(), "truncated_vxlan"),
        (
            2,
            format!("08000000{:06x}00", 42) + "0242c0a8",
            "truncated_inner",
        ),
        (3, format!("08000000{:06x}00{inner}", 42), "unknown_peer"),
    ];
    for (from, payload, reason) in &cases {
        let before = c.agent(1).drops(reason).unwrap();
        send_udp(&c.lab.host(*from).ns, &target, payload);
        c.agent(1)
            .wait_status(std::time::Duration::from_secs(3), |s| {
                s["stats"]["drops"][reason].as_u64().unwrap_or(0) > before
            })
            .unwrap_or_else(|e| panic!("xdp = {xdp}: {reason} not counted: {e}"));
    }
    let status = c.agent(1).status().unwrap();
    if xdp != "off" {
        assert!(
            status["stats"]["counters"]["xdp_vxlan_pass"]
                .as_u64()
                .is_some(),
            "{status}"
        );
    }
    let (a, b) = (c.lab.container(1, 1).clone(), c.lab.container(2, 1).clone());
    assert_eq!(ping(&a.ns, b.ip, 3, None, false, 2).unwrap().received, 3);
}

#[test]
fn dropped_by_tc_without_xdp() {
    hostile_vxlan_is_dropped("off");
}

#[test]
fn dropped_by_generic_xdp() {
    hostile_vxlan_is_dropped("generic");
}
