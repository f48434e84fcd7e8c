//! A bridge's tables, read at one moment: its ports, the IPv4 neighbour
//! entries on it (containers that talked through their gateway) and the MACs
//! it learned on each port.
//!
//! The agent looks up an endpoint's MAC here; discovery joins the tables
//! into endpoints.

use std::net::Ipv4Addr;

use crate::sys::error::SysError;
use crate::sys::netlink::{FdbEntry, Link, Neighbour, Netlink};

/// The host tables discovery works from, read at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The bridge, when it exists.
    pub bridge: Option<Link>,
    /// Every link.
    pub links: Vec<Link>,
    /// IPv4 neighbour entries on the bridge.
    pub neighbours: Vec<Neighbour>,
    /// FDB entries learned on the bridge's ports.
    pub fdb: Vec<FdbEntry>,
}

impl Snapshot {
    /// Read the tables of bridge `bridge`. A missing bridge is not an error:
    /// the snapshot then has no bridge, no neighbours and no FDB.
    pub async fn take(net: &dyn Netlink, bridge: &str) -> Result<Snapshot, SysError> {
        let links = net.links().await?;
        let bridge = links.iter().find(|l| l.name == bridge).cloned();
        let (neighbours, fdb) = match &bridge {
            Some(b) => (
                net.neighbours_v4(b.index).await?,
                net.bridge_fdb(b.index).await?,
            ),
            None => (Vec::new(), Vec::new()),
        };
        Ok(Snapshot {
            bridge,
            links,
            neighbours,
            fdb,
        })
    }

    /// The links enslaved to the bridge.
    pub fn ports(&self) -> impl Iterator<Item = &Link> {
        let bridge = self.bridge.as_ref().map(|b| b.index);
        self.links
            .iter()
            .filter(move |l| bridge.is_some() && l.master == bridge)
    }

    /// The link called `name`.
    pub fn link_named(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    /// The MAC of `ip` behind interface `ifindex`: the bridge's neighbour
    /// entry for `ip`, else the only non-permanent FDB entry learned on
    /// `ifindex`, else unknown.
    pub fn mac_for(&self, ip: Ipv4Addr, ifindex: u32) -> Option<[u8; 6]> {
        if let Some(mac) = self
            .neighbours
            .iter()
            .find(|n| n.ip == ip)
            .and_then(Neighbour::usable_mac)
        {
            return Some(mac);
        }
        let mut learned = self.fdb.iter().filter(|e| e.port == ifindex).map(|e| e.mac);
        let first = learned.next()?;
        // VLAN filtering may list one MAC once per VLAN.
        if learned.all(|mac| mac == first) {
            Some(first)
        } else {
            None
        }
    }
}

/// A host to test against: links, neighbours and FDB entries.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::sys::netlink::NeighbourState;

    pub(crate) fn link(index: u32, name: &str, master: Option<u32>) -> Link {
        Link {
            index,
            name: name.into(),
            mac: [2, 0xee, 0, 0, 0, index as u8],
            mtu: 1500,
            master,
            kind: None,
            up: true,
        }
    }

    pub(crate) fn mac(last: u8) -> [u8; 6] {
        [2, 0x42, 0, 0, 0, last]
    }

    pub(crate) fn neigh(ip: [u8; 4], m: Option<u8>, state: NeighbourState) -> Neighbour {
        Neighbour {
            ip: ip.into(),
            mac: m.map(mac),
            state,
        }
    }

    pub(crate) fn fdb(m: u8, port: u32) -> FdbEntry {
        FdbEntry {
            mac: mac(m),
            port,
            vlan: None,
            state: NeighbourState::Reachable,
        }
    }

    /// docker0 (3) with ports veth1 (10), veth2 (11); eth1 (2) is not a port.
    pub(crate) fn snapshot() -> Snapshot {
        Snapshot {
            bridge: Some(link(3, "docker0", None)),
            links: vec![
                link(1, "lo", None),
                link(2, "eth1", None),
                link(3, "docker0", None),
                link(10, "veth1", Some(3)),
                link(11, "veth2", Some(3)),
            ],
            neighbours: vec![
                neigh([10, 103, 100, 2], Some(2), NeighbourState::Reachable),
                neigh([10, 103, 100, 3], Some(3), NeighbourState::Stale),
                neigh([10, 103, 100, 4], None, NeighbourState::Failed),
                neigh([10, 103, 100, 255], Some(9), NeighbourState::Reachable),
                neigh([192, 168, 1, 9], Some(8), NeighbourState::Reachable),
            ],
            fdb: vec![fdb(2, 10), fdb(3, 11), fdb(8, 2)],
        }
    }
}
