//! BPF_PROG_TEST_RUN tests of the network endpoint and port slots
//! (`OVL_NET_EP_SLOTS`, read before the `OVL_NET_ENDPOINTS` hash, and
//! `OVL_NET_PORT_SLOTS`, read before `OVL_NET_PORTS`) on the overlay
//! networks' fixture. Needs root (fails loudly in CI without).

use std::net::Ipv4Addr;

use aya::maps::{Array, Map, MapData};
use overlay_common::net::{
    maps as names, net_endpoint_slot, net_port_slot, NetEndpointSlot, NetEndpointValue, NetKey,
    NetPortSlot, NetPortValue, NET_PORT_SLOTS,
};
use overlay_common::programs;

#[path = "common/packets.rs"]
mod packets;
use packets::*;
#[path = "common/fixture.rs"]
mod fixture;
use fixture::*;
#[path = "common/net.rs"]
mod net;
use net::*;

/// Network endpoints are read from their slot of `OVL_NET_EP_SLOTS` before
/// the hash: a slot forged to disagree wins until the sweep clears it. An
/// endpoint of another network whose address shares the slot is served
/// from the hash and never takes the slot from its holder.
#[test]
fn network_endpoints_are_read_from_their_slot_first() {
    let Some(mut n) = net_fixture() else { return };
    let mut slots: Array<MapData, NetEndpointSlot> =
        Array::try_from(Map::Array(n.f.pinned_map(names::ENDPOINT_SLOTS))).unwrap();
    let slot_of_a =
        |slots: &Array<MapData, NetEndpointSlot>| slots.get(&net_endpoint_slot(A), 0).unwrap();
    let deliver = |n: &mut Net, vni, src_mac, src, dst| {
        let frame = vxlan_frame(PEER, vni, 0x08, &net_inner(src_mac, src, dst));
        let (ret, out) = n.f.run_tc(programs::FROM_UNDERLAY, &frame);
        (ret == TC_ACT_REDIRECT).then(|| <[u8; 6]>::try_from(&out[0..6]).unwrap())
    };
    let a_key = NetKey { vni: WEB, ip: A };
    assert_eq!(slot_of_a(&slots).key, a_key);
    assert_eq!(slot_of_a(&slots).value, NetEndpointValue::local(PORT_A, MA));
    assert_eq!(deliver(&mut n, WEB, MR, R, A), Some(MA));
    // A forged slot wins; the sweep finds it (and nothing else) stale.
    let forged = NetEndpointSlot {
        key: a_key,
        value: NetEndpointValue::local(PORT_B, MB),
    };
    slots.set(net_endpoint_slot(A), forged, 0).unwrap();
    assert_eq!(
        deliver(&mut n, WEB, MR, R, A),
        Some(MB),
        "the slot is read first"
    );
    assert_eq!(n.net.sweep_slots().unwrap(), 1);
    assert_eq!(slot_of_a(&slots), NetEndpointSlot::default());
    assert_eq!(deliver(&mut n, WEB, MR, R, A), Some(MA), "then the hash");
    // The complement of the address, which overlayd holds there while it
    // rewrites the slot, matches no lookup.
    let placeholder = NetEndpointSlot {
        key: NetKey {
            vni: WEB,
            ip: A.map(|b| !b),
        },
        ..forged
    };
    slots.set(net_endpoint_slot(A), placeholder, 0).unwrap();
    assert_eq!(
        deliver(&mut n, WEB, MR, R, A),
        Some(MA),
        "not the placeholder"
    );
    assert_eq!(n.net.sweep_slots().unwrap(), 1);
    n.net
        .put_endpoint(WEB, Ipv4Addr::from(A), &NetEndpointValue::local(PORT_A, MA))
        .unwrap();
    // Network "api" (10.104.240.0/24): its T has A's low bits.
    const API: u32 = 4098;
    let (t, rt) = ([10, 104, 240, 2], [10, 104, 240, 4]);
    let (mt, mrt) = ([0x02, 0x42, 10, 104, 240, 2], [0x02, 0x42, 10, 104, 240, 4]);
    assert_eq!(net_endpoint_slot(t), net_endpoint_slot(A));
    let cfg = host_config(0);
    n.net
        .add_network(
            API,
            "10.104.240.0/24".parse().unwrap(),
            [10, 104, 240, 1].into(),
        )
        .unwrap();
    n.net
        .put_endpoint(API, t.into(), &NetEndpointValue::local(PORT_D + 1, mt))
        .unwrap();
    n.net
        .put_endpoint(
            API,
            rt.into(),
            &NetEndpointValue::remote(&cfg, API, PEER, PEER_MAC, mrt),
        )
        .unwrap();
    assert_eq!(slot_of_a(&slots).key, a_key, "A keeps its slot");
    assert_eq!(
        deliver(&mut n, API, mrt, rt, t),
        Some(mt),
        "T from the hash"
    );
    assert_eq!(deliver(&mut n, WEB, MR, R, A), Some(MA), "A from its slot");
    // Not across networks: web's address under api's VNI is nobody.
    assert_eq!(deliver(&mut n, API, mrt, rt, A), None);
    assert_eq!(n.drops("no_endpoint"), 1);
    // A gone: its slot is cleared, T still found, and takes it when added again.
    n.net.del_endpoint(WEB, Ipv4Addr::from(A)).unwrap();
    assert_eq!(slot_of_a(&slots), NetEndpointSlot::default());
    assert_eq!(deliver(&mut n, WEB, MR, R, A), None);
    assert_eq!(deliver(&mut n, API, mrt, rt, t), Some(mt));
    n.net
        .put_endpoint(API, t.into(), &NetEndpointValue::local(PORT_D + 1, mt))
        .unwrap();
    assert_eq!(slot_of_a(&slots).key, NetKey { vni: API, ip: t });
    assert_eq!(deliver(&mut n, API, mrt, rt, t), Some(mt));
    assert_eq!(n.net.sweep_slots().unwrap(), 0);
}

