//! The agent's errors; their messages are shown to users as is.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::agent::state::StateError;
use crate::dataplane::DataplaneError;
use crate::model::validation::InputError;
use crate::sys::netlink::NetlinkError;

/// Errors of agent operations; the messages are shown to users as is.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A malformed value (host bits, bad MAC, unusable address).
    #[error(transparent)]
    Input(#[from] InputError),
    /// The peer subnet overlaps this host's container subnet.
    #[error("peer subnet {subnet} overlaps this host's subnet {own}; expected a subnet disjoint from it")]
    PeerOverlapsOwn {
        /// The rejected subnet.
        subnet: Ipv4Net,
        /// This host's subnet.
        own: Ipv4Net,
    },
    /// The peer subnet overlaps another peer's subnet.
    #[error("peer subnet {subnet} overlaps peer subnet {other} (via {other_underlay}); delete that peer first or choose a disjoint subnet")]
    PeerOverlapsPeer {
        /// The rejected subnet.
        subnet: Ipv4Net,
        /// The existing peer's subnet.
        other: Ipv4Net,
        /// The existing peer's underlay address.
        other_underlay: Ipv4Addr,
    },
    /// The peer's underlay address is this host's own.
    #[error("{0} is this host's own underlay address; expected the peer host's address")]
    PeerIsSelf(Ipv4Addr),
    /// No peer has this subnet.
    #[error("no peer for {0}")]
    NoPeer(Ipv4Net),
    /// The endpoint address is outside this host's subnet.
    #[error("{ip} is not in this host's subnet {subnet}; expected a container address in it")]
    NotInSubnet {
        /// The address.
        ip: Ipv4Addr,
        /// This host's subnet.
        subnet: Ipv4Net,
    },
    /// The endpoint address is the subnet's network, broadcast or gateway address.
    #[error("{ip} is the {what} address of {subnet}; expected a container address")]
    ReservedAddress {
        /// The address.
        ip: Ipv4Addr,
        /// "network", "broadcast" or "gateway".
        what: &'static str,
        /// This host's subnet.
        subnet: Ipv4Net,
    },
    /// The endpoint's interface does not exist.
    #[error("no interface named {0}")]
    NoInterface(String),
    /// No endpoint has this address.
    #[error("no endpoint for {0}")]
    NoEndpoint(Ipv4Addr),
    /// The underlay interface has no IPv4 address and none is configured.
    #[error(
        "underlay interface {0} has no IPv4 address; add one or set underlay_ip in the config file"
    )]
    NoUnderlayIp(String),
    /// A netlink query failed.
    #[error(transparent)]
    Netlink(NetlinkError),
    /// The dataplane refused; the tables were not changed.
    #[error("{action}: {source}")]
    Dataplane {
        /// What was being done, e.g. "adding peer 10.1.2.0/24".
        action: String,
        /// What the dataplane reported.
        #[source]
        source: DataplaneError,
    },
    /// The state file could not be read.
    #[error(transparent)]
    State(#[from] StateError),
}

impl From<NetlinkError> for AgentError {
    fn from(e: NetlinkError) -> Self {
        match e {
            NetlinkError::NotFound(name) => AgentError::NoInterface(name),
            e => AgentError::Netlink(e),
        }
    }
}
