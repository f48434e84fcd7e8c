//! The BPF dataplane: tc and XDP programs from overlay-ebpf, driven through
//! pinned maps.
//!
//! Owns: loading the object, pins and links ([`loader`]), the typed maps
//! with domain methods ([`maps`], [`net_maps`]), overlay networks (`net`), and the collect-metadata VXLAN device of
//! `encap = "device"`. Must not touch: the kernel dataplane's devices and
//! routes, and anything above the dataplane.

pub mod calibrate;
mod encap_device;
mod endpoint;
mod follow;
mod health;
pub mod loader;
pub mod maps;
mod net;
pub mod net_maps;
pub mod observe;
mod peer_hosts;
mod ports;
mod slots;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;

use aya::Ebpf;
use ipnet::Ipv4Net;
use overlay_common::{
    programs, EndpointValue, PeerValue, CONFIG_F_LEARN_ENDPOINTS, CONFIG_F_XDP_VALIDATES,
};

use encap_device::ensure_encap_device;
pub use encap_device::{remove_encap_device, ENCAP_DEVICE};
use loader::{Links, LINK_BRIDGE, LINK_UNDERLAY, LINK_XDP, PORT_PREFIX};
use maps::Maps;

use crate::dataplane::firewall::Firewall;
use crate::dataplane::{monitor::Monitor, Dataplane, DataplaneError};
use crate::model::config::{AttachPoint, Config, EncapMode, XdpMode};
use crate::model::endpoint::EndpointSpec;
use crate::model::observe::PeerTraffic;
use crate::model::overlay_network::{NetEndpointSpec, NetworkSpec};
use crate::model::peer::PeerSpec;
use crate::model::status::{Mode, Stats};
use crate::sys::error::SysError;
use crate::sys::netlink;

/// The BPF implementation of [`Dataplane`].
pub struct BpfDataplane {
    /// The configuration it was started with (interface names, XDP mode).
    cfg: Config,
    ebpf: Ebpf,
    maps: Maps,
    links: Links,
    pin_dir: PathBuf,
    handle: rtnetlink::Handle,
    underlay_index: u32,
    bridge_index: u32,
    attach: AttachPoint,
    /// Bridge ports with the from-container program, by ifindex.
    ports: BTreeMap<u32, String>,
    /// Peers as added, to derive peer hosts and refresh next-hop MACs.
    peers: BTreeMap<Ipv4Net, PeerValue>,
    /// How many of `peers` each underlay address has (`OVL_PEER_HOSTS`).
    host_counts: BTreeMap<[u8; 4], u32>,
    /// Endpoints the agent added; others in the map were learned by the
    /// from-container program and are forgotten when their port goes.
    endpoints: BTreeSet<Ipv4Addr>,
    /// Peers found in the pinned maps at start that the agent has not added
    /// again since; removed by [`Dataplane::forget_unowned`].
    inherited_peers: BTreeSet<Ipv4Net>,
    /// Whether `ovl.md` (`encap = "device"` or `tunnel_gro`) is ours and up.
    tunnel_device: bool,
    /// With `encap = "device"` or `tunnel_gro`, whose VXLAN device listens on the port:
    /// VXLAN accepted only from the peers.
    firewall: Option<Firewall>,
    /// The underlay's neighbour table as last read, and when: peers added
    /// in a burst (a cluster's thousands of hosts) share one read a second.
    neighbours: Option<(std::time::Instant, BTreeMap<Ipv4Addr, [u8; 6]>)>,
    /// Overlay networks (net.rs).
    net: net_maps::NetState,
    _logger: Option<tokio::task::JoinHandle<()>>,
    /// The monitor's events and the per-peer counters.
    observe: observe::Observe,
    /// What is done to each endpoint's device and the underlay (`veth_gro`, `big_tcp`).
    endpoint_dev: Box<dyn endpoint::EndpointDevice>,
}

