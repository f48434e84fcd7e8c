//! IPAM: pools are the store's networks (the pool ID is the subnet),
//! addresses come from the store's per-address IPAM, unique across hosts.

use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use serde_json::{json, Value};

use crate::model::overlay_network::{NetworkRequest, NetworkSpec};
use crate::sources::plugin::handler::PROVISIONAL_PREFIX;
use crate::sources::plugin::handler::{parse_ip, parse_subnet, Pending, Plugin, PluginError};
use crate::sources::plugin::wire::{AddressRequest, ReleasePool, RequestPool};

/// How long an address request waits for a network being renamed.
const RENAME_WAIT: Duration = Duration::from_secs(5);

impl Plugin {
    /// `RequestPool`: the store's network with the subnet asked for, or a
    /// new one under a provisional name (see the module's doc).
    pub async fn request_pool(&self, req: RequestPool) -> Result<Value, PluginError> {
        if req.v6 {
            return Err(PluginError::NoIpv6);
        }
        if !req.sub_pool.is_empty() {
            return Err(PluginError::IpRange(req.sub_pool));
        }
        let wanted = match req.pool.as_str() {
            "" => None,
            s => Some(parse_subnet("subnet", s)?),
        };
        if let Some(subnet) = wanted {
            if let Some(spec) = self.stored_by_subnet(subnet).await? {
                log::info!("plugin: pool {subnet} is network {}", spec.name);
                return Ok(pool_reply(spec.subnet));
            }
        }
        let spec = self
            .dir
            .create_network(NetworkRequest {
                name: provisional_name(),
                subnet: wanted,
                gateway: None,
                vni: None,
            })
            .await?;
        log::info!(
            "plugin: pool {} stored as {} (vni {}) until Docker's name is known",
            spec.subnet,
            spec.name,
            spec.vni
        );
        let subnet = spec.subnet;
        self.state().pending.insert(
            subnet,
            Pending {
                spec,
                gateway: None,
            },
        );
        Ok(pool_reply(subnet))
    }

    /// `ReleasePool`: a network still under its provisional name (Docker
    /// gave up creating it) is removed from the store; a named one stays
    /// (`docker network rm` removes it in `DeleteNetwork`).
    pub async fn release_pool(&self, req: ReleasePool) -> Result<Value, PluginError> {
        let subnet = parse_subnet("pool ID", &req.pool_id)?;
        let pending = self.state().pending.remove(&subnet);
        if let Some(p) = pending {
            self.dir.remove_network(&p.spec.name).await?;
            log::info!("plugin: pool {subnet} released, {} removed", p.spec.name);
        }
        Ok(json!({}))
    }

    /// `RequestAddress`: the gateway, or an address from the store's IPAM.
    pub async fn request_address(&self, req: AddressRequest) -> Result<Value, PluginError> {
        let subnet = parse_subnet("pool ID", &req.pool_id)?;
        let wanted = match req.address.as_str() {
            "" => None,
            a => Some(parse_ip("address", a)?),
        };
        if req.is_gateway() {
            return self.gateway(subnet, wanted).await;
        }
        let spec = self.named_network(subnet).await?;
        if let Some(ip) = wanted {
            if !spec.subnet.contains(&ip) {
                return Err(PluginError::Outside {
                    ip,
                    network: spec.name,
                    subnet: spec.subnet,
                });
            }
        }
        let holder = format!("docker on {}", self.settings.host);
        let ip = self
            .dir
            .request_address(&spec.name, wanted, &holder)
            .await?;
        log::info!("plugin: address {ip} on {}", spec.name);
        Ok(address_reply(ip, spec.subnet))
    }

    /// `ReleaseAddress`: give an address back (the gateway is never held).
    pub async fn release_address(&self, req: AddressRequest) -> Result<Value, PluginError> {
        let subnet = parse_subnet("pool ID", &req.pool_id)?;
        let ip = parse_ip("address", &req.address)?;
        let Some(spec) = self.stored_by_subnet(subnet).await? else {
            return Ok(json!({}));
        };
        if ip != spec.gateway {
            self.dir.release_address(&spec.name, ip).await?;
            log::info!("plugin: address {ip} on {} released", spec.name);
        }
        Ok(json!({}))
    }

    async fn gateway(
        &self,
        subnet: Ipv4Net,
        wanted: Option<std::net::Ipv4Addr>,
    ) -> Result<Value, PluginError> {
        let pending_gw = {
            let mut state = self.state();
            state.pending.get_mut(&subnet).map(|p| {
                if wanted.is_some() {
                    p.gateway = wanted;
                }
                p.gateway.unwrap_or(p.spec.gateway)
            })
        };
        if let Some(gw) = pending_gw {
            if !subnet.contains(&gw) {
                return Err(PluginError::BadValue {
                    what: "gateway",
                    value: gw.to_string(),
                    expected: "an address inside the subnet",
                });
            }
            return Ok(address_reply(gw, subnet));
        }
        let spec = self
            .stored_by_subnet(subnet)
            .await?
            .ok_or_else(|| PluginError::UnknownPool(subnet.to_string()))?;
        match wanted {
            Some(given) if given != spec.gateway => Err(PluginError::Gateway {
                network: spec.name,
                given,
                gateway: spec.gateway,
            }),
            _ => Ok(address_reply(spec.gateway, spec.subnet)),
        }
    }

    /// The store's network with `subnet` under its real name, waiting
    /// while it is being renamed.
    pub async fn named_network(&self, subnet: Ipv4Net) -> Result<NetworkSpec, PluginError> {
        let start = Instant::now();
        loop {
            let pending = self.state().pending.contains_key(&subnet);
            if !pending {
                if let Some(spec) = self.stored_by_subnet(subnet).await? {
                    if !spec.name.starts_with(PROVISIONAL_PREFIX) {
                        return Ok(spec);
                    }
                }
            }
            if start.elapsed() > RENAME_WAIT {
                return Err(PluginError::UnknownPool(subnet.to_string()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A provisional name, unique enough: the clock's nanoseconds and our PID.
fn provisional_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mix = (nanos as u64) ^ (u64::from(std::process::id()) << 40);
    format!("{PROVISIONAL_PREFIX}{:010x}", mix & 0xff_ffff_ffff)
}

fn pool_reply(subnet: Ipv4Net) -> Value {
    json!({ "PoolID": subnet.to_string(), "Pool": subnet.to_string(), "Data": {} })
}

fn address_reply(ip: std::net::Ipv4Addr, subnet: Ipv4Net) -> Value {
    json!({ "Address": format!("{ip}/{}", subnet.prefix_len()), "Data": {} })
}
