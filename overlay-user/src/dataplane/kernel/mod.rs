//! The kernel dataplane: flannel's VXLAN recipe, configured through rtnetlink.
//!
//! One VXLAN device `ovl.<VNI>` (learning off, MTU = underlay MTU - 50, the
//! configured UDP port, local address = this host's underlay address, MAC =
//! [`overlay_common::vtep_mac`] of this host). Per peer, in this order:
//!
//! 1. a permanent neighbour entry: the peer subnet's network address (".0")
//!    -> the peer's VTEP MAC, on the device;
//! 2. an FDB entry on the device: the peer's VTEP MAC -> its underlay address;
//! 3. a route: the peer subnet via its ".0", on the device, `onlink`.
//!
//! The kernel encapsulates what the route sends into the device with the
//! peer's VTEP MAC as inner destination, and decapsulates what arrives on
//! the port; the decapsulated packets are routed to the bridge like any
//! other (so the host needs `net.ipv4.ip_forward = 1`). Endpoints need no
//! state of ours.
//!
//! Everything of ours hangs off the device: deleting it removes the routes,
//! neighbour and FDB entries with it.
//!
//! The device is bound to the underlay interface, so the kernel deletes it
//! with that interface; the refresh follows the underlay by name
//! (`underlay`): it re-creates the device on the new interface, with the
//! new address, and adds its entries again.
//!
//! The firewall rules the device needs come from the shared
//! [`crate::dataplane::firewall`].
//!
//! Owns: the device ([`device`]), the per-peer entries ([`entries`]),
//! following the underlay, and how netlink answers are read ([`error`]).
//! Must not touch: BPF (pins, programs, maps) and anything above the
//! dataplane.

pub mod device;
pub mod entries;
pub mod error;
pub mod netdev;
mod networks;
mod underlay;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::neighbour::NeighbourState;
use rtnetlink::Handle;

use crate::dataplane::firewall::Firewall;
use crate::dataplane::kernel::device::{
    device_name, ensure_device, link_message, remove_devices, DeviceSpec, VXLAN_OVERHEAD,
};
use crate::dataplane::kernel::entries::{fdb_entries, Entries};
use crate::dataplane::kernel::error::{is_missing, netlink_failure, request};
use crate::dataplane::{Dataplane, DataplaneError};
use crate::model::config::Config;
use crate::model::endpoint::EndpointSpec;
use crate::model::overlay_network::{NetEndpointSpec, NetworkSpec};
use crate::model::peer::PeerSpec;
use crate::model::status::{Mode, Stats};
use crate::model::validation::format_mac;
use crate::sys::netlink;

/// What one peer put in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Installed {
    /// The peer subnet's network address: the route's on-link gateway and the neighbour's key.
    gateway: Ipv4Addr,
    /// The peer's VTEP MAC (neighbour entry's MAC, FDB entry's key).
    vtep_mac: [u8; 6],
    /// The peer's underlay address (FDB entry's destination).
    underlay_ip: Ipv4Addr,
}

impl Installed {
    fn of(peer: &PeerSpec, vni: u32) -> Self {
        Installed {
            gateway: peer.subnet.network(),
            vtep_mac: peer
                .vtep_mac
                .unwrap_or_else(|| overlay_common::vtep_mac(peer.underlay_ip.octets(), vni)),
            underlay_ip: peer.underlay_ip,
        }
    }
}

/// The kernel implementation of [`Dataplane`].
pub struct KernelDataplane {
    handle: Handle,
    /// The underlay interface's name, followed by the refresh.
    underlay: String,
    /// `underlay_ip` of the config: when set, the device's local address
    /// does not follow the underlay's.
    pinned_ip: Option<Ipv4Addr>,
    dev: DeviceSpec,
    /// The device's ifindex now.
    index: u32,
    peers: BTreeMap<Ipv4Net, Installed>,
    /// Device counters as of the last [`Dataplane::refresh`] (or change).
    stats: Stats,
    /// FORWARD rules for the device, VXLAN accepted only from the peers,
    /// the overlay networks' NAT and isolation.
    firewall: Firewall,
    /// The overlay networks carried, by VNI ([`networks`]).
    networks: BTreeMap<u32, netdev::Network>,
    /// When the devices of networks an earlier run left (and nobody added
    /// again) are removed; `None` once done.
    stale_networks_at: Option<std::time::Instant>,
}

/// How long after the start networks left by an earlier run may be added
/// again before their devices are removed.
pub const STALE_NETWORK_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

