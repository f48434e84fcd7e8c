//! What the dataplane and the agent report: the mode, counters and the
//! status `overlayctl status` shows.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::model::config::{AttachPoint, DeliverMode, EncapMode, TcAttach, XdpMode};
use crate::model::doctor::AttachmentState;

/// Which implementation forwards packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// tc/XDP programs encapsulate and decapsulate (the default).
    Ebpf,
    /// The kernel's VXLAN device, routes, neighbour and FDB entries.
    Kernel,
}

/// The lowercase name of a dataplane mode ("ebpf", "kernel").
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Ebpf => "ebpf",
        Mode::Kernel => "kernel",
    }
}

/// Counters read from the dataplane, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Packet and byte counters by name (`encap_packets`, ...).
    pub counters: BTreeMap<String, u64>,
    /// Drops by reason name (`unknown_vni`, ...).
    pub drops: BTreeMap<String, u64>,
}

/// What `overlayctl status` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Dataplane implementation.
    pub mode: Mode,
    /// Why this mode runs: the setting, or for `auto` whether BPF loaded and if not, why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode_reason: Option<String>,
    /// This host's container subnet.
    pub subnet: Ipv4Net,
    /// Its gateway address.
    pub gateway: Ipv4Addr,
    /// The underlay interface.
    pub underlay_interface: String,
    /// This host's underlay address.
    pub underlay_ip: Ipv4Addr,
    /// This host's VTEP MAC (derived from the underlay address and VNI).
    pub vtep_mac: String,
    /// The container bridge.
    pub bridge: String,
    /// VXLAN network identifier.
    pub vni: u32,
    /// VXLAN UDP port.
    pub vxlan_port: u16,
    /// Where the from-container program is attached.
    pub attach: AttachPoint,
    /// XDP mode.
    pub xdp: XdpMode,
    /// The BPF dataplane's packet-path settings; none in kernel mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathSettings>,
    /// Number of peers.
    pub peers: usize,
    /// Number of endpoints.
    pub endpoints: usize,
    /// Number of overlay networks carried.
    #[serde(default)]
    pub networks: usize,
    /// Number of endpoints on overlay networks, local and remote.
    #[serde(default)]
    pub net_endpoints: usize,
    /// Dataplane counters and drops.
    pub stats: Stats,
    /// The cluster store's state, with `[cluster]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<StoreStatus>,
    /// The health summary: programs attached, Docker, recent drops.
    #[serde(default)]
    pub health: Health,
}

/// The BPF dataplane's packet-path settings (issue 17's), as in effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathSettings {
    /// `encap`: who builds the outer headers.
    pub encap: EncapMode,
    /// `deliver`: how decapsulated packets enter the container.
    pub deliver: DeliverMode,
    /// `tc_attach`: TCX links or clsact filters.
    pub tc_attach: TcAttach,
    /// `tunnel_gro` as configured.
    pub tunnel_gro: bool,
    /// Whether the collect-metadata VXLAN device `ovl.md` is in place (with
    /// `tunnel_gro` or `encap = "device"`); false when it could not be made.
    pub tunnel_device: bool,
    /// `veth_gro`.
    pub veth_gro: bool,
    /// `big_tcp`.
    pub big_tcp: bool,
}

impl PathSettings {
    /// The settings of `cfg`; `tunnel_device`: whether `ovl.md` is in place.
    pub fn of(cfg: &crate::model::config::Config, tunnel_device: bool) -> Self {
        PathSettings {
            encap: cfg.encap,
            deliver: cfg.deliver,
            tc_attach: cfg.tc_attach,
            tunnel_gro: cfg.tunnel_gro,
            tunnel_device,
            veth_gro: cfg.veth_gro,
            big_tcp: cfg.big_tcp,
        }
    }

    /// `tunnel_gro` for a person: on with the device, on without it, off.
    pub fn tunnel_gro_text(&self) -> &'static str {
        match (self.tunnel_gro, self.tunnel_device) {
            (true, true) => "on (ovl.md)",
            (true, false) => "set, but ovl.md could not be made (see overlayd's log)",
            (false, _) => "off",
        }
    }
}

/// The health summary `overlayctl status` leads with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// The programs the dataplane needs attached, each with whether it is
    /// (empty for the kernel dataplane, which has none).
    pub programs: Vec<AttachmentState>,
    /// The Docker connection, with `[docker]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<Connection>,
    /// Drops over the last `drops_window_secs` seconds (a minute once
    /// overlayd has run that long), from the counters the agent samples.
    pub drops_recent: u64,
    /// The same, by reason (reasons with no drops left out).
    pub drops_recent_by_reason: BTreeMap<String, u64>,
    /// The window of `drops_recent`, in seconds (at most 60).
    pub drops_window_secs: u64,
}

/// The state of a connection overlayd keeps (to Docker).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// Whether it is up now.
    pub connected: bool,
    /// What it is connected to, or the last error.
    pub detail: String,
}

/// The cluster store's state, as `overlayctl cluster status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// The configured etcd endpoints.
    pub endpoints: Vec<String>,
    /// The key prefix.
    pub prefix: String,
    /// Whether etcd answers now.
    pub connected: bool,
    /// The member that answered: "name (client URL)".
    pub member: Option<String>,
    /// The cluster's leader, by name.
    pub leader: Option<String>,
    /// The last store revision seen.
    pub revision: i64,
    /// The last error talking to etcd, while it lasts.
    pub last_error: Option<String>,
    /// Number of other hosts known (peers with source `cluster`).
    pub hosts: usize,
    /// This host's leased subnet.
    pub subnet: Ipv4Net,
    /// Its etcd lease (hex, as etcdctl prints it).
    pub lease_id: String,
    /// Seconds left on it, when known.
    pub lease_ttl: Option<i64>,
}
