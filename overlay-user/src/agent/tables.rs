//! The tables of peers and endpoints (the desired state, with who reported
//! each entry), their validation, and the single place that drives the
//! [`Dataplane`]; overlay networks and their endpoints are in
//! [`crate::agent::networks`], on the same [`Agent`].
//!
//! Every change is validated completely before the dataplane is called, so a
//! rejected change leaves both the tables and the dataplane untouched. Peers
//! and endpoints added through the API (or by `attach`) are written to the
//! state file and re-applied on the next start, after the config's peers.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ipnet::Ipv4Net;

use crate::agent::error::AgentError;
use crate::agent::health::HealthState;
use crate::agent::host_checks::check_peer_subnet_on_host;
use crate::agent::net_tables::Networks;
use crate::agent::state::{self, State, StoredEndpoint, StoredPeer};
use crate::dataplane::bpf::ENCAP_DEVICE;
use crate::dataplane::Dataplane;
use crate::model::change::Change;
use crate::model::config::Config;
use crate::model::endpoint::EndpointSpec;
use crate::model::network::{gateway_of, overlapping, overlaps};
use crate::model::peer::PeerSpec;
use crate::model::source::Source;
use crate::model::status::{Connection, Health, Mode, PathSettings, Status};
use crate::model::validation::{check_peer_subnet, check_underlay_ip, format_mac, parse_vtep_mac};
use crate::sys::bridge::Snapshot;
use crate::sys::netlink::Netlink;

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
    pub(super) cfg: Config,
    pub(super) dataplane: Box<dyn Dataplane>,
    pub(super) net: Arc<dyn Netlink>,
    pub(super) underlay_ip: Ipv4Addr,
    pub(super) peers: BTreeMap<Ipv4Net, PeerEntry>,
    /// The overlay networks and their endpoints ([`crate::agent::networks`]).
    pub(super) networks: Networks,
    endpoints: BTreeMap<Ipv4Addr, EndpointEntry>,
    state_path: PathBuf,
    /// The last tick error logged, to log each distinct problem once.
    last_tick_error: Option<String>,
    /// Why the dataplane's mode was chosen ([`Agent::set_mode_reason`]).
    mode_reason: Option<String>,
    /// Drop samples and the Docker connection, for the health summary.
    health: HealthState,
    /// While [`Agent::restore`] runs: changes are not written to the state
    /// file one by one (a kill then would leave a partial table), it is
    /// written once at the end.
    restoring: bool,
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
            networks: Networks::default(),
            state_path,
            last_tick_error: None,
            mode_reason: None,
            health: HealthState::default(),
            restoring: false,
        }
    }

    /// Apply `saved` (read with [`state::load`] before the dataplane
    /// started), after the config source's peers. Entries that fail are
    /// logged and skipped. The state file is not written while entries are
    /// re-added (a kill during the restore leaves it whole); it is written
    /// once at the end, and only if the restored table differs from it (an
    /// entry was skipped, or a config peer took a saved one's place).
    pub(super) async fn restore(&mut self, saved: State) {
        let before = saved.clone().sorted();
        self.restoring = true;
        for p in saved.peers {
            let mac = match p.vtep_mac.as_deref().map(parse_vtep_mac).transpose() {
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
        // Local endpoints of overlay networks wait for their network.
        self.networks.pending = saved.net_endpoints;
        self.restoring = false;
        if self.saved_state().sorted() != before {
            self.save();
        }
        log::info!(
            "restored {} peers and {} endpoints",
            self.peers.len(),
            self.endpoints.len()
        );
    }

    /// Once the config file's peers and the state file are applied: the
    /// dataplane drops what an earlier run left that no source has added
    /// again (see [`Dataplane::forget_unowned`]). Logged, never fatal.
    pub(super) async fn forget_unowned(&mut self) {
        if let Err(e) = self.dataplane.forget_unowned().await {
            log::warn!("removing what an earlier run left in the dataplane: {e}");
        }
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

    /// The Docker source's report on its connection (for `status`).
    pub fn set_docker_connection(&mut self, connection: Connection) {
        self.health.set_docker(connection);
    }

    /// The dataplane, read-only, for the agent's own modules (`doctor`).
    pub(in crate::agent) fn dataplane(&self) -> &dyn Dataplane {
        &*self.dataplane
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
        peer.effective_vtep_mac(self.cfg.vni)
    }

    /// The peers, by subnet.
    pub fn peers(&self) -> &BTreeMap<Ipv4Net, PeerEntry> {
        &self.peers
    }

    /// The endpoints, by address.
    pub fn endpoints(&self) -> &BTreeMap<Ipv4Addr, EndpointEntry> {
        &self.endpoints
    }

    /// Endpoints the dataplane learned from containers' packets that no
    /// source has registered (listed with source `learned`), by address.
    pub fn learned_endpoints(&self) -> Result<Vec<EndpointSpec>, AgentError> {
        let mut learned =
            self.dataplane
                .learned_endpoints()
                .map_err(|source| AgentError::Dataplane {
                    action: "reading learned endpoints".into(),
                    source: Box::new(source),
                })?;
        learned.retain(|e| !self.endpoints.contains_key(&e.ip));
        learned.sort_by_key(|e| e.ip);
        Ok(learned)
    }

    /// Route `subnet` to the host at `underlay_ip`. The same subnet again
    /// replaces the peer; an overlapping one is refused.
    pub(super) async fn add_peer(
        &mut self,
        subnet: Ipv4Net,
        underlay_ip: Ipv4Addr,
        vtep_mac: Option<[u8; 6]>,
        source: Source,
    ) -> Result<(), AgentError> {
        check_peer_subnet(subnet)?;
        if overlaps(subnet, self.cfg.subnet) {
            return Err(AgentError::PeerOverlapsOwn {
                subnet,
                own: self.cfg.subnet,
            });
        }
        if let Some((_, other)) = overlapping(&self.peers, subnet) {
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
        check_peer_subnet_on_host(&*self.net, &self.cfg, subnet).await?;
        if let Some(mac) = vtep_mac {
            parse_vtep_mac(&format_mac(&mac))?;
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
                source: Box::new(source),
            })?;
        tracing::info!(
            source = source.name(),
            peer = %subnet,
            underlay_ip = %underlay_ip,
            "peer {subnet} via {underlay_ip} ({source})"
        );
        let old = self.peers.insert(subnet, PeerEntry { spec, source });
        if source.persisted() || old.is_some_and(|o| o.source.persisted()) {
            self.save();
        }
        Ok(())
    }

    /// Stop routing `subnet` through the overlay.
    pub(super) async fn del_peer(&mut self, subnet: Ipv4Net) -> Result<(), AgentError> {
        let Some(entry) = self.peers.get(&subnet) else {
            return Err(AgentError::NoPeer(subnet));
        };
        let (persisted, owner) = (entry.source.persisted(), entry.source);
        self.dataplane
            .del_peer(subnet)
            .await
            .map_err(|source| AgentError::Dataplane {
                action: format!("deleting peer {subnet}"),
                source: Box::new(source),
            })?;
        self.peers.remove(&subnet);
        tracing::info!(
            source = owner.name(),
            peer = %subnet,
            "peer {subnet} deleted (was {owner})"
        );
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
    /// on `ifname`); when unknown it is left zero and filled in by discovery.
    pub(super) async fn add_endpoint(
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
    pub(super) async fn add_endpoint_with_mac(
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
                source: Box::new(source),
            })?;
        tracing::info!(
            source = source.name(),
            endpoint = %ip,
            dev = %spec.ifname,
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

    /// Forget the endpoint at `ip`, also one the dataplane learned (which
    /// frees its slot of the port's `learn_limit` at the next refresh).
    pub(super) async fn del_endpoint(&mut self, ip: Ipv4Addr) -> Result<(), AgentError> {
        let Some(entry) = self.endpoints.get(&ip) else {
            if !self.learned_endpoints()?.iter().any(|e| e.ip == ip) {
                return Err(AgentError::NoEndpoint(ip));
            }
            self.dataplane
                .del_endpoint(ip)
                .await
                .map_err(|source| AgentError::Dataplane {
                    action: format!("deleting learned endpoint {ip}"),
                    source: Box::new(source),
                })?;
            log::info!("learned endpoint {ip} deleted");
            return Ok(());
        };
        let (persisted, owner) = (entry.source.persisted(), entry.source);
        self.dataplane
            .del_endpoint(ip)
            .await
            .map_err(|source| AgentError::Dataplane {
                action: format!("deleting endpoint {ip}"),
                source: Box::new(source),
            })?;
        self.endpoints.remove(&ip);
        tracing::info!(
            source = owner.name(),
            endpoint = %ip,
            "endpoint {ip} deleted (was {owner})"
        );
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
                source: Box::new(source),
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
            path: (self.dataplane.mode() == Mode::Ebpf).then(|| {
                let own = self.dataplane.own_devices();
                PathSettings::of(&self.cfg, own.iter().any(|d| d == ENCAP_DEVICE))
            }),
            peers: self.peers.len(),
            endpoints: self.endpoints.len(),
            health: Health {
                programs: self.dataplane.attachments(),
                ..self
                    .health
                    .summary(Instant::now(), &stats.drops, self.cfg.docker.enabled)
            },
            networks: self.networks.nets.len(),
            net_endpoints: self.networks.eps.len(),
            stats,
            cluster: None,
        })
    }

    /// Apply one change reported by `source`.
    pub(super) async fn apply(&mut self, source: Source, change: Change) -> Result<(), AgentError> {
        match change {
            Change::AddPeer(p) => {
                self.add_peer(p.subnet, p.underlay_ip, p.vtep_mac, source)
                    .await
            }
            Change::DelPeer(subnet) => self.del_peer(subnet).await,
            Change::AddEndpoint { ip, ifname, mac } => match mac {
                Some(mac) => self.add_endpoint_with_mac(ip, &ifname, mac, source).await,
                None => self.add_endpoint(ip, &ifname, source).await,
            },
            Change::PutEndpoint(spec) => self.apply_endpoint(spec, source).await,
            Change::RefreshEndpoint(spec) => match self.endpoints.get(&spec.ip) {
                Some(entry) => {
                    let source = entry.source;
                    self.apply_endpoint(spec, source).await
                }
                None => Ok(()),
            },
            Change::DelEndpoint(ip) => self.del_endpoint(ip).await,
            Change::AddNetwork(spec) => self.add_network(spec, source).await,
            Change::DelNetwork(vni) => self.del_network(vni).await,
            Change::PutNetEndpoint(spec) => self.put_net_endpoint(spec, source).await,
            Change::DelNetEndpoint { vni, ip } => self.del_net_endpoint(vni, ip).await,
        }
    }

    /// The dataplane's periodic housekeeping, about once a second; a
    /// problem is logged (each distinct one once), never returned.
    pub(super) async fn refresh(&mut self) {
        if let Err(e) = self.dataplane.refresh().await {
            self.note_tick_error(format!("dataplane refresh: {e}"));
        }
        if let Ok(stats) = self.dataplane.stats() {
            self.health.sample(Instant::now(), &stats.drops);
        }
        // The dataplane follows a new underlay address by itself; so do the checks and status.
        if self.cfg.underlay_ip.is_none() {
            if let Ok(ip) = resolve_underlay_ip(&self.cfg, &*self.net).await {
                if ip != self.underlay_ip {
                    log::info!("underlay address {} -> {ip}", self.underlay_ip);
                    self.underlay_ip = ip;
                }
            }
        }
    }

    /// Logs `message` as a warning unless it is the last one logged, so a
    /// problem seen every second is logged once.
    pub(super) fn note_tick_error(&mut self, message: String) {
        if self.last_tick_error.as_deref() != Some(message.as_str()) {
            log::warn!("{message}");
            self.last_tick_error = Some(message);
        }
    }

    /// Stop the dataplane; with `cleanup`, remove everything it made.
    pub(super) async fn shutdown(&mut self, cleanup: bool) -> Result<(), AgentError> {
        self.dataplane
            .shutdown(cleanup)
            .await
            .map_err(|source| AgentError::Dataplane {
                action: "shutting down the dataplane".into(),
                source: Box::new(source),
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
            net_endpoints: self.networks.stored(),
        }
    }

    pub(super) fn save(&self) {
        if self.restoring {
            return;
        }
        // The change is in effect; a failed write only affects the next start.
        if let Err(e) = state::save(&self.state_path, &self.saved_state()) {
            log::error!("{e}; the change is in effect but will be lost on restart");
        }
    }
}

mod observe;

#[cfg(test)]
mod tests;
