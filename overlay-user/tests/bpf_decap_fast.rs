//! BPF_PROG_TEST_RUN tests of the two per-packet savings of issue 17:
//! the endpoint slots (`OVL_EP_SLOTS`, read before the `OVL_ENDPOINTS`
//! hash) and the two-step resize of decapsulation
//! (`CONFIG_F_DECAP_TWO_STEP`). Each asserts verdicts and output bytes.
//! Needs root (fails loudly in CI without).

use std::net::Ipv4Addr;

use aya::maps::{Array, HashMap, Map, MapData};
use overlay_common::{
    endpoint_slot, maps as names, programs, vtep_mac, EndpointSlot, EndpointValue,
    CONFIG_F_DECAP_TWO_STEP,
};
use overlay_lab::{exec_ok, run_in_netns, Lab, LabSpec};

#[path = "common/packets.rs"]
mod packets;
use packets::*;
#[path = "common/fixture.rs"]
mod fixture;
use fixture::*;

/// A VXLAN frame from PEER for `dst` whose inner IPv4 packet is `ip_len` bytes.
fn frame_for(dst: [u8; 4], ip_len: usize) -> Vec<u8> {
    let mut l4 = tcp_segment();
    l4.resize(ip_len - 20, 0x5a);
    let inner = eth(
        vtep_mac(LOCAL, VNI),
        vtep_mac(PEER, VNI),
        0x0800,
        &ipv4(REMOTE, dst, 6, &l4),
    );
    vxlan_frame(PEER, VNI, 0x08, &inner)
}

fn slots(f: &Fixture) -> Array<MapData, EndpointSlot> {
    Array::try_from(Map::Array(f.pinned_map(names::ENDPOINT_SLOTS))).unwrap()
}

fn hash(f: &Fixture) -> HashMap<MapData, [u8; 4], EndpointValue> {
    HashMap::try_from(Map::HashMap(f.pinned_map(names::ENDPOINTS))).unwrap()
}

fn endpoint(ifindex: u32, mac: [u8; 6]) -> EndpointValue {
    EndpointValue {
        ifindex,
        mac,
        _pad: [0; 2],
    }
}

/// The destination MAC decapsulation gave a frame for C1.
fn delivered_mac(f: &mut Fixture, dst: [u8; 4]) -> Option<[u8; 6]> {
    let (ret, out) = f.run_tc(programs::FROM_UNDERLAY, &frame_for(dst, 60));
    (ret == TC_ACT_REDIRECT).then(|| out[0..6].try_into().unwrap())
}

#[test]
fn two_step_decapsulates_byte_for_byte_as_one_step() {
    let Some(mut one) = fixture(0) else { return };
    let mut two = fixture(CONFIG_F_DECAP_TWO_STEP).unwrap();
    let mut runs = 0;
    for dst in [C1, C_UNKNOWN] {
        for ip_len in [20, 21, 60, 577, 1400, 1450, 1500, 3000] {
            let input = frame_for(dst, ip_len);
            let a = one.run_tc(programs::FROM_UNDERLAY, &input);
            let b = two.run_tc(programs::FROM_UNDERLAY, &input);
            assert_eq!(a, b, "to {dst:?}, inner IPv4 {ip_len} bytes");
            assert_eq!(a.1.len(), input.len() - 50);
            assert_eq!(&b.1[14..], &input[64..], "the inner IPv4 packet, untouched");
            runs += 1;
        }
    }
    assert_eq!(two.counter("decap_packets"), runs / 2);
    assert_eq!(two.counter("decap_to_kernel"), runs / 2);
    assert_eq!(two.drops("decap_adjust_failed"), 0);
}

