//! An endpoint: a container of this host, behind a host-side interface.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

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
