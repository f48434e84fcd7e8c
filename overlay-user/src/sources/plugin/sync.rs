//! Keeping this host's Docker in step with the store, through the Engine
//! API: every store network exists on Docker (driver and IPAM driver
//! `ovl`), Docker networks gone from the store are removed once they have
//! no container here, networks Docker created first get their real name in
//! the store, endpoint records get their container's name and aliases, and
//! at start the endpoints of running containers are reported again.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::ListNetworksOptions;
use bollard::Docker;

use crate::model::change::Change;
use crate::model::config::docker::PLUGIN_NAME;
use crate::model::overlay_network::{NetEndpointSpec, NetLocation, NetworkRequest};
use crate::model::source::Source;
use crate::model::validation::parse_mac;
use crate::sources::plugin::handler::{
    host_ifname, parse_ip, parse_subnet, LocalEndpoint, Plugin, PluginError, PROVISIONAL_PREFIX,
};
use crate::sys::docker::{api_error, short_id};
use crate::sys::netlink;

/// How often the store and Docker are compared (networks appear on every
/// host's Docker within this and one Engine API call).
pub const SYNC_EVERY: Duration = Duration::from_millis(500);
/// How soon an endpoint Docker has not tied to its container yet is looked
/// at again.
const NAME_RETRY: Duration = Duration::from_millis(50);
/// How long Docker gets to show a network it is creating.
const NAME_WAIT: Duration = Duration::from_secs(10);

/// The sync loop; runs until its task is aborted.
pub async fn run(plugin: &Plugin) {
    let mut recovered = false;
    let mut last_problem = String::new();
    loop {
        let mut waiting = 0;
        let result = async {
            if !recovered {
                plugin.recover().await?;
                recovered = true;
            }
            plugin.rename_pending().await?;
            waiting = plugin.name_endpoints().await?;
            plugin.sync_networks().await
        }
        .await;
        match result {
            Ok(()) => last_problem.clear(),
            Err(e) => {
                let msg = e.to_string();
                if msg != last_problem {
                    log::warn!("plugin: {msg}; retrying");
                    last_problem = msg;
                }
            }
        }
        // An endpoint waiting for its container is asked for again soon:
        // its name and aliases resolve from that moment.
        let next = if waiting > 0 { NAME_RETRY } else { SYNC_EVERY };
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = plugin.wake.notified() => {}
        }
    }
}

/// Docker's networks of driver `ovl`.
async fn ovl_networks(
    docker: &Docker,
) -> Result<Vec<bollard::models::Network>, bollard::errors::Error> {
    let filters = HashMap::from([("driver".to_string(), vec![PLUGIN_NAME.to_string()])]);
    docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters),
        }))
        .await
}

fn subnet_of(ipam: Option<&Ipam>) -> Option<String> {
    ipam.and_then(|i| i.config.as_ref())
        .and_then(|c| c.iter().find_map(|c| c.subnet.clone()))
}

