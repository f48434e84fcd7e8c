//! Finds the containers on the bridge.
//!
//! A container that talks through its gateway leaves an IPv4 neighbour entry
//! on the bridge device (its IP and MAC), and the bridge learns its MAC on the
//! port (host-side veth) it sits behind. Joining the two gives an endpoint:
//! IP, port and MAC. [`Snapshot::take`] reads those tables once;
//! [`plan`] compares them with the agent's endpoints and says what to add,
//! replace or remove. Only endpoints whose source is
//! [`Source::Discovered`] are ever replaced or removed here; for the others
//! the plan only fills in a MAC that was unknown or follows an interface
//! that was re-created under the same name.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::agent::{EndpointEntry, Source};
use crate::config::gateway_of;
use crate::dataplane::EndpointSpec;
use crate::netlink::{FdbEntry, Link, Neighbour, Netlink, NetlinkError};

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
    pub async fn take(net: &dyn Netlink, bridge: &str) -> Result<Snapshot, NetlinkError> {
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

    fn link_named(&self, name: &str) -> Option<&Link> {
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

/// One step to bring the endpoint table in line with a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add or replace this endpoint, with source [`Source::Discovered`].
    Discovered(EndpointSpec),
    /// Remove this discovered endpoint.
    Vanished(Ipv4Addr),
    /// Re-apply a non-discovered endpoint with a newly learned MAC or ifindex (source kept).
    Refreshed(EndpointSpec),
}

/// Whether `ip` can be a container of `subnet` (not its network, broadcast or gateway address).
pub fn is_container_ip(subnet: Ipv4Net, ip: Ipv4Addr) -> bool {
    subnet.contains(&ip)
        && ip != subnet.network()
        && ip != subnet.broadcast()
        && ip != gateway_of(subnet)
}

/// What to change so that the endpoints match the snapshot.
pub fn plan(
    snap: &Snapshot,
    subnet: Ipv4Net,
    endpoints: &BTreeMap<Ipv4Addr, EndpointEntry>,
) -> Vec<Change> {
    let mut changes = Vec::new();
    let ports: HashMap<u32, &Link> = snap.ports().map(|l| (l.index, l)).collect();
    // Containers the bridge resolves: IP -> MAC.
    let neighbours: BTreeMap<Ipv4Addr, [u8; 6]> = snap
        .neighbours
        .iter()
        .filter(|n| is_container_ip(subnet, n.ip))
        .filter_map(|n| Some((n.ip, n.usable_mac()?)))
        .collect();
    // MAC -> port, for ports of the bridge; a MAC seen on two ports is ambiguous and skipped.
    let mut mac_ports: HashMap<[u8; 6], Option<u32>> = HashMap::new();
    for e in snap.fdb.iter().filter(|e| ports.contains_key(&e.port)) {
        mac_ports
            .entry(e.mac)
            .and_modify(|p| {
                if *p != Some(e.port) {
                    *p = None
                }
            })
            .or_insert(Some(e.port));
    }
    let discovered = |ip: Ipv4Addr, mac: [u8; 6]| -> Option<EndpointSpec> {
        let port = ports.get(&mac_ports.get(&mac).copied().flatten()?)?;
        Some(EndpointSpec {
            ip,
            ifname: port.name.clone(),
            ifindex: port.index,
            mac,
        })
    };

    for (&ip, &mac) in &neighbours {
        match endpoints.get(&ip) {
            Some(entry) if entry.source != Source::Discovered => {}
            Some(entry) => {
                let same_port = ports.contains_key(&entry.spec.ifindex);
                if same_port && entry.spec.mac == mac {
                    // Unchanged; keep it even when the FDB entry aged out.
                    continue;
                }
                match discovered(ip, mac) {
                    Some(spec) if spec != entry.spec => changes.push(Change::Discovered(spec)),
                    Some(_) => {}
                    None => changes.push(Change::Vanished(ip)),
                }
            }
            None => {
                if let Some(spec) = discovered(ip, mac) {
                    changes.push(Change::Discovered(spec));
                }
            }
        }
    }

    for (&ip, entry) in endpoints {
        if entry.source == Source::Discovered {
            if !neighbours.contains_key(&ip) {
                changes.push(Change::Vanished(ip));
            }
            continue;
        }
        // Follow a re-created interface, and learn a MAC that was not known yet.
        let Some(link) = snap.link_named(&entry.spec.ifname) else {
            continue;
        };
        let mut spec = entry.spec.clone();
        if link.index != spec.ifindex {
            spec.ifindex = link.index;
            spec.mac = [0; 6];
        }
        if spec.mac == [0; 6] {
            if let Some(mac) = snap.mac_for(ip, spec.ifindex) {
                spec.mac = mac;
            }
        }
        if spec != entry.spec {
            changes.push(Change::Refreshed(spec));
        }
    }
    changes
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::netlink::NeighbourState;

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

    fn subnet() -> Ipv4Net {
        "10.103.100.0/24".parse().unwrap()
    }

    fn spec(ip: [u8; 4], ifname: &str, ifindex: u32, m: u8) -> EndpointSpec {
        EndpointSpec {
            ip: ip.into(),
            ifname: ifname.into(),
            ifindex,
            mac: if m == 0 { [0; 6] } else { mac(m) },
        }
    }

    fn table(entries: &[(EndpointSpec, Source)]) -> BTreeMap<Ipv4Addr, EndpointEntry> {
        entries
            .iter()
            .map(|(spec, source)| {
                (
                    spec.ip,
                    EndpointEntry {
                        spec: spec.clone(),
                        source: *source,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn finds_containers_behind_ports() {
        let changes = plan(&snapshot(), subnet(), &BTreeMap::new());
        assert_eq!(
            changes,
            vec![
                Change::Discovered(spec([10, 103, 100, 2], "veth1", 10, 2)),
                Change::Discovered(spec([10, 103, 100, 3], "veth2", 11, 3)),
            ]
        );
    }

    #[test]
    fn steady_state_changes_nothing() {
        let eps = table(&[
            (spec([10, 103, 100, 2], "veth1", 10, 2), Source::Discovered),
            (spec([10, 103, 100, 3], "veth2", 11, 3), Source::Discovered),
        ]);
        assert_eq!(plan(&snapshot(), subnet(), &eps), vec![]);
        // An aged-out FDB entry does not remove a container whose neighbour entry remains.
        let mut snap = snapshot();
        snap.fdb.clear();
        assert_eq!(plan(&snap, subnet(), &eps), vec![]);
    }

    #[test]
    fn removes_vanished_containers() {
        let eps = table(&[
            (spec([10, 103, 100, 2], "veth1", 10, 2), Source::Discovered),
            (spec([10, 103, 100, 3], "veth2", 11, 3), Source::Discovered),
            (spec([10, 103, 100, 4], "veth9", 19, 4), Source::Discovered),
        ]);
        let mut snap = snapshot();
        // veth2 left the bridge (container stopped).
        snap.links.retain(|l| l.index != 11);
        snap.fdb.retain(|e| e.port != 11);
        assert_eq!(
            plan(&snap, subnet(), &eps),
            vec![
                Change::Vanished([10, 103, 100, 3].into()),
                Change::Vanished([10, 103, 100, 4].into()),
            ]
        );
        // No bridge: every discovered endpoint goes.
        let none = Snapshot::default();
        assert_eq!(plan(&none, subnet(), &eps).len(), 3);
    }

    #[test]
    fn follows_a_moved_container() {
        let eps = table(&[(spec([10, 103, 100, 2], "veth2", 11, 7), Source::Discovered)]);
        let changes = plan(&snapshot(), subnet(), &eps);
        assert_eq!(
            changes[0],
            Change::Discovered(spec([10, 103, 100, 2], "veth1", 10, 2))
        );
    }

    #[test]
    fn never_overrides_other_sources() {
        let eps = table(&[
            (spec([10, 103, 100, 2], "veth9", 99, 5), Source::Api),
            (spec([10, 103, 100, 3], "veth2", 11, 3), Source::Config),
            (spec([10, 103, 100, 50], "vethX", 50, 0), Source::Docker),
        ]);
        assert_eq!(plan(&snapshot(), subnet(), &eps), vec![]);
    }

    #[test]
    fn refreshes_unknown_macs_and_recreated_interfaces() {
        let eps = table(&[
            (spec([10, 103, 100, 2], "veth1", 10, 0), Source::Api),
            (spec([10, 103, 100, 60], "veth2", 11, 0), Source::Api),
            (spec([10, 103, 100, 3], "veth2", 99, 3), Source::Attach),
        ]);
        assert_eq!(
            plan(&snapshot(), subnet(), &eps),
            vec![
                Change::Refreshed(spec([10, 103, 100, 2], "veth1", 10, 2)),
                Change::Refreshed(spec([10, 103, 100, 3], "veth2", 11, 3)),
                // No neighbour entry for .60, but veth2 has learned exactly one MAC.
                Change::Refreshed(spec([10, 103, 100, 60], "veth2", 11, 3)),
            ]
        );
    }

    #[test]
    fn container_ips() {
        let s = subnet();
        assert!(is_container_ip(s, [10, 103, 100, 2].into()));
        assert!(!is_container_ip(s, [10, 103, 100, 0].into()));
        assert!(!is_container_ip(s, [10, 103, 100, 1].into()));
        assert!(!is_container_ip(s, [10, 103, 100, 255].into()));
        assert!(!is_container_ip(s, [10, 103, 101, 2].into()));
    }
}
