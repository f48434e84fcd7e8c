//! Typed facade over the dataplane's maps: domain methods instead of raw
//! keys and values.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData, PerCpuArray};
use ipnet::Ipv4Net;
use overlay_common::{
    maps as names, Config, Counter, DropReason, EndpointSlot, EndpointValue, PeerValue,
};

use super::slots::{block_answer, lookup, peer_blocks, Slots};
use overlay_common::peer_slot::PeerSlot;

use crate::dataplane::DataplaneError;
use crate::model::status::Stats;

/// The maps of one loaded dataplane, owned (taken out of the `Ebpf`).
pub struct Maps {
    config: Array<MapData, Config>,
    peers: LpmTrie<MapData, [u8; 4], PeerValue>,
    peer_hosts: HashMap<MapData, [u8; 4], u32>,
    peer_slots: Slots<PeerSlot>,
    /// What `OVL_PEERS` holds (read at start, followed since): the peer
    /// slots are worked out from it.
    peer_table: BTreeMap<Ipv4Net, PeerValue>,
    endpoints: HashMap<MapData, [u8; 4], EndpointValue>,
    endpoint_slots: Slots<EndpointSlot>,
    counters: PerCpuArray<MapData, u64>,
    drops: PerCpuArray<MapData, u64>,
    port_learned: HashMap<MapData, u32, u64>,
}

pub(super) use super::slots::err;

/// Takes map `name` out of a loaded object.
pub(super) fn take_map(
    ebpf: &mut aya::Ebpf,
    name: &'static str,
) -> Result<aya::maps::Map, DataplaneError> {
    ebpf.take_map(name)
        .ok_or_else(|| DataplaneError::Other(format!("map {name} missing from the object")))
}

/// The LPM trie key of `subnet`.
pub(super) fn lpm(subnet: Ipv4Net) -> Key<[u8; 4]> {
    Key::new(u32::from(subnet.prefix_len()), subnet.network().octets())
}

impl Maps {
    /// Takes the maps out of a loaded object.
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<Self, DataplaneError> {
        let take = take_map;
        let mut maps = Self {
            config: Array::try_from(take(ebpf, names::CONFIG)?).map_err(err(names::CONFIG))?,
            peers: LpmTrie::try_from(take(ebpf, names::PEERS)?).map_err(err(names::PEERS))?,
            peer_hosts: HashMap::try_from(take(ebpf, names::PEER_HOSTS)?)
                .map_err(err(names::PEER_HOSTS))?,
            peer_slots: Slots::new(take(ebpf, names::PEER_SLOTS)?, names::PEER_SLOTS)?,
            peer_table: BTreeMap::new(),
            endpoints: HashMap::try_from(take(ebpf, names::ENDPOINTS)?)
                .map_err(err(names::ENDPOINTS))?,
            endpoint_slots: Slots::new(take(ebpf, names::ENDPOINT_SLOTS)?, names::ENDPOINT_SLOTS)?,
            counters: PerCpuArray::try_from(take(ebpf, names::COUNTERS)?)
                .map_err(err(names::COUNTERS))?,
            drops: PerCpuArray::try_from(take(ebpf, names::DROPS)?).map_err(err(names::DROPS))?,
            port_learned: HashMap::try_from(take(ebpf, names::PORT_LEARNED)?)
                .map_err(err(names::PORT_LEARNED))?,
        };
        maps.peer_table = maps.peers()?.into_iter().collect();
        Ok(maps)
    }

    /// Writes this host's settings.
    pub fn set_config(&mut self, cfg: &Config) -> Result<(), DataplaneError> {
        self.config.set(0, cfg, 0).map_err(err(names::CONFIG))
    }

    /// Reads this host's settings back.
    pub fn config(&self) -> Result<Config, DataplaneError> {
        self.config.get(&0, 0).map_err(err(names::CONFIG))
    }

    /// Routes `subnet` to a remote host: in `OVL_PEERS`, and in the slots
    /// of the /24 blocks it changes ([`Maps::change_peer`]).
    pub fn add_peer(&mut self, subnet: Ipv4Net, value: &PeerValue) -> Result<(), DataplaneError> {
        self.change_peer(subnet.trunc(), Some(*value))
    }

    /// Removes `subnet`; absent is fine.
    pub fn del_peer(&mut self, subnet: Ipv4Net) -> Result<(), DataplaneError> {
        self.change_peer(subnet.trunc(), None)
    }

