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

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlag, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteFlag, RouteMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, IpVersion};

use crate::config::{format_mac, Config};
use crate::dataplane::{Dataplane, DataplaneError, EndpointSpec, Mode, PeerSpec, Stats};
use crate::netlink;

/// Prefix of our VXLAN devices' names; the VNI follows.
pub const DEVICE_PREFIX: &str = "ovl.";

/// VXLAN over IPv4 overhead: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
pub const VXLAN_OVERHEAD: u32 = 50;

/// The name of our VXLAN device for `vni`, e.g. `ovl.42`.
pub fn device_name(vni: u32) -> String {
    format!("{DEVICE_PREFIX}{vni}")
}

/// Whether `name` is one of our device names (`ovl.` and a decimal VNI).
pub fn is_device_name(name: &str) -> bool {
    name.strip_prefix(DEVICE_PREFIX)
        .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

/// Errors while setting up or changing the kernel dataplane.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    /// An interface the configuration names does not exist or is unusable.
    #[error("interface {name}: {reason}")]
    Interface {
        /// Its name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The kernel refused a netlink request.
    #[error("{what}: {source}")]
    Request {
        /// What was asked, e.g. "adding the route to 10.103.200.0/24".
        what: String,
        /// What rtnetlink reported (boxed: it embeds a whole netlink message).
        #[source]
        source: Box<rtnetlink::Error>,
    },
}

impl From<KernelError> for DataplaneError {
    fn from(e: KernelError) -> Self {
        DataplaneError::Netlink(e.to_string())
    }
}

fn request(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> KernelError {
    let what = what.into();
    move |source| KernelError::Request {
        what,
        source: Box::new(source),
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

/// "No such entry" answers to a delete (or a lookup): success for an idempotent delete.
fn is_missing(e: &rtnetlink::Error) -> bool {
    matches!(errno(e), Some(libc::ENOENT | libc::ESRCH | libc::ENODEV))
}

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

/// The settings the device is made with.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DeviceSpec {
    name: String,
    vni: u32,
    port: u16,
    local_ip: Ipv4Addr,
    underlay_index: u32,
    mtu: u32,
    mac: [u8; 6],
}

/// The kernel implementation of [`Dataplane`].
pub struct KernelDataplane {
    handle: Handle,
    dev: DeviceSpec,
    /// The device's ifindex now.
    index: u32,
    peers: BTreeMap<Ipv4Net, Installed>,
    /// Device counters as of the last [`Dataplane::refresh`] (or change).
    stats: Stats,
}

impl KernelDataplane {
    /// Creates (or takes over) the VXLAN device for `cfg`, with this host's
    /// underlay address `local_ip`. Peers left on the device by an earlier
    /// run stay until the first [`Dataplane::refresh`] after the agent has
    /// re-added the current ones; then whatever is not a peer any more goes.
    pub async fn start(cfg: &Config, local_ip: Ipv4Addr) -> Result<Self, KernelError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(KernelError::Connect)?;
        tokio::spawn(conn);
        let underlay = netlink::link_by_name(&handle, &cfg.underlay_interface)
            .await
            .map_err(|e| KernelError::Interface {
                name: cfg.underlay_interface.clone(),
                reason: e.to_string(),
            })?;
        if underlay.mtu <= VXLAN_OVERHEAD + 68 {
            return Err(KernelError::Interface {
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
        };
        // Devices of ours for another VNI are left from an earlier configuration.
        remove_devices(&handle, Some(&dev.name)).await?;
        let index = ensure_device(&handle, &dev).await?;
        let mut dp = KernelDataplane {
            handle,
            dev,
            index,
            peers: BTreeMap::new(),
            stats: Stats::default(),
        };
        dp.read_stats().await;
        Ok(dp)
    }

    /// The device's name.
    pub fn device(&self) -> &str {
        &self.dev.name
    }

    async fn add_neighbour(&self, p: &Installed) -> Result<(), KernelError> {
        self.handle
            .neighbours()
            .add(self.index, IpAddr::V4(p.gateway))
            .link_local_address(&p.vtep_mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(request(format!(
                "adding neighbour {} -> {} on {}",
                p.gateway,
                format_mac(&p.vtep_mac),
                self.dev.name
            )))
    }

    async fn del_neighbour(&self, gateway: Ipv4Addr) -> Result<(), KernelError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = self.index;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                gateway,
            )));
        match self.handle.neighbours().del(msg).execute().await {
            Err(e) if !is_missing(&e) => Err(request(format!(
                "deleting neighbour {gateway} on {}",
                self.dev.name
            ))(e)),
            _ => Ok(()),
        }
    }

    async fn add_fdb(&self, mac: [u8; 6], dst: Ipv4Addr) -> Result<(), KernelError> {
        self.handle
            .neighbours()
            .add_bridge(self.index, &mac)
            .destination(IpAddr::V4(dst))
            .flags(vec![NeighbourFlag::Own])
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(request(format!(
                "adding FDB entry {} dst {dst} on {}",
                format_mac(&mac),
                self.dev.name
            )))
    }

    async fn del_fdb(&self, mac: [u8; 6], dst: Ipv4Addr) -> Result<(), KernelError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = self.index;
        msg.header.flags = vec![NeighbourFlag::Own];
        msg.header.state = NeighbourState::Permanent;
        msg.attributes
            .push(NeighbourAttribute::LinkLocalAddress(mac.to_vec()));
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
        match self.handle.neighbours().del(msg).execute().await {
            Err(e) if !is_missing(&e) => Err(request(format!(
                "deleting FDB entry {} dst {dst} on {}",
                format_mac(&mac),
                self.dev.name
            ))(e)),
            _ => Ok(()),
        }
    }

    async fn add_route(&self, subnet: Ipv4Net, gateway: Ipv4Addr) -> Result<(), KernelError> {
        let mut req = self
            .handle
            .route()
            .add()
            .v4()
            .destination_prefix(subnet.network(), subnet.prefix_len())
            .gateway(gateway)
            .output_interface(self.index)
            .replace();
        req.message_mut().header.flags.push(RouteFlag::Onlink);
        req.execute().await.map_err(request(format!(
            "adding route {subnet} via {gateway} dev {} onlink",
            self.dev.name
        )))
    }

    /// The IPv4 routes of the main table out of our device.
    async fn our_routes(
        &self,
    ) -> Result<Vec<(Ipv4Net, Option<Ipv4Addr>, RouteMessage)>, KernelError> {
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(IpVersion::V4)
            .execute()
            .try_collect()
            .await
            .map_err(request("dump of IPv4 routes"))?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| {
                let mut oif = None;
                let mut dst = Ipv4Addr::UNSPECIFIED;
                let mut gw = None;
                let mut table = u32::from(m.header.table);
                for a in &m.attributes {
                    match a {
                        RouteAttribute::Oif(i) => oif = Some(*i),
                        RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
                        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(*ip),
                        RouteAttribute::Table(t) => table = *t,
                        _ => {}
                    }
                }
                if oif != Some(self.index) || table != u32::from(RT_TABLE_MAIN) {
                    return None;
                }
                let net = Ipv4Net::new(dst, m.header.destination_prefix_length).ok()?;
                Some((net, gw, m))
            })
            .collect())
    }

    async fn del_route(&self, subnet: Ipv4Net) -> Result<(), KernelError> {
        for (net, _, msg) in self.our_routes().await? {
            if net == subnet {
                if let Err(e) = self.handle.route().del(msg).execute().await {
                    if !is_missing(&e) {
                        return Err(request(format!(
                            "deleting route {subnet} dev {}",
                            self.dev.name
                        ))(e));
                    }
                }
            }
        }
        Ok(())
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
    async fn sync(&mut self) -> Result<(), KernelError> {
        // Neighbours first, then FDB, then routes (as in add_peer); removal the other way round.
        let neighbours = netlink::neighbours_v4(&self.handle, self.index)
            .await
            .map_err(|e| KernelError::Interface {
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
                self.add_neighbour(p).await?;
            }
        }
        let have_fdb = fdb_entries(&self.handle, self.index).await?;
        let wanted_fdb = self.wanted_fdb();
        for (mac, dst) in &wanted_fdb {
            if !have_fdb.contains(&(*mac, *dst)) {
                self.add_fdb(*mac, *dst).await?;
            }
        }
        let routes = self.our_routes().await?;
        for (subnet, p) in &self.peers {
            if !routes
                .iter()
                .any(|(net, gw, _)| net == subnet && *gw == Some(p.gateway))
            {
                self.add_route(*subnet, p.gateway).await?;
            }
        }
        for (net, gw, msg) in routes {
            let ours = self.peers.get(&net).is_some_and(|p| gw == Some(p.gateway));
            if !ours && msg.header.protocol != netlink_packet_route::route::RouteProtocol::Kernel {
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
                self.del_fdb(mac, dst).await?;
            }
        }
        let gateways: BTreeSet<Ipv4Addr> = self.peers.values().map(|p| p.gateway).collect();
        for ip in have_neigh.keys() {
            if !gateways.contains(ip) {
                log::info!("removing stale neighbour {ip} on {}", self.dev.name);
                self.del_neighbour(*ip).await?;
            }
        }
        Ok(())
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

const RT_TABLE_MAIN: u8 = 254;

/// The link message of `name`, if there is such a link.
async fn link_message(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, KernelError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(msg) => Ok(msg),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(request(format!("lookup of link {name}"))(e)),
    }
}

/// The VXLAN settings of a link message; `None` if it is not a VXLAN device.
fn vxlan_settings(msg: &LinkMessage) -> Option<Vec<InfoVxlan>> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => {
            let is_vxlan = infos
                .iter()
                .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vxlan)));
            let data = infos.iter().find_map(|i| match i {
                LinkInfo::Data(InfoData::Vxlan(d)) => Some(d.clone()),
                _ => None,
            });
            is_vxlan.then(|| data.unwrap_or_default())
        }
        _ => None,
    })
}

