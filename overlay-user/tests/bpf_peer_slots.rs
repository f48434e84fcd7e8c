//! BPF_PROG_TEST_RUN tests of the peer slots (`OVL_PEER_SLOTS`, read
//! before the `OVL_PEERS` LPM trie) in encapsulation and in the receive
//! path's anti-spoofing check: the slot is read first, a longer subnet
//! inside a block sends the block back to the trie, and the slots follow
//! adds and deletes. Each asserts verdicts and output bytes. Needs root
//! (fails loudly in CI without).

use std::net::Ipv4Addr;

use aya::maps::{Array, Map, MapData};
use overlay_common::peer_slot::{peer_slot, PeerSlot};
use overlay_common::{maps as names, programs, vtep_mac, PeerValue};

#[path = "common/packets.rs"]
mod packets;
use packets::*;
#[path = "common/fixture.rs"]
mod fixture;
use fixture::*;

/// A second peer host.
const PEER2: [u8; 4] = [192, 168, 56, 6];
/// An address of the fixture's peer subnet 10.103.200.0/24 in its upper quarter.
const UPPER: [u8; 4] = [10, 103, 200, 200];

fn slots(f: &Fixture) -> Array<MapData, PeerSlot> {
    Array::try_from(Map::Array(f.pinned_map(names::PEER_SLOTS))).unwrap()
}

fn slot_of(f: &Fixture, ip: [u8; 4]) -> PeerSlot {
    slots(f).get(&peer_slot(ip), 0).unwrap()
}

fn peer_value(host: [u8; 4]) -> PeerValue {
    PeerValue::new(&host_config(0), host, PEER_MAC, vtep_mac(host, VNI))
}

/// The outer destination of what C1 sends to `dst`, if encapsulated.
fn encap_to(f: &mut Fixture, dst: [u8; 4]) -> Option<[u8; 4]> {
    let (ret, out) = f.run_tc(
        programs::FROM_CONTAINER,
        &from_container(dst, 6, &tcp_segment()),
    );
    (ret == TC_ACT_REDIRECT).then(|| out[30..34].try_into().unwrap())
}

/// The verdict on a frame from host `outer` whose inner source is `src`.
fn decap_from(f: &mut Fixture, outer: [u8; 4], src: [u8; 4]) -> u32 {
    let inner = eth(
        vtep_mac(LOCAL, VNI),
        vtep_mac(outer, VNI),
        0x0800,
        &ipv4(src, C1, 6, &tcp_segment()),
    );
    f.run_tc(
        programs::FROM_UNDERLAY,
        &vxlan_frame(outer, VNI, 0x08, &inner),
    )
    .0
}

#[test]
fn the_slot_is_read_before_the_trie_and_the_sweep_clears_a_wrong_one() {
    let Some(mut f) = fixture(0) else { return };
    f.maps.set_peer_host(Ipv4Addr::from(PEER2), 1).unwrap();
    let s = slot_of(&f, REMOTE);
    assert_eq!(s.block, [10, 103, 200, 0]);
    assert_eq!(s.value.underlay_ip, PEER);
    assert_eq!(encap_to(&mut f, REMOTE), Some(PEER));
    assert_eq!(decap_from(&mut f, PEER, REMOTE), TC_ACT_REDIRECT);
    // A slot forged to name PEER2 wins in both directions.
    let forged = PeerSlot {
        value: peer_value(PEER2),
        ..s
    };
    slots(&f).set(peer_slot(REMOTE), forged, 0).unwrap();
    // A peer added again as it was changes no block's answer, so no slot
    // is written (the forged one stays; the start-up sweep clears such).
    f.maps
        .add_peer("10.103.200.0/24".parse().unwrap(), &s.value)
        .unwrap();
    assert_eq!(slot_of(&f, REMOTE), forged);
    assert_eq!(
        encap_to(&mut f, REMOTE),
        Some(PEER2),
        "encapsulation reads the slot"
    );
    assert_eq!(decap_from(&mut f, PEER, REMOTE), TC_ACT_SHOT);
    assert_eq!(f.drops("inner_source_spoofed"), 1);
    assert_eq!(
        decap_from(&mut f, PEER2, REMOTE),
        TC_ACT_REDIRECT,
        "anti-spoofing reads it"
    );
    // The sweep finds it (and nothing else) wrong and empties it: the trie answers.
    assert_eq!(f.maps.sweep_peer_slots().unwrap(), 1);
    assert_eq!(slot_of(&f, REMOTE), PeerSlot::default());
    assert_eq!(encap_to(&mut f, REMOTE), Some(PEER));
    assert_eq!(decap_from(&mut f, PEER, REMOTE), TC_ACT_REDIRECT);
    assert_eq!(f.maps.sweep_peer_slots().unwrap(), 0);
    // While overlayd rewrites a slot it holds the complement of the block
    // (which no address's block equals): the trie answers meanwhile, and
    // the sweep clears one a crash left behind.
    let placeholder = PeerSlot {
        block: s.block.map(|b| !b),
        ..forged
    };
    slots(&f).set(peer_slot(REMOTE), placeholder, 0).unwrap();
    assert_eq!(encap_to(&mut f, REMOTE), Some(PEER));
    assert_eq!(decap_from(&mut f, PEER, REMOTE), TC_ACT_REDIRECT);
    assert_eq!(f.maps.sweep_peer_slots().unwrap(), 1);
    assert_eq!(slot_of(&f, REMOTE), PeerSlot::default());
}

