//! BPF_PROG_TEST_RUN tests of two per-packet savings: `encap_resize =
//! "head"` (`CONFIG_F_ENCAP_PUSH_HEAD`: an unsegmented packet other than
//! TCP gets its outer headers with `bpf_skb_change_head`, into the very
//! frame that `bpf_skb_adjust_room` makes, while a segmented one still
//! takes `adjust_room`; `overlay_common::encap_pushes_head` holds the rule
//! and its unit test), and a peer's receive time read at most once per tick.
//! Needs root (fails loudly in CI without).

use aya::maps::{MapData, PerCpuArray, PerCpuValues};
use overlay_common::observe::{maps as names, PeerStats};
use overlay_common::{programs, CONFIG_F_ENCAP_PUSH_HEAD};

#[path = "common/packets.rs"]
mod packets;
use packets::*;
#[path = "common/fixture.rs"]
mod fixture;
use fixture::*;

/// Offsets of `gso_segs` and `gso_size` in `struct __sk_buff`.
const GSO_SEGS: usize = 164;
const GSO_SIZE: usize = 176;

#[test]
fn push_head_makes_the_same_frame_as_adjust_room() {
    let Some(mut head) = fixture(CONFIG_F_ENCAP_PUSH_HEAD) else {
        return;
    };
    let Some(mut room) = fixture(0) else { return };
    let mut big = tcp_segment();
    big.resize(1400, 0xa5);
    let cases = [
        from_container(REMOTE, 6, &tcp_segment()),
        from_container(REMOTE, 6, &big),
        from_container(REMOTE, 17, &udp_datagram(5000, 53, b"query")),
        from_container(REMOTE, 1, &icmp_echo()),
    ];
    for (i, input) in cases.iter().enumerate() {
        let (ret, pushed) = head.run_tc(programs::FROM_CONTAINER, input);
        assert_eq!(ret, TC_ACT_REDIRECT, "case {i}, pushed");
        assert_encapsulated(input, &pushed);
        let (ret, grown) = room.run_tc(programs::FROM_CONTAINER, input);
        assert_eq!(ret, TC_ACT_REDIRECT, "case {i}, adjust_room");
        assert_eq!(pushed, grown, "case {i}: the same bytes either way");
    }
    for f in [&head, &room] {
        assert_eq!(f.counter("encap_packets"), cases.len() as u64);
        assert_eq!(f.drops("encap_adjust_failed"), 0);
    }
}

#[test]
fn segmented_packets_still_take_adjust_room() {
    let Some(mut f) = fixture(CONFIG_F_ENCAP_PUSH_HEAD) else {
        return;
    };
    let input = from_container(REMOTE, 17, &udp_datagram(5000, 53, b"query"));
    let plain = skb_ctx(0, 0);
    let (ret, out) = f.run_tc_ctx(programs::FROM_CONTAINER, &input, Some(&plain));
    assert_eq!(ret, TC_ACT_REDIRECT);
    assert_encapsulated(&input, &out);
    // The test runner can set gso_size but not gso_type, and adjust_room
    // refuses a GSO packet that is neither TCP nor UDP with fixed segments
    // (ENOTSUPP), where change_head would take it: so this drop shows that
    // a segmented UDP packet went to adjust_room.
    let mut gso = plain;
    gso[GSO_SEGS..GSO_SEGS + 4].copy_from_slice(&2u32.to_ne_bytes());
    gso[GSO_SIZE..GSO_SIZE + 4].copy_from_slice(&1000u32.to_ne_bytes());
    let (ret, _) = f.run_tc_ctx(programs::FROM_CONTAINER, &input, Some(&gso));
    assert_eq!(ret, TC_ACT_SHOT);
    assert_eq!(f.drops("encap_adjust_failed"), 1);
    assert_eq!(f.counter("encap_packets"), 1);
}

/// `OVL_PEER_STATS` and `OVL_PEER_RX_TICK` at PEER's slot.
struct RxTime {
    stats: PerCpuArray<MapData, PeerStats>,
    ticks: PerCpuArray<MapData, u64>,
    cpus: usize,
}

impl RxTime {
    fn take(f: &mut Fixture) -> Self {
        let stats = peer_stats(&mut f.ebpf);
        let ticks = PerCpuArray::try_from(f.ebpf.take_map(names::PEER_RX_TICK).unwrap()).unwrap();
        let cpus = aya::util::nr_cpus().expect("CPU count");
        RxTime { stats, ticks, cpus }
    }

    /// The latest jiffy any CPU stamped the slot in.
    fn tick(&self) -> u64 {
        let v = self.ticks.get(&PEER_SLOT, 0).unwrap();
        v.iter().copied().max().unwrap()
    }

    /// Every CPU's jiffy set to `tick`, every CPU's counts to zero and its
    /// time to `last_rx_ns`.
    fn reset(&mut self, tick: u64, last_rx_ns: u64) {
        let ticks = PerCpuValues::try_from(vec![tick; self.cpus]).unwrap();
        self.ticks.set(PEER_SLOT, ticks, 0).unwrap();
        let s = PeerStats {
            last_rx_ns,
            ..PeerStats::default()
        };
        let stats = PerCpuValues::try_from(vec![s; self.cpus]).unwrap();
        self.stats.set(PEER_SLOT, stats, 0).unwrap();
    }
}

#[test]
fn the_receive_time_is_read_once_per_tick() {
    let Some(mut f) = fixture(0) else { return };
    let mut rx = RxTime::take(&mut f);
    let frame = vxlan_frame(PEER, VNI, 0x08, &inner_frame(C1));
    assert_eq!(f.run_tc(programs::FROM_UNDERLAY, &frame).0, TC_ACT_REDIRECT);
    let first = peer_total(&rx.stats);
    assert_eq!(first.rx_packets, 1);
    assert!(first.last_rx_ns > 1, "the first packet is stamped");
    assert_ne!(rx.tick(), 0, "and its jiffy recorded");

    // Within the jiffy of the last stamp a packet is counted, and the time
    // (poisoned to 1 here) stays. Should the jiffy move between reading it
    // and the run, the packet is stamped: then try again.
    let mut kept = false;
    for _ in 0..100 {
        let before = rx.tick();
        rx.reset(before, 1);
        assert_eq!(f.run_tc(programs::FROM_UNDERLAY, &frame).0, TC_ACT_REDIRECT);
        let s = peer_total(&rx.stats);
        assert_eq!(s.rx_packets, 1);
        if rx.tick() == before {
            assert_eq!(s.last_rx_ns, 1, "the same jiffy: the clock is not read");
            kept = true;
            break;
        }
        assert!(s.last_rx_ns > 1, "a new jiffy: stamped");
    }
    assert!(kept, "100 runs, each in a jiffy of its own");

    // A slot given to a host anew is zeroed: stamped even within the jiffy.
    let before = rx.tick();
    rx.reset(before, 0);
    assert_eq!(f.run_tc(programs::FROM_UNDERLAY, &frame).0, TC_ACT_REDIRECT);
    assert!(
        peer_total(&rx.stats).last_rx_ns > 1,
        "a zeroed slot is stamped"
    );

    // A jiffy long gone (0): stamped, and the jiffy moves on.
    rx.reset(0, 1);
    assert_eq!(f.run_tc(programs::FROM_UNDERLAY, &frame).0, TC_ACT_REDIRECT);
    assert!(peer_total(&rx.stats).last_rx_ns > 1);
    assert_ne!(rx.tick(), 0);
}