/// Whether an existing VXLAN device has the settings of `dev` that cannot be changed in place.
fn matches_spec(settings: &[InfoVxlan], dev: &DeviceSpec) -> bool {
    let mut ok = [false; 5];
    for s in settings {
        match s {
            InfoVxlan::Id(v) => ok[0] = *v == dev.vni,
            InfoVxlan::Port(p) => ok[1] = *p == dev.port,
            InfoVxlan::Local(ip) => ok[2] = ip.as_slice() == dev.local_ip.octets(),
            InfoVxlan::Link(i) => ok[3] = *i == dev.underlay_index,
            InfoVxlan::Learning(l) => ok[4] = !*l,
            _ => {}
        }
    }
    ok.iter().all(|b| *b)
}

/// Creates the device (or keeps a matching one), sets its MTU and MAC and
/// brings it up; returns its ifindex.
async fn ensure_device(handle: &Handle, dev: &DeviceSpec) -> Result<u32, KernelError> {
    if let Some(msg) = link_message(handle, &dev.name).await? {
        match vxlan_settings(&msg) {
            Some(settings) if matches_spec(&settings, dev) => {
                log::info!("taking over {} from an earlier run", dev.name);
            }
            _ => {
                log::info!("replacing {}: its settings differ", dev.name);
                delete_link(handle, msg.header.index, &dev.name).await?;
            }
        }
    }
    if link_message(handle, &dev.name).await?.is_none() {
        let mut req = handle.link().add();
        req.message_mut()
            .attributes
            .push(LinkAttribute::Mtu(dev.mtu));
        req.address(dev.mac.to_vec())
            .vxlan(dev.name.clone(), dev.vni)
            .link(dev.underlay_index)
            .local(dev.local_ip)
            .port(dev.port)
            .learning(false)
            .execute()
            .await
            .map_err(request(format!("creating VXLAN device {}", dev.name)))?;
        log::info!(
            "created {} (vni {}, port {}, local {}, mtu {}, mac {})",
            dev.name,
            dev.vni,
            dev.port,
            dev.local_ip,
            dev.mtu,
            format_mac(&dev.mac)
        );
    }
    let index = link_message(handle, &dev.name)
        .await?
        .map(|m| m.header.index)
        .ok_or_else(|| KernelError::Interface {
            name: dev.name.clone(),
            reason: "vanished right after it was created".into(),
        })?;
    handle
        .link()
        .set(index)
        .mtu(dev.mtu)
        .address(dev.mac.to_vec())
        .up()
        .execute()
        .await
        .map_err(request(format!("setting up {}", dev.name)))?;
    Ok(index)
}

