//! The BPF side of observation: the monitor's switch (`OVL_MONITOR`) and
//! loss counters (`OVL_MONITOR_STATE`), the `OVL_EVENTS` ring buffer read
//! with tokio's `AsyncFd` into the [`Monitor`]'s channel, and the per-peer
//! traffic counters (`OVL_PEER_STATS`).

use std::collections::{BTreeMap, BTreeSet, HashMap as StdHashMap};
use std::net::Ipv4Addr;
use std::sync::Mutex;

use aya::maps::{Array, MapData, PerCpuArray, PerCpuValues, RingBuf};
use overlay_common::observe::{
    maps as names, Event, EventKind, Hook, MonitorConfig, MonitorState, PeerStats,
    DEFAULT_EVENT_BURST, DEFAULT_EVENT_RATE, EVENT_F_INNER, EVENT_F_OUTER, EVENT_F_PORTS,
    MONITOR_F_DROP, MONITOR_F_TRACE, PEER_STATS_SLOTS,
};
use overlay_common::{DropReason, NO_STATS_SLOT};
use tokio::io::unix::AsyncFd;
use tokio::sync::broadcast;

use crate::dataplane::monitor::{Monitor, MonitorSwitch};
use crate::dataplane::DataplaneError;
use crate::model::observe::{EventType, MonitorEvent, PeerTraffic};

fn err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, source }
}

fn take(ebpf: &mut aya::Ebpf, name: &'static str) -> Result<aya::maps::Map, DataplaneError> {
    ebpf.take_map(name)
        .ok_or_else(|| DataplaneError::Other(format!("map {name} missing from the object")))
}

/// The observation maps of one loaded dataplane.
pub struct Observe {
    /// The event stream clients subscribe to.
    pub monitor: Monitor,
    /// Traffic per peer host.
    pub peer_stats: PeerStatsMap,
    reader: tokio::task::JoinHandle<()>,
}

impl Observe {
    /// Takes the maps out of a loaded object, switches events off (a crashed
    /// run may have left them on) and starts reading the ring buffer.
    pub fn start(ebpf: &mut aya::Ebpf) -> Result<Observe, DataplaneError> {
        let config = Array::try_from(take(ebpf, names::MONITOR)?).map_err(err(names::MONITOR))?;
        let state = PerCpuArray::try_from(take(ebpf, names::MONITOR_STATE)?)
            .map_err(err(names::MONITOR_STATE))?;
        let ring = RingBuf::try_from(take(ebpf, names::EVENTS)?).map_err(err(names::EVENTS))?;
        let stats = PerCpuArray::try_from(take(ebpf, names::PEER_STATS)?)
            .map_err(err(names::PEER_STATS))?;
        let switch = BpfSwitch {
            config: Mutex::new(config),
            state,
        };
        switch.set(false, false, 1).map_err(DataplaneError::Other)?;
        let monitor = Monitor::new(Box::new(switch));
        // SAFETY: the ring buffer owns its map's fd, which stays open and
        // the same for as long as the RingBuf, moved into the AsyncFd, lives.
        let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| {
                DataplaneError::Other(format!("polling the {} ring buffer: {e}", names::EVENTS))
            })?;
        let reader = tokio::spawn(read_events(fd, monitor.sender()));
        Ok(Observe {
            monitor,
            peer_stats: PeerStatsMap::new(stats),
            reader,
        })
    }
}

impl Drop for Observe {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

struct BpfSwitch {
    config: Mutex<Array<MapData, MonitorConfig>>,
    state: PerCpuArray<MapData, MonitorState>,
}

impl MonitorSwitch for BpfSwitch {
    fn set(&self, drops: bool, trace: bool, sample_every: u32) -> Result<(), String> {
        let mut flags = 0;
        if drops {
            flags |= MONITOR_F_DROP;
        }
        if trace {
            flags |= MONITOR_F_TRACE;
        }
        let mc = MonitorConfig::new(flags, sample_every, DEFAULT_EVENT_RATE, DEFAULT_EVENT_BURST);
        let mut config = self.config.lock().unwrap_or_else(|e| e.into_inner());
        config
            .set(0, mc, 0)
            .map_err(|e| err(names::MONITOR)(e).to_string())
    }

