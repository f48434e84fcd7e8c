//! The overlay networks this host carries and their endpoints (local ones
//! behind a host veth, remote ones behind another host's underlay address),
//! with who reported each, their validation, and the dataplane calls.
//!
//! Rules: a network's VNI is not this host's per-host VNI, its subnet
//! overlaps neither this host's container subnet, nor a peer's, nor another
//! network's; the same VNI again replaces it (refused while it has
//! endpoints: the cluster source removes a changed network and adds it
//! again). An endpoint's network must be carried; its
//! address is inside the subnet and not the network, broadcast or gateway
//! address; a remote endpoint never replaces a local one. Removing a
//! network removes its endpoints. Local endpoints added by a persisted
//! source (`attach`) are kept in the state file and come back on restart
//! once their network is carried again.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::agent::error::AgentError;
use crate::agent::net_tables::{NetEndpointEntry, NetworkEntry};
use crate::agent::tables::Agent;
use crate::model::network::overlapping;
use crate::model::network::overlaps;
use crate::model::overlay_network::{NetEndpointSpec, NetLocation, NetworkSpec};
use crate::model::source::Source;
use crate::model::validation::{check_underlay_ip, format_mac, parse_mac, InputError};

fn dataplane_err(action: String) -> impl FnOnce(crate::dataplane::DataplaneError) -> AgentError {
    move |source| AgentError::Dataplane {
        action,
        source: Box::new(source),
    }
}

impl Agent {
    /// The overlay networks carried, by VNI.
    pub fn networks(&self) -> &BTreeMap<u32, NetworkEntry> {
        &self.networks.nets
    }

    /// The overlay networks' endpoints, by (VNI, address).
    pub fn net_endpoints(&self) -> &BTreeMap<(u32, Ipv4Addr), NetEndpointEntry> {
        &self.networks.eps
    }

    /// Refuse `spec` unless this host can carry it (see the module docs).
    fn check_network(&self, spec: &NetworkSpec) -> Result<(), AgentError> {
        spec.check()?;
        let refuse = |problem: String, expected: &str| AgentError::Network {
            name: spec.name.clone(),
            vni: spec.vni,
            subnet: spec.subnet,
            problem,
            expected: expected.into(),
        };
        if spec.vni == self.cfg.vni {
            return Err(refuse(
                format!("has this host's per-host VNI {}", self.cfg.vni),
                "another VNI",
            ));
        }
        if overlaps(spec.subnet, self.cfg.subnet) {
            return Err(refuse(
                format!("overlaps this host's subnet {}", self.cfg.subnet),
                "a subnet disjoint from the hosts' subnets",
            ));
        }
        if let Some((_, p)) = overlapping(&self.peers, spec.subnet) {
            return Err(refuse(
                format!(
                    "overlaps peer subnet {} (via {})",
                    p.spec.subnet, p.spec.underlay_ip
                ),
                "a subnet disjoint from the hosts' subnets",
            ));
        }
        for other in self
            .networks
            .nets
            .values()
            .filter(|n| n.spec.vni != spec.vni)
        {
            let o = &other.spec;
            if overlaps(o.subnet, spec.subnet) || o.name == spec.name {
                return Err(refuse(
                    format!(
                        "collides with network {} (VNI {}, {})",
                        o.name, o.vni, o.subnet
                    ),
                    "a name and subnet no other network has",
                ));
            }
        }
        Ok(())
    }

    /// Carry network `spec` (the same VNI again replaces it).
    pub(super) async fn add_network(
        &mut self,
        spec: NetworkSpec,
        source: Source,
    ) -> Result<(), AgentError> {
        self.check_network(&spec)?;
        let vni = spec.vni;
        if let Some(old) = self.networks.nets.get(&vni) {
            if old.spec == spec {
                self.networks
                    .nets
                    .insert(vni, NetworkEntry { spec, source });
                return Ok(());
            }
            if self.networks.eps.keys().any(|(v, _)| *v == vni) {
                return Err(AgentError::Network {
                    name: spec.name,
                    vni,
                    subnet: spec.subnet,
                    problem: format!(
                        "would replace network {} ({}, gateway {}) which has endpoints",
                        old.spec.name, old.spec.subnet, old.spec.gateway
                    ),
                    expected: "the network removed first".into(),
                });
            }
        }
        self.dataplane
            .add_network(&spec)
            .await
            .map_err(dataplane_err(format!(
                "adding network {} (VNI {vni})",
                spec.name
            )))?;
        log::info!(
            "network {} VNI {vni} {} gateway {} ({source})",
            spec.name,
            spec.subnet,
            spec.gateway
        );
        self.networks
            .nets
            .insert(vni, NetworkEntry { spec, source });
        self.restore_pending(vni).await;
        Ok(())
    }

