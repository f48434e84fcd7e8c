//! The network driver: networks map to the store's by subnet; a
//! container's endpoint is a veth pair whose host end is reported to the
//! core and whose record is published in the store.

use serde_json::{json, Value};

use crate::model::attach::mac_for;
use crate::model::change::Change;
use crate::model::overlay_network::{EndpointRecord, NetEndpointSpec, NetLocation, NetworkSpec};
use crate::model::source::Source;
use crate::model::validation::{format_mac, parse_mac};
use crate::sources::plugin::handler::{
    host_ifname, parse_ip, parse_subnet, temp_ifname, LocalEndpoint, Plugin, PluginError,
    DST_PREFIX,
};
use crate::sources::plugin::wire::{
    CreateEndpoint, CreateEndpointReply, CreateNetwork, EndpointRef, NetworkOnly, ReplyInterface,
    ADDRESS_SPACE,
};
use crate::sys::docker::short_id;
use crate::sys::{netlink, veth};

impl Plugin {
    /// `CreateNetwork`: refuse Docker's default IPAM; remember the subnet
    /// of Docker's network ID; a network stored under a provisional name
    /// gets its real name next (from the Engine API, by [`Plugin::rename_pending`]).
    pub async fn create_network(&self, req: CreateNetwork) -> Result<Value, PluginError> {
        if req.ipv6_data.as_ref().is_some_and(|d| !d.is_empty()) {
            return Err(PluginError::NoIpv6);
        }
        let data = req.ipv4_data.first().cloned().unwrap_or_default();
        if data.address_space != ADDRESS_SPACE {
            return Err(PluginError::DefaultIpam {
                network: short_id(&req.network_id).to_string(),
                address_space: data.address_space,
            });
        }
        let subnet = parse_subnet("pool", &data.pool)?;
        let pending = {
            let mut state = self.state();
            state.networks.insert(req.network_id.clone(), subnet);
            state.pending.contains_key(&subnet)
        };
        if pending {
            self.wake();
        }
        log::info!(
            "plugin: Docker network {} has subnet {subnet}",
            short_id(&req.network_id)
        );
        Ok(json!({}))
    }

    /// `DeleteNetwork`: `docker network rm` removes the store's network
    /// (refused while it has endpoints anywhere, naming them); when the
    /// store's network is gone already (the sync removes Docker's copy),
    /// nothing is left to do.
    pub async fn delete_network(&self, req: NetworkOnly) -> Result<Value, PluginError> {
        let subnet = self.state().networks.remove(&req.network_id);
        let Some(subnet) = subnet else {
            return Ok(json!({}));
        };
        let pending = self.state().pending.remove(&subnet);
        if let Some(p) = pending {
            self.dir.remove_network(&p.spec.name).await?;
            return Ok(json!({}));
        }
        if let Some(spec) = self.stored_by_subnet(subnet).await? {
            if let Err(e) = self.dir.remove_network(&spec.name).await {
                self.state().networks.insert(req.network_id.clone(), subnet);
                return Err(e.into());
            }
            log::info!("plugin: network {} removed from the store", spec.name);
        }
        Ok(json!({}))
    }

    /// The store's network behind Docker's network `id`.
    pub async fn network_of(&self, id: &str) -> Result<NetworkSpec, PluginError> {
        let known = self.state().networks.get(id).copied();
        let subnet = match known {
            Some(s) => s,
            None => {
                let docker = self.docker().await?;
                let net = docker
                    .inspect_network(id, None)
                    .await
                    .map_err(crate::sys::docker::api_error(&self.settings.docker_socket))?;
                let s = net
                    .ipam
                    .and_then(|i| i.config)
                    .and_then(|c| c.into_iter().find_map(|c| c.subnet))
                    .ok_or_else(|| PluginError::UnknownNetwork(short_id(id).to_string()))?;
                let subnet = parse_subnet("subnet", &s)?;
                self.state().networks.insert(id.to_string(), subnet);
                subnet
            }
        };
        self.named_network(subnet).await
    }

    /// `CreateEndpoint`: keep Docker's MAC or derive one from the address.
    pub async fn create_endpoint(&self, req: CreateEndpoint) -> Result<Value, PluginError> {
        let spec = self.network_of(&req.network_id).await?;
        let iface = req.interface.unwrap_or_default();
        if iface.address.is_empty() {
            return Err(PluginError::BadValue {
                what: "endpoint address",
                value: String::new(),
                expected: "an IPv4 address from ovl's IPAM (--ipam-driver ovl)",
            });
        }
        let ip = parse_ip("endpoint address", &iface.address)?;
        if !spec.subnet.contains(&ip) {
            return Err(PluginError::Outside {
                ip,
                network: spec.name,
                subnet: spec.subnet,
            });
        }
        let (mac, chosen) = if iface.mac_address.is_empty() {
            (mac_for(ip), true)
        } else {
            let mac = parse_mac(&iface.mac_address).map_err(|_| PluginError::BadValue {
                what: "MAC address",
                value: iface.mac_address.clone(),
                expected: "a MAC like 02:42:0a:67:f0:02",
            })?;
            (mac, false)
        };
        let ep = LocalEndpoint {
            network: spec,
            docker_network: req.network_id.clone(),
            endpoint_id: req.endpoint_id.clone(),
            ip,
            mac,
            ifname: host_ifname(&req.endpoint_id),
            joined: false,
            named: false,
        };
        self.state().endpoints.insert(req.endpoint_id, ep);
        let reply = CreateEndpointReply {
            interface: chosen.then(|| ReplyInterface {
                mac_address: format_mac(&mac),
            }),
        };
        Ok(serde_json::to_value(reply).unwrap_or_else(|_| json!({})))
    }