    fn loss(&self) -> Result<(u64, u64), String> {
        let v = self
            .state
            .get(&0, 0)
            .map_err(|e| err(names::MONITOR_STATE)(e).to_string())?;
        Ok(v.iter()
            .fold((0, 0), |(s, f), c| (s + c.suppressed, f + c.ring_full)))
    }
}

/// Which peer host has which slot of `OVL_PEER_STATS`.
#[derive(Debug)]
struct Slots {
    /// The slot of each counted peer host.
    given: BTreeMap<Ipv4Addr, u32>,
    /// Slots not given, never [`NO_STATS_SLOT`].
    free: BTreeSet<u32>,
    /// Where the search for a free slot starts: a slot taken back is given
    /// again only after every other free one, so that counts still in
    /// flight for its old host do not land on a new one.
    next: u32,
}

impl Slots {
    /// Slots `1..n` to give.
    fn new(n: u32) -> Self {
        Slots {
            given: BTreeMap::new(),
            free: (NO_STATS_SLOT + 1..n).collect(),
            next: NO_STATS_SLOT + 1,
        }
    }

    fn of(&self, ip: Ipv4Addr) -> u32 {
        self.given.get(&ip).copied().unwrap_or(NO_STATS_SLOT)
    }

    /// Takes on a slot a previous run gave `ip`; false (and nothing
    /// changed) if `ip` has one already or `slot` is not free.
    fn adopt(&mut self, ip: Ipv4Addr, slot: u32) -> bool {
        if self.given.contains_key(&ip) || !self.free.remove(&slot) {
            return false;
        }
        self.given.insert(ip, slot);
        true
    }

    /// A new slot for `ip` (which has none): the first free one at or
    /// after `next`, wrapping around; `None` when all are given.
    fn give(&mut self, ip: Ipv4Addr) -> Option<u32> {
        let slot = self
            .free
            .range(self.next..)
            .next()
            .or_else(|| self.free.iter().next())
            .copied()?;
        self.free.remove(&slot);
        self.next = slot + 1;
        self.given.insert(ip, slot);
        Some(slot)
    }

    /// Takes `ip`'s slot back, if it had one.
    fn take_back(&mut self, ip: Ipv4Addr) -> Option<u32> {
        let slot = self.given.remove(&ip)?;
        self.free.insert(slot);
        Some(slot)
    }
}

/// `OVL_PEER_STATS`: a per-CPU array with a slot per peer host, given
/// when the host's first peer entry is added and taken back with its last.
/// The slot travels in every `PeerValue` towards the host (and in the
/// remote endpoints of overlay networks on it), so the programs count
/// without a lookup of their own.
pub struct PeerStatsMap {
    map: PerCpuArray<MapData, PeerStats>,
    slots: Slots,
}

impl PeerStatsMap {
    fn new(map: PerCpuArray<MapData, PeerStats>) -> Self {
        PeerStatsMap {
            map,
            slots: Slots::new(PEER_STATS_SLOTS),
        }
    }

    /// The slot of peer host `ip`, [`NO_STATS_SLOT`] if it is not counted.
    pub fn slot(&self, ip: Ipv4Addr) -> u32 {
        self.slots.of(ip)
    }

    /// Takes on the slot a previous run gave peer host `ip` (read back from
    /// a pinned peer entry), so its counts go on; an invalid slot or one
    /// given already is ignored (the host gets a new one when tracked).
    pub fn adopt(&mut self, ip: Ipv4Addr, slot: u32) {
        self.slots.adopt(ip, slot);
    }

    /// Counts traffic of peer host `ip` while `on`, else forgets it.
    /// Returns whether its slot changed (given or taken back).
    pub fn track(&mut self, ip: Ipv4Addr, on: bool) -> Result<bool, DataplaneError> {
        if !on {
            return Ok(self.slots.take_back(ip).is_some());
        }
        if self.slots.of(ip) != NO_STATS_SLOT {
            return Ok(false);
        }
        let slot = self.slots.give(ip).ok_or_else(|| {
            DataplaneError::Other(format!(
                "{}: all {} slots are in use; peer host {ip} is not counted",
                names::PEER_STATS,
                PEER_STATS_SLOTS - 1
            ))
        })?;
        // A slot starts from zero: its last host's counts are gone.
        let zeroed = aya::util::nr_cpus()
            .map_err(|(what, e)| DataplaneError::Other(format!("{what}: {e}")))
            .and_then(|cpus| {
                PerCpuValues::try_from(vec![PeerStats::default(); cpus])
                    .map_err(|e| DataplaneError::Other(format!("{}: {e}", names::PEER_STATS)))
            })
            .and_then(|zero| self.map.set(slot, zero, 0).map_err(err(names::PEER_STATS)));
        if let Err(e) = zeroed {
            self.slots.take_back(ip);
            return Err(e);
        }
        Ok(true)
    }

