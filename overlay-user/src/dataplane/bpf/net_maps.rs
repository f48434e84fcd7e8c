//! Typed facade over the overlay networks' maps (`OVL_NET_*`): networks,
//! their subnets, endpoints keyed by (VNI, IP) and the ports (host-side
//! veths) of local endpoints, the last two each with its slot array.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use aya::maps::{HashMap, LpmTrie, MapData};
use ipnet::Ipv4Net;
use overlay_common::net::{
    maps as names, NetEndpointSlot, NetEndpointValue, NetKey, NetPortSlot, NetPortValue, NetValue,
};

use super::maps::{err, ignore_missing, lpm, take_map};
use super::slots::{lookup, Slots};
use crate::dataplane::DataplaneError;
use crate::model::overlay_network::{NetEndpointSpec, NetworkSpec};

/// An endpoint's key as user space spells it: (VNI, container IP).
pub type NetEndpointKey = (u32, Ipv4Addr);

/// The network maps of one loaded dataplane, owned (taken out of the `Ebpf`).
pub struct NetMaps {
    networks: HashMap<MapData, u32, NetValue>,
    subnets: LpmTrie<MapData, [u8; 4], u32>,
    endpoints: HashMap<MapData, NetKey, NetEndpointValue>,
    endpoint_slots: Slots<NetEndpointSlot>,
    ports: HashMap<MapData, u32, NetPortValue>,
    port_slots: Slots<NetPortSlot>,
}

fn key(vni: u32, ip: Ipv4Addr) -> NetKey {
    NetKey {
        vni,
        ip: ip.octets(),
    }
}

impl NetMaps {
    /// Takes the network maps out of a loaded object.
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<Self, DataplaneError> {
        let take = take_map;
        Ok(Self {
            networks: HashMap::try_from(take(ebpf, names::NETWORKS)?)
                .map_err(err(names::NETWORKS))?,
            subnets: LpmTrie::try_from(take(ebpf, names::SUBNETS)?).map_err(err(names::SUBNETS))?,
            endpoints: HashMap::try_from(take(ebpf, names::ENDPOINTS)?)
                .map_err(err(names::ENDPOINTS))?,
            endpoint_slots: Slots::new(take(ebpf, names::ENDPOINT_SLOTS)?, names::ENDPOINT_SLOTS)?,
            ports: HashMap::try_from(take(ebpf, names::PORTS)?).map_err(err(names::PORTS))?,
            port_slots: Slots::new(take(ebpf, names::PORT_SLOTS)?, names::PORT_SLOTS)?,
        })
    }

    /// Carries network `vni` with `subnet` and `gateway`: its VNI accepted,
    /// its subnet known for isolation.
    pub fn add_network(
        &mut self,
        vni: u32,
        subnet: Ipv4Net,
        gateway: Ipv4Addr,
    ) -> Result<(), DataplaneError> {
        let v = NetValue {
            subnet: subnet.network().octets(),
            mask: subnet.netmask().octets(),
            gateway: gateway.octets(),
        };
        self.networks
            .insert(vni, v, 0)
            .map_err(err(names::NETWORKS))?;
        self.subnets
            .insert(&lpm(subnet), vni, 0)
            .map_err(err(names::SUBNETS))
    }

    /// Forgets network `vni` and its subnet; absent is fine.
    pub fn del_network(&mut self, vni: u32) -> Result<(), DataplaneError> {
        let v = match self.networks.get(&vni, 0) {
            Ok(v) => v,
            Err(aya::maps::MapError::KeyNotFound) => return Ok(()),
            Err(e) => return Err(err(names::NETWORKS)(e)),
        };
        let mask = u32::from_be_bytes(v.mask);
        let subnet = Ipv4Net::new(Ipv4Addr::from(v.subnet), mask.count_ones() as u8)
            .map_err(|e| DataplaneError::Other(format!("bad entry in {}: {e}", names::NETWORKS)))?;
        // Only our own subnet entry: another network cannot have the same subnet.
        if let Ok(owner) = self.subnets.get(&lpm(subnet), 0) {
            if owner == vni {
                ignore_missing(self.subnets.remove(&lpm(subnet))).map_err(err(names::SUBNETS))?;
            }
        }
        ignore_missing(self.networks.remove(&vni)).map_err(err(names::NETWORKS))
    }

    /// The networks now in the map: (VNI, subnet, gateway).
    pub fn networks(&self) -> Result<Vec<(u32, NetValue)>, DataplaneError> {
        self.networks
            .iter()
            .map(|r| r.map_err(err(names::NETWORKS)))
            .collect()
    }

    /// Writes endpoint `ip` of network `vni`: in `OVL_NET_ENDPOINTS`, then
    /// in its slot of `OVL_NET_EP_SLOTS` if that is empty or this
    /// endpoint's already (another endpoint keeps its slot:
    /// [`NetEndpointSlot`]).
    pub fn put_endpoint(
        &mut self,
        vni: u32,
        ip: Ipv4Addr,
        v: &NetEndpointValue,
    ) -> Result<(), DataplaneError> {
        let key = key(vni, ip);
        self.endpoints
            .insert(key, v, 0)
            .map_err(err(names::ENDPOINTS))?;
        self.endpoint_slots
            .claim(&NetEndpointSlot { key, value: *v })
    }

