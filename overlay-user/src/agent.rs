//! The agent: the tables of peers and endpoints, their validation, and the
//! single place that drives the [`Dataplane`].
//!
//! Every change is validated completely before the dataplane is called, so a
//! rejected change leaves both the tables and the dataplane untouched. Peers
//! and endpoints added through the API (or by `attach`) are written to the
//! state file and re-applied on the next start, after the config's peers.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::config::{
    self, check_network, check_underlay_ip, format_mac, gateway_of, overlaps, AttachPoint, Config,
    InputError, XdpMode,
};
use crate::dataplane::{Dataplane, DataplaneError, EndpointSpec, Mode, PeerSpec, Stats};
use crate::discovery::{self, Change, Snapshot};
use crate::netlink::{Netlink, NetlinkError};
use crate::state::{self, State, StateError, StoredEndpoint, StoredPeer};

/// Who put an entry in the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The config file.
    Config,
    /// The local API (overlayctl).
    Api,
    /// Found on the bridge by discovery.
    Discovered,
    /// Docker events.
    Docker,
    /// `overlayctl attach`-style plumbing of a container.
    Attach,
}

impl Source {
    /// Whether entries of this source are kept in the state file.
    /// Config entries come back from the config; discovered and Docker ones are found again.
    pub fn persisted(self) -> bool {
        matches!(self, Source::Api | Source::Attach)
    }

    /// The lowercase name, as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Api => "api",
            Source::Discovered => "discovered",
            Source::Docker => "docker",
            Source::Attach => "attach",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The lowercase name of a dataplane mode ("ebpf", "kernel").
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Ebpf => "ebpf",
        Mode::Kernel => "kernel",
    }
}

/// A peer and who added it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerEntry {
    /// What the dataplane was given.
    pub spec: PeerSpec,
    /// Who added it.
    pub source: Source,
}

/// An endpoint and who added it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointEntry {
    /// What the dataplane was given.
    pub spec: EndpointSpec,
    /// Who added it.
    pub source: Source,
}

/// What `overlayctl status` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Dataplane implementation.
    pub mode: Mode,
    /// Why this mode runs: the setting, or for `auto` whether BPF loaded and if not, why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode_reason: Option<String>,
    /// This host's container subnet.
    pub subnet: Ipv4Net,
    /// Its gateway address.
    pub gateway: Ipv4Addr,
    /// The underlay interface.
    pub underlay_interface: String,
    /// This host's underlay address.
    pub underlay_ip: Ipv4Addr,
    /// This host's VTEP MAC (derived from the underlay address and VNI).
    pub vtep_mac: String,
    /// The container bridge.
    pub bridge: String,
    /// VXLAN network identifier.
    pub vni: u32,
    /// VXLAN UDP port.
    pub vxlan_port: u16,
    /// Where the from-container program is attached.
    pub attach: AttachPoint,
    /// XDP mode.
    pub xdp: XdpMode,
    /// Number of peers.
    pub peers: usize,
    /// Number of endpoints.
    pub endpoints: usize,
    /// Dataplane counters and drops.
    pub stats: Stats,
}

/// Errors of agent operations; the messages are shown to users as is.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A malformed value (host bits, bad MAC, unusable address).
    #[error(transparent)]
    Input(#[from] InputError),
    /// The peer subnet overlaps this host's container subnet.
    #[error("peer subnet {subnet} overlaps this host's subnet {own}; expected a subnet disjoint from it")]
    PeerOverlapsOwn {
        /// The rejected subnet.
        subnet: Ipv4Net,
        /// This host's subnet.
        own: Ipv4Net,
    },
    /// The peer subnet overlaps another peer's subnet.
    #[error("peer subnet {subnet} overlaps peer subnet {other} (via {other_underlay}); delete that peer first or choose a disjoint subnet")]
    PeerOverlapsPeer {
        /// The rejected subnet.
        subnet: Ipv4Net,
        /// The existing peer's subnet.
        other: Ipv4Net,
        /// The existing peer's underlay address.
        other_underlay: Ipv4Addr,
    },
    /// The peer's underlay address is this host's own.
    #[error("{0} is this host's own underlay address; expected the peer host's address")]
    PeerIsSelf(Ipv4Addr),
    /// No peer has this subnet.
    #[error("no peer for {0}")]
    NoPeer(Ipv4Net),
    /// The endpoint address is outside this host's subnet.
    #[error("{ip} is not in this host's subnet {subnet}; expected a container address in it")]
    NotInSubnet {
        /// The address.
        ip: Ipv4Addr,
        /// This host's subnet.
        subnet: Ipv4Net,
    },
    /// The endpoint address is the subnet's network, broadcast or gateway address.
    #[error("{ip} is the {what} address of {subnet}; expected a container address")]
    ReservedAddress {
        /// The address.
        ip: Ipv4Addr,
        /// "network", "broadcast" or "gateway".
        what: &'static str,
        /// This host's subnet.
        subnet: Ipv4Net,
    },
    /// The endpoint's interface does not exist.
    #[error("no interface named {0}")]
    NoInterface(String),
    /// No endpoint has this address.
    #[error("no endpoint for {0}")]
    NoEndpoint(Ipv4Addr),
    /// The underlay interface has no IPv4 address and none is configured.
    #[error(
        "underlay interface {0} has no IPv4 address; add one or set underlay_ip in the config file"
    )]
    NoUnderlayIp(String),
    /// A netlink query failed.
    #[error(transparent)]
    Netlink(NetlinkError),
    /// The dataplane refused; the tables were not changed.
    #[error("{action}: {source}")]
    Dataplane {
        /// What was being done, e.g. "adding peer 10.1.2.0/24".
        action: String,
        /// What the dataplane reported.
        #[source]
        source: DataplaneError,
    },
    /// The state file could not be read.
    #[error(transparent)]
    State(#[from] StateError),
}