impl KernelDataplane {
    /// Creates (or takes over) the VXLAN device for `cfg`, with this host's
    /// underlay address `local_ip`. Peers left on the device by an earlier
    /// run stay until the first [`Dataplane::refresh`] after the agent has
    /// re-added the current ones; then whatever is not a peer any more goes.
    pub async fn start(cfg: &Config, local_ip: Ipv4Addr) -> Result<Self, DataplaneError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(DataplaneError::Connect)?;
        tokio::spawn(conn);
        let underlay = netlink::link_by_name(&handle, &cfg.underlay_interface)
            .await
            .map_err(|e| DataplaneError::Interface {
                name: cfg.underlay_interface.clone(),
                reason: e.to_string(),
            })?;
        if underlay.mtu <= VXLAN_OVERHEAD + 68 {
            return Err(DataplaneError::Interface {
                name: underlay.name,
                reason: format!("MTU {} leaves no room for VXLAN", underlay.mtu),
            });
        }
        match std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward") {
            Ok(v) if v.trim() == "1" => {}
            Ok(_) => log::warn!(
                "net.ipv4.ip_forward is 0: the kernel will not forward between {} and the \
                 containers; set it to 1",
                device_name(cfg.vni)
            ),
            Err(e) => log::debug!("reading net.ipv4.ip_forward: {e}"),
        }
        let dev = DeviceSpec {
            name: device_name(cfg.vni),
            vni: cfg.vni,
            port: cfg.vxlan_port,
            local_ip,
            underlay_index: underlay.index,
            mtu: underlay.mtu - VXLAN_OVERHEAD,
            mac: overlay_common::vtep_mac(local_ip.octets(), cfg.vni),
            proxy: false,
        };
        // Devices of ours for another VNI are left from an earlier configuration.
        remove_devices(&handle, Some(&dev.name)).await?;
        let index = ensure_device(&handle, &dev).await?;
        let firewall = Firewall::new(Some(dev.name.clone()), Some(cfg.vxlan_port));
        match firewall.install().await {
            Ok(0) => {}
            Ok(n) => log::info!("firewall: {n} rule(s) added for {}", dev.name),
            Err(e) => log::warn!("firewall: {e}"),
        }
        let mut dp = KernelDataplane {
            handle,
            underlay: cfg.underlay_interface.clone(),
            pinned_ip: cfg.underlay_ip,
            dev,
            index,
            peers: BTreeMap::new(),
            stats: Stats::default(),
            firewall,
            networks: BTreeMap::new(),
            stale_networks_at: Some(std::time::Instant::now() + STALE_NETWORK_GRACE),
        };
        dp.read_stats().await;
        Ok(dp)
    }

    /// The device's name.
    pub fn device(&self) -> &str {
        &self.dev.name
    }

    /// The entries on the device.
    fn entries(&self) -> Entries<'_> {
        Entries {
            handle: &self.handle,
            index: self.index,
            dev: &self.dev.name,
        }
    }

    /// Makes the VXLAN filter accept the peer hosts and the hosts of the
    /// networks' remote endpoints now; a failure is logged (the keeper
    /// retries), the entries stay.
    async fn sync_filter(&self) {
        let mut hosts = self.endpoint_hosts();
        hosts.extend(self.peers.values().map(|p| p.underlay_ip));
        if let Err(e) = self.firewall.set_peers(hosts).await {
            log::warn!("firewall: {e}");
        }
    }

    /// The FDB entries wanted now: VTEP MAC -> underlay address.
    fn wanted_fdb(&self) -> BTreeMap<[u8; 6], Ipv4Addr> {
        self.peers
            .values()
            .map(|p| (p.vtep_mac, p.underlay_ip))
            .collect()
    }

    /// Makes the kernel's routes, neighbour and FDB entries on the device
    /// match the peers exactly: adds what is missing, removes what is not ours.
    async fn sync(&mut self) -> Result<(), DataplaneError> {
        // Neighbours first, then FDB, then routes (as in add_peer); removal the other way round.
        let neighbours = netlink::neighbours_v4(&self.handle, self.index)
            .await
            .map_err(|e| DataplaneError::Interface {
                name: self.dev.name.clone(),
                reason: e.to_string(),
            })?;
        let have_neigh: BTreeMap<Ipv4Addr, Option<[u8; 6]>> = neighbours
            .iter()
            .filter(|n| n.state == NeighbourState::Permanent)
            .map(|n| (n.ip, n.mac))
            .collect();
        for p in self.peers.values() {
            if have_neigh.get(&p.gateway) != Some(&Some(p.vtep_mac)) {
                self.entries().add_neighbour(p.gateway, p.vtep_mac).await?;
            }
        }
        let have_fdb = fdb_entries(&self.handle, self.index).await?;
        let wanted_fdb = self.wanted_fdb();
        for (mac, dst) in &wanted_fdb {
            if !have_fdb.contains(&(*mac, *dst)) {
                self.entries().add_fdb(*mac, *dst).await?;
            }
        }
        // A foreign route in the way is reported once the rest is in order.
        let mut refused = None;
        let routes = self.entries().our_routes().await?;
        for (subnet, p) in &self.peers {
            if !routes
                .iter()
                .any(|(r, _)| r.dst == *subnet && r.gateway == Some(p.gateway))
            {
                match self.entries().add_route(*subnet, p.gateway).await {
                    Err(e @ DataplaneError::ForeignRoute { .. }) => refused = refused.or(Some(e)),
                    other => other?,
                }
            }
        }
        for (route, msg) in routes {
            let net = route.dst;
            let ours = self
                .peers
                .get(&net)
                .is_some_and(|p| route.gateway == Some(p.gateway));
            if !ours {
                log::info!("removing stale route {net} dev {}", self.dev.name);
                if let Err(e) = self.handle.route().del(msg).execute().await {
                    if !is_missing(&e) {
                        return Err(request(format!("deleting route {net}"))(e));
                    }
                }
            }
        }
        for (mac, dst) in have_fdb {
            if wanted_fdb.get(&mac) != Some(&dst) {
                log::info!(
                    "removing stale FDB entry {} dst {dst} on {}",
                    format_mac(&mac),
                    self.dev.name
                );
                self.entries().del_fdb(mac, dst).await?;
            }
        }
        let gateways: BTreeSet<Ipv4Addr> = self.peers.values().map(|p| p.gateway).collect();
        for ip in have_neigh.keys() {
            if !gateways.contains(ip) {
                log::info!("removing stale neighbour {ip} on {}", self.dev.name);
                self.entries().del_neighbour(*ip).await?;
            }
        }
        refused.map_or(Ok(()), Err)
    }

    /// Updates the cached counters from the device's link statistics.
    async fn read_stats(&mut self) {
        let msg = match link_message(&self.handle, &self.dev.name).await {
            Ok(Some(msg)) => msg,
            Ok(None) => return,
            Err(e) => {
                log::debug!("reading counters of {}: {e}", self.dev.name);
                return;
            }
        };
        for a in msg.attributes {
            if let LinkAttribute::Stats64(s) = a {
                let c = &mut self.stats.counters;
                c.insert("vxlan_rx_packets".into(), s.rx_packets);
                c.insert("vxlan_rx_bytes".into(), s.rx_bytes);
                c.insert("vxlan_tx_packets".into(), s.tx_packets);
                c.insert("vxlan_tx_bytes".into(), s.tx_bytes);
            }
        }
    }
}