    /// Traffic per peer host, summed over CPUs.
    pub fn read(&self) -> Result<BTreeMap<Ipv4Addr, PeerTraffic>, DataplaneError> {
        let offset = Clocks::now().coarse_to_unix_ns();
        let mut out = BTreeMap::new();
        for (ip, slot) in &self.slots.given {
            let values = self.map.get(slot, 0).map_err(err(names::PEER_STATS))?;
            let mut t = PeerTraffic::default();
            let mut last = 0;
            for v in values.iter() {
                t.tx_packets += v.tx_packets;
                t.tx_bytes += v.tx_bytes;
                t.rx_packets += v.rx_packets;
                t.rx_bytes += v.rx_bytes;
                last = last.max(v.last_rx_ns);
            }
            t.last_rx_unix_ms =
                (last != 0).then(|| offset.saturating_add_signed(last as i64) / 1_000_000);
            out.insert(*ip, t);
        }
        Ok(out)
    }
}

/// Reads the clocks the programs use, to turn their times into wall time.
struct Clocks {
    realtime: i128,
    monotonic: i128,
    coarse: i128,
}

impl Clocks {
    fn now() -> Clocks {
        let ns = |id| {
            let mut t = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `t` is a valid timespec to write to.
            unsafe { libc::clock_gettime(id, &mut t) };
            i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec)
        };
        Clocks {
            realtime: ns(libc::CLOCK_REALTIME),
            monotonic: ns(libc::CLOCK_MONOTONIC),
            coarse: ns(libc::CLOCK_MONOTONIC_COARSE),
        }
    }

    /// Add to a `bpf_ktime_get_ns` time for Unix time in ns.
    fn mono_to_unix_ns(&self) -> u64 {
        (self.realtime - self.monotonic).max(0) as u64
    }

    /// Add to a `bpf_ktime_get_coarse_ns` time for Unix time in ns.
    fn coarse_to_unix_ns(&self) -> u64 {
        (self.realtime - self.coarse).max(0) as u64
    }
}

async fn read_events(mut fd: AsyncFd<RingBuf<MapData>>, tx: broadcast::Sender<MonitorEvent>) {
    let mut names: StdHashMap<u32, Option<String>> = StdHashMap::new();
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(g) => g,
            Err(e) => {
                log::warn!("monitor: polling {}: {e}; events stop", names::EVENTS);
                return;
            }
        };
        let offset = Clocks::now().mono_to_unix_ns();
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            if item.len() < size_of::<Event>() || tx.receiver_count() == 0 {
                continue;
            }
            // SAFETY: the item holds at least one Event (checked), which is
            // plain data; read unaligned from the ring's bytes.
            let raw: Event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            let ifname = names
                .entry(raw.ifindex)
                .or_insert_with(|| ifname(raw.ifindex))
                .clone();
            let _ = tx.send(decode(&raw, offset, ifname));
        }
        guard.clear_ready();
        if names.len() > 4096 {
            names.clear();
        }
    }
}

fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// An event as the programs wrote it, for people and JSON.
pub fn decode(ev: &Event, mono_to_unix_ns: u64, ifname: Option<String>) -> MonitorEvent {
    let ip = |b: [u8; 4], flag: u8| (ev.flags & flag != 0).then(|| Ipv4Addr::from(b));
    let kind = match ev.kind {
        k if k == EventKind::Encap as u8 => EventType::Encap,
        k if k == EventKind::Decap as u8 => EventType::Decap,
        _ => EventType::Drop,
    };
    let hook = match ev.hook {
        h if h == Hook::FromContainer as u8 => "from-container",
        h if h == Hook::FromUnderlay as u8 => "from-underlay",
        h if h == Hook::XdpUnderlay as u8 => "xdp",
        _ => "unknown",
    };
    let ports = ev.flags & EVENT_F_PORTS != 0;
    MonitorEvent {
        time_ns: ev.ts_ns.saturating_add(mono_to_unix_ns),
        kind,
        reason: (kind == EventType::Drop).then(|| {
            DropReason::ALL
                .get(ev.reason as usize)
                .map(|r| r.name().to_string())
                .unwrap_or_else(|| format!("reason_{}", ev.reason))
        }),
        hook: hook.into(),
        ifindex: ev.ifindex,
        ifname,
        len: ev.len,
        vni: (ev.flags & EVENT_F_OUTER != 0).then_some(ev.vni),
        outer_src: ip(ev.outer_src, EVENT_F_OUTER),
        outer_dst: ip(ev.outer_dst, EVENT_F_OUTER),
        src: ip(ev.inner_src, EVENT_F_INNER),
        dst: ip(ev.inner_dst, EVENT_F_INNER),
        proto: (ev.flags & EVENT_F_INNER != 0).then_some(ev.proto),
        sport: ports.then(|| u16::from_be(ev.sport)),
        dport: ports.then(|| u16::from_be(ev.dport)),
        peer: (ev.peer != [0; 4]).then(|| Ipv4Addr::from(ev.peer)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_never_zero_and_come_back_last() {
        let ip = |n| Ipv4Addr::new(192, 168, 56, n);
        let mut s = Slots::new(4);
        assert_eq!((s.give(ip(1)), s.give(ip(2))), (Some(1), Some(2)));
        assert_eq!((s.of(ip(1)), s.of(ip(9))), (1, NO_STATS_SLOT));
        // A slot taken back is given again only after the others.
        assert_eq!(s.take_back(ip(1)), Some(1));
        assert_eq!(s.take_back(ip(1)), None);
        assert_eq!(s.give(ip(3)), Some(3));
        assert_eq!(s.give(ip(4)), Some(1));
        assert_eq!(s.give(ip(5)), None, "slots 1 to 3 are given");
        assert_eq!(s.of(ip(5)), NO_STATS_SLOT);
    }

    #[test]
    fn adopted_slots_are_not_given_twice() {
        let ip = |n| Ipv4Addr::new(192, 168, 56, n);
        let mut s = Slots::new(4);
        assert!(s.adopt(ip(1), 2));
        assert!(!s.adopt(ip(2), 2), "given to host 1 already");
        assert!(!s.adopt(ip(1), 3), "host 1 has a slot");
        assert!(!s.adopt(ip(3), NO_STATS_SLOT), "slot 0 is never given");
        assert!(!s.adopt(ip(3), 4), "past the array");
        assert_eq!(s.give(ip(2)), Some(1));
        assert_eq!(s.give(ip(3)), Some(3));
        assert_eq!(s.give(ip(4)), None);
        assert_eq!(s.of(ip(1)), 2);
    }

    #[test]
    fn decode_a_drop() {
        let ev = Event {
            ts_ns: 5,
            kind: EventKind::Drop as u8,
            hook: Hook::FromUnderlay as u8,
            flags: EVENT_F_OUTER | EVENT_F_INNER | EVENT_F_PORTS,
            proto: 17,
            reason: DropReason::UnknownVni as u32,
            ifindex: 3,
            len: 92,
            vni: 7,
            outer_src: [192, 168, 56, 5],
            outer_dst: [192, 168, 56, 4],
            inner_src: [10, 1, 2, 3],
            inner_dst: [10, 1, 1, 2],
            sport: 1000u16.to_be(),
            dport: 53u16.to_be(),
            peer: [0; 4],
            _pad: 0,
        };
        let d = decode(&ev, 10, Some("eth1".into()));
        assert_eq!(d.time_ns, 15);
        assert_eq!(d.kind, EventType::Drop);
        assert_eq!(d.reason.as_deref(), Some("unknown_vni"));
        assert_eq!(d.hook, "from-underlay");
        assert_eq!(d.vni, Some(7));
        assert_eq!(d.outer_src, Some(Ipv4Addr::new(192, 168, 56, 5)));
        assert_eq!(d.src, Some(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!((d.sport, d.dport), (Some(1000), Some(53)));
        assert_eq!(d.peer, None);
        // Without the flags, the fields are absent, not zero.
        let bare = decode(&Event { flags: 0, ..ev }, 0, None);
        assert_eq!((bare.vni, bare.src, bare.sport), (None, None, None));
    }
}
