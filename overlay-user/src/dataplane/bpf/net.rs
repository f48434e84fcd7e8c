//! Overlay networks on the BPF dataplane: the four network methods of
//! [`Dataplane`](crate::dataplane::Dataplane), behind `NetState` (net_maps.rs).
//!
//! A network is an entry of `OVL_NET_NETWORKS` and `OVL_NET_SUBNETS`
//! (isolation) plus the host's part of its NAT (`ip_forward`, the shared
//! firewall's MASQUERADE and FORWARD rules). A local endpoint is its port
//! (`OVL_NET_PORTS`, the from-net-container program attached to its
//! host-side veth as link `net-<ifindex>`), its `OVL_NET_ENDPOINTS` entry,
//! and a /32 route plus a permanent neighbour entry on the veth so that
//! NATed replies come back to it. A remote endpoint is an
//! `OVL_NET_ENDPOINTS` entry with the outer headers to its host.
//!
//! On a restart the pinned maps and links stay and forward; what the
//! sources do not add again is removed by `forget_unowned`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteProtocol;
use netlink_packet_route::AddressFamily;
use overlay_common::net::{net_endpoint_slot, net_port_slot, NetEndpointValue, NetPortValue};
use overlay_common::programs;

use super::loader::NET_PORT_PREFIX;
use super::BpfDataplane;
use crate::dataplane::firewall::{Firewall, NetworkRules};
use crate::dataplane::DataplaneError;
use crate::model::overlay_network::{NetEndpointSpec, NetLocation, NetworkSpec};
use crate::sys::netlink;
use crate::sys::routes::RTPROT_OVERLAY;

/// The link pin name of the from-net-container program on port `ifindex`.
pub fn net_link_name(ifindex: u32) -> String {
    format!("{NET_PORT_PREFIX}{ifindex}")
}

fn request(what: String) -> impl FnOnce(rtnetlink::Error) -> DataplaneError {
    move |source| DataplaneError::Request {
        what,
        source: Box::new(source),
    }
}

fn is_missing(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m)
        if matches!(m.raw_code().abs(), libc::ENOENT | libc::ESRCH | libc::ENODEV))
}

/// Writes a sysctl under /proc/sys/net (this network namespace's).
fn sysctl(path: &str, value: &str) -> Result<(), DataplaneError> {
    let full = format!("/proc/sys/net/{path}");
    match std::fs::read_to_string(&full) {
        Ok(now) if now.trim() == value => Ok(()),
        _ => std::fs::write(&full, value)
            .map_err(|e| DataplaneError::Other(format!("setting {full} to {value}: {e}"))),
    }
}

impl BpfDataplane {
    pub(super) async fn net_add_network(
        &mut self,
        net: &NetworkSpec,
    ) -> Result<(), DataplaneError> {
        if let Some(old) = self.net.networks.get(&net.vni) {
            if old.subnet != net.subnet {
                let old = old.clone();
                self.net.maps.del_network(old.vni)?;
            }
        }
        // Forwarding for the way out (NAT); the programs need nothing else.
        sysctl("ipv4/ip_forward", "1")?;
        self.net
            .maps
            .add_network(net.vni, net.subnet, net.gateway)?;
        self.net.inherited_networks.remove(&net.vni);
        self.net.networks.insert(net.vni, net.clone());
        self.sync_nat().await?;
        log::info!(
            "network {} (VNI {}, {}, gateway {}) carried",
            net.name,
            net.vni,
            net.subnet,
            net.gateway
        );
        Ok(())
    }

    pub(super) async fn net_del_network(&mut self, vni: u32) -> Result<(), DataplaneError> {
        let eps: Vec<Ipv4Addr> = self
            .net
            .endpoints
            .keys()
            .chain(self.net.inherited_endpoints.iter())
            .filter(|(v, _)| *v == vni)
            .map(|(_, ip)| *ip)
            .collect();
        for ip in eps {
            self.net_del_endpoint(vni, ip).await?;
        }
        self.net.maps.del_network(vni)?;
        self.net.inherited_networks.remove(&vni);
        if self.net.networks.remove(&vni).is_some() {
            self.sync_nat().await?;
        }
        Ok(())
    }

