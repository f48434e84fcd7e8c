//! Discovery, a control source: finds the containers on the bridge.
//!
//! A container that talks through its gateway leaves an IPv4 neighbour entry
//! on the bridge device (its IP and MAC), and the bridge learns its MAC on the
//! port (host-side veth) it sits behind. Joining the two gives an endpoint:
//! IP, port and MAC. [`Snapshot::take`] reads those tables once;
//! [`plan`] compares them with the core's endpoints and says what to add,
//! replace or remove. Only endpoints whose source is
//! [`Source::Discovered`] are ever replaced or removed here; for the others
//! the plan only fills in a MAC that was unknown or follows an interface
//! that was re-created under the same name.
//!
//! Discovery trusts the bridge's tables, which a container can fill with
//! ARP in other addresses' names, so it binds like the dataplane's learning
//! does: an address stays on the port it was first found (or learned) on
//! while that port exists, and a port gets at most `per_port` addresses
//! this way. Refusals are reported as [`Step::Refused`] and logged once.
//!
//! It runs on the agent's beat: every second, and at once when a link or
//! neighbour changes (new veths, containers' ARP entries, next hops). Each
//! beat first lets the core do the dataplane's housekeeping, then looks at
//! the bridge, under one lock.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use ipnet::Ipv4Net;

use crate::agent::handle::{Core, CoreGuard};
use crate::agent::tables::EndpointEntry;
use crate::model::change::Change;
use crate::model::endpoint::EndpointSpec;
use crate::model::network::is_container_ip;
use crate::model::source::Source;
use crate::sources::ControlSource;
use crate::sys::bridge::Snapshot;
use crate::sys::netlink::{self, Link, Netlink};

/// One step to bring the endpoint table in line with a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Add or replace this endpoint, with source [`Source::Discovered`].
    Discovered(EndpointSpec),
    /// Remove this discovered endpoint.
    Vanished(Ipv4Addr),
    /// Re-apply a non-discovered endpoint with a newly learned MAC or ifindex (source kept).
    Refreshed(EndpointSpec),
    /// Not taken: why (the address is bound to another live port, or the
    /// port already has its share of addresses).
    Refused(String),
}

/// What to change so that the endpoints match the snapshot. `learned` are
/// the dataplane's own bindings (address -> port); at most `per_port`
/// addresses are taken per port.
pub fn plan(
    snap: &Snapshot,
    subnet: Ipv4Net,
    endpoints: &BTreeMap<Ipv4Addr, EndpointEntry>,
    learned: &BTreeMap<Ipv4Addr, u32>,
    per_port: u32,
) -> Vec<Step> {
    let mut changes = Vec::new();
    let ports: HashMap<u32, &Link> = snap.ports().map(|l| (l.index, l)).collect();
    // Addresses found or learned per port: the share a port may take.
    let mut taken: HashMap<u32, u32> = HashMap::new();
    for e in endpoints
        .values()
        .filter(|e| e.source == Source::Discovered)
    {
        *taken.entry(e.spec.ifindex).or_default() += 1;
    }
    for port in learned.values() {
        *taken.entry(*port).or_default() += 1;
    }
    let name = |index: u32| {
        ports
            .get(&index)
            .map_or("?".to_string(), |l| l.name.clone())
    };
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
        // The live port this address is bound to now, if any.
        let bound = match endpoints.get(&ip) {
            Some(entry) if entry.source != Source::Discovered => continue,
            Some(entry) => {
                if ports.contains_key(&entry.spec.ifindex) && entry.spec.mac == mac {
                    // Unchanged; keep it even when the FDB entry aged out.
                    continue;
                }
                Some(entry.spec.ifindex).filter(|p| ports.contains_key(p))
            }
            None => learned.get(&ip).copied().filter(|p| ports.contains_key(p)),
        };
        let Some(spec) = discovered(ip, mac) else {
            if endpoints.contains_key(&ip) && bound.is_none() {
                changes.push(Step::Vanished(ip));
            }
            continue;
        };
        match bound {
            Some(port) if port == spec.ifindex => {
                if endpoints.get(&ip).map(|e| &e.spec) != Some(&spec) {
                    changes.push(Step::Discovered(spec));
                }
            }
            Some(port) => changes.push(Step::Refused(format!(
                "{ip} answers behind {} but is bound to {} (which still exists); not moved",
                spec.ifname,
                name(port)
            ))),
            None => {
                let n = taken.entry(spec.ifindex).or_default();
                if *n >= per_port {
                    changes.push(Step::Refused(format!(
                        "{ip} answers behind {}, which already has {per_port} addresses found or learned (learn_limit); not taken",
                        spec.ifname
                    )));
                    continue;
                }
                *n += 1;
                changes.push(Step::Discovered(spec));
            }
        }
    }

    for (&ip, entry) in endpoints {
        if entry.source == Source::Discovered {
            if !neighbours.contains_key(&ip) {
                changes.push(Step::Vanished(ip));
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
            changes.push(Step::Refreshed(spec));
        }
    }
    changes
}

