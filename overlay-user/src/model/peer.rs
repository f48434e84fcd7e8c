//! A peer: another host's container subnet and where its VXLAN goes.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

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

impl PeerSpec {
    /// The VTEP MAC used for this peer in network `vni`: its explicit one,
    /// else derived from its underlay address.
    pub fn effective_vtep_mac(&self, vni: u32) -> [u8; 6] {
        self.vtep_mac
            .unwrap_or_else(|| overlay_common::vtep_mac(self.underlay_ip.octets(), vni))
    }
}