impl BpfDataplane {
    /// Loads, configures and attaches everything for `cfg`. On failure,
    /// whatever this attempt attached is detached again.
    pub async fn start(cfg: &Config) -> Result<Self, DataplaneError> {
        let handle = netlink::connect().map_err(|e| DataplaneError::Interface {
            name: "netlink".into(),
            reason: e.to_string(),
        })?;
        let iface = |name: &str, e: SysError| DataplaneError::Interface {
            name: name.to_string(),
            reason: e.to_string(),
        };
        let underlay = netlink::link_by_name(&handle, &cfg.underlay_interface)
            .await
            .map_err(|e| iface(&cfg.underlay_interface, e))?;
        let bridge = netlink::link_by_name(&handle, &cfg.bridge)
            .await
            .map_err(|e| iface(&cfg.bridge, e))?;
        let local_ip = match cfg.underlay_ip {
            Some(ip) => ip,
            None => netlink::ipv4_addrs(&handle, underlay.index)
                .await
                .map_err(|e| iface(&cfg.underlay_interface, e))?
                .first()
                .map(|(ip, _)| *ip)
                .ok_or_else(|| DataplaneError::Interface {
                    name: cfg.underlay_interface.clone(),
                    reason: "has no IPv4 address; set underlay_ip in the config".into(),
                })?,
        };

        let device_ifindex = match cfg.encap {
            EncapMode::Device => ensure_encap_device(&handle, cfg, underlay.mtu).await?,
            // Only an optimisation: without the device the programs forward
            // all the same, so a device in the way is logged, not fatal.
            EncapMode::Bpf if cfg.tunnel_gro => {
                match ensure_encap_device(&handle, cfg, underlay.mtu).await {
                    Ok(index) => index,
                    Err(e) => {
                        log::warn!(
                            "tunnel_gro: no UDP tunnel GRO on {} ({e}); forwarding without it",
                            cfg.underlay_interface
                        );
                        0
                    }
                }
            }
            EncapMode::Bpf => {
                remove_encap_device()
                    .await
                    .map_err(|e| DataplaneError::Interface {
                        name: ENCAP_DEVICE.into(),
                        reason: e.to_string(),
                    })?;
                0
            }
        };
        // With `tunnel_gro` alone the device only listens (its socket's GRO
        // merges VXLAN on the underlay); the programs encapsulate themselves.
        let encap_ifindex = match cfg.encap {
            EncapMode::Device => device_ifindex,
            EncapMode::Bpf => 0,
        };
        loader::ensure_bpffs(&cfg.pin_dir)?;
        let mut ebpf = loader::load(Some(&cfg.pin_dir))?;
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(loader::spawn_logger(logger)),
            Err(e) => {
                log::debug!("eBPF logs unavailable: {e}");
                None
            }
        };
        let mut maps = Maps::take(&mut ebpf)?;
        let stale = maps.sweep_endpoint_slots()? + maps.sweep_peer_slots()?;
        let mut net_maps = net_maps::NetMaps::take(&mut ebpf)?;
        let stale = stale + net_maps.sweep_slots()?;
        let net = net_maps::NetState::new(net_maps)?;
        if stale > 0 {
            log::info!("cleared {stale} slot(s) the peer and endpoint tables no longer back");
        }
        let observe = observe::Observe::start(&mut ebpf)?;
        let mut flags = 0;
        if cfg.xdp != XdpMode::Off {
            flags |= CONFIG_F_XDP_VALIDATES;
        }
        if cfg.xdp == XdpMode::Decap {
            flags |= overlay_common::CONFIG_F_XDP_DECAP;
        }
        if cfg.deliver == crate::model::config::DeliverMode::Veth {
            flags |= overlay_common::CONFIG_F_DELIVER_VETH;
        }
        if cfg.attach == AttachPoint::Veth {
            flags |= CONFIG_F_LEARN_ENDPOINTS | overlay_common::CONFIG_F_PER_PORT;
        }
        let two_step = calibrate::decap_two_step(cfg.decap_resize, &mut ebpf);
        if two_step {
            flags |= overlay_common::CONFIG_F_DECAP_TWO_STEP;
        }
        if cfg.encap_resize == crate::model::config::EncapResize::Head {
            flags |= overlay_common::CONFIG_F_ENCAP_PUSH_HEAD;
        }
        let bpf_cfg = overlay_common::Config {
            local_ip: local_ip.octets(),
            vni: cfg.vni,
            underlay_ifindex: underlay.index,
            vxlan_port_be: cfg.vxlan_port.to_be(),
            underlay_mac: underlay.mac,
            vtep_mac: overlay_common::vtep_mac(local_ip.octets(), cfg.vni),
            gateway_mac: bridge.mac,
            subnet: cfg.subnet.network().octets(),
            subnet_mask: cfg.subnet.netmask().octets(),
            flags,
            encap_ifindex,
            gateway_ip: cfg.gateway().octets(),
            learn_limit: cfg.learn_limit,
        };
        // What the previous run (if any) left forwarding, to put back if this
        // start fails: its settings and the links it pinned.
        let previous = maps.config()?;
        let previous = (previous.underlay_ifindex != 0).then_some(previous);
        let links = Links::new(&cfg.pin_dir, cfg.tc_attach);
        let pinned_before: BTreeSet<String> = links.pinned().into_iter().collect();
        maps.set_config(&bpf_cfg)?;