    pub(super) async fn net_add_endpoint(
        &mut self,
        ep: &NetEndpointSpec,
    ) -> Result<(), DataplaneError> {
        let Some(net) = self.net.networks.get(&ep.vni).cloned() else {
            return Err(DataplaneError::Other(format!(
                "endpoint {} on VNI {}: that network is not carried on this host (add it first)",
                ep.ip, ep.vni
            )));
        };
        // A replaced endpoint (moved, or another veth) goes first.
        if let Some(old) = self.net.endpoints.get(&(ep.vni, ep.ip)) {
            if old.location != ep.location {
                self.net_del_endpoint(ep.vni, ep.ip).await?;
            }
        }
        match &ep.location {
            NetLocation::Local { ifname, ifindex } => {
                let link = netlink::link_by_index(&self.handle, *ifindex)
                    .await
                    .map_err(|e| DataplaneError::Interface {
                        name: ifname.clone(),
                        reason: format!("ifindex {ifindex}: {e}"),
                    })?;
                if link.name != *ifname {
                    return Err(DataplaneError::Interface {
                        name: ifname.clone(),
                        reason: format!("ifindex {ifindex} is {}, not {ifname}", link.name),
                    });
                }
                let port = NetPortValue {
                    vni: ep.vni,
                    ip: ep.ip.octets(),
                    gateway: net.gateway.octets(),
                    mac: ep.mac,
                    veth_mac: link.mac,
                };
                self.net.maps.put_port(*ifindex, &port)?;
                self.net.maps.put_endpoint(
                    ep.vni,
                    ep.ip,
                    &NetEndpointValue::local(*ifindex, ep.mac),
                )?;
                self.links.attach_tc(
                    &mut self.ebpf,
                    programs::FROM_NET_CONTAINER,
                    ifname,
                    &net_link_name(*ifindex),
                )?;
                self.prepare_device(*ifindex, ifname).await;
                // The way back in for NATed replies: loose reverse path on
                // the veth, a /32 route and the container's MAC.
                sysctl(&format!("ipv4/conf/{ifname}/rp_filter"), "0")?;
                self.host_route(ep.ip, *ifindex, ifname, ep.mac, true)
                    .await?;
            }
            NetLocation::Remote { host } => {
                let cfg = self.maps.config()?;
                let nexthop = self.recent_neighbour_macs().await.get(host).copied();
                let v = NetEndpointValue::remote(
                    &cfg,
                    ep.vni,
                    host.octets(),
                    nexthop.unwrap_or([0; 6]),
                    ep.mac,
                )
                .with_stats_slot(self.observe.peer_stats.slot(*host));
                self.net.maps.put_endpoint(ep.vni, ep.ip, &v)?;
            }
        }
        self.net.inherited_endpoints.remove(&(ep.vni, ep.ip));
        self.net.endpoints.insert((ep.vni, ep.ip), ep.clone());
        Ok(())
    }

    pub(super) async fn net_del_endpoint(
        &mut self,
        vni: u32,
        ip: Ipv4Addr,
    ) -> Result<(), DataplaneError> {
        let old = self.net.endpoints.remove(&(vni, ip));
        self.net.inherited_endpoints.remove(&(vni, ip));
        // What the map says, for endpoints of an earlier run.
        let in_map = self.net.maps.endpoint(vni, ip)?;
        self.net.maps.del_endpoint(vni, ip)?;
        self.net_reslot(Some(net_endpoint_slot(ip.octets())), None)?;
        let local = match (&old, in_map) {
            (
                Some(NetEndpointSpec {
                    location: NetLocation::Local { ifname, ifindex },
                    mac,
                    ..
                }),
                _,
            ) => Some((*ifindex, Some(ifname.clone()), *mac)),
            (None, Some(v)) if v.is_local() => Some((v.ifindex, None, v.mac)),
            _ => None,
        };
        if let Some((ifindex, ifname, mac)) = local {
            self.links.detach(&net_link_name(ifindex));
            self.net.maps.del_port(ifindex)?;
            self.net_reslot(None, Some(net_port_slot(ifindex)))?;
            let ifname = match ifname {
                Some(n) => n,
                None => match netlink::link_by_index(&self.handle, ifindex).await {
                    Ok(l) => l.name,
                    Err(_) => return Ok(()), // gone, and its route and neighbour with it
                },
            };
            self.host_route(ip, ifindex, &ifname, mac, false).await?;
        }
        Ok(())
    }