    /// Endpoint `ip` of network `vni`, if present.
    pub fn endpoint(
        &self,
        vni: u32,
        ip: Ipv4Addr,
    ) -> Result<Option<NetEndpointValue>, DataplaneError> {
        lookup(&self.endpoints, &key(vni, ip), names::ENDPOINTS)
    }

    /// Forgets endpoint `ip` of network `vni`; absent is fine. Its slot is
    /// cleared first, so a program never finds in a slot what the hash no
    /// longer has.
    pub fn del_endpoint(&mut self, vni: u32, ip: Ipv4Addr) -> Result<(), DataplaneError> {
        let key = key(vni, ip);
        self.endpoint_slots.release(&key)?;
        ignore_missing(self.endpoints.remove(&key)).map_err(err(names::ENDPOINTS))
    }

    /// Gives endpoint `ip` of network `vni` its slot of `OVL_NET_EP_SLOTS`
    /// if that is empty now (after the endpoint that held it went): it was
    /// left in the hash alone when it was put. Absent from the hash: nothing.
    pub fn reslot_endpoint(&mut self, vni: u32, ip: Ipv4Addr) -> Result<(), DataplaneError> {
        let key = key(vni, ip);
        match lookup(&self.endpoints, &key, names::ENDPOINTS)? {
            Some(value) => self.endpoint_slots.claim(&NetEndpointSlot { key, value }),
            None => Ok(()),
        }
    }

    /// Port `ifindex`'s [`Self::reslot_endpoint`], in `OVL_NET_PORT_SLOTS`.
    pub fn reslot_port(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        match lookup(&self.ports, &ifindex, names::PORTS)? {
            Some(value) => self.port_slots.claim(&NetPortSlot { ifindex, value }),
            None => Ok(()),
        }
    }

    /// Clears every slot of `OVL_NET_EP_SLOTS` and `OVL_NET_PORT_SLOTS`
    /// whose entry its hash does not hold as it is ([`Slots::sweep`]);
    /// returns how many.
    pub fn sweep_slots(&mut self) -> Result<usize, DataplaneError> {
        let endpoints = &self.endpoints;
        let stale = self
            .endpoint_slots
            .sweep(|s| Ok(lookup(endpoints, &s.key, names::ENDPOINTS)? == Some(s.value)))?;
        let ports = &self.ports;
        let stale_ports = self
            .port_slots
            .sweep(|s| Ok(lookup(ports, &s.ifindex, names::PORTS)? == Some(s.value)))?;
        Ok(stale + stale_ports)
    }

    /// The endpoints now in the map: ((VNI, IP), value).
    pub fn endpoints(&self) -> Result<Vec<(NetEndpointKey, NetEndpointValue)>, DataplaneError> {
        self.endpoints
            .iter()
            .map(|r| {
                r.map(|(k, v)| ((k.vni, Ipv4Addr::from(k.ip)), v))
                    .map_err(err(names::ENDPOINTS))
            })
            .collect()
    }

    /// Binds the host-side veth `ifindex` to its endpoint: in
    /// `OVL_NET_PORTS`, then in its slot of `OVL_NET_PORT_SLOTS` if that is
    /// empty or this port's already.
    pub fn put_port(&mut self, ifindex: u32, v: &NetPortValue) -> Result<(), DataplaneError> {
        self.ports
            .insert(ifindex, v, 0)
            .map_err(err(names::PORTS))?;
        self.port_slots.claim(&NetPortSlot { ifindex, value: *v })
    }

    /// Forgets the port `ifindex`; absent is fine. Its slot is cleared
    /// first, so the program never finds in a slot what the hash no longer
    /// has.
    pub fn del_port(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        self.port_slots.release(&ifindex)?;
        ignore_missing(self.ports.remove(&ifindex)).map_err(err(names::PORTS))
    }

    /// The ports now in the map: (ifindex, value).
    pub fn ports(&self) -> Result<Vec<(u32, NetPortValue)>, DataplaneError> {
        self.ports
            .iter()
            .map(|r| r.map_err(err(names::PORTS)))
            .collect()
    }
}

/// What the BPF dataplane knows of overlay networks.
pub struct NetState {
    /// The maps.
    pub maps: NetMaps,
    /// Networks as added.
    pub(super) networks: BTreeMap<u32, NetworkSpec>,
    /// Endpoints as added, by (VNI, IP).
    pub(super) endpoints: BTreeMap<(u32, Ipv4Addr), NetEndpointSpec>,
    /// Networks found in the pinned maps at start, not added again since.
    pub(super) inherited_networks: BTreeSet<u32>,
    /// Endpoints found in the pinned maps at start, not added again since.
    pub(super) inherited_endpoints: BTreeSet<(u32, Ipv4Addr)>,
}

impl NetState {
    /// The state over `maps`, remembering what an earlier run left in them.
    pub fn new(maps: NetMaps) -> Result<Self, DataplaneError> {
        let inherited_networks = maps.networks()?.into_iter().map(|(v, _)| v).collect();
        let inherited_endpoints = maps.endpoints()?.into_iter().map(|(k, _)| k).collect();
        Ok(NetState {
            maps,
            networks: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            inherited_networks,
            inherited_endpoints,
        })
    }
}