impl From<NetlinkError> for AgentError {
    fn from(e: NetlinkError) -> Self {
        match e {
            NetlinkError::NotFound(name) => AgentError::NoInterface(name),
            e => AgentError::Netlink(e),
        }
    }
}

/// This host's underlay address: `underlay_ip` from the config, else the
/// first IPv4 address on the underlay interface.
pub async fn resolve_underlay_ip(cfg: &Config, net: &dyn Netlink) -> Result<Ipv4Addr, AgentError> {
    let link = net.link_by_name(&cfg.underlay_interface).await?;
    if let Some(ip) = cfg.underlay_ip {
        return Ok(ip);
    }
    net.ipv4_addrs(link.index)
        .await?
        .into_iter()
        .map(|(ip, _)| ip)
        .find(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .ok_or_else(|| AgentError::NoUnderlayIp(cfg.underlay_interface.clone()))
}

/// The agent. Share it as `Arc<tokio::sync::Mutex<Agent>>`.
pub struct Agent {
    cfg: Config,
    dataplane: Box<dyn Dataplane>,
    net: Arc<dyn Netlink>,
    underlay_ip: Ipv4Addr,
    peers: BTreeMap<Ipv4Net, PeerEntry>,
    endpoints: BTreeMap<Ipv4Addr, EndpointEntry>,
    state_path: PathBuf,
    /// The last tick error logged, to log each distinct problem once.
    last_tick_error: Option<String>,
    /// Why the dataplane's mode was chosen ([`Agent::set_mode_reason`]).
    mode_reason: Option<String>,
}

impl Agent {
    /// An agent with empty tables. `underlay_ip` comes from [`resolve_underlay_ip`].
    pub fn new(
        cfg: Config,
        dataplane: Box<dyn Dataplane>,
        net: Arc<dyn Netlink>,
        underlay_ip: Ipv4Addr,
    ) -> Agent {
        let state_path = state::path_in(&cfg.state_dir);
        Agent {
            cfg,
            dataplane,
            net,
            underlay_ip,
            peers: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            state_path,
            last_tick_error: None,
            mode_reason: None,
        }
    }

    /// Apply the config's peers, then `saved` (read with [`state::load`]
    /// before the dataplane started). Entries that fail are logged and skipped.
    pub async fn restore(&mut self, saved: State) {
        for (index, p) in self.cfg.peers.clone().into_iter().enumerate() {
            // The config was validated, so the MAC parses.
            let mac = p
                .vtep_mac
                .as_deref()
                .map(config::parse_vtep_mac)
                .and_then(Result::ok);
            if let Err(e) = self
                .add_peer(p.subnet, p.underlay_ip, mac, Source::Config)
                .await
            {
                log::error!("config peers[{index}] {}: {e}", p.subnet);
            }
        }
        for p in saved.peers {
            let mac = match p
                .vtep_mac
                .as_deref()
                .map(config::parse_vtep_mac)
                .transpose()
            {
                Ok(mac) => mac,
                Err(e) => {
                    log::warn!("state file: skipping peer {}: {e}", p.subnet);
                    continue;
                }
            };
            if let Err(e) = self.add_peer(p.subnet, p.underlay_ip, mac, p.source).await {
                log::warn!("state file: skipping peer {}: {e}", p.subnet);
            }
        }
        for ep in saved.endpoints {
            if let Err(e) = self.add_endpoint(ep.ip, &ep.dev, ep.source).await {
                log::warn!("state file: skipping endpoint {} on {}: {e}", ep.ip, ep.dev);
            }
        }
        log::info!(
            "restored {} peers and {} endpoints",
            self.peers.len(),
            self.endpoints.len()
        );
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// This host's underlay address.
    pub fn underlay_ip(&self) -> Ipv4Addr {
        self.underlay_ip
    }

    /// The dataplane's mode.
    pub fn mode(&self) -> Mode {
        self.dataplane.mode()
    }

    /// Records why the dataplane's mode was chosen, for [`Agent::status`].
    pub fn set_mode_reason(&mut self, reason: Option<String>) {
        self.mode_reason = reason;
    }

    /// This host's VTEP MAC.
    pub fn vtep_mac(&self) -> [u8; 6] {
        overlay_common::vtep_mac(self.underlay_ip.octets(), self.cfg.vni)
    }

    /// The VTEP MAC used for `peer`: its explicit one, else derived from its underlay address.
    pub fn effective_vtep_mac(&self, peer: &PeerSpec) -> [u8; 6] {
        peer.vtep_mac
            .unwrap_or_else(|| overlay_common::vtep_mac(peer.underlay_ip.octets(), self.cfg.vni))
    }

    /// The peers, by subnet.
    pub fn peers(&self) -> &BTreeMap<Ipv4Net, PeerEntry> {
        &self.peers
    }

    /// The endpoints, by address.
    pub fn endpoints(&self) -> &BTreeMap<Ipv4Addr, EndpointEntry> {
        &self.endpoints
    }

    /// Route `subnet` to the host at `underlay_ip`. The same subnet again
    /// replaces the peer; an overlapping one is refused.
    pub async fn add_peer(
        &mut self,
        subnet: Ipv4Net,
        underlay_ip: Ipv4Addr,
        vtep_mac: Option<[u8; 6]>,
        source: Source,
    ) -> Result<(), AgentError> {
        check_network(subnet)?;
        if overlaps(subnet, self.cfg.subnet) {
            return Err(AgentError::PeerOverlapsOwn {
                subnet,
                own: self.cfg.subnet,
            });
        }
        if let Some(other) = self
            .peers
            .values()
            .find(|p| p.spec.subnet != subnet && overlaps(p.spec.subnet, subnet))
        {
            return Err(AgentError::PeerOverlapsPeer {
                subnet,
                other: other.spec.subnet,
                other_underlay: other.spec.underlay_ip,
            });
        }
        check_underlay_ip(underlay_ip)?;
        if underlay_ip == self.underlay_ip {
            return Err(AgentError::PeerIsSelf(underlay_ip));
        }
        if let Some(mac) = vtep_mac {
            config::parse_vtep_mac(&format_mac(&mac))?;
        }
        let spec = PeerSpec {
            subnet,
            underlay_ip,
            vtep_mac,
        };
        self.dataplane
            .add_peer(&spec)
            .await
            .map_err(|source| AgentError::Dataplane {
                action: format!("adding peer {subnet}"),
                source,
            })?;
        log::info!("peer {subnet} via {underlay_ip} ({source})");
        let old = self.peers.insert(subnet, PeerEntry { spec, source });
        if source.persisted() || old.is_some_and(|o| o.source.persisted()) {
            self.save();
        }
        Ok(())
    }

    /// Stop routing `subnet` through the overlay.
    pub async fn del_peer(&mut self, subnet: Ipv4Net) -> Result<(), AgentError> {
        let Some(entry) = self.peers.get(&subnet) else {
            return Err(AgentError::NoPeer(subnet));
        };
        let persisted = entry.source.persisted();
        self.dataplane
            .del_peer(subnet)
            .await
            .map_err(|source| AgentError::Dataplane {
                action: format!("deleting peer {subnet}"),
                source,
            })?;
        self.peers.remove(&subnet);
        log::info!("peer {subnet} deleted");
        if persisted {
            self.save();
        }
        Ok(())
    }

    /// Refuse `ip` as an endpoint unless it is a container address of this host's subnet.
    pub fn check_endpoint_ip(&self, ip: Ipv4Addr) -> Result<(), AgentError> {
        let subnet = self.cfg.subnet;
        if !subnet.contains(&ip) {
            return Err(AgentError::NotInSubnet { ip, subnet });
        }
        let what = if ip == subnet.network() {
            "network"
        } else if ip == subnet.broadcast() {
            "broadcast"
        } else if ip == gateway_of(subnet) {
            "gateway"
        } else {
            return Ok(());
        };
        Err(AgentError::ReservedAddress { ip, what, subnet })
    }

    /// Deliver traffic for `ip` to the container behind `ifname`. The MAC is
    /// looked up on the bridge (neighbour table, then the FDB entries learned
    /// on `ifname`); when unknown it is left zero and filled in by [`Agent::tick`].
    pub async fn add_endpoint(
        &mut self,
        ip: Ipv4Addr,
        ifname: &str,
        source: Source,
    ) -> Result<(), AgentError> {
        self.check_endpoint_ip(ip)?;
        let link = self.net.link_by_name(ifname).await?;
        let mac = match Snapshot::take(&*self.net, &self.cfg.bridge).await {
            Ok(snap) => snap.mac_for(ip, link.index),
            Err(e) => {
                log::debug!("looking up the MAC of {ip}: {e}");
                None
            }
        };
        let spec = EndpointSpec {
            ip,
            ifname: link.name,
            ifindex: link.index,
            mac: mac.unwrap_or([0; 6]),
        };
        self.apply_endpoint(spec, source).await
    }

    /// Like [`Agent::add_endpoint`], for a container whose MAC is known
    /// (from Docker, or because `attach` made its interface).
    pub async fn add_endpoint_with_mac(
        &mut self,
        ip: Ipv4Addr,
        ifname: &str,
        mac: [u8; 6],
        source: Source,
    ) -> Result<(), AgentError> {
        self.check_endpoint_ip(ip)?;
        let link = self.net.link_by_name(ifname).await?;
        let spec = EndpointSpec {
            ip,
            ifname: link.name,
            ifindex: link.index,
            mac,
        };
        self.apply_endpoint(spec, source).await
    }

    async fn apply_endpoint(
        &mut self,
        spec: EndpointSpec,
        source: Source,
    ) -> Result<(), AgentError> {
        let ip = spec.ip;
        self.dataplane
            .add_endpoint(&spec)
            .await
            .map_err(|source| AgentError::Dataplane {
                action: format!("adding endpoint {ip}"),
                source,
            })?;
        log::info!(
            "endpoint {ip} on {} (ifindex {}, mac {}) ({source})",
            spec.ifname,
            spec.ifindex,
            format_mac(&spec.mac)
        );
        let old = self.endpoints.insert(ip, EndpointEntry { spec, source });
        if source.persisted() || old.is_some_and(|o| o.source.persisted()) {
            self.save();
        }
        Ok(())
    }

    /// Forget the endpoint at `ip`.
    pub async fn del_endpoint(&mut self, ip: Ipv4Addr) -> Result<(), AgentError> {
        let Some(entry) = self.endpoints.get(&ip) else {
            return Err(AgentError::NoEndpoint(ip));
        };
        let persisted = entry.source.persisted();
        self.dataplane
            .del_endpoint(ip)
            .await
            .map_err(|source| AgentError::Dataplane {
                action: format!("deleting endpoint {ip}"),
                source,
            })?;
        self.endpoints.remove(&ip);
        log::info!("endpoint {ip} deleted");
        if persisted {
            self.save();
        }
        Ok(())
    }

    /// Settings, table sizes and the dataplane's counters.
    pub fn status(&self) -> Result<Status, AgentError> {
        let stats = self
            .dataplane
            .stats()
            .map_err(|source| AgentError::Dataplane {
                action: "reading counters".into(),
                source,
            })?;
        Ok(Status {
            mode: self.dataplane.mode(),
            mode_reason: self.mode_reason.clone(),
            subnet: self.cfg.subnet,
            gateway: self.cfg.gateway(),
            underlay_interface: self.cfg.underlay_interface.clone(),
            underlay_ip: self.underlay_ip,
            vtep_mac: format_mac(&self.vtep_mac()),
            bridge: self.cfg.bridge.clone(),
            vni: self.cfg.vni,
            vxlan_port: self.cfg.vxlan_port,
            attach: self.cfg.attach,
            xdp: self.cfg.xdp,
            peers: self.peers.len(),
            endpoints: self.endpoints.len(),
            stats,
        })
    }

    /// Periodic work, about once a second: the dataplane's housekeeping,
    /// discovery of containers on the bridge, and MAC refresh of endpoints.
    /// Problems are logged (each distinct one once), never returned.
    pub async fn tick(&mut self) {
        if let Err(e) = self.dataplane.refresh().await {
            self.note_tick_error(format!("dataplane refresh: {e}"));
        }
        match Snapshot::take(&*self.net, &self.cfg.bridge).await {
            Ok(snap) => {
                if snap.bridge.is_none() {
                    self.note_tick_error(format!(
                        "bridge {} does not exist; no containers to discover",
                        self.cfg.bridge
                    ));
                }
                self.reconcile(&snap).await;
            }
            Err(e) => self.note_tick_error(format!("discovery: {e}")),
        }
    }

    fn note_tick_error(&mut self, message: String) {
        if self.last_tick_error.as_deref() != Some(message.as_str()) {
            log::warn!("{message}");
            self.last_tick_error = Some(message);
        }
    }

    /// Apply [`discovery::plan`] for `snap`.
    pub async fn reconcile(&mut self, snap: &Snapshot) {
        for change in discovery::plan(snap, self.cfg.subnet, &self.endpoints) {
            let result = match change {
                Change::Discovered(spec) => self.apply_endpoint(spec, Source::Discovered).await,
                Change::Refreshed(spec) => match self.endpoints.get(&spec.ip) {
                    Some(entry) => {
                        let source = entry.source;
                        self.apply_endpoint(spec, source).await
                    }
                    None => Ok(()),
                },
                Change::Vanished(ip) => self.del_endpoint(ip).await,
            };
            if let Err(e) = result {
                log::warn!("discovery: {e}");
            }
        }
    }

    /// Stop the dataplane; with `cleanup`, remove everything it made.
    pub async fn shutdown(&mut self, cleanup: bool) -> Result<(), AgentError> {
        self.dataplane
            .shutdown(cleanup)
            .await
            .map_err(|source| AgentError::Dataplane {
                action: "shutting down the dataplane".into(),
                source,
            })
    }

    /// The persisted part of the tables.
    pub fn saved_state(&self) -> State {
        State {
            version: state::VERSION,
            peers: self
                .peers
                .values()
                .filter(|p| p.source.persisted())
                .map(|p| StoredPeer {
                    subnet: p.spec.subnet,
                    underlay_ip: p.spec.underlay_ip,
                    vtep_mac: p.spec.vtep_mac.as_ref().map(format_mac),
                    source: p.source,
                })
                .collect(),
            endpoints: self
                .endpoints
                .values()
                .filter(|e| e.source.persisted())
                .map(|e| StoredEndpoint {
                    ip: e.spec.ip,
                    dev: e.spec.ifname.clone(),
                    source: e.source,
                })
                .collect(),
        }
    }

    fn save(&self) {
        // The change is in effect; a failed write only affects the next start.
        if let Err(e) = state::save(&self.state_path, &self.saved_state()) {
            log::error!("{e}; the change is in effect but will be lost on restart");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::discovery::tests::{fdb, link, mac, neigh, snapshot};
    use crate::netlink::{FdbEntry, Link, Neighbour, NeighbourState};
    use std::sync::Mutex;

    /// A dataplane call, as recorded by [`FakeDataplane`].
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub(crate) enum Call {
        AddPeer(PeerSpec),
        DelPeer(Ipv4Net),
        AddEndpoint(EndpointSpec),
        DelEndpoint(Ipv4Addr),
        Refresh,
        Shutdown(bool),
    }

    /// Records calls; fails `add_peer` when `fail` is set.
    #[derive(Clone, Default)]
    pub(crate) struct FakeDataplane {
        pub calls: Arc<Mutex<Vec<Call>>>,
        pub fail: Arc<Mutex<bool>>,
    }

    impl FakeDataplane {
        pub fn take(&self) -> Vec<Call> {
            std::mem::take(&mut *self.calls.lock().unwrap())
        }
        fn record(&self, call: Call) {
            self.calls.lock().unwrap().push(call);
        }
    }

    #[async_trait::async_trait]
    impl Dataplane for FakeDataplane {
        fn mode(&self) -> Mode {
            Mode::Ebpf
        }
        async fn add_peer(&mut self, peer: &PeerSpec) -> Result<(), DataplaneError> {
            if *self.fail.lock().unwrap() {
                return Err(DataplaneError::Other("map full".into()));
            }
            self.record(Call::AddPeer(peer.clone()));
            Ok(())
        }
        async fn del_peer(&mut self, subnet: Ipv4Net) -> Result<(), DataplaneError> {
            self.record(Call::DelPeer(subnet));
            Ok(())
        }
        async fn add_endpoint(&mut self, ep: &EndpointSpec) -> Result<(), DataplaneError> {
            self.record(Call::AddEndpoint(ep.clone()));
            Ok(())
        }
        async fn del_endpoint(&mut self, ip: Ipv4Addr) -> Result<(), DataplaneError> {
            self.record(Call::DelEndpoint(ip));
            Ok(())
        }
        fn stats(&self) -> Result<Stats, DataplaneError> {
            let mut stats = Stats::default();
            stats.counters.insert("encap_packets".into(), 7);
            stats.drops.insert("unknown_vni".into(), 1);
            Ok(stats)
        }
        async fn refresh(&mut self) -> Result<(), DataplaneError> {
            self.record(Call::Refresh);
            Ok(())
        }
        async fn shutdown(&mut self, cleanup: bool) -> Result<(), DataplaneError> {
            self.record(Call::Shutdown(cleanup));
            Ok(())
        }
    }

    /// A host whose tables tests can change.
    #[derive(Default)]
    pub(crate) struct FakeNet {
        pub snap: Mutex<Snapshot>,
        pub addrs: Vec<(u32, Ipv4Addr, u8)>,
    }

    #[async_trait::async_trait]
    impl Netlink for FakeNet {
        async fn link_by_name(&self, name: &str) -> Result<Link, NetlinkError> {
            let snap = self.snap.lock().unwrap();
            snap.links
                .iter()
                .find(|l| l.name == name)
                .cloned()
                .ok_or_else(|| NetlinkError::NotFound(name.into()))
        }
        async fn link_by_index(&self, index: u32) -> Result<Link, NetlinkError> {
            let snap = self.snap.lock().unwrap();
            snap.links
                .iter()
                .find(|l| l.index == index)
                .cloned()
                .ok_or(NetlinkError::IndexNotFound(index))
        }
        async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
            Ok(self.snap.lock().unwrap().links.clone())
        }
        async fn ipv4_addrs(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, NetlinkError> {
            Ok(self
                .addrs
                .iter()
                .filter(|a| a.0 == index)
                .map(|a| (a.1, a.2))
                .collect())
        }
        async fn neighbours_v4(&self, _index: u32) -> Result<Vec<Neighbour>, NetlinkError> {
            Ok(self.snap.lock().unwrap().neighbours.clone())
        }
        async fn bridge_fdb(&self, _bridge_index: u32) -> Result<Vec<FdbEntry>, NetlinkError> {
            Ok(self.snap.lock().unwrap().fdb.clone())
        }
    }

    pub(crate) fn test_config(state_dir: PathBuf) -> Config {
        let mut cfg = Config::parse(
            r#"
underlay_interface = "eth1"
subnet = "10.103.100.0/24"
bridge = "docker0"
vni = 42
[[peers]]
subnet = "10.103.200.0/24"
underlay_ip = "192.168.56.5"
"#,
        )
        .unwrap();
        cfg.state_dir = state_dir;
        cfg
    }

    pub(crate) fn temp_dir(name: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("overlay-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub(crate) fn fake_net() -> Arc<FakeNet> {
        Arc::new(FakeNet {
            snap: Mutex::new(snapshot()),
            addrs: vec![(2, Ipv4Addr::new(192, 168, 56, 4), 24)],
        })
    }

    /// An agent with the config's peer applied and the fake's calls cleared.
    pub(crate) async fn agent(state_dir: PathBuf) -> (Agent, FakeDataplane, Arc<FakeNet>) {
        let dp = FakeDataplane::default();
        let net = fake_net();
        let cfg = test_config(state_dir);
        let ip = resolve_underlay_ip(&cfg, &*net).await.unwrap();
        let mut agent = Agent::new(cfg, Box::new(dp.clone()), net.clone(), ip);
        agent.restore(State::default()).await;
        dp.take();
        (agent, dp, net)
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn underlay_ip_resolution() {
        let net = fake_net();
        let mut cfg = test_config(PathBuf::from("/nonexistent"));
        assert_eq!(
            resolve_underlay_ip(&cfg, &*net).await.unwrap(),
            ip("192.168.56.4")
        );
        cfg.underlay_ip = Some(ip("192.168.56.40"));
        assert_eq!(
            resolve_underlay_ip(&cfg, &*net).await.unwrap(),
            ip("192.168.56.40")
        );
        cfg.underlay_interface = "eth9".into();
        assert_eq!(
            resolve_underlay_ip(&cfg, &*net)
                .await
                .unwrap_err()
                .to_string(),
            "no interface named eth9"
        );
        cfg.underlay_interface = "veth1".into();
        cfg.underlay_ip = None;
        assert_eq!(
            resolve_underlay_ip(&cfg, &*net).await.unwrap_err().to_string(),
            "underlay interface veth1 has no IPv4 address; add one or set underlay_ip in the config file"
        );
    }

    #[tokio::test]
    async fn restore_applies_config_peers() {
        let dp = FakeDataplane::default();
        let cfg = test_config(temp_dir("restore"));
        let mut agent = Agent::new(cfg, Box::new(dp.clone()), fake_net(), ip("192.168.56.4"));
        agent.restore(State::default()).await;
        assert_eq!(
            dp.take(),
            vec![Call::AddPeer(PeerSpec {
                subnet: net("10.103.200.0/24"),
                underlay_ip: ip("192.168.56.5"),
                vtep_mac: None
            })]
        );
        assert_eq!(
            agent.peers()[&net("10.103.200.0/24")].source,
            Source::Config
        );
    }

    #[tokio::test]
    async fn peer_validation_changes_nothing() {
        let dir = temp_dir("peer-validation");
        let (mut agent, dp, _) = agent(dir.clone()).await;
        let before = agent.peers().clone();
        let cases: &[(&str, &str, Option<[u8; 6]>, &str)] = &[
            ("10.103.100.0/25", "192.168.56.6", None,
             "peer subnet 10.103.100.0/25 overlaps this host's subnet 10.103.100.0/24; expected a subnet disjoint from it"),
            ("10.103.0.0/16", "192.168.56.6", None,
             "peer subnet 10.103.0.0/16 overlaps this host's subnet 10.103.100.0/24; expected a subnet disjoint from it"),
            ("10.103.200.128/25", "192.168.56.6", None,
             "peer subnet 10.103.200.128/25 overlaps peer subnet 10.103.200.0/24 (via 192.168.56.5); delete that peer first or choose a disjoint subnet"),
            ("10.103.201.7/24", "192.168.56.6", None,
             "10.103.201.7/24 has host bits set; expected a network address like 10.103.201.0/24"),
            ("10.103.201.0/24", "0.0.0.0", None,
             "0.0.0.0 is an unspecified address; expected a host's unicast underlay address like 192.168.56.5"),
            ("10.103.201.0/24", "127.0.0.1", None,
             "127.0.0.1 is a loopback address; expected a host's unicast underlay address like 192.168.56.5"),
            ("10.103.201.0/24", "224.0.0.1", None,
             "224.0.0.1 is a multicast address; expected a host's unicast underlay address like 192.168.56.5"),
            ("10.103.201.0/24", "255.255.255.255", None,
             "255.255.255.255 is a broadcast address; expected a host's unicast underlay address like 192.168.56.5"),
            ("10.103.201.0/24", "192.168.56.4", None,
             "192.168.56.4 is this host's own underlay address; expected the peer host's address"),
            ("10.103.201.0/24", "192.168.56.6", Some([1, 0, 0x5e, 0, 0, 1]),
             "01:00:5e:00:00:01 is not a unicast MAC address; expected one like 02:2a:c0:a8:38:05 (first byte even, not all zeros)"),
        ];
        for (subnet, underlay, mac, expected) in cases {
            let e = agent
                .add_peer(net(subnet), ip(underlay), *mac, Source::Api)
                .await
                .unwrap_err();
            assert_eq!(e.to_string(), *expected);
        }
        assert_eq!(dp.take(), vec![]);
        assert_eq!(agent.peers(), &before);
        assert_eq!(
            agent
                .del_peer(net("10.1.2.0/24"))
                .await
                .unwrap_err()
                .to_string(),
            "no peer for 10.1.2.0/24"
        );
        assert_eq!(dp.take(), vec![]);
        // Nothing was persisted either.
        assert!(!state::path_in(&dir).exists());
    }

    #[tokio::test]
    async fn dataplane_failure_changes_nothing() {
        let dir = temp_dir("dp-fail");
        let (mut agent, dp, _) = agent(dir.clone()).await;
        *dp.fail.lock().unwrap() = true;
        let e = agent
            .add_peer(
                net("10.103.201.0/24"),
                ip("192.168.56.6"),
                None,
                Source::Api,
            )
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "adding peer 10.103.201.0/24: map full");
        assert_eq!(agent.peers().len(), 1);
        assert!(!state::path_in(&dir).exists());
    }

    #[tokio::test]
    async fn peer_add_replace_delete() {
        let dir = temp_dir("peers");
        let (mut agent, dp, _) = agent(dir.clone()).await;
        let s = net("10.103.201.0/24");
        agent
            .add_peer(s, ip("192.168.56.6"), None, Source::Api)
            .await
            .unwrap();
        let spec = PeerSpec {
            subnet: s,
            underlay_ip: ip("192.168.56.6"),
            vtep_mac: None,
        };
        assert_eq!(dp.take(), vec![Call::AddPeer(spec.clone())]);
        // The same subnet again replaces.
        let mac = [2, 0, 0, 0, 0, 9];
        agent
            .add_peer(s, ip("192.168.56.7"), Some(mac), Source::Api)
            .await
            .unwrap();
        let spec2 = PeerSpec {
            subnet: s,
            underlay_ip: ip("192.168.56.7"),
            vtep_mac: Some(mac),
        };
        assert_eq!(dp.take(), vec![Call::AddPeer(spec2.clone())]);
        assert_eq!(agent.peers()[&s].spec, spec2);
        assert_eq!(agent.effective_vtep_mac(&spec2), mac);
        assert_eq!(agent.effective_vtep_mac(&spec), [2, 42, 192, 168, 56, 6]);
        // Persisted.
        let saved = state::load(&state::path_in(&dir)).unwrap();
        assert_eq!(saved.peers.len(), 1);
        assert_eq!(
            saved.peers[0].vtep_mac.as_deref(),
            Some("02:00:00:00:00:09")
        );
        agent.del_peer(s).await.unwrap();
        assert_eq!(dp.take(), vec![Call::DelPeer(s)]);
        assert!(state::load(&state::path_in(&dir)).unwrap().peers.is_empty());
        // A config peer can be deleted too (it comes back on restart).
        agent.del_peer(net("10.103.200.0/24")).await.unwrap();
        assert!(agent.peers().is_empty());
    }

    #[tokio::test]
    async fn endpoint_validation_changes_nothing() {
        let (mut agent, dp, _) = agent(temp_dir("ep-validation")).await;
        let cases = [
            ("10.103.101.5", "veth1", "10.103.101.5 is not in this host's subnet 10.103.100.0/24; expected a container address in it"),
            ("10.103.100.0", "veth1", "10.103.100.0 is the network address of 10.103.100.0/24; expected a container address"),
            ("10.103.100.255", "veth1", "10.103.100.255 is the broadcast address of 10.103.100.0/24; expected a container address"),
            ("10.103.100.1", "veth1", "10.103.100.1 is the gateway address of 10.103.100.0/24; expected a container address"),
            ("10.103.100.9", "nosuch0", "no interface named nosuch0"),
        ];
        for (addr, dev, expected) in cases {
            let e = agent
                .add_endpoint(ip(addr), dev, Source::Api)
                .await
                .unwrap_err();
            assert_eq!(e.to_string(), expected);
        }
        assert_eq!(
            agent
                .del_endpoint(ip("10.103.100.9"))
                .await
                .unwrap_err()
                .to_string(),
            "no endpoint for 10.103.100.9"
        );
        assert_eq!(dp.take(), vec![]);
        assert!(agent.endpoints().is_empty());
    }

    #[tokio::test]
    async fn endpoint_mac_lookup() {
        let dir = temp_dir("ep-mac");
        let (mut agent, dp, net_) = agent(dir.clone()).await;
        // From the neighbour table.
        agent
            .add_endpoint(ip("10.103.100.2"), "veth1", Source::Api)
            .await
            .unwrap();
        // From the only FDB entry learned on the port.
        agent
            .add_endpoint(ip("10.103.100.60"), "veth2", Source::Api)
            .await
            .unwrap();
        // Unknown: two MACs behind the port.
        net_.snap.lock().unwrap().fdb.push(fdb(77, 11));
        agent
            .add_endpoint(ip("10.103.100.61"), "veth2", Source::Attach)
            .await
            .unwrap();
        let macs: Vec<_> = dp
            .take()
            .into_iter()
            .map(|c| match c {
                Call::AddEndpoint(ep) => (ep.ip, ep.ifindex, ep.mac),
                c => panic!("{c:?}"),
            })
            .collect();
        assert_eq!(
            macs,
            vec![
                (ip("10.103.100.2"), 10, mac(2)),
                (ip("10.103.100.60"), 11, mac(3)),
                (ip("10.103.100.61"), 11, [0; 6]),
            ]
        );
        let saved = state::load(&state::path_in(&dir)).unwrap();
        assert_eq!(saved.endpoints.len(), 3);
        agent.del_endpoint(ip("10.103.100.61")).await.unwrap();
        assert_eq!(dp.take(), vec![Call::DelEndpoint(ip("10.103.100.61"))]);
        assert_eq!(
            state::load(&state::path_in(&dir)).unwrap().endpoints.len(),
            2
        );
    }

    #[tokio::test]
    async fn tick_discovers_and_forgets() {
        let (mut agent, dp, net_) = agent(temp_dir("tick")).await;
        agent
            .add_endpoint(ip("10.103.100.3"), "veth2", Source::Api)
            .await
            .unwrap();
        dp.take();
        agent.tick().await;
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
        assert_eq!(
            agent.endpoints()[&ip("10.103.100.2")].source,
            Source::Discovered
        );
        assert_eq!(agent.endpoints()[&ip("10.103.100.3")].source, Source::Api);
        agent.tick().await;
        assert_eq!(dp.take(), vec![Call::Refresh]);
        // The container's neighbour entry fails: the endpoint goes.
        {
            let mut snap = net_.snap.lock().unwrap();
            snap.neighbours[0] = neigh([10, 103, 100, 2], None, NeighbourState::Failed);
        }
        agent.tick().await;
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
        agent.tick().await;
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

    #[tokio::test]
    async fn state_survives_restart() {
        let dir = temp_dir("restart");
        let (mut agent1, _, _) = agent(dir.clone()).await;
        agent1
            .add_peer(
                net("10.103.201.0/24"),
                ip("192.168.56.6"),
                None,
                Source::Api,
            )
            .await
            .unwrap();
        agent1
            .add_peer(
                net("10.103.200.0/24"),
                ip("192.168.56.9"),
                Some([2, 1, 2, 3, 4, 5]),
                Source::Api,
            )
            .await
            .unwrap();
        agent1
            .add_endpoint(ip("10.103.100.2"), "veth1", Source::Api)
            .await
            .unwrap();
        agent1.tick().await; // discovers .3, which is not persisted
        assert_eq!(agent1.endpoints().len(), 2);
        let saved = state::load(&state::path_in(&dir)).unwrap();
        assert_eq!(saved, agent1.saved_state());

        // A new agent: config peers first, then the saved ones replace/extend them.
        let dp = FakeDataplane::default();
        let cfg = test_config(dir.clone());
        let mut agent2 = Agent::new(cfg, Box::new(dp.clone()), fake_net(), ip("192.168.56.4"));
        agent2.restore(saved).await;
        assert_eq!(agent2.peers(), agent1.peers());
        assert_eq!(agent2.endpoints().len(), 1);
        assert_eq!(
            agent2.endpoints()[&ip("10.103.100.2")],
            agent1.endpoints()[&ip("10.103.100.2")]
        );
        let calls = dp.take();
        assert_eq!(calls.len(), 4, "{calls:?}");
    }

    #[tokio::test]
    async fn status_reports_settings_and_stats() {
        let (agent, _, _) = agent(temp_dir("status")).await;
        let st = agent.status().unwrap();
        assert_eq!(st.mode, Mode::Ebpf);
        assert_eq!(st.subnet, net("10.103.100.0/24"));
        assert_eq!(st.gateway, ip("10.103.100.1"));
        assert_eq!(st.underlay_ip, ip("192.168.56.4"));
        assert_eq!(st.vtep_mac, "02:2a:c0:a8:38:04");
        assert_eq!(st.vni, 42);
        assert_eq!(st.vxlan_port, 4789);
        assert_eq!(st.peers, 1);
        assert_eq!(st.endpoints, 0);
        assert_eq!(st.stats.counters["encap_packets"], 7);
    }
}