/// A full-size frame on a device with a 1500-byte MTU (as from a NIC
/// without GRO) grows by 14 beyond the MTU for a moment: this kernel's
/// `bpf_skb_adjust_room` allows that (no MTU check since 5.12), so it is
/// decapsulated in two steps like any other. (Were the grow refused, the
/// program would remove the 50 bytes in one step instead.)
#[test]
fn two_step_takes_full_size_frames_on_a_1500_byte_mtu() {
    let Some(mut one) = fixture(0) else { return };
    let mut two = fixture(CONFIG_F_DECAP_TWO_STEP).unwrap();
    let lab = Lab::new(LabSpec {
        hosts: 1,
        containers_per_host: 0,
        ..LabSpec::default()
    })
    .unwrap();
    let h = lab.host(1);
    let ifindex: u32 = exec_ok(&h.ns, &["cat", "/sys/class/net/eth1/ifindex"])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(h.underlay_mtu, 1500);
    run_in_netns(&h.ns, || {
        // 1450 bytes of inner IPv4: a 1514-byte frame, the most eth1 takes.
        for ip_len in [1436, 1437, 1450] {
            let input = frame_for(C1, ip_len);
            let a = one.run_tc_on(programs::FROM_UNDERLAY, &input, ifindex);
            let b = two.run_tc_on(programs::FROM_UNDERLAY, &input, ifindex);
            assert_eq!(
                b.0,
                TC_ACT_REDIRECT,
                "{} bytes on a 1500-byte MTU",
                input.len()
            );
            assert_eq!(a, b, "{} bytes", input.len());
        }
    })
    .unwrap();
    assert_eq!(two.counter("decap_packets"), 3);
    assert_eq!(two.drops("decap_adjust_failed"), 0);
}

#[test]
fn add_endpoint_fills_its_slot_and_the_slot_is_read_first() {
    let Some(mut f) = fixture(0) else { return };
    let slots = slots(&f);
    let i = endpoint_slot(C1);
    assert_eq!(
        slots.get(&i, 0).unwrap(),
        EndpointSlot {
            ip: C1,
            value: endpoint(77, C1_MAC)
        },
        "install added C1: its slot holds it"
    );
    assert_eq!(delivered_mac(&mut f, C1), Some(C1_MAC));
    // A slot the hash disagrees with (only a crash between overlayd's two
    // writes leaves one): the program believes the slot, which is why the
    // sweep at start exists.
    let forged = [2, 0, 0, 0, 0, 0x42];
    let mut raw =
        Array::<MapData, EndpointSlot>::try_from(Map::Array(f.pinned_map(names::ENDPOINT_SLOTS)))
            .unwrap();
    raw.set(
        i,
        EndpointSlot {
            ip: C1,
            value: endpoint(77, forged),
        },
        0,
    )
    .unwrap();
    assert_eq!(
        delivered_mac(&mut f, C1),
        Some(forged),
        "the slot comes before the hash"
    );
    assert_eq!(f.maps.sweep_endpoint_slots().unwrap(), 1);
    assert_eq!(slots.get(&i, 0).unwrap(), EndpointSlot::default(), "swept");
    assert_eq!(
        delivered_mac(&mut f, C1),
        Some(C1_MAC),
        "from the hash again"
    );
    assert_eq!(
        f.maps.sweep_endpoint_slots().unwrap(),
        0,
        "nothing left to sweep"
    );

    // While overlayd rewrites a slot, it holds the complement of the
    // address, which no address looked up there equals: the hash answers.
    let placeholder = EndpointSlot {
        ip: C1.map(|b| !b),
        value: endpoint(78, forged),
    };
    raw.set(i, placeholder, 0).unwrap();
    assert_eq!(
        delivered_mac(&mut f, C1),
        Some(C1_MAC),
        "not the placeholder"
    );
    assert_eq!(
        f.maps.sweep_endpoint_slots().unwrap(),
        1,
        "left by a crash: swept"
    );

    // A slot whose endpoint the hash no longer has at all.
    raw.set(
        i,
        EndpointSlot {
            ip: C1,
            value: endpoint(77, C1_MAC),
        },
        0,
    )
    .unwrap();
    hash(&f).remove(&C1).unwrap();
    assert_eq!(f.maps.sweep_endpoint_slots().unwrap(), 1);
    let (ret, _) = f.run_tc(programs::FROM_UNDERLAY, &frame_for(C1, 60));
    assert_eq!(ret, TC_ACT_OK, "no endpoint: to the kernel");
    assert_eq!(f.counter("decap_to_kernel"), 1);
}

