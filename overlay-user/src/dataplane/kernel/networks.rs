//! Overlay networks in kernel mode (issue 12), Docker's own overlay layout
//! on the host, per VNI:
//!
//! - a bridge `ovb<VNI>` holding the gateway address and prefix (so the
//!   host answers the gateway, and routes what leaves the network, NATed by
//!   the shared firewall);
//! - a VXLAN device `ovx<VNI>` (id VNI, the cluster's `vxlan_port`, local =
//!   this host's underlay address, bound to the underlay, learning off,
//!   `proxy`, MTU = underlay - 50) enslaved to the bridge;
//! - each local endpoint's host-side veth enslaved to the bridge;
//! - each remote endpoint as a static FDB entry `MAC dst HOST` and a
//!   permanent neighbour entry `IP lladdr MAC` on `ovx<VNI>`, so ARP is
//!   answered by the device (never flooded over the underlay) and frames
//!   carry the containers' real MACs to the right host, as a BPF host
//!   sends and expects them;
//! - the firewall's per-network rules (NAT out, isolation).
//!
//! Removal takes exactly that away: the devices (their entries with them),
//! and the veths leave the bridge (they are the container's, not ours).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use netlink_packet_route::neighbour::NeighbourState;

use crate::dataplane::firewall::NetworkRules;
use crate::dataplane::kernel::device::{ensure_device, link_message, DeviceSpec};
use crate::dataplane::kernel::entries::{fdb_entries, main_routes, Entries};
use crate::dataplane::kernel::error::{is_missing, request};
use crate::dataplane::kernel::netdev::{
    bridge_name, ensure_bridge, network_mac, remove_network_device, remove_network_devices,
    set_gateway, vxlan_name, LocalPort, Network,
};
use crate::dataplane::kernel::KernelDataplane;
use crate::dataplane::DataplaneError;
use crate::model::overlay_network::{NetEndpointSpec, NetLocation, NetworkSpec};
use crate::model::validation::format_mac;
use crate::sys::netlink;

impl KernelDataplane {
    /// The VXLAN device of network `vni` for the underlay as it is now.
    fn network_device(&self, vni: u32) -> DeviceSpec {
        DeviceSpec {
            name: vxlan_name(vni),
            vni,
            mac: network_mac(self.dev.local_ip, vni),
            proxy: true,
            ..self.dev.clone()
        }
    }

    /// The firewall's rules for the networks now.
    pub(super) async fn sync_network_rules(&self) {
        let rules = self
            .networks
            .values()
            .map(|n| NetworkRules::bridge(n.spec.vni, n.spec.subnet, &bridge_name(n.spec.vni)))
            .collect();
        if let Err(e) = self.firewall.set_networks(rules).await {
            log::warn!("firewall: {e}");
        }
    }

    /// The hosts of the networks' remote endpoints (accepted by the VXLAN filter).
    pub(super) fn endpoint_hosts(&self) -> BTreeSet<Ipv4Addr> {
        self.networks
            .values()
            .flat_map(|n| n.remotes.values().map(|(_, host)| *host))
            .collect()
    }

    /// Creates (or takes over) the bridge and VXLAN device of `spec`.
    async fn make_devices(
        &self,
        spec: &NetworkSpec,
    ) -> Result<(u32, DeviceSpec, u32), DataplaneError> {
        let vxlan = self.network_device(spec.vni);
        let bname = bridge_name(spec.vni);
        let bridge = ensure_bridge(&self.handle, &bname, vxlan.mac).await?;
        set_gateway(
            &self.handle,
            bridge,
            &bname,
            spec.gateway,
            spec.subnet.prefix_len(),
        )
        .await?;
        let vxlan_index = ensure_device(&self.handle, &vxlan).await?;
        self.handle
            .link()
            .set(vxlan_index)
            .controller(bridge)
            .up()
            .execute()
            .await
            .map_err(request(format!("enslaving {} to {bname}", vxlan.name)))?;
        Ok((bridge, vxlan, vxlan_index))
    }