        let mut dp = Self {
            cfg: cfg.clone(),
            ebpf,
            maps,
            links,
            pin_dir: cfg.pin_dir.clone(),
            handle,
            underlay_index: underlay.index,
            bridge_index: bridge.index,
            attach: cfg.attach,
            ports: BTreeMap::new(),
            peers: BTreeMap::new(),
            host_counts: BTreeMap::new(),
            endpoints: BTreeSet::new(),
            inherited_peers: BTreeSet::new(),
            tunnel_device: device_ifindex != 0,
            firewall: None,
            neighbours: None,
            net,
            _logger: logger,
            observe,
            endpoint_dev: endpoint::for_config(cfg),
        };
        if let Err(e) = dp.attach_all(cfg).await {
            dp.undo_failed_start(previous, &pinned_before).await;
            return Err(e);
        }
        dp.prepare_underlay().await;
        // Entries left in the pinned maps by a previous run: keep the
        // peer table in step so peer hosts and MAC refresh stay right.
        for (net, v) in dp.maps.peers()? {
            dp.observe
                .peer_stats
                .adopt(Ipv4Addr::from(v.underlay_ip), v.stats_slot);
            dp.peers.insert(net, v);
            dp.inherited_peers.insert(net);
            *dp.host_counts.entry(v.underlay_ip).or_default() += 1;
        }
        if dp.tunnel_device {
            dp.firewall = Some(Firewall::new(None, Some(cfg.vxlan_port)));
            dp.sync_filter().await;
        }
        Ok(dp)
    }

    /// After a failed attach: a first start removes everything it made; a
    /// start over a previous run detaches only the links this attempt
    /// created and puts the previous settings back, so the previous run's
    /// programs and maps go on forwarding (never torn down by a bad start).
    async fn undo_failed_start(
        &mut self,
        previous: Option<overlay_common::Config>,
        pinned_before: &BTreeSet<String>,
    ) {
        let Some(mut previous) = previous else {
            if let Err(e) = self.remove_everything_and_device().await {
                log::warn!("removing what the failed start made: {e}");
            }
            return;
        };
        for name in self.links.pinned() {
            if !pinned_before.contains(&name) {
                self.links.detach(&name);
            }
        }
        // XDP is re-attached from scratch: if it is gone now, tc must check
        // everything itself again.
        if !self.links.pinned().iter().any(|n| n == LINK_XDP) {
            previous.flags &= !(CONFIG_F_XDP_VALIDATES | overlay_common::CONFIG_F_XDP_DECAP);
        }
        match self.maps.set_config(&previous) {
            Ok(()) => log::warn!(
                "the start failed: the previous run's programs and settings under {} go on forwarding",
                self.pin_dir.display()
            ),
            Err(e) => log::error!("putting the previous settings back: {e}"),
        }
    }

    async fn attach_all(&mut self, cfg: &Config) -> Result<(), DataplaneError> {
        // XDP first, so that tc may rely on its checks from the first frame.
        if cfg.xdp == XdpMode::Off {
            self.links.detach(LINK_XDP);
        }
        self.attach_underlay()?;
        match cfg.attach {
            AttachPoint::Bridge => {
                self.links.attach_tc(
                    &mut self.ebpf,
                    programs::FROM_CONTAINER,
                    &cfg.bridge,
                    LINK_BRIDGE,
                )?;
                for name in self.links.pinned() {
                    if name.starts_with(PORT_PREFIX) {
                        self.links.detach(&name);
                    }
                }
            }
            AttachPoint::Veth => {
                self.links.detach(LINK_BRIDGE);
                self.sync_ports().await?;
            }
        }
        Ok(())
    }

    /// [`BpfDataplane::neighbour_macs`], read at most once a second; a MAC
    /// learned since is filled in by the next refresh.
    async fn recent_neighbour_macs(&mut self) -> BTreeMap<Ipv4Addr, [u8; 6]> {
        let fresh = std::time::Duration::from_secs(1);
        if let Some((at, macs)) = &self.neighbours {
            if at.elapsed() < fresh {
                return macs.clone();
            }
        }
        let macs = self.neighbour_macs().await;
        self.neighbours = Some((std::time::Instant::now(), macs.clone()));
        macs
    }

    /// Next-hop MACs of peer hosts from the underlay's neighbour table.
    async fn neighbour_macs(&self) -> BTreeMap<Ipv4Addr, [u8; 6]> {
        match netlink::neighbours_v4(&self.handle, self.underlay_index).await {
            Ok(list) => list
                .into_iter()
                .filter_map(|n| n.usable_mac().map(|mac| (n.ip, mac)))
                .collect(),
            Err(e) => {
                log::warn!("reading the underlay's neighbour table: {e}");
                BTreeMap::new()
            }
        }
    }

    fn remove_everything(&mut self) -> Result<(), DataplaneError> {
        self.links.detach_clsact();
        loader::remove_pins(&self.pin_dir)
    }

    async fn remove_everything_and_device(&mut self) -> Result<(), DataplaneError> {
        self.remove_everything()?;
        remove_encap_device().await
    }

    /// The maps, for tests and the benchmark.
    pub fn maps(&self) -> &Maps {
        &self.maps
    }
}