impl KernelDataplane {
    /// Neighbour entry, FDB entry and route for `peer`.
    async fn install_peer(&mut self, peer: &PeerSpec) -> Result<(), DataplaneError> {
        let new = Installed::of(peer, self.dev.vni);
        // A foreign route to the subnet stays, and the peer is refused before anything changes.
        self.entries().check_no_foreign_route(peer.subnet).await?;
        // Neighbour, FDB entry, route: by the time the route sends a packet
        // into the device, the kernel knows where to send it.
        self.entries()
            .add_neighbour(new.gateway, new.vtep_mac)
            .await?;
        self.entries()
            .add_fdb(new.vtep_mac, new.underlay_ip)
            .await?;
        self.entries().add_route(peer.subnet, new.gateway).await?;
        let old = self.peers.insert(peer.subnet, new);
        // A replaced peer's FDB entry goes unless another peer still uses it.
        if let Some(old) = old {
            if old.vtep_mac != new.vtep_mac && !self.wanted_fdb().contains_key(&old.vtep_mac) {
                self.entries()
                    .del_fdb(old.vtep_mac, old.underlay_ip)
                    .await?;
            }
        }
        Ok(())
    }

    /// Removes what [`KernelDataplane::install_peer`] made for `subnet`.
    async fn remove_peer(&mut self, subnet: Ipv4Net) -> Result<(), DataplaneError> {
        let Some(old) = self.peers.get(&subnet).copied() else {
            // Not a peer now (e.g. left by an earlier run): remove our route anyway.
            self.entries().del_route(subnet).await?;
            return Ok(());
        };
        self.entries().del_route(subnet).await?;
        self.peers.remove(&subnet);
        match self.wanted_fdb().get(&old.vtep_mac) {
            None => {
                self.entries()
                    .del_fdb(old.vtep_mac, old.underlay_ip)
                    .await?
            }
            // Another peer with the same MAC but another address: its entry wins.
            Some(dst) if *dst != old.underlay_ip => {
                self.entries().add_fdb(old.vtep_mac, *dst).await?
            }
            Some(_) => {}
        }
        self.entries().del_neighbour(old.gateway).await?;
        Ok(())
    }