    /// [`crate::dataplane::Dataplane::add_network`].
    pub(super) async fn install_network(
        &mut self,
        spec: &NetworkSpec,
    ) -> Result<(), DataplaneError> {
        if let Some(n) = self.networks.get(&spec.vni) {
            if n.spec == *spec {
                return Ok(());
            }
        }
        let (bridge, vxlan, vxlan_index) = self.make_devices(spec).await?;
        log::info!(
            "network {} (vni {}, {}, gateway {}) on {} and {}",
            spec.name,
            spec.vni,
            spec.subnet,
            spec.gateway,
            bridge_name(spec.vni),
            vxlan.name
        );
        let old = self.networks.remove(&spec.vni);
        let mut net = Network {
            spec: spec.clone(),
            bridge,
            vxlan,
            vxlan_index,
            locals: BTreeMap::new(),
            remotes: BTreeMap::new(),
        };
        // The same VNI again (another subnet or gateway): its endpoints stay.
        if let Some(old) = old {
            net.locals = old.locals;
            net.remotes = old.remotes;
        }
        self.networks.insert(spec.vni, net);
        self.sync_network_rules().await;
        Ok(())
    }

    /// [`crate::dataplane::Dataplane::del_network`].
    pub(super) async fn remove_network(&mut self, vni: u32) -> Result<(), DataplaneError> {
        // The veths leave the bridge with it; the FDB and neighbour entries
        // go with the VXLAN device. Not carried now (e.g. left by an earlier
        // run): its devices go anyway.
        remove_network_device(&self.handle, vni).await?;
        if self.networks.remove(&vni).is_some() {
            log::info!("network with vni {vni} removed");
        }
        self.sync_network_rules().await;
        self.sync_filter().await;
        Ok(())
    }

    fn network_mut(&mut self, vni: u32, ip: Ipv4Addr) -> Result<&mut Network, DataplaneError> {
        self.networks.get_mut(&vni).ok_or_else(|| {
            DataplaneError::Other(format!(
                "endpoint {ip} on vni {vni}: no network with vni {vni} on this host; add the network first"
            ))
        })
    }

    /// [`crate::dataplane::Dataplane::add_net_endpoint`].
    pub(super) async fn install_net_endpoint(
        &mut self,
        ep: &NetEndpointSpec,
    ) -> Result<(), DataplaneError> {
        self.network_mut(ep.vni, ep.ip)?;
        match &ep.location {
            NetLocation::Local { ifname, ifindex } => {
                let port = LocalPort {
                    ifname: ifname.clone(),
                    ifindex: *ifindex,
                };
                let bridge = self.networks[&ep.vni].bridge;
                self.enslave(&port, bridge, true).await?;
                self.forget_remote(ep.vni, ep.ip).await?;
                // The same address behind another veth (a restarted container): the old one leaves.
                let old = self
                    .network_mut(ep.vni, ep.ip)?
                    .locals
                    .insert(ep.ip, port.clone());
                if let Some(old) = old.filter(|o| *o != port) {
                    self.release(&old, bridge).await?;
                }
            }
            NetLocation::Remote { host } => {
                let net = self.network_mut(ep.vni, ep.ip)?;
                let bridge = net.bridge;
                if let Some(port) = net.locals.remove(&ep.ip) {
                    self.release(&port, bridge).await?;
                }
                let net = &self.networks[&ep.vni];
                let old = net.remotes.get(&ep.ip).copied();
                // FDB entry first: by the time ARP is answered, the frame has a way.
                net.entries(&self.handle).add_fdb(ep.mac, *host).await?;
                net.entries(&self.handle)
                    .add_neighbour(ep.ip, ep.mac)
                    .await?;
                let net = self.network_mut(ep.vni, ep.ip)?;
                net.remotes.insert(ep.ip, (ep.mac, *host));
                if let Some((mac, dst)) = old {
                    self.drop_unused_fdb(ep.vni, mac, dst).await?;
                }
                self.sync_filter().await;
            }
        }
        Ok(())
    }