#[async_trait::async_trait]
impl Dataplane for BpfDataplane {
    fn mode(&self) -> Mode {
        Mode::Ebpf
    }

    async fn add_peer(&mut self, peer: &PeerSpec) -> Result<(), DataplaneError> {
        let ip = peer.underlay_ip;
        let mac = self.recent_neighbour_macs().await.get(&ip).copied();
        let cfg = self.maps.config()?;
        let value = PeerValue::new(
            &cfg,
            ip.octets(),
            mac.unwrap_or([0; 6]),
            peer.vtep_mac
                .unwrap_or_else(|| overlay_common::vtep_mac(ip.octets(), cfg.vni)),
        );
        self.inherited_peers.remove(&peer.subnet);
        let old = self.peers.insert(peer.subnet, value);
        *self.host_counts.entry(ip.octets()).or_default() += 1;
        // Peer host first, so the answer to the first packet is not dropped.
        let mut touched = vec![ip];
        if let Some(old) = old {
            self.uncount(old.underlay_ip);
            touched.push(Ipv4Addr::from(old.underlay_ip));
        }
        self.sync_peer_hosts(&touched)?;
        let value = value.with_stats_slot(self.observe.peer_stats.slot(ip));
        self.peers.insert(peer.subnet, value);
        self.maps.add_peer(peer.subnet, &value)?;
        self.sync_filter().await;
        Ok(())
    }

    async fn del_peer(&mut self, subnet: Ipv4Net) -> Result<(), DataplaneError> {
        self.inherited_peers.remove(&subnet);
        self.maps.del_peer(subnet)?;
        if let Some(old) = self.peers.remove(&subnet) {
            self.uncount(old.underlay_ip);
            self.sync_peer_hosts(&[Ipv4Addr::from(old.underlay_ip)])?;
        }
        self.sync_filter().await;
        Ok(())
    }

    async fn add_endpoint(&mut self, ep: &EndpointSpec) -> Result<(), DataplaneError> {
        self.endpoints.insert(ep.ip);
        self.maps.add_endpoint(
            ep.ip,
            &EndpointValue {
                ifindex: ep.ifindex,
                mac: ep.mac,
                _pad: [0; 2],
            },
        )?;
        if self.attach == AttachPoint::Veth && !self.ports.contains_key(&ep.ifindex) {
            self.serve_port(ep.ifindex, &ep.ifname).await?;
        }
        Ok(())
    }

    async fn del_endpoint(&mut self, ip: Ipv4Addr) -> Result<(), DataplaneError> {
        self.endpoints.remove(&ip);
        self.maps.del_endpoint(ip)
    }

    fn stats(&self) -> Result<Stats, DataplaneError> {
        self.maps.stats()
    }

    fn attachments(&self) -> Vec<crate::model::doctor::AttachmentState> {
        self.attachment_states()
    }

    fn own_devices(&self) -> Vec<String> {
        self.own_device_names()
    }