    /// Stored local endpoints of network `vni`, now that it is carried.
    async fn restore_pending(&mut self, vni: u32) {
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.networks.pending)
            .into_iter()
            .partition(|p| p.vni == vni);
        self.networks.pending = later;
        for p in now {
            let restored = async {
                let mac = parse_mac(&p.mac)?;
                let link = self.net.link_by_name(&p.dev).await?;
                let spec = NetEndpointSpec {
                    vni,
                    ip: p.ip,
                    mac,
                    location: NetLocation::Local {
                        ifname: link.name,
                        ifindex: link.index,
                    },
                };
                self.put_net_endpoint(spec, p.source).await
            };
            if let Err(e) = restored.await {
                log::warn!(
                    "state file: skipping endpoint {} on VNI {vni} ({}): {e}",
                    p.ip,
                    p.dev
                );
                self.save();
            }
        }
    }

    /// Stop carrying network `vni` and every endpoint on it.
    pub(super) async fn del_network(&mut self, vni: u32) -> Result<(), AgentError> {
        let Some(entry) = self.networks.nets.get(&vni) else {
            return Err(AgentError::NoNetwork(vni));
        };
        let name = entry.spec.name.clone();
        self.dataplane
            .del_network(vni)
            .await
            .map_err(dataplane_err(format!(
                "deleting network {name} (VNI {vni})"
            )))?;
        self.networks.nets.remove(&vni);
        let before = self.networks.eps.len();
        let persisted = self
            .networks
            .eps
            .iter()
            .any(|((v, _), e)| *v == vni && e.source.persisted());
        self.networks.eps.retain(|(v, _), _| *v != vni);
        log::info!(
            "network {name} VNI {vni} deleted, with {} endpoints",
            before - self.networks.eps.len()
        );
        if persisted {
            self.save();
        }
        Ok(())
    }

    /// Refuse `spec` unless it can be an endpoint of a carried network.
    fn check_net_endpoint(&self, spec: &NetEndpointSpec) -> Result<&NetworkSpec, AgentError> {
        let net = &self
            .networks
            .nets
            .get(&spec.vni)
            .ok_or(AgentError::NoNetwork(spec.vni))?
            .spec;
        net.check_member(spec.ip)?;
        let refuse = |problem: String, expected: &str| AgentError::NetEndpoint {
            network: net.name.clone(),
            ip: spec.ip,
            problem,
            expected: expected.into(),
        };
        if spec.mac == [0; 6] || spec.mac[0] & 1 != 0 {
            return Err(InputError::NotUnicastMac {
                value: format_mac(&spec.mac),
            }
            .into());
        }
        match &spec.location {
            NetLocation::Remote { host } => {
                check_underlay_ip(*host)?;
                if *host == self.underlay_ip {
                    return Err(refuse(
                        format!("its host {host} is this host"),
                        "another host's underlay address, or a local endpoint",
                    ));
                }
                let local = self
                    .networks
                    .eps
                    .get(&(spec.vni, spec.ip))
                    .filter(|e| matches!(e.spec.location, NetLocation::Local { .. }));
                if let Some(e) = local {
                    return Err(refuse(
                        format!(
                            "is a local endpoint of this host (from {}); keeping it",
                            e.source
                        ),
                        "the local endpoint removed first",
                    ));
                }
            }
            NetLocation::Local { ifname, ifindex } => {
                if ifname.is_empty() || *ifindex == 0 {
                    return Err(refuse(
                        format!("local interface {ifname:?} with ifindex {ifindex}"),
                        "the host-side interface's name and ifindex",
                    ));
                }
            }
        }
        Ok(net)
    }

    /// Add or replace an endpoint of a carried network.
    pub(super) async fn put_net_endpoint(
        &mut self,
        spec: NetEndpointSpec,
        source: Source,
    ) -> Result<(), AgentError> {
        let name = self.check_net_endpoint(&spec)?.name.clone();
        let key = (spec.vni, spec.ip);
        if self.networks.eps.get(&key).is_some_and(|e| e.spec == spec) {
            let old = self
                .networks
                .eps
                .insert(key, NetEndpointEntry { spec, source });
            if old.is_some_and(|o| o.source != source) && source.persisted() {
                self.save();
            }
            return Ok(());
        }
        self.dataplane
            .add_net_endpoint(&spec)
            .await
            .map_err(dataplane_err(format!(
                "adding endpoint {} on network {name}",
                spec.ip
            )))?;
        let at = match &spec.location {
            NetLocation::Local { ifname, ifindex } => format!("on {ifname} (ifindex {ifindex})"),
            NetLocation::Remote { host } => format!("via {host}"),
        };
        log::info!(
            "endpoint {} on network {name} {at}, mac {} ({source})",
            spec.ip,
            format_mac(&spec.mac)
        );
        let old = self
            .networks
            .eps
            .insert(key, NetEndpointEntry { spec, source });
        if source.persisted() || old.is_some_and(|o| o.source.persisted()) {
            self.save();
        }
        Ok(())
    }

    /// Forget the endpoint at `ip` on network `vni`.
    pub(super) async fn del_net_endpoint(
        &mut self,
        vni: u32,
        ip: Ipv4Addr,
    ) -> Result<(), AgentError> {
        let Some(entry) = self.networks.eps.get(&(vni, ip)) else {
            return Err(AgentError::NoNetEndpoint { vni, ip });
        };
        let persisted = entry.source.persisted();
        self.dataplane
            .del_net_endpoint(vni, ip)
            .await
            .map_err(dataplane_err(format!(
                "deleting endpoint {ip} on VNI {vni}"
            )))?;
        self.networks.eps.remove(&(vni, ip));
        log::info!("endpoint {ip} on VNI {vni} deleted");
        if persisted {
            self.save();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
