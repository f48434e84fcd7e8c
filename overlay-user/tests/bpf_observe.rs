//! BPF_PROG_TEST_RUN tests of observation: the per-peer counters move on
//! encapsulation and decapsulation, no event is emitted while the monitor
//! is off, drops and sampled traces are emitted with their fields while it
//! is on, and the per-CPU rate limit suppresses and counts. Needs root.

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use overlay_common::observe::{
    maps as names, Event, EventKind, Hook, MonitorConfig, MonitorState, PeerStats, MONITOR_F_DROP,
    MONITOR_F_TRACE,
};
use overlay_common::{programs, DropReason};

#[path = "common/packets.rs"]
mod packets;
use packets::*;
#[path = "common/fixture.rs"]
mod fixture;
use fixture::*;

struct Observe {
    events: RingBuf<MapData>,
    monitor: Array<MapData, MonitorConfig>,
    state: PerCpuArray<MapData, MonitorState>,
    stats: PerCpuArray<MapData, PeerStats>,
}

fn observe(f: &mut Fixture) -> Observe {
    let stats = peer_stats(&mut f.ebpf);
    let mut take = |n: &str| f.ebpf.take_map(n).unwrap();
    Observe {
        events: RingBuf::try_from(take(names::EVENTS)).unwrap(),
        monitor: Array::try_from(take(names::MONITOR)).unwrap(),
        state: PerCpuArray::try_from(take(names::MONITOR_STATE)).unwrap(),
        stats,
    }
}

impl Observe {
    fn set(&mut self, flags: u32, sample: u32, rate: u32, burst: u32) {
        self.monitor
            .set(0, MonitorConfig::new(flags, sample, rate, burst), 0)
            .unwrap();
    }

    fn drain(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            assert_eq!(item.len(), size_of::<Event>());
            // SAFETY: the item holds one Event (length checked), plain data.
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
        }
        out
    }

    fn peer(&self) -> PeerStats {
        peer_total(&self.stats)
    }

    fn suppressed(&self) -> u64 {
        self.state
            .get(&0, 0)
            .unwrap()
            .iter()
            .map(|s| s.suppressed)
            .sum()
    }
}

#[test]
fn per_peer_counters_move_on_encap_and_decap() {
    let Some(mut f) = fixture(0) else { return };
    let mut o = observe(&mut f);
    let out = from_container(REMOTE, 6, &tcp_segment());
    assert_eq!(f.run_tc(programs::FROM_CONTAINER, &out).0, TC_ACT_REDIRECT);
    assert_eq!(f.run_tc(programs::FROM_CONTAINER, &out).0, TC_ACT_REDIRECT);
    let inner = inner_frame(C1);
    let (ret, _) = f.run_tc(
        programs::FROM_UNDERLAY,
        &vxlan_frame(PEER, VNI, 0x08, &inner),
    );
    assert_eq!(ret, TC_ACT_REDIRECT);
    let s = o.peer();
    assert_eq!((s.tx_packets, s.tx_bytes), (2, 2 * out.len() as u64));
    assert_eq!((s.rx_packets, s.rx_bytes), (1, inner.len() as u64));
    assert_ne!(s.last_rx_ns, 0, "the time of the last packet is recorded");
    // A drop from the peer is not traffic from it.
    f.run_tc(
        programs::FROM_UNDERLAY,
        &vxlan_frame(PEER, 99, 0x08, &inner),
    );
    assert_eq!(o.peer().rx_packets, 1);
    assert!(o.drain().is_empty(), "the monitor is off: no events");
}