async fn delete_link(handle: &Handle, index: u32, name: &str) -> Result<(), KernelError> {
    match handle.link().del(index).execute().await {
        Err(e) if !is_missing(&e) => Err(request(format!("deleting {name}"))(e)),
        _ => Ok(()),
    }
}

/// The FDB entries with a destination address on link `index`: (MAC, destination).
async fn fdb_entries(
    handle: &Handle,
    index: u32,
) -> Result<BTreeSet<([u8; 6], Ipv4Addr)>, KernelError> {
    let mut req = handle.neighbours().get();
    req.message_mut().header.family = AddressFamily::Bridge;
    let msgs: Vec<NeighbourMessage> = req
        .execute()
        .try_collect()
        .await
        .map_err(request("dump of the FDB"))?;
    Ok(msgs
        .iter()
        .filter(|m| m.header.family == AddressFamily::Bridge && m.header.ifindex == index)
        .filter_map(|m| {
            let mut mac = None;
            let mut dst = None;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::LinkLocalAddress(b) => {
                        mac = <[u8; 6]>::try_from(b.as_slice()).ok()
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => dst = Some(*ip),
                    _ => {}
                }
            }
            Some((mac?, dst?))
        })
        .collect())
}

/// Deletes every VXLAN device of ours (`ovl.<VNI>`) except `keep`, and with
/// each its routes, neighbour and FDB entries. Returns the names deleted.
pub async fn remove_devices(
    handle: &Handle,
    keep: Option<&str>,
) -> Result<Vec<String>, KernelError> {
    let links: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(request("dump of links"))?;
    let mut removed = Vec::new();
    for msg in links {
        let name = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        });
        let Some(name) = name else { continue };
        if !is_device_name(&name) || Some(name.as_str()) == keep || vxlan_settings(&msg).is_none() {
            continue;
        }
        delete_link(handle, msg.header.index, &name).await?;
        log::info!("removed VXLAN device {name}");
        removed.push(name);
    }
    Ok(removed)
}

