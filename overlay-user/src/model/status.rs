//! What the dataplane and the agent report: the mode, counters and the
//! status `overlayctl status` shows.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::model::config::{AttachPoint, XdpMode};

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