/// The discovery source of one bridge.
pub struct Discovery {
    net: Arc<dyn Netlink>,
    bridge: String,
    subnet: Ipv4Net,
    per_port: u32,
}

impl Discovery {
    /// Discovery on `bridge` of the containers of `subnet`, at most
    /// `per_port` addresses per port (at least 1); `net` queries the host.
    pub fn new(net: Arc<dyn Netlink>, bridge: String, subnet: Ipv4Net, per_port: u32) -> Discovery {
        Discovery {
            net,
            bridge,
            subnet,
            per_port: per_port.max(1),
        }
    }

    /// One beat: the dataplane's housekeeping, discovery of containers on
    /// the bridge, and MAC refresh of endpoints. Problems are logged (each
    /// distinct one once), never returned.
    pub async fn tick(&self, core: &mut CoreGuard<'_>) {
        core.refresh().await;
        match Snapshot::take(&*self.net, &self.bridge).await {
            Ok(snap) => {
                if snap.bridge.is_none() {
                    core.warn_once(format!(
                        "bridge {} does not exist; no containers to discover",
                        self.bridge
                    ));
                }
                self.reconcile(core, &snap).await;
            }
            Err(e) => core.warn_once(format!("discovery: {e}")),
        }
    }

    /// Report [`plan`] for `snap` to the core.
    pub async fn reconcile(&self, core: &mut CoreGuard<'_>, snap: &Snapshot) {
        let learned: BTreeMap<Ipv4Addr, u32> = match core.learned_endpoints() {
            Ok(l) => l.into_iter().map(|e| (e.ip, e.ifindex)).collect(),
            Err(e) => {
                core.warn_once(format!("discovery: reading learned endpoints: {e}"));
                BTreeMap::new()
            }
        };
        let steps = plan(snap, self.subnet, core.endpoints(), &learned, self.per_port);
        for step in steps {
            let change = match step {
                Step::Discovered(spec) => Change::PutEndpoint(spec),
                Step::Refreshed(spec) => Change::RefreshEndpoint(spec),
                Step::Vanished(ip) => Change::DelEndpoint(ip),
                Step::Refused(why) => {
                    core.warn_once(format!("discovery: {why}"));
                    continue;
                }
            };
            if let Err(e) = core.apply(Source::Discovered, change).await {
                log::warn!("discovery: {e}");
            }
        }
    }
}