#[test]
fn drops_are_events_only_while_monitored() {
    let Some(mut f) = fixture(0) else { return };
    let mut o = observe(&mut f);
    let bad = vxlan_frame(PEER, 99, 0x08, &inner_frame(C1));
    assert_eq!(f.run_tc(programs::FROM_UNDERLAY, &bad).0, TC_ACT_SHOT);
    assert_eq!(f.run_xdp(&bad).0, XDP_DROP);
    assert!(o.drain().is_empty(), "off: nothing emitted");
    assert_eq!(o.suppressed(), 0);

    o.set(MONITOR_F_DROP, 1, 1000, 100);
    assert_eq!(f.run_tc(programs::FROM_UNDERLAY, &bad).0, TC_ACT_SHOT);
    assert_eq!(f.run_xdp(&bad).0, XDP_DROP);
    // A good packet is no drop, and traces are off.
    f.run_tc(
        programs::FROM_CONTAINER,
        &from_container(REMOTE, 6, &tcp_segment()),
    );
    let evs = o.drain();
    assert_eq!(evs.len(), 2, "{evs:?}");
    let tc = evs[0];
    assert_eq!(tc.kind, EventKind::Drop as u8);
    assert_eq!(tc.hook, Hook::FromUnderlay as u8);
    assert_eq!(tc.reason, DropReason::UnknownVni as u32);
    assert_eq!(tc.vni, 99);
    assert_eq!((tc.outer_src, tc.outer_dst), (PEER, LOCAL));
    assert_eq!((tc.inner_src, tc.inner_dst), (REMOTE, C1));
    assert_eq!(tc.proto, 6);
    assert_eq!(tc.len as usize, bad.len());
    assert_eq!(evs[1].hook, Hook::XdpUnderlay as u8);
    assert_eq!(evs[1].reason, DropReason::UnknownVni as u32);

    // A container's drop: its own addresses and ports, no outer header.
    let vx = from_container(REMOTE, 17, &udp_datagram(5000, PORT, b"x"));
    assert_eq!(f.run_tc(programs::FROM_CONTAINER, &vx).0, TC_ACT_SHOT);
    let evs = o.drain();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].reason, DropReason::ContainerVxlan as u32);
    assert_eq!(evs[0].hook, Hook::FromContainer as u8);
    assert_eq!((evs[0].inner_src, evs[0].inner_dst), (C1, REMOTE));
    assert_eq!(
        (u16::from_be(evs[0].sport), u16::from_be(evs[0].dport)),
        (5000, PORT)
    );
    assert_eq!(evs[0].vni, 0);

    o.set(0, 1, 1000, 100);
    f.run_tc(programs::FROM_UNDERLAY, &bad);
    assert!(o.drain().is_empty(), "off again: nothing emitted");
}

#[test]
fn traces_are_sampled() {
    let Some(mut f) = fixture(0) else { return };
    let mut o = observe(&mut f);
    o.set(MONITOR_F_TRACE, 2, 1000, 100);
    let out = from_container(REMOTE, 6, &tcp_segment());
    for _ in 0..4 {
        assert_eq!(f.run_tc(programs::FROM_CONTAINER, &out).0, TC_ACT_REDIRECT);
    }
    let (ret, _) = f.run_tc(
        programs::FROM_UNDERLAY,
        &vxlan_frame(PEER, VNI, 0x08, &inner_frame(C1)),
    );
    assert_eq!(ret, TC_ACT_REDIRECT);
    let (ret, _) = f.run_tc(
        programs::FROM_UNDERLAY,
        &vxlan_frame(PEER, VNI, 0x08, &inner_frame(C1)),
    );
    assert_eq!(ret, TC_ACT_REDIRECT);
    let evs = o.drain();
    let kinds: Vec<u8> = evs.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::Encap as u8,
            EventKind::Encap as u8,
            EventKind::Decap as u8
        ],
        "one in two: {evs:?}"
    );
    let encap = evs[0];
    assert_eq!(encap.peer, PEER);
    assert_eq!((encap.outer_src, encap.outer_dst), (LOCAL, PEER));
    assert_eq!((encap.inner_src, encap.inner_dst), (C1, REMOTE));
    assert_eq!(encap.vni, VNI);
    let decap = evs[2];
    assert_eq!(decap.peer, PEER);
    assert_eq!((decap.outer_src, decap.outer_dst), (PEER, LOCAL));
    assert_eq!((decap.inner_src, decap.inner_dst), (REMOTE, C1));
}

#[test]
fn the_rate_limit_suppresses_and_counts() {
    let Some(mut f) = fixture(0) else { return };
    let mut o = observe(&mut f);
    // One event a second, bursts of 3: a quick run of 10 emits 3.
    o.set(MONITOR_F_DROP, 1, 1, 3);
    let bad = vxlan_frame(PEER, 99, 0x08, &inner_frame(C1));
    for _ in 0..10 {
        assert_eq!(f.run_tc(programs::FROM_UNDERLAY, &bad).0, TC_ACT_SHOT);
    }
    let emitted = o.drain().len() as u64;
    assert_eq!(
        emitted + o.suppressed(),
        10,
        "every drop emitted or counted"
    );
    // Per CPU: the test may move between CPUs between runs.
    let cpus = aya::util::nr_cpus().unwrap() as u64;
    assert!((3..=4 * cpus).contains(&emitted), "{emitted} emitted");
    assert_eq!(f.drops("unknown_vni"), 10);
}
