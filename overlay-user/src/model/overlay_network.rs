//! Overlay networks, the cluster model of Docker's overlay driver: a
//! network is created once (in the cluster store) and exists on every host;
//! its containers share one subnet across hosts and one VNI isolates it.
//!
//! These are the shared shapes: what the dataplane is told
//! ([`NetworkSpec`], [`NetEndpointSpec`]), what is kept in the store
//! ([`EndpointRecord`], and [`NetworkSpec`] itself as a network's record)
//! and what a user asks for ([`NetworkRequest`]).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// A network of the cluster, as stored at `<prefix>/networks/<name>` and as
/// the dataplane is told about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// Its name, unique in the cluster (`web`).
    pub name: String,
    /// Its VXLAN network identifier, unique in the cluster (24 bits).
    pub vni: u32,
    /// The subnet every host's containers on it share (10.103.240.0/24).
    pub subnet: Ipv4Net,
    /// The gateway address, answered on every host (10.103.240.1).
    pub gateway: Ipv4Addr,
}

/// What `overlayctl network create` or Docker asks for; what is not given
/// is chosen by the store (a free VNI, a subnet from the default pool, the
/// subnet's first address as gateway).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRequest {
    /// The name.
    pub name: String,
    /// The subnet, or `None` for one from the cluster's default pool.
    pub subnet: Option<Ipv4Net>,
    /// The gateway, or `None` for the subnet's first address.
    pub gateway: Option<Ipv4Addr>,
    /// The VNI, or `None` for a free one.
    pub vni: Option<u32>,
}

/// Where a network endpoint is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetLocation {
    /// On this host, behind a host-side veth.
    Local {
        /// The host-side interface's name.
        ifname: String,
        /// Its ifindex in the host's namespace.
        ifindex: u32,
    },
    /// On another host, reached through VXLAN to its underlay address.
    Remote {
        /// That host's underlay address.
        host: Ipv4Addr,
    },
}

/// An endpoint of a network, as the dataplane is told about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetEndpointSpec {
    /// The network's VNI.
    pub vni: u32,
    /// The container's address in the network's subnet.
    pub ip: Ipv4Addr,
    /// The container interface's MAC.
    pub mac: [u8; 6],
    /// Where it is.
    pub location: NetLocation,
}

/// An endpoint as published in the store at
/// `<prefix>/endpoints/<network>/<ip>` by the host that has it; every
/// other host installs it as a [`NetLocation::Remote`] endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// The network's name.
    pub network: String,
    /// The container's address.
    pub ip: Ipv4Addr,
    /// The container interface's MAC.
    pub mac: [u8; 6],
    /// The host's name (its cluster record's `name`).
    pub host: String,
    /// The host's underlay address.
    pub underlay_ip: Ipv4Addr,
    /// The container's ID (Docker's endpoint or container ID, or the
    /// namespace name for `overlayctl attach`).
    pub container: String,
    /// The container's name, for names across hosts (empty when none).
    #[serde(default)]
    pub name: String,
    /// Its aliases on this network (`--network-alias`).
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// Every network and endpoint record of the cluster as this host's watch of
/// the store last saw them, this host's own records included: what the
/// names resolver answers from (`sources::names`). While the store is
/// unreachable the last view stays.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkView {
    /// Every network, by name.
    pub networks: Vec<NetworkSpec>,
    /// Every endpoint record on every host.
    pub endpoints: Vec<EndpointRecord>,
}