#[test]
fn slots_follow_longer_and_shorter_subnets_added_and_removed() {
    let Some(mut f) = fixture(0) else { return };
    f.maps.set_peer_host(Ipv4Addr::from(PEER2), 1).unwrap();
    let quarter = "10.103.200.192/26".parse().unwrap();
    // A /26 of the /24's block on PEER2: the block has two answers, so its
    // slot is emptied and the trie answers for each address.
    f.maps.add_peer(quarter, &peer_value(PEER2)).unwrap();
    assert_eq!(slot_of(&f, REMOTE), PeerSlot::default());
    assert_eq!(encap_to(&mut f, REMOTE), Some(PEER));
    assert_eq!(encap_to(&mut f, UPPER), Some(PEER2));
    assert_eq!(decap_from(&mut f, PEER2, UPPER), TC_ACT_REDIRECT);
    assert_eq!(decap_from(&mut f, PEER2, REMOTE), TC_ACT_SHOT);
    assert_eq!(decap_from(&mut f, PEER, UPPER), TC_ACT_SHOT);
    assert_eq!(f.drops("inner_source_spoofed"), 2);
    // Gone again: the block is the /24's once more.
    f.maps.del_peer(quarter).unwrap();
    assert_eq!(slot_of(&f, REMOTE).value.underlay_ip, PEER);
    assert_eq!(encap_to(&mut f, UPPER), Some(PEER));
    // A /16 on PEER2 around it: the /24 keeps its block, the /16 gets the
    // others; with the /24 gone, the /16 gets its block too.
    let wide = "10.103.0.0/16".parse().unwrap();
    f.maps.add_peer(wide, &peer_value(PEER2)).unwrap();
    assert_eq!(slot_of(&f, REMOTE).value.underlay_ip, PEER);
    let other = [10, 103, 7, 9];
    assert_eq!(slot_of(&f, other).block, [10, 103, 7, 0]);
    assert_eq!(encap_to(&mut f, other), Some(PEER2));
    assert_eq!(encap_to(&mut f, REMOTE), Some(PEER));
    f.maps.del_peer("10.103.200.0/24".parse().unwrap()).unwrap();
    assert_eq!(slot_of(&f, REMOTE).value.underlay_ip, PEER2);
    assert_eq!(encap_to(&mut f, REMOTE), Some(PEER2));
    assert_eq!(decap_from(&mut f, PEER2, REMOTE), TC_ACT_REDIRECT);
    // A block a /12 away shares the slot: it stays the first's, and the
    // other is answered by the trie.
    let twin = "10.119.7.0/24".parse().unwrap();
    assert_eq!(peer_slot([10, 119, 7, 9]), peer_slot(other));
    f.maps.add_peer(twin, &peer_value(PEER)).unwrap();
    assert_eq!(slot_of(&f, other).block, [10, 103, 7, 0]);
    assert_eq!(encap_to(&mut f, [10, 119, 7, 9]), Some(PEER));
    assert_eq!(encap_to(&mut f, other), Some(PEER2));
    f.maps.del_peer(wide).unwrap();
    assert_eq!(
        slot_of(&f, other),
        PeerSlot::default(),
        "the /16's slots are emptied"
    );
    assert_eq!(encap_to(&mut f, other), None, "no peer: to the kernel");
    assert_eq!(f.maps.sweep_peer_slots().unwrap(), 0);
}
