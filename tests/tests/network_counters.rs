//! Overlay network traffic counts for the peer hosts (issue 17's counter
//! slots): the remote endpoints of a network carry their host's
//! `OVL_PEER_STATS` slot, so they must follow when the host gets a slot
//! after them (its first per-host peer added later) and when it gives the
//! slot back. Two BPF hosts, each driven by `netdp`, one network container
//! on each.

use std::net::Ipv4Addr;

use overlay_lab::{need_root_or_skip, ping, AgentOptions, Lab, LabSpec};
use overlay_tests::netdp::{web_pair, WebPair};
use serde_json::Value;

fn count(traffic: &Value, host: Ipv4Addr, field: &str) -> u64 {
    traffic[host.to_string()][field].as_u64().unwrap_or(0)
}

#[test]
fn network_endpoints_follow_their_hosts_counter_slot() {
    if !need_root_or_skip() {
        return;
    }
    let mut lab = Lab::new(LabSpec {
        hosts: 2,
        containers_per_host: 0,
        ..LabSpec::default()
    })
    .unwrap();
    let port = AgentOptions::default().port;
    // Host 1's netdp must stay up: bound, not left to `..` (dropped at once).
    let WebPair {
        h1: _h1,
        mut h2,
        a,
        b,
    } = web_pair(
        &mut lab,
        env!("CARGO_BIN_EXE_netdp"),
        ["ebpf", "ebpf"],
        port,
    )
    .unwrap();
    let u1 = lab.host(1).underlay_ip;

    // No per-host peers: the network forwards, nobody is counted.
    let r = ping(&a.ns, b.ip, 3, None, false, 3).unwrap();
    assert_eq!(r.received, 3, "{r:?}");
    assert_eq!(h2.peer_traffic().unwrap(), serde_json::json!({}));

    // Host 1 becomes a peer of host 2 after its endpoint: the endpoint
    // takes the slot host 1 gets, and a's pings count for host 1.
    h2.add_peer("10.103.100.0/24", u1).unwrap();
    let r = ping(&a.ns, b.ip, 5, None, false, 3).unwrap();
    assert_eq!(r.received, 5, "{r:?}");
    let t = h2.peer_traffic().unwrap();
    assert_eq!(count(&t, u1, "rx_packets"), 5, "5 requests from a: {t}");
    assert_eq!(count(&t, u1, "tx_packets"), 5, "5 replies to a: {t}");

    // Gone and back: the slot is given back, and the next one (another
    // slot, zeroed) is the endpoint's again, counting from zero.
    h2.del_peer("10.103.100.0/24").unwrap();
    let r = ping(&a.ns, b.ip, 2, None, false, 3).unwrap();
    assert_eq!(r.received, 2, "{r:?}");
    assert_eq!(h2.peer_traffic().unwrap(), serde_json::json!({}));
    h2.add_peer("10.103.100.0/24", u1).unwrap();
    let r = ping(&a.ns, b.ip, 4, None, false, 3).unwrap();
    assert_eq!(r.received, 4, "{r:?}");
    let t = h2.peer_traffic().unwrap();
    assert_eq!(count(&t, u1, "rx_packets"), 4, "{t}");
    assert_eq!(count(&t, u1, "tx_packets"), 4, "{t}");
}