    /// Gives the endpoints at endpoint slot `ep_slot` and the ports at port
    /// slot `port_slot` their slots when these are empty now: an entry that
    /// shared a slot with one that went stays no longer in the hash alone.
    fn net_reslot(
        &mut self,
        ep_slot: Option<u32>,
        port_slot: Option<u32>,
    ) -> Result<(), DataplaneError> {
        for ((vni, ip), spec) in &self.net.endpoints {
            if Some(net_endpoint_slot(ip.octets())) == ep_slot {
                self.net.maps.reslot_endpoint(*vni, *ip)?;
            }
            if let NetLocation::Local { ifindex, .. } = spec.location {
                if Some(net_port_slot(ifindex)) == port_slot {
                    self.net.maps.reslot_port(ifindex)?;
                }
            }
        }
        Ok(())
    }

    /// Adds (or removes) the /32 route to `ip` on the veth `ifindex` and
    /// the permanent neighbour entry `ip` -> `mac` there. Removing what is
    /// gone (the veth with it) is fine.
    async fn host_route(
        &self,
        ip: Ipv4Addr,
        ifindex: u32,
        ifname: &str,
        mac: [u8; 6],
        add: bool,
    ) -> Result<(), DataplaneError> {
        let mut route = self
            .handle
            .route()
            .add()
            .v4()
            .destination_prefix(ip, 32)
            .output_interface(ifindex)
            .protocol(RouteProtocol::from(RTPROT_OVERLAY))
            .replace();
        if add {
            route
                .execute()
                .await
                .map_err(request(format!("adding route {ip}/32 dev {ifname}")))?;
            return self
                .handle
                .neighbours()
                .add(ifindex, IpAddr::V4(ip))
                .link_local_address(&mac)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(request(format!("adding neighbour {ip} on {ifname}")));
        }
        let msg = route.message_mut().clone();
        if let Err(e) = self.handle.route().del(msg).execute().await {
            if !is_missing(&e) {
                return Err(request(format!("deleting route {ip}/32 dev {ifname}"))(e));
            }
        }
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = ifindex;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        if let Err(e) = self.handle.neighbours().del(msg).execute().await {
            if !is_missing(&e) {
                return Err(request(format!("deleting neighbour {ip} on {ifname}"))(e));
            }
        }
        Ok(())
    }

    /// Rewrites the outer headers of remote endpoints whose host's next-hop
    /// MAC changed (or was learned).
    pub(super) fn net_rebuild(
        &mut self,
        macs: &BTreeMap<Ipv4Addr, [u8; 6]>,
    ) -> Result<(), DataplaneError> {
        let cfg = self.maps.config()?;
        for ((vni, ip), v) in self.net.maps.endpoints()? {
            if !v.is_remote() {
                continue;
            }
            let host = Ipv4Addr::from(v.remote.underlay_ip);
            let mac = macs.get(&host).copied().unwrap_or([0; 6]);
            let slot = self.observe.peer_stats.slot(host);
            if mac != v.remote.nexthop_mac || slot != v.remote.stats_slot {
                let nv = NetEndpointValue::remote(&cfg, vni, host.octets(), mac, v.mac)
                    .with_stats_slot(slot);
                self.net.maps.put_endpoint(vni, ip, &nv)?;
            }
        }
        Ok(())
    }