    /// Puts `subnet` in `OVL_PEERS` with `value`, or removes it (`None`),
    /// and keeps the slots of its blocks in line ([`PeerSlot`]): a block
    /// whose answer changes has its slot emptied before the trie changes
    /// (the programs then ask the trie) and filled after; the slots of the
    /// others are not written (a peer added again as it was changes none).
    fn change_peer(
        &mut self,
        subnet: Ipv4Net,
        value: Option<PeerValue>,
    ) -> Result<(), DataplaneError> {
        let blocks = peer_blocks(subnet);
        let before: Vec<_> = blocks
            .iter()
            .map(|&b| block_answer(&self.peer_table, b))
            .collect();
        let old = match value {
            Some(v) => self.peer_table.insert(subnet, v),
            None => self.peer_table.remove(&subnet),
        };
        let changed: Vec<(Ipv4Addr, Option<PeerValue>)> = blocks
            .into_iter()
            .zip(before)
            .filter_map(|(b, was)| {
                let now = block_answer(&self.peer_table, b);
                (now != was).then_some((b, now))
            })
            .collect();
        let written = self.write_peer(subnet, value, &changed);
        if written.is_err() {
            // The trie is as it was: so is its copy.
            match old {
                Some(v) => self.peer_table.insert(subnet, v),
                None => self.peer_table.remove(&subnet),
            };
            return written;
        }
        for (b, now) in changed {
            if let Some(value) = now {
                self.peer_slots.claim(&PeerSlot {
                    block: b.octets(),
                    _pad: 0,
                    value,
                })?;
            }
        }
        Ok(())
    }

    /// Empties the slots of the `changed` blocks, then writes `subnet` to
    /// `OVL_PEERS` (or removes it).
    fn write_peer(
        &mut self,
        subnet: Ipv4Net,
        value: Option<PeerValue>,
        changed: &[(Ipv4Addr, Option<PeerValue>)],
    ) -> Result<(), DataplaneError> {
        for (b, _) in changed {
            self.peer_slots.release(&b.octets())?;
        }
        match value {
            Some(v) => self.peers.insert(&lpm(subnet), v, 0),
            None => ignore_missing(self.peers.remove(&lpm(subnet))),
        }
        .map_err(err(names::PEERS))
    }

    /// Clears every slot of `OVL_PEER_SLOTS` that does not hold what
    /// `OVL_PEERS` answers for its block ([`Slots::sweep`]); returns how many.
    pub fn sweep_peer_slots(&mut self) -> Result<usize, DataplaneError> {
        let table = &self.peer_table;
        self.peer_slots.sweep(|s| {
            Ok(s.block[3] == 0 && block_answer(table, Ipv4Addr::from(s.block)) == Some(s.value))
        })
    }

    /// The peer entries now in the map.
    pub fn peers(&self) -> Result<Vec<(Ipv4Net, PeerValue)>, DataplaneError> {
        let mut out = Vec::new();
        for item in self.peers.iter() {
            let (k, v) = item.map_err(err(names::PEERS))?;
            let net = Ipv4Net::new(Ipv4Addr::from(k.data()), k.prefix_len() as u8)
                .map_err(|e| DataplaneError::Other(format!("bad key in {}: {e}", names::PEERS)))?;
            out.push((net, v));
        }
        Ok(out)
    }

    /// Sets how many subnets live behind a peer host (0 removes it).
    pub fn set_peer_host(&mut self, ip: Ipv4Addr, subnets: u32) -> Result<(), DataplaneError> {
        if subnets == 0 {
            ignore_missing(self.peer_hosts.remove(&ip.octets())).map_err(err(names::PEER_HOSTS))
        } else {
            self.peer_hosts
                .insert(ip.octets(), subnets, 0)
                .map_err(err(names::PEER_HOSTS))
        }
    }

    /// The peer hosts now in the map.
    pub fn peer_hosts(&self) -> Result<Vec<Ipv4Addr>, DataplaneError> {
        self.peer_hosts
            .keys()
            .map(|k| k.map(Ipv4Addr::from).map_err(err(names::PEER_HOSTS)))
            .collect()
    }