impl Plugin {
    /// Networks stored under a provisional name whose Docker network now
    /// shows its name: store them again under that name (same subnet, VNI,
    /// gateway asked for).
    pub async fn rename_pending(&self) -> Result<(), PluginError> {
        let todo: Vec<(String, ipnet::Ipv4Net)> = {
            let state = self.state();
            state
                .networks
                .iter()
                .filter(|(_, s)| state.pending.contains_key(s))
                .map(|(id, s)| (id.clone(), *s))
                .collect()
        };
        if todo.is_empty() {
            return Ok(());
        }
        let docker = self.docker().await?;
        for (id, subnet) in todo {
            let mut name = None;
            let start = std::time::Instant::now();
            while start.elapsed() < NAME_WAIT {
                if let Ok(net) = docker.inspect_network(&id, None).await {
                    name = net.name;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let Some(pending) = self.state().pending.remove(&subnet) else {
                continue;
            };
            self.dir.remove_network(&pending.spec.name).await?;
            let Some(name) = name else {
                log::warn!(
                    "plugin: Docker never showed network {}; {} removed from the store",
                    short_id(&id),
                    pending.spec.name
                );
                continue;
            };
            let req = NetworkRequest {
                name: name.clone(),
                subnet: Some(pending.spec.subnet),
                gateway: Some(pending.gateway.unwrap_or(pending.spec.gateway)),
                vni: Some(pending.spec.vni),
            };
            match self.dir.create_network(req).await {
                Ok(spec) => log::info!(
                    "plugin: Docker network {name} stored: subnet {}, gateway {}, vni {}",
                    spec.subnet,
                    spec.gateway,
                    spec.vni
                ),
                Err(e) => {
                    log::error!(
                        "plugin: Docker network {name} cannot be stored ({e}); removing it from Docker"
                    );
                    self.state().networks.remove(&id);
                    let _ = docker.remove_network(&id).await;
                }
            }
        }
        Ok(())
    }

    /// Give the records of joined endpoints their container's name and
    /// aliases, from the Engine API. Returns how many joined endpoints
    /// Docker has not tied to their container yet (named at a later call).
    pub async fn name_endpoints(&self) -> Result<usize, PluginError> {
        let todo: Vec<LocalEndpoint> = self
            .state()
            .endpoints
            .values()
            .filter(|e| e.joined && !e.named)
            .cloned()
            .collect();
        if todo.is_empty() {
            return Ok(0);
        }
        let docker = self.docker().await?;
        let socket = self.settings.docker_socket.clone();
        let mut waiting = 0;
        for ep in todo {
            let net = docker
                .inspect_network(&ep.docker_network, None)
                .await
                .map_err(api_error(&socket))?;
            let found = net
                .containers
                .unwrap_or_default()
                .into_iter()
                .find(|(_, r)| r.endpoint_id.as_deref() == Some(ep.endpoint_id.as_str()));
            let Some((cid, res)) = found else {
                waiting += 1;
                continue;
            };
            // While Docker is still tying the endpoint to its container,
            // the network lists it under `ep-<endpoint id>`, which is no
            // container: the aliases cannot be read yet, so ask again soon
            // rather than publish the name without them.
            let container = match docker.inspect_container(&cid, None).await {
                Ok(c) => c,
                Err(e) => {
                    log::debug!(
                        "plugin: endpoint {} not tied to a container yet: {e}",
                        ep.ip
                    );
                    waiting += 1;
                    continue;
                }
            };
            let name = res.name.unwrap_or_default();
            let netname = net.name.unwrap_or_default();
            let Some(settings) = container
                .network_settings
                .and_then(|s| s.networks)
                .and_then(|mut n| n.remove(&netname))
            else {
                waiting += 1;
                continue;
            };
            let aliases: Vec<String> = settings
                .aliases
                .unwrap_or_default()
                .into_iter()
                .filter(|a| a != &name && !cid.starts_with(a.as_str()))
                .collect();
            let record = self.record(&ep, &name, &aliases);
            self.dir.publish_endpoint(&record).await?;
            if let Some(e) = self.state().endpoints.get_mut(&ep.endpoint_id) {
                e.named = true;
            }
            log::info!(
                "plugin: endpoint {} on {} is container {name} (aliases {aliases:?})",
                ep.ip,
                ep.network.name
            );
        }
        Ok(waiting)
    }

    /// Create the store's networks on Docker; remove Docker's `ovl`
    /// networks that are gone from the store and have no container here.
    pub async fn sync_networks(&self) -> Result<(), PluginError> {
        let stored: Vec<_> = self
            .dir
            .networks()
            .await?
            .into_iter()
            .filter(|n| !n.name.starts_with(PROVISIONAL_PREFIX))
            .collect();
        let docker = self.docker().await?;
        let socket = self.settings.docker_socket.clone();
        let present = ovl_networks(&docker).await.map_err(api_error(&socket))?;
        let names: HashSet<&str> = present.iter().filter_map(|n| n.name.as_deref()).collect();
        for spec in &stored {
            if names.contains(spec.name.as_str()) {
                continue;
            }
            let req = NetworkCreateRequest {
                name: spec.name.clone(),
                driver: Some(PLUGIN_NAME.into()),
                ipam: Some(Ipam {
                    driver: Some(PLUGIN_NAME.into()),
                    config: Some(vec![IpamConfig {
                        subnet: Some(spec.subnet.to_string()),
                        gateway: Some(spec.gateway.to_string()),
                        ..Default::default()
                    }]),
                    options: None,
                }),
                ..Default::default()
            };
            match docker.create_network(req).await {
                Ok(_) => log::info!(
                    "plugin: network {} ({}) created on Docker",
                    spec.name,
                    spec.subnet
                ),
                Err(e) => log::warn!("plugin: creating network {} on Docker: {e}", spec.name),
            }
        }
        let pending: HashSet<ipnet::Ipv4Net> = self.state().pending.keys().copied().collect();
        for net in &present {
            let (Some(name), Some(id)) = (net.name.as_deref(), net.id.as_deref()) else {
                continue;
            };
            let subnet = subnet_of(net.ipam.as_ref()).and_then(|s| s.parse().ok());
            let kept = stored
                .iter()
                .any(|s| s.name == name || Some(s.subnet) == subnet)
                || subnet.is_some_and(|s| pending.contains(&s));
            if kept {
                continue;
            }
            let inspect = docker
                .inspect_network(id, None)
                .await
                .map_err(api_error(&socket))?;
            if inspect.containers.as_ref().is_some_and(|c| !c.is_empty()) {
                continue;
            }
            match docker.remove_network(id).await {
                Ok(()) => {
                    log::info!("plugin: network {name} is gone from the store; removed from Docker")
                }
                Err(e) => log::warn!("plugin: removing network {name} from Docker: {e}"),
            }
        }
        Ok(())
    }

    /// At start: the endpoints of this host's containers on `ovl` networks
    /// whose veth is still there are reported and published again.
    pub async fn recover(&self) -> Result<(), PluginError> {
        let docker = self.docker().await?;
        let socket = self.settings.docker_socket.clone();
        let handle = netlink::connect()?;
        let present = ovl_networks(&docker).await.map_err(api_error(&socket))?;
        let mut found = 0;
        for net in present {
            let (Some(id), Some(s)) = (net.id.clone(), subnet_of(net.ipam.as_ref())) else {
                continue;
            };
            let subnet = parse_subnet("subnet", &s)?;
            self.state().networks.insert(id.clone(), subnet);
            let inspect = docker
                .inspect_network(&id, None)
                .await
                .map_err(api_error(&socket))?;
            let Some(spec) = self.stored_by_subnet(subnet).await? else {
                continue;
            };
            for (_, res) in inspect.containers.unwrap_or_default() {
                let (Some(eid), Some(addr)) = (res.endpoint_id.clone(), res.ipv4_address.clone())
                else {
                    continue;
                };
                let ip = parse_ip("address", &addr)?;
                let mac = res
                    .mac_address
                    .as_deref()
                    .and_then(|m| parse_mac(m).ok())
                    .unwrap_or_else(|| crate::model::attach::mac_for(ip));
                let ifname = host_ifname(&eid);
                let Ok(link) = netlink::link_by_name(&handle, &ifname).await else {
                    log::warn!("plugin: endpoint {ip} on {}: {ifname} is gone", spec.name);
                    continue;
                };
                let ep = LocalEndpoint {
                    network: spec.clone(),
                    docker_network: id.clone(),
                    endpoint_id: eid.clone(),
                    ip,
                    mac,
                    ifname: ifname.clone(),
                    joined: true,
                    named: false,
                };
                let change = Change::PutNetEndpoint(NetEndpointSpec {
                    vni: spec.vni,
                    ip,
                    mac,
                    location: NetLocation::Local {
                        ifname,
                        ifindex: link.index,
                    },
                });
                self.core.apply(Source::Plugin, change).await?;
                self.state().endpoints.insert(eid, ep);
                found += 1;
            }
        }
        if found > 0 {
            log::info!("plugin: {found} endpoints of running containers found again");
        }
        self.name_endpoints().await.map(|_| ())
    }
}