    /// [`crate::dataplane::Dataplane::del_net_endpoint`].
    pub(super) async fn remove_net_endpoint(
        &mut self,
        vni: u32,
        ip: Ipv4Addr,
    ) -> Result<(), DataplaneError> {
        let Some(net) = self.networks.get_mut(&vni) else {
            return Ok(());
        };
        let bridge = net.bridge;
        if let Some(port) = net.locals.remove(&ip) {
            self.release(&port, bridge).await?;
        }
        self.forget_remote(vni, ip).await?;
        self.sync_filter().await;
        Ok(())
    }

    /// Removes the remote endpoint `ip` of network `vni`, if any.
    async fn forget_remote(&mut self, vni: u32, ip: Ipv4Addr) -> Result<(), DataplaneError> {
        let Some(net) = self.networks.get_mut(&vni) else {
            return Ok(());
        };
        let Some((mac, dst)) = net.remotes.remove(&ip) else {
            return Ok(());
        };
        let net = &self.networks[&vni];
        net.entries(&self.handle).del_neighbour(ip).await?;
        self.drop_unused_fdb(vni, mac, dst).await
    }

    /// Deletes the FDB entry `mac` -> `dst` unless a remote endpoint still
    /// uses it; one with the same MAC on another host gets its entry back.
    async fn drop_unused_fdb(
        &self,
        vni: u32,
        mac: [u8; 6],
        dst: Ipv4Addr,
    ) -> Result<(), DataplaneError> {
        let net = &self.networks[&vni];
        match net.wanted_fdb().get(&mac) {
            None => net.entries(&self.handle).del_fdb(mac, dst).await,
            Some(now) if *now != dst => net.entries(&self.handle).add_fdb(mac, *now).await,
            Some(_) => Ok(()),
        }
    }

    /// Puts a local endpoint's veth into `bridge` and up. With `clean`,
    /// routes and permanent neighbours on it (the BPF dataplane's, from a
    /// run in that mode) go: in a bridge, the port carries no IP of its own.
    async fn enslave(
        &self,
        port: &LocalPort,
        bridge: u32,
        clean: bool,
    ) -> Result<(), DataplaneError> {
        let link = netlink::link_by_index(&self.handle, port.ifindex)
            .await
            .map_err(|e| DataplaneError::Interface {
                name: port.ifname.clone(),
                reason: format!("ifindex {}: {e}", port.ifindex),
            })?;
        if link.name != port.ifname {
            return Err(DataplaneError::Interface {
                name: port.ifname.clone(),
                reason: format!(
                    "ifindex {} is {}, not {}; expected the container's host-side veth",
                    port.ifindex, link.name, port.ifname
                ),
            });
        }
        if clean {
            self.clean_port(port).await?;
        }
        if link.master != Some(bridge) || !link.up {
            self.handle
                .link()
                .set(port.ifindex)
                .controller(bridge)
                .up()
                .execute()
                .await
                .map_err(request(format!(
                    "enslaving {} to its network's bridge",
                    port.ifname
                )))?;
        }
        Ok(())
    }

    /// Removes the /32 routes and permanent neighbours on a local endpoint's veth.
    async fn clean_port(&self, port: &LocalPort) -> Result<(), DataplaneError> {
        for (route, msg) in main_routes(&self.handle).await? {
            if route.oif == Some(port.ifindex) && route.dst.prefix_len() == 32 {
                if let Err(e) = self.handle.route().del(msg).execute().await {
                    if !is_missing(&e) {
                        return Err(request(format!(
                            "deleting route {} dev {}",
                            route.dst, port.ifname
                        ))(e));
                    }
                }
            }
        }
        let on_port = Entries {
            handle: &self.handle,
            index: port.ifindex,
            dev: &port.ifname,
        };
        let neighbours = netlink::neighbours_v4(&self.handle, port.ifindex)
            .await
            .map_err(|e| DataplaneError::Netlink(e.to_string()))?;
        for n in neighbours
            .iter()
            .filter(|n| n.state == NeighbourState::Permanent)
        {
            on_port.del_neighbour(n.ip).await?;
        }
        Ok(())
    }