    /// Delivers traffic for `ip` to a local interface: in `OVL_ENDPOINTS`,
    /// then in its slot of `OVL_EP_SLOTS` if that is empty or `ip`'s
    /// already (another address keeps its slot: [`EndpointSlot`]).
    pub fn add_endpoint(&mut self, ip: Ipv4Addr, v: &EndpointValue) -> Result<(), DataplaneError> {
        self.endpoints
            .insert(ip.octets(), v, 0)
            .map_err(err(names::ENDPOINTS))?;
        self.endpoint_slots.claim(&EndpointSlot {
            ip: ip.octets(),
            value: *v,
        })
    }

    /// Forgets `ip`; absent is fine. Its slot is cleared first, so a
    /// program never finds in a slot what the hash no longer has.
    pub fn del_endpoint(&mut self, ip: Ipv4Addr) -> Result<(), DataplaneError> {
        self.endpoint_slots.release(&ip.octets())?;
        ignore_missing(self.endpoints.remove(&ip.octets())).map_err(err(names::ENDPOINTS))
    }

    /// Clears every slot of `OVL_EP_SLOTS` whose endpoint `OVL_ENDPOINTS`
    /// does not hold as it is ([`Slots::sweep`]); returns how many.
    pub fn sweep_endpoint_slots(&mut self) -> Result<usize, DataplaneError> {
        let endpoints = &self.endpoints;
        self.endpoint_slots
            .sweep(|s| Ok(lookup(endpoints, &s.ip, names::ENDPOINTS)? == Some(s.value)))
    }

    /// The endpoints now in the map.
    pub fn endpoints(&self) -> Result<Vec<(Ipv4Addr, EndpointValue)>, DataplaneError> {
        self.endpoints
            .iter()
            .map(|r| {
                r.map(|(k, v)| (Ipv4Addr::from(k), v))
                    .map_err(err(names::ENDPOINTS))
            })
            .collect()
    }

    /// How many endpoints the from-container program has learned per port
    /// (ifindex -> count), as it counts them against `learn_limit`.
    pub fn port_learned(&self) -> Result<BTreeMap<u32, u64>, DataplaneError> {
        self.port_learned
            .iter()
            .map(|r| r.map_err(err(names::PORT_LEARNED)))
            .collect()
    }

    /// Makes the learned counts exactly `counts`: a port whose count
    /// differs gets it, a port not in `counts` is deleted (its slots are
    /// free again). Equal counts are not rewritten, so a packet learning
    /// at this moment is not undercounted.
    pub fn set_port_learned(&mut self, counts: &BTreeMap<u32, u64>) -> Result<(), DataplaneError> {
        let now = self.port_learned()?;
        for (port, n) in counts {
            if now.get(port) != Some(n) {
                self.port_learned
                    .insert(port, n, 0)
                    .map_err(err(names::PORT_LEARNED))?;
            }
        }
        for port in now.keys().filter(|p| !counts.contains_key(p)) {
            ignore_missing(self.port_learned.remove(port)).map_err(err(names::PORT_LEARNED))?;
        }
        Ok(())
    }

    /// (table, entries, capacity) of the peers, peer hosts and endpoints
    /// (counted in the map: it holds learned ones too).
    pub fn fill(
        &self,
        peers: usize,
        peer_hosts: usize,
    ) -> Result<Vec<(&'static str, u64, u64)>, DataplaneError> {
        let endpoints = self.endpoints.keys().count() as u64;
        Ok(vec![
            (
                names::PEERS,
                peers as u64,
                u64::from(overlay_common::MAX_PEERS),
            ),
            (
                names::PEER_HOSTS,
                peer_hosts as u64,
                u64::from(overlay_common::MAX_PEERS),
            ),
            (
                names::ENDPOINTS,
                endpoints,
                u64::from(overlay_common::MAX_ENDPOINTS),
            ),
        ])
    }

    /// Counters and drops summed over CPUs.
    pub fn stats(&self) -> Result<Stats, DataplaneError> {
        let mut stats = Stats::default();
        for c in Counter::ALL {
            let v = self
                .counters
                .get(&(c as u32), 0)
                .map_err(err(names::COUNTERS))?;
            stats.counters.insert(c.name().to_string(), v.iter().sum());
        }
        for r in DropReason::ALL {
            let v = self.drops.get(&(r as u32), 0).map_err(err(names::DROPS))?;
            stats.drops.insert(r.name().to_string(), v.iter().sum());
        }
        Ok(stats)
    }
}

/// A removal of an absent key is fine.
pub(super) fn ignore_missing(
    r: Result<(), aya::maps::MapError>,
) -> Result<(), aya::maps::MapError> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        other => other,
    }
}