#[async_trait::async_trait]
impl ControlSource for Discovery {
    fn name(&self) -> &'static str {
        "discovery"
    }

    /// Beat every second, and at once when a link or neighbour changes.
    async fn run(self: Box<Self>, core: Core) {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changes = match netlink::change_events() {
            Ok(rx) => Some(rx),
            Err(e) => {
                log::warn!("no netlink change events ({e}); discovery runs once a second");
                None
            }
        };
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                Some(()) = async { match changes.as_mut() { Some(rx) => rx.next().await, None => None } } => {
                    // Let a burst of changes settle, then look once.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    if let Some(rx) = changes.as_mut() {
                        while rx.try_recv().is_ok() {}
                    }
                }
            }
            self.tick(&mut core.lock().await).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::testing::{core, temp_dir, Call};
    use crate::sys::bridge::fixtures::{fdb, link, mac, neigh, snapshot};
    use crate::sys::netlink::NeighbourState;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
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
        let changes = plan(&snapshot(), subnet(), &BTreeMap::new(), &BTreeMap::new(), 4);
        assert_eq!(
            changes,
            vec![
                Step::Discovered(spec([10, 103, 100, 2], "veth1", 10, 2)),
                Step::Discovered(spec([10, 103, 100, 3], "veth2", 11, 3)),
            ]
        );
    }

    #[test]
    fn steady_state_changes_nothing() {
        let eps = table(&[
            (spec([10, 103, 100, 2], "veth1", 10, 2), Source::Discovered),
            (spec([10, 103, 100, 3], "veth2", 11, 3), Source::Discovered),
        ]);
        assert_eq!(
            plan(&snapshot(), subnet(), &eps, &BTreeMap::new(), 4),
            vec![]
        );
        // An aged-out FDB entry does not remove a container whose neighbour entry remains.
        let mut snap = snapshot();
        snap.fdb.clear();
        assert_eq!(plan(&snap, subnet(), &eps, &BTreeMap::new(), 4), vec![]);
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
            plan(&snap, subnet(), &eps, &BTreeMap::new(), 4),
            vec![
                Step::Vanished([10, 103, 100, 3].into()),
                Step::Vanished([10, 103, 100, 4].into()),
            ]
        );
        // No bridge: every discovered endpoint goes.
        let none = Snapshot::default();
        assert_eq!(plan(&none, subnet(), &eps, &BTreeMap::new(), 4).len(), 3);
    }

    #[test]
    fn follows_a_moved_container() {
        // 10.103.100.2 was on veth2, which is gone: it moved to veth1.
        let eps = table(&[(spec([10, 103, 100, 2], "veth2", 11, 7), Source::Discovered)]);
        let mut snap = snapshot();
        snap.links.retain(|l| l.index != 11);
        snap.fdb.retain(|e| e.port != 11);
        let changes = plan(&snap, subnet(), &eps, &BTreeMap::new(), 4);
        assert_eq!(
            changes[0],
            Step::Discovered(spec([10, 103, 100, 2], "veth1", 10, 2))
        );
    }

    #[test]
    fn never_moves_an_address_off_a_live_port() {
        // veth1 answers ARP for 10.103.100.3, which lives behind veth2.
        let eps = table(&[(spec([10, 103, 100, 3], "veth2", 11, 3), Source::Discovered)]);
        let mut snap = snapshot();
        snap.neighbours.retain(|n| n.ip != ip("10.103.100.3"));
        snap.neighbours
            .push(neigh([10, 103, 100, 3], Some(2), NeighbourState::Reachable));
        let changes = plan(&snap, subnet(), &eps, &BTreeMap::new(), 4);
        assert_eq!(
            changes,
            vec![
                Step::Discovered(spec([10, 103, 100, 2], "veth1", 10, 2)),
                Step::Refused(
                    "10.103.100.3 answers behind veth1 but is bound to veth2 (which still exists); not moved".into()
                ),
            ]
        );
        // The same for an address the dataplane learned on veth2.
        let learned = BTreeMap::from([(ip("10.103.100.3"), 11)]);
        let changes = plan(&snap, subnet(), &BTreeMap::new(), &learned, 4);
        assert!(changes.contains(&Step::Refused(
            "10.103.100.3 answers behind veth1 but is bound to veth2 (which still exists); not moved".into()
        )));
    }

    #[test]
    fn takes_at_most_per_port_addresses_per_port() {
        // veth1 answers for .2 and for 20 more addresses.
        let mut snap = snapshot();
        for i in 20..40u8 {
            snap.neighbours
                .push(neigh([10, 103, 100, i], Some(2), NeighbourState::Reachable));
        }
        let changes = plan(&snap, subnet(), &BTreeMap::new(), &BTreeMap::new(), 4);
        let on_veth1 = changes
            .iter()
            .filter(|c| matches!(c, Step::Discovered(s) if s.ifindex == 10))
            .count();
        assert_eq!(on_veth1, 4);
        let refused = changes
            .iter()
            .filter(|c| matches!(c, Step::Refused(_)))
            .count();
        assert_eq!(refused, 17);
        assert!(changes.contains(&Step::Refused(
            "10.103.100.39 answers behind veth1, which already has 4 addresses found or learned (learn_limit); not taken".into()
        )));
        // veth2's container is still found.
        assert!(changes.contains(&Step::Discovered(spec([10, 103, 100, 3], "veth2", 11, 3))));
    }

    #[test]
    fn never_overrides_other_sources() {
        let eps = table(&[
            (spec([10, 103, 100, 2], "veth9", 99, 5), Source::Api),
            (spec([10, 103, 100, 3], "veth2", 11, 3), Source::Config),
            (spec([10, 103, 100, 50], "vethX", 50, 0), Source::Docker),
        ]);
        assert_eq!(
            plan(&snapshot(), subnet(), &eps, &BTreeMap::new(), 4),
            vec![]
        );
    }

    #[test]
    fn refreshes_unknown_macs_and_recreated_interfaces() {
        let eps = table(&[
            (spec([10, 103, 100, 2], "veth1", 10, 0), Source::Api),
            (spec([10, 103, 100, 60], "veth2", 11, 0), Source::Api),
            (spec([10, 103, 100, 3], "veth2", 99, 3), Source::Attach),
        ]);
        assert_eq!(
            plan(&snapshot(), subnet(), &eps, &BTreeMap::new(), 4),
            vec![
                Step::Refreshed(spec([10, 103, 100, 2], "veth1", 10, 2)),
                Step::Refreshed(spec([10, 103, 100, 3], "veth2", 11, 3)),
                // No neighbour entry for .60, but veth2 has learned exactly one MAC.
                Step::Refreshed(spec([10, 103, 100, 60], "veth2", 11, 3)),
            ]
        );
    }

    #[tokio::test]
    async fn tick_discovers_and_forgets() {
        let (core, dp, net_) = core(temp_dir("tick")).await;
        let discovery = Discovery::new(net_.clone(), "docker0".into(), subnet(), 4);
        let tick = || async { discovery.tick(&mut core.lock().await).await };
        let add = Change::AddEndpoint {
            ip: ip("10.103.100.3"),
            ifname: "veth2".into(),
            mac: None,
        };
        core.apply(Source::Api, add).await.unwrap();
        dp.take();
        tick().await;
        let calls = dp.take();
        assert_eq!(calls[0], Call::Refresh);
        // .2 discovered behind veth1; .3 belongs to the API and is left alone.
        assert_eq!(
            calls[1..],
            [Call::AddEndpoint(EndpointSpec {
                ip: ip("10.103.100.2"),
                ifname: "veth1".into(),
                ifindex: 10,
                mac: mac(2)
            })]
        );
        let agent = core.lock().await;
        assert_eq!(
            agent.endpoints()[&ip("10.103.100.2")].source,
            Source::Discovered
        );
        assert_eq!(agent.endpoints()[&ip("10.103.100.3")].source, Source::Api);
        drop(agent);
        tick().await;
        assert_eq!(dp.take(), vec![Call::Refresh]);
        // The container's neighbour entry fails: the endpoint goes.
        {
            let mut snap = net_.snap.lock().unwrap();
            snap.neighbours[0] = neigh([10, 103, 100, 2], None, NeighbourState::Failed);
        }
        tick().await;
        assert_eq!(
            dp.take(),
            vec![Call::Refresh, Call::DelEndpoint(ip("10.103.100.2"))]
        );
        // A new port appears with a container behind it.
        {
            let mut snap = net_.snap.lock().unwrap();
            snap.links.push(link(12, "veth3", Some(3)));
            snap.neighbours
                .push(neigh([10, 103, 100, 4], Some(4), NeighbourState::Reachable));
            snap.fdb.push(fdb(4, 12));
        }
        tick().await;
        assert_eq!(
            dp.take()[1..],
            [Call::AddEndpoint(EndpointSpec {
                ip: ip("10.103.100.4"),
                ifname: "veth3".into(),
                ifindex: 12,
                mac: mac(4)
            })]
        );
    }
}