/// Two addresses with the same slot: the first keeps it (a slot never
/// changes from one address to another in one write), the other is served
/// from the hash and gets the slot once it is free and added again.
#[test]
fn a_shared_slot_stays_with_the_first_and_the_other_is_found_in_the_hash() {
    let Some(mut f) = fixture(0) else { return };
    // 10.101.100.2 has C1's low 17 bits.
    let twin = Ipv4Addr::new(10, 101, 100, 2);
    assert_eq!(endpoint_slot(twin.octets()), endpoint_slot(C1));
    let twin_mac = [2, 0, 0, 0, 0, 0x77];
    f.maps.add_endpoint(twin, &endpoint(78, twin_mac)).unwrap();
    let slots = slots(&f);
    let held = |slots: &Array<MapData, EndpointSlot>| slots.get(&endpoint_slot(C1), 0).unwrap();
    assert_eq!(held(&slots).ip, C1, "C1 keeps its slot");
    assert_eq!(delivered_mac(&mut f, C1), Some(C1_MAC), "C1 from its slot");
    assert_eq!(
        delivered_mac(&mut f, twin.octets()),
        Some(twin_mac),
        "the twin from the hash"
    );
    // C1 changed: its slot follows.
    let new_mac = [2, 0, 0, 0, 0, 0x55];
    f.maps
        .add_endpoint(Ipv4Addr::from(C1), &endpoint(77, new_mac))
        .unwrap();
    assert_eq!(held(&slots).value.mac, new_mac);
    assert_eq!(delivered_mac(&mut f, C1), Some(new_mac));
    // Forgetting C1 empties the slot; the twin is still found, in the hash,
    // and takes the slot when added again.
    f.maps.del_endpoint(Ipv4Addr::from(C1)).unwrap();
    assert_eq!(held(&slots), EndpointSlot::default());
    assert_eq!(delivered_mac(&mut f, C1), None, "C1 is gone");
    assert_eq!(delivered_mac(&mut f, twin.octets()), Some(twin_mac));
    f.maps.add_endpoint(twin, &endpoint(78, twin_mac)).unwrap();
    assert_eq!(held(&slots).ip, twin.octets());
    assert_eq!(delivered_mac(&mut f, twin.octets()), Some(twin_mac));
    assert_eq!(f.maps.sweep_endpoint_slots().unwrap(), 0);
    f.maps.del_endpoint(twin).unwrap();
    assert_eq!(held(&slots), EndpointSlot::default());
}

/// The from-container program's anti-spoofing reads the slot too: with a
/// slot that names another port than the hash, the slot's port is the one
/// allowed.
#[test]
fn source_check_reads_the_slot() {
    let Some(mut f) = fixture(overlay_common::CONFIG_F_PER_PORT) else {
        return;
    };
    let input = from_container(REMOTE, 6, &tcp_segment());
    let from = |f: &mut Fixture, port| f.run_tc_from(programs::FROM_CONTAINER, &input, port);
    assert_eq!(
        (from(&mut f, 77), from(&mut f, 78)),
        (TC_ACT_REDIRECT, TC_ACT_SHOT)
    );
    let moved = EndpointSlot {
        ip: C1,
        value: endpoint(78, C1_MAC),
    };
    slots(&f).set(endpoint_slot(C1), moved, 0).unwrap();
    assert_eq!(
        (from(&mut f, 77), from(&mut f, 78)),
        (TC_ACT_SHOT, TC_ACT_REDIRECT)
    );
    assert_eq!(f.drops("source_spoofed"), 2);
}

/// `decap_resize = "auto"` times both ways on this CPU: two positive
/// figures, the rule applied to them, and the timing programs unloaded
/// again unless they were loaded before (the agent loads none of them).
#[test]
fn auto_resize_times_both_ways_and_unloads_its_programs() {
    use aya::programs::SchedClassifier;
    use overlay_user::dataplane::bpf::{calibrate, loader};
    let Some(mut f) = empty_fixture() else { return };
    let loaded = |f: &mut Fixture, name| {
        let p: &mut SchedClassifier = loader::program(&mut f.ebpf, name).unwrap();
        p.fd().is_ok()
    };
    let t = calibrate::time_decap_resize(&mut f.ebpf).unwrap();
    assert!(t.one_step_ns > 0.0 && t.two_step_ns > 0.0, "{t:?}");
    assert_eq!(t.two_step(), t.two_step_ns < t.one_step_ns * 0.95, "{t:?}");
    for name in [
        programs::BENCH_ADJUST_SHRINK,
        programs::BENCH_ADJUST_TWO_STEP,
    ] {
        assert!(!loaded(&mut f, name), "{name} left loaded");
    }
    // Loaded by the caller before: still loaded after.
    let p: &mut SchedClassifier =
        loader::program(&mut f.ebpf, programs::BENCH_ADJUST_SHRINK).unwrap();
    p.load().unwrap();
    calibrate::time_decap_resize(&mut f.ebpf).unwrap();
    assert!(loaded(&mut f, programs::BENCH_ADJUST_SHRINK));
    assert!(!loaded(&mut f, programs::BENCH_ADJUST_TWO_STEP));
}