/// A network container's port is read from its slot of
/// `OVL_NET_PORT_SLOTS` before the `OVL_NET_PORTS` hash: a slot forged to
/// disagree wins until the sweep clears it, the placeholder overlayd holds
/// while rewriting a slot matches nothing, a port whose ifindex shares the
/// slot is served from the hash, and an empty slot (ifindex 0) is no port.
#[test]
fn network_ports_are_read_from_their_slot_first() {
    let Some(mut n) = net_fixture() else { return };
    let mut slots: Array<MapData, NetPortSlot> =
        Array::try_from(Map::Array(n.f.pinned_map(names::PORT_SLOTS))).unwrap();
    let slot_of_a =
        |slots: &Array<MapData, NetPortSlot>| slots.get(&net_port_slot(PORT_A), 0).unwrap();
    // A packet of A's to local B: delivered (addressed to B's MAC) or not.
    let a_to_b = |n: &mut Net, port| {
        let (ret, out) = n.run_port(port, &net_inner(MA, A, B));
        (ret == TC_ACT_REDIRECT).then(|| <[u8; 6]>::try_from(&out[0..6]).unwrap())
    };
    let a_port = NetPortValue {
        vni: WEB,
        ip: A,
        gateway: WEB_GW,
        mac: MA,
        veth_mac: VETH_A,
    };
    assert_eq!(
        slot_of_a(&slots),
        NetPortSlot {
            ifindex: PORT_A,
            value: a_port
        }
    );
    assert_eq!(a_to_b(&mut n, PORT_A), Some(MB));
    // A forged slot (the port is B's) wins: A's source is then spoofed.
    let forged = NetPortSlot {
        ifindex: PORT_A,
        value: NetPortValue { ip: B, ..a_port },
    };
    slots.set(net_port_slot(PORT_A), forged, 0).unwrap();
    assert_eq!(a_to_b(&mut n, PORT_A), None, "the slot is read first");
    assert_eq!(n.drops("net_source_spoofed"), 1);
    assert_eq!(n.net.sweep_slots().unwrap(), 1);
    assert_eq!(slot_of_a(&slots), NetPortSlot::default());
    assert_eq!(a_to_b(&mut n, PORT_A), Some(MB), "then the hash");
    // The placeholder (the complement of the ifindex) matches no lookup.
    let placeholder = NetPortSlot {
        ifindex: !PORT_A,
        ..forged
    };
    slots.set(net_port_slot(PORT_A), placeholder, 0).unwrap();
    assert_eq!(a_to_b(&mut n, PORT_A), Some(MB), "not the placeholder");
    assert_eq!(n.net.sweep_slots().unwrap(), 1);
    n.net.put_port(PORT_A, &a_port).unwrap();
    assert_eq!(slot_of_a(&slots).ifindex, PORT_A);
    // A second port for A whose ifindex shares the slot: from the hash.
    let twin = PORT_A + NET_PORT_SLOTS;
    n.net.put_port(twin, &a_port).unwrap();
    assert_eq!(slot_of_a(&slots).ifindex, PORT_A, "PORT_A keeps its slot");
    assert_eq!(a_to_b(&mut n, twin), Some(MB), "the twin from the hash");
    // PORT_A gone: its slot is cleared, it is no port any more, and the
    // twin takes the slot when put again.
    n.net.del_port(PORT_A).unwrap();
    assert_eq!(slot_of_a(&slots), NetPortSlot::default());
    assert_eq!(n.run_port(PORT_A, &net_inner(MA, A, B)).0, TC_ACT_NEXT);
    assert_eq!(a_to_b(&mut n, twin), Some(MB));
    n.net.put_port(twin, &a_port).unwrap();
    assert_eq!(slot_of_a(&slots).ifindex, twin);
    assert_eq!(a_to_b(&mut n, twin), Some(MB));
    // Ifindex 0 (no device) does not match the empty slot 0.
    assert_eq!(
        slots.get(&0, 0).unwrap(),
        NetPortSlot::default(),
        "slot 0 is empty"
    );
    assert_eq!(n.run_port(0, &net_inner(MA, A, B)).0, TC_ACT_NEXT);
    assert_eq!(n.net.sweep_slots().unwrap(), 0);
}