#[async_trait::async_trait]
impl Dataplane for KernelDataplane {
    fn mode(&self) -> Mode {
        Mode::Kernel
    }

    async fn add_peer(&mut self, peer: &PeerSpec) -> Result<(), DataplaneError> {
        let new = Installed::of(peer, self.dev.vni);
        // Neighbour, FDB entry, route: by the time the route sends a packet
        // into the device, the kernel knows where to send it.
        self.add_neighbour(&new).await?;
        self.add_fdb(new.vtep_mac, new.underlay_ip).await?;
        self.add_route(peer.subnet, new.gateway).await?;
        let old = self.peers.insert(peer.subnet, new);
        // A replaced peer's FDB entry goes unless another peer still uses it.
        if let Some(old) = old {
            if old.vtep_mac != new.vtep_mac && !self.wanted_fdb().contains_key(&old.vtep_mac) {
                self.del_fdb(old.vtep_mac, old.underlay_ip).await?;
            }
        }
        Ok(())
    }

    async fn del_peer(&mut self, subnet: Ipv4Net) -> Result<(), DataplaneError> {
        let Some(old) = self.peers.get(&subnet).copied() else {
            // Not ours (e.g. left by an earlier run): remove the route anyway.
            self.del_route(subnet).await?;
            return Ok(());
        };
        self.del_route(subnet).await?;
        self.peers.remove(&subnet);
        match self.wanted_fdb().get(&old.vtep_mac) {
            None => self.del_fdb(old.vtep_mac, old.underlay_ip).await?,
            // Another peer with the same MAC but another address: its entry wins.
            Some(dst) if *dst != old.underlay_ip => self.add_fdb(old.vtep_mac, *dst).await?,
            Some(_) => {}
        }
        self.del_neighbour(old.gateway).await?;
        Ok(())
    }

    async fn add_endpoint(&mut self, _ep: &EndpointSpec) -> Result<(), DataplaneError> {
        // The kernel routes decapsulated packets to the bridge by itself.
        Ok(())
    }

    async fn del_endpoint(&mut self, _ip: Ipv4Addr) -> Result<(), DataplaneError> {
        Ok(())
    }

    fn stats(&self) -> Result<Stats, DataplaneError> {
        Ok(self.stats.clone())
    }

    async fn refresh(&mut self) -> Result<(), DataplaneError> {
        // The device may have been deleted or recreated behind our back.
        let index = link_message(&self.handle, &self.dev.name)
            .await?
            .map(|m| m.header.index);
        if index != Some(self.index) {
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

    async fn shutdown(&mut self, cleanup: bool) -> Result<(), DataplaneError> {
        if cleanup {
            // Routes, neighbour and FDB entries go with the device.
            remove_devices(&self.handle, None).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names() {
        assert_eq!(device_name(42), "ovl.42");
        assert_eq!(device_name(16_777_215), "ovl.16777215");
        assert!(device_name(16_777_215).len() <= 15);
        assert!(is_device_name("ovl.1"));
        assert!(!is_device_name("ovl."));
        assert!(!is_device_name("ovl.1a"));
        assert!(!is_device_name("flannel.1"));
    }

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

    #[test]
    fn spec_matching() {
        let dev = DeviceSpec {
            name: "ovl.42".into(),
            vni: 42,
            port: 4789,
            local_ip: Ipv4Addr::new(192, 168, 56, 4),
            underlay_index: 2,
            mtu: 1450,
            mac: [2, 42, 192, 168, 56, 4],
        };
        let mut s = vec![
            InfoVxlan::Id(42),
            InfoVxlan::Port(4789),
            InfoVxlan::Local(vec![192, 168, 56, 4]),
            InfoVxlan::Link(2),
            InfoVxlan::Learning(false),
        ];
        assert!(matches_spec(&s, &dev));
        s[1] = InfoVxlan::Port(8472);
        assert!(!matches_spec(&s, &dev));
        s[1] = InfoVxlan::Port(4789);
        s.pop();
        assert!(!matches_spec(&s, &dev));
    }
}