    /// Follows the underlay (re-created, new address, new MTU), re-creates
    /// a vanished device and makes its entries match the peers.
    async fn resync(&mut self) -> Result<(), DataplaneError> {
        let wanted = self.wanted_device().await?;
        // The device may have been deleted (with the underlay) or replaced behind our back.
        let index = link_message(&self.handle, &self.dev.name)
            .await?
            .map(|m| m.header.index);
        if wanted != self.dev {
            log::info!(
                "underlay {} changed (ifindex {}, address {}, mtu {}); updating {} with {} peers",
                self.underlay,
                wanted.underlay_index,
                wanted.local_ip,
                wanted.mtu + VXLAN_OVERHEAD,
                self.dev.name,
                self.peers.len()
            );
            self.dev = wanted;
            self.index = ensure_device(&self.handle, &self.dev).await?;
        } else if index != Some(self.index) {
            log::warn!(
                "{} {}; recreating it with {} peers",
                self.dev.name,
                if index.is_some() {
                    "was replaced"
                } else {
                    "disappeared"
                },
                self.peers.len()
            );
            self.index = ensure_device(&self.handle, &self.dev).await?;
        }
        self.sync().await?;
        self.read_stats().await;
        Ok(())
    }

    /// With `cleanup`, deletes our devices (with their entries): the
    /// per-host one and every network's.
    async fn remove_all(&mut self, cleanup: bool) -> Result<(), DataplaneError> {
        if cleanup {
            // Routes, neighbour and FDB entries go with the device.
            remove_devices(&self.handle, None).await?;
            self.remove_other_networks(true).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Dataplane for KernelDataplane {
    fn mode(&self) -> Mode {
        Mode::Kernel
    }

    async fn add_peer(&mut self, peer: &PeerSpec) -> Result<(), DataplaneError> {
        self.install_peer(peer).await.map_err(netlink_failure)?;
        self.sync_filter().await;
        Ok(())
    }

    async fn del_peer(&mut self, subnet: Ipv4Net) -> Result<(), DataplaneError> {
        self.remove_peer(subnet).await.map_err(netlink_failure)?;
        self.sync_filter().await;
        Ok(())
    }

    async fn add_endpoint(&mut self, _ep: &EndpointSpec) -> Result<(), DataplaneError> {
        // The kernel routes decapsulated packets to the bridge by itself.
        Ok(())
    }

    async fn del_endpoint(&mut self, _ip: Ipv4Addr) -> Result<(), DataplaneError> {
        Ok(())
    }

    async fn add_network(&mut self, net: &NetworkSpec) -> Result<(), DataplaneError> {
        self.install_network(net).await.map_err(netlink_failure)
    }

    async fn del_network(&mut self, vni: u32) -> Result<(), DataplaneError> {
        self.remove_network(vni).await.map_err(netlink_failure)
    }

    async fn add_net_endpoint(&mut self, ep: &NetEndpointSpec) -> Result<(), DataplaneError> {
        self.install_net_endpoint(ep).await.map_err(netlink_failure)
    }

    async fn del_net_endpoint(&mut self, vni: u32, ip: Ipv4Addr) -> Result<(), DataplaneError> {
        self.remove_net_endpoint(vni, ip)
            .await
            .map_err(netlink_failure)
    }

    fn stats(&self) -> Result<Stats, DataplaneError> {
        Ok(self.stats.clone())
    }

    async fn refresh(&mut self) -> Result<(), DataplaneError> {
        // The agent has re-added its peers by the first refresh: from now on
        // the filter accepts no other host.
        self.firewall.keep();
        let host = self.resync().await.map_err(netlink_failure);
        let nets = self.resync_networks().await.map_err(netlink_failure);
        if self
            .stale_networks_at
            .is_some_and(|t| std::time::Instant::now() >= t)
        {
            self.stale_networks_at = None;
            if let Err(e) = self.remove_other_networks(false).await {
                log::warn!("removing networks left by an earlier run: {e}");
            }
        }
        host.and(nets)
    }

    async fn shutdown(&mut self, cleanup: bool) -> Result<(), DataplaneError> {
        self.remove_all(cleanup).await.map_err(netlink_failure)?;
        if cleanup {
            self.firewall.remove().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_entries_follow_the_rules() {
        let peer = PeerSpec {
            subnet: "10.103.200.0/24".parse().unwrap(),
            underlay_ip: Ipv4Addr::new(192, 168, 56, 5),
            vtep_mac: None,
        };
        let i = Installed::of(&peer, 42);
        assert_eq!(i.gateway, Ipv4Addr::new(10, 103, 200, 0));
        assert_eq!(i.vtep_mac, [2, 42, 192, 168, 56, 5]);
        let explicit = PeerSpec {
            vtep_mac: Some([0x0e, 1, 2, 3, 4, 5]),
            ..peer
        };
        assert_eq!(Installed::of(&explicit, 42).vtep_mac, [0x0e, 1, 2, 3, 4, 5]);
    }
}
