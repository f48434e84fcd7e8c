//! What a control source reports to the agent core: one change of the
//! desired state. The core validates it, applies it to the dataplane and
//! records it with the source that reported it.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::model::endpoint::EndpointSpec;
use crate::model::overlay_network::{NetEndpointSpec, NetworkSpec};
use crate::model::peer::PeerSpec;

/// One change of the desired state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Route the peer's subnet to its host; the same subnet again replaces it.
    AddPeer(PeerSpec),
    /// Stop routing this subnet through the overlay.
    DelPeer(Ipv4Net),
    /// Deliver traffic for `ip` to the container behind host interface
    /// `ifname`; with no `mac`, it is looked up on the bridge.
    AddEndpoint {
        /// The container's address.
        ip: Ipv4Addr,
        /// The host-side interface.
        ifname: String,
        /// The container's MAC, when known.
        mac: Option<[u8; 6]>,
    },
    /// Add or replace an endpoint whose interface is already resolved (found on the bridge).
    PutEndpoint(EndpointSpec),
    /// Re-apply an existing endpoint with a newly learned MAC or ifindex,
    /// keeping who added it; nothing if it is gone.
    RefreshEndpoint(EndpointSpec),
    /// Forget the endpoint at this address.
    DelEndpoint(Ipv4Addr),
    /// Add or replace an overlay network (the same VNI again replaces it).
    AddNetwork(NetworkSpec),
    /// Remove the overlay network with this VNI, and every endpoint on it.
    DelNetwork(u32),
    /// Add or replace an endpoint of an overlay network, local or remote.
    PutNetEndpoint(NetEndpointSpec),
    /// Forget the endpoint at `ip` on the network with VNI `vni`.
    DelNetEndpoint {
        /// The network's VNI.
        vni: u32,
        /// The endpoint's address.
        ip: Ipv4Addr,
    },
}

impl Change {
    /// Its kind, in snake case (`add_peer`, `del_endpoint`, ...), as in logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::AddPeer(_) => "add_peer",
            Change::DelPeer(_) => "del_peer",
            Change::AddEndpoint { .. } => "add_endpoint",
            Change::PutEndpoint(_) => "put_endpoint",
            Change::RefreshEndpoint(_) => "refresh_endpoint",
            Change::DelEndpoint(_) => "del_endpoint",
            Change::AddNetwork(_) => "add_network",
            Change::DelNetwork(_) => "del_network",
            Change::PutNetEndpoint(_) => "put_net_endpoint",
            Change::DelNetEndpoint { .. } => "del_net_endpoint",
        }
    }
}