    /// `Join`: make the veth pair, report the endpoint, publish its record.
    pub async fn join(&self, req: EndpointRef) -> Result<Value, PluginError> {
        let ep = self
            .state()
            .endpoints
            .get(&req.endpoint_id)
            .cloned()
            .ok_or_else(|| PluginError::UnknownEndpoint(short_id(&req.endpoint_id).into()))?;
        let handle = netlink::connect()?;
        let mtu = netlink::link_by_name(&handle, &self.settings.underlay_interface)
            .await?
            .mtu
            .saturating_sub(overlay_common::VXLAN_OVERHEAD);
        let temp = temp_ifname(&req.endpoint_id);
        veth::remove_link(&handle, &ep.ifname).await;
        let ifindex = veth::create_unplugged(&handle, &ep.ifname, &temp, ep.mac, mtu).await?;
        if let Err(e) = self.report(&ep, ifindex).await {
            veth::remove_link(&handle, &ep.ifname).await;
            return Err(e);
        }
        if let Some(e) = self.state().endpoints.get_mut(&req.endpoint_id) {
            e.joined = true;
        }
        self.wake();
        log::info!(
            "plugin: endpoint {} {} mac {} on {} via {} (ifindex {ifindex})",
            short_id(&req.endpoint_id),
            ep.ip,
            format_mac(&ep.mac),
            ep.network.name,
            ep.ifname
        );
        Ok(json!({
            "InterfaceName": { "SrcName": temp, "DstPrefix": DST_PREFIX },
            "Gateway": ep.network.gateway.to_string(),
        }))
    }

    /// Report `ep` behind `ifindex` to the core and publish its record
    /// (without a name yet); undone when either fails.
    pub async fn report(&self, ep: &LocalEndpoint, ifindex: u32) -> Result<(), PluginError> {
        let spec = NetEndpointSpec {
            vni: ep.network.vni,
            ip: ep.ip,
            mac: ep.mac,
            location: NetLocation::Local {
                ifname: ep.ifname.clone(),
                ifindex,
            },
        };
        self.core
            .apply(Source::Plugin, Change::PutNetEndpoint(spec))
            .await?;
        if let Err(e) = self.dir.publish_endpoint(&self.record(ep, "", &[])).await {
            let _ = self
                .core
                .apply(
                    Source::Plugin,
                    Change::DelNetEndpoint {
                        vni: ep.network.vni,
                        ip: ep.ip,
                    },
                )
                .await;
            return Err(e.into());
        }
        Ok(())
    }

    /// The store record of `ep` with the container's `name` and `aliases`.
    pub fn record(&self, ep: &LocalEndpoint, name: &str, aliases: &[String]) -> EndpointRecord {
        EndpointRecord {
            network: ep.network.name.clone(),
            ip: ep.ip,
            mac: ep.mac,
            host: self.settings.host.clone(),
            underlay_ip: self.settings.underlay_ip,
            container: ep.endpoint_id.clone(),
            name: name.to_string(),
            aliases: aliases.to_vec(),
        }
    }

    /// `DeleteEndpoint`: withdraw the record, remove the endpoint, delete the veth.
    pub async fn delete_endpoint(&self, req: EndpointRef) -> Result<Value, PluginError> {
        let ep = self.state().endpoints.remove(&req.endpoint_id);
        let Some(ep) = ep else {
            log::info!(
                "plugin: endpoint {} unknown here; nothing to delete",
                short_id(&req.endpoint_id)
            );
            return Ok(json!({}));
        };
        let withdrawn = self.dir.withdraw_endpoint(&ep.network.name, ep.ip).await;
        if ep.joined {
            let change = Change::DelNetEndpoint {
                vni: ep.network.vni,
                ip: ep.ip,
            };
            if let Err(e) = self.core.apply(Source::Plugin, change).await {
                log::warn!("plugin: removing endpoint {}: {e}", ep.ip);
            }
        }
        let handle = netlink::connect()?;
        veth::remove_link(&handle, &ep.ifname).await;
        withdrawn?;
        log::info!(
            "plugin: endpoint {} {} on {} deleted",
            short_id(&req.endpoint_id),
            ep.ip,
            ep.network.name
        );
        Ok(json!({}))
    }
}
