//! The `Dataplane` abstraction: what the control sources (config, API,
//! Docker, etcd) drive, without knowing whether BPF or the kernel's VXLAN
//! device forwards the packets.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Which implementation forwards packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// tc/XDP programs encapsulate and decapsulate (the default).
    Ebpf,
    /// The kernel's VXLAN device, routes, neighbour and FDB entries.
    Kernel,
}

/// A remote host's container subnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSpec {
    /// The remote container subnet, e.g. 10.103.200.0/24.
    pub subnet: Ipv4Net,
    /// The remote host's underlay address, e.g. 192.168.56.5.
    pub underlay_ip: Ipv4Addr,
    /// The remote VTEP's MAC; `None` derives it with [`overlay_common::vtep_mac`].
    pub vtep_mac: Option<[u8; 6]>,
}

/// A local container interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSpec {
    /// The container's IPv4 address.
    pub ip: Ipv4Addr,
    /// Host-side interface name (the veth whose peer is in the container).
    pub ifname: String,
    /// Its ifindex in the host's network namespace.
    pub ifindex: u32,
    /// The container interface's MAC, all zero when not known yet.
    pub mac: [u8; 6],
}

/// Counters read from the dataplane, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Packet and byte counters by name (`encap_packets`, ...).
    pub counters: BTreeMap<String, u64>,
    /// Drops by reason name (`unknown_vni`, ...).
    pub drops: BTreeMap<String, u64>,
}

/// Errors of a dataplane implementation.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// A BPF map operation failed.
    #[error("BPF map {map}: {source}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// What aya reported.
        #[source]
        source: aya::maps::MapError,
    },
    /// Attaching or detaching a program failed.
    #[error("attaching {program} to {ifname}: {reason}")]
    Attach {
        /// The program's name.
        program: &'static str,
        /// The interface.
        ifname: String,
        /// What went wrong.
        reason: String,
    },
    /// A netlink request failed.
    #[error("netlink: {0}")]
    Netlink(String),
    /// Anything else, with context.
    #[error("{0}")]
    Other(String),
}

/// What every dataplane implementation offers the agent.
///
/// Calls are idempotent: adding what exists replaces it, deleting what does
/// not exist succeeds. Validation (overlaps, bad input) happens in the agent
/// before any call, so an implementation only fails on system errors.
#[async_trait::async_trait]
pub trait Dataplane: Send + Sync {
    /// The implementation's mode.
    fn mode(&self) -> Mode;
    /// Route `peer.subnet` to `peer.underlay_ip` through the overlay.
    async fn add_peer(&mut self, peer: &PeerSpec) -> Result<(), DataplaneError>;
    /// Stop routing `subnet` through the overlay; removes exactly what `add_peer` made.
    async fn del_peer(&mut self, subnet: Ipv4Net) -> Result<(), DataplaneError>;
    /// Deliver traffic for `ep.ip` arriving from peers to `ep`.
    async fn add_endpoint(&mut self, ep: &EndpointSpec) -> Result<(), DataplaneError>;
    /// Forget the endpoint at `ip`.
    async fn del_endpoint(&mut self, ip: Ipv4Addr) -> Result<(), DataplaneError>;
    /// Current counters.
    fn stats(&self) -> Result<Stats, DataplaneError>;
    /// Periodic housekeeping (next-hop MACs, link changes); called about once a second.
    async fn refresh(&mut self) -> Result<(), DataplaneError>;
    /// Stop. With `cleanup`, remove every program, pin, map, device and route of ours;
    /// without it, leave the dataplane forwarding for the next start.
    async fn shutdown(&mut self, cleanup: bool) -> Result<(), DataplaneError>;
}