    /// Points the remote endpoints on `hosts` at their host's
    /// `OVL_PEER_STATS` slot as it is now: after those hosts got one or gave
    /// one back. Only the endpoints added in this run are looked at, unless
    /// some of an earlier run's are still in the map (then all of them).
    pub(super) fn net_restamp_slots(&mut self, hosts: &[Ipv4Addr]) -> Result<(), DataplaneError> {
        let keys: Vec<(u32, Ipv4Addr)> = if self.net.inherited_endpoints.is_empty() {
            self.net
                .endpoints
                .iter()
                .filter(|(_, ep)| {
                    matches!(&ep.location, NetLocation::Remote { host } if hosts.contains(host))
                })
                .map(|(k, _)| *k)
                .collect()
        } else {
            self.net
                .maps
                .endpoints()?
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        for (vni, ip) in keys {
            let Some(v) = self.net.maps.endpoint(vni, ip)? else {
                continue;
            };
            let host = Ipv4Addr::from(v.remote.underlay_ip);
            let slot = self.observe.peer_stats.slot(host);
            if v.is_remote() && hosts.contains(&host) && slot != v.remote.stats_slot {
                self.net
                    .maps
                    .put_endpoint(vni, ip, &v.with_stats_slot(slot))?;
            }
        }
        Ok(())
    }

    /// Removes the networks and endpoints an earlier run left that no
    /// source added again since this start.
    pub(super) async fn net_forget_unowned(&mut self) -> Result<(), DataplaneError> {
        for (vni, ip) in std::mem::take(&mut self.net.inherited_endpoints) {
            log::info!("removing network endpoint {ip} on VNI {vni} left by an earlier run");
            self.net_del_endpoint(vni, ip).await?;
        }
        for vni in std::mem::take(&mut self.net.inherited_networks) {
            log::info!("removing network VNI {vni} left by an earlier run");
            self.net_del_network(vni).await?;
        }
        // Ports and links of veths no endpoint has any more.
        let ports: BTreeSet<u32> = self
            .net
            .endpoints
            .values()
            .filter_map(|e| match e.location {
                NetLocation::Local { ifindex, .. } => Some(ifindex),
                NetLocation::Remote { .. } => None,
            })
            .collect();
        for (ifindex, _) in self.net.maps.ports()? {
            if !ports.contains(&ifindex) {
                self.links.detach(&net_link_name(ifindex));
                self.net.maps.del_port(ifindex)?;
                self.net_reslot(None, Some(net_port_slot(ifindex)))?;
            }
        }
        Ok(())
    }

    /// With `cleanup`: the routes, neighbours and NAT rules of every
    /// network (maps and links go with the pins).
    pub(super) async fn net_cleanup(&mut self) -> Result<(), DataplaneError> {
        let keys: Vec<(u32, Ipv4Addr)> = self.net.endpoints.keys().copied().collect();
        for (vni, ip) in keys {
            self.net_del_endpoint(vni, ip).await?;
        }
        let vnis: Vec<u32> = self.net.networks.keys().copied().collect();
        for vni in vnis {
            self.net_del_network(vni).await?;
        }
        Ok(())
    }

    /// Makes the shared firewall's network rules (MASQUERADE `-s subnet !
    /// -d subnet`, FORWARD accepts, for containers behind `ovn…` veths)
    /// match the networks carried now.
    async fn sync_nat(&mut self) -> Result<(), DataplaneError> {
        let rules: BTreeSet<NetworkRules> = self
            .net
            .networks
            .values()
            .map(|n| NetworkRules::veths(n.vni, n.subnet))
            .collect();
        if rules.is_empty() && self.firewall.is_none() {
            return Ok(());
        }
        let fw = self
            .firewall
            .get_or_insert_with(|| Firewall::new(None, None));
        fw.set_networks(rules).await.map(|_| ())
    }
}