    fn vxlan_filter_chain(&self) -> Option<&'static str> {
        self.filter_chain()
    }

    async fn add_network(&mut self, net: &NetworkSpec) -> Result<(), DataplaneError> {
        self.net_add_network(net).await
    }
    async fn del_network(&mut self, vni: u32) -> Result<(), DataplaneError> {
        self.net_del_network(vni).await
    }
    async fn add_net_endpoint(&mut self, ep: &NetEndpointSpec) -> Result<(), DataplaneError> {
        self.net_add_endpoint(ep).await
    }
    async fn del_net_endpoint(&mut self, vni: u32, ip: Ipv4Addr) -> Result<(), DataplaneError> {
        self.net_del_endpoint(vni, ip).await
    }

    fn monitor(&self) -> Option<Monitor> {
        Some(self.observe.monitor.clone())
    }

    fn peer_traffic(&self) -> Result<BTreeMap<Ipv4Addr, PeerTraffic>, DataplaneError> {
        self.observe.peer_stats.read()
    }

    fn table_fill(&self) -> Result<Vec<(&'static str, u64, u64)>, DataplaneError> {
        self.maps.fill(self.peers.len(), self.host_counts.len())
    }

    fn learned_endpoints(&self) -> Result<Vec<EndpointSpec>, DataplaneError> {
        Ok(self
            .maps
            .endpoints()?
            .into_iter()
            .filter(|(ip, _)| !self.endpoints.contains(ip))
            .map(|(ip, v)| EndpointSpec {
                ip,
                ifname: self.ports.get(&v.ifindex).cloned().unwrap_or_default(),
                ifindex: v.ifindex,
                mac: v.mac,
            })
            .collect())
    }

    async fn forget_unowned(&mut self) -> Result<(), DataplaneError> {
        self.net_forget_unowned().await?;
        for net in std::mem::take(&mut self.inherited_peers) {
            if let Some(v) = self.peers.get(&net) {
                log::info!(
                    "removing peer {net} via {} left by an earlier run: no source has it now",
                    Ipv4Addr::from(v.underlay_ip)
                );
            }
            self.del_peer(net).await?;
        }
        let hosts: BTreeSet<Ipv4Addr> = self
            .peers
            .values()
            .map(|p| Ipv4Addr::from(p.underlay_ip))
            .collect();
        for ip in self.maps.peer_hosts()? {
            if !hosts.contains(&ip) {
                log::info!("removing peer host {ip} left by an earlier run: no peer is behind it");
                self.maps.set_peer_host(ip, 0)?;
            }
        }
        for (ip, v) in self.maps.endpoints()? {
            // Only veth ports learn; the program learns again on the next packet anyway.
            let learned_on_live_port =
                self.attach == AttachPoint::Veth && self.ports.contains_key(&v.ifindex);
            if !self.endpoints.contains(&ip) && !learned_on_live_port {
                log::info!(
                    "removing endpoint {ip} (ifindex {}) left by an earlier run: no source has it now",
                    v.ifindex
                );
                self.maps.del_endpoint(ip)?;
            }
        }
        Ok(())
    }

    async fn refresh(&mut self) -> Result<(), DataplaneError> {
        if let Some(fw) = &mut self.firewall {
            fw.keep();
        }
        // The underlay and the bridge by name first: the rest uses their ifindexes.
        let followed = self.follow_links().await;
        self.sync_ports().await?;
        // Learned entries whose port is gone are forgotten; the others are
        // counted per port, so that a removed or replaced one frees its slot.
        let mut learned: BTreeMap<u32, u64> = BTreeMap::new();
        if self.attach == AttachPoint::Veth {
            for (ip, v) in self.maps.endpoints()? {
                if self.endpoints.contains(&ip) {
                    continue;
                }
                if !self.ports.contains_key(&v.ifindex) {
                    log::info!(
                        "forgetting learned endpoint {ip}: its port {} is gone",
                        v.ifindex
                    );
                    self.maps.del_endpoint(ip)?;
                    continue;
                }
                *learned.entry(v.ifindex).or_default() += 1;
            }
        }
        self.maps.set_port_learned(&learned)?;
        let macs = self.neighbour_macs().await;
        self.neighbours = Some((std::time::Instant::now(), macs.clone()));
        self.rebuild_peers(&macs)?;
        self.net_rebuild(&macs)?;
        followed
    }

    async fn shutdown(&mut self, cleanup: bool) -> Result<(), DataplaneError> {
        if cleanup {
            self.net_cleanup().await?;
            self.remove_everything_and_device().await?;
            if let Some(fw) = &mut self.firewall {
                fw.remove().await?;
            }
        }
        Ok(())
    }
}

/// Unused ports of the past stay out of the way: exposed for tests.
pub fn port_link_name(index: u32) -> String {
    format!("{PORT_PREFIX}{index}")
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<BpfDataplane>();
}