    /// Takes a local endpoint's veth out of its network's `bridge`, if it
    /// is still there.
    async fn release(&self, port: &LocalPort, bridge: u32) -> Result<(), DataplaneError> {
        let Ok(link) = netlink::link_by_index(&self.handle, port.ifindex).await else {
            return Ok(()); // gone with its container
        };
        if link.name != port.ifname || link.master != Some(bridge) {
            return Ok(());
        }
        match self
            .handle
            .link()
            .set(port.ifindex)
            .nocontroller()
            .execute()
            .await
        {
            Err(e) if !is_missing(&e) => Err(request(format!("releasing {}", port.ifname))(e)),
            _ => Ok(()),
        }
    }

    /// Re-creates a network's vanished or outdated devices (the underlay
    /// changed) with its endpoints, and makes the entries on its VXLAN
    /// device match the remote endpoints exactly.
    pub(super) async fn resync_networks(&mut self) -> Result<(), DataplaneError> {
        let vnis: Vec<u32> = self.networks.keys().copied().collect();
        for vni in vnis {
            let net = &self.networks[&vni];
            let bridge = link_message(&self.handle, &bridge_name(vni))
                .await?
                .map(|m| m.header.index);
            let vxlan = link_message(&self.handle, &net.vxlan.name)
                .await?
                .map(|m| m.header.index);
            let wanted = self.network_device(vni);
            if bridge != Some(net.bridge) || vxlan != Some(net.vxlan_index) || wanted != net.vxlan {
                log::warn!(
                    "network vni {vni}: {} or {} vanished or the underlay changed; recreating them",
                    bridge_name(vni),
                    net.vxlan.name
                );
                let spec = net.spec.clone();
                let (b, v, vi) = self.make_devices(&spec).await?;
                let net = self.networks.get_mut(&vni).expect("listed");
                (net.bridge, net.vxlan, net.vxlan_index) = (b, v, vi);
            }
            let net = &self.networks[&vni];
            for port in net.locals.values() {
                if let Err(e) = self.enslave(port, net.bridge, false).await {
                    log::debug!("network vni {vni}: {e}");
                }
            }
            self.sync_network_entries(vni).await?;
        }
        Ok(())
    }

    /// Adds missing FDB and neighbour entries on network `vni`'s VXLAN
    /// device and removes those of no remote endpoint.
    async fn sync_network_entries(&self, vni: u32) -> Result<(), DataplaneError> {
        let net = &self.networks[&vni];
        let e = net.entries(&self.handle);
        let have_fdb = fdb_entries(&self.handle, net.vxlan_index).await?;
        let wanted_fdb = net.wanted_fdb();
        for (mac, dst) in &wanted_fdb {
            if !have_fdb.contains(&(*mac, *dst)) {
                e.add_fdb(*mac, *dst).await?;
            }
        }
        let neighbours = netlink::neighbours_v4(&self.handle, net.vxlan_index)
            .await
            .map_err(|e| DataplaneError::Netlink(e.to_string()))?;
        let have: BTreeMap<Ipv4Addr, Option<[u8; 6]>> = neighbours
            .iter()
            .filter(|n| n.state == NeighbourState::Permanent)
            .map(|n| (n.ip, n.mac))
            .collect();
        for (ip, (mac, _)) in &net.remotes {
            if have.get(ip) != Some(&Some(*mac)) {
                e.add_neighbour(*ip, *mac).await?;
            }
        }
        for ip in have.keys().filter(|ip| !net.remotes.contains_key(ip)) {
            log::info!("removing stale neighbour {ip} on {}", net.vxlan.name);
            e.del_neighbour(*ip).await?;
        }
        for (mac, dst) in have_fdb {
            if wanted_fdb.get(&mac) != Some(&dst) {
                log::info!(
                    "removing stale FDB entry {} dst {dst} on {}",
                    format_mac(&mac),
                    net.vxlan.name
                );
                e.del_fdb(mac, dst).await?;
            }
        }
        Ok(())
    }

    /// Deletes the devices of networks that are not carried now (left by
    /// an earlier run); with `cleanup`, of every network.
    pub(super) async fn remove_other_networks(&self, cleanup: bool) -> Result<(), DataplaneError> {
        let keep = if cleanup {
            BTreeSet::new()
        } else {
            self.networks.keys().copied().collect()
        };
        remove_network_devices(&self.handle, &keep).await?;
        Ok(())
    }
}
