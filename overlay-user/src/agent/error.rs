//! The agent layer's one error type; its messages are shown to users as is.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

use crate::dataplane::DataplaneError;
use crate::model::validation::InputError;
use crate::sys::error::SysError;

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
    /// The peer subnet overlaps a network of the underlay interface.
    #[error("peer subnet {subnet} overlaps the underlay network {network} of {interface}; expected a subnet disjoint from the underlay's networks")]
    PeerOverlapsUnderlay {
        /// The rejected subnet.
        subnet: Ipv4Net,
        /// The underlay interface's network.
        network: Ipv4Net,
        /// The underlay interface.
        interface: String,
    },
    /// The peer subnet overlaps a route of the main table that overlay did not make.
    #[error("peer subnet {subnet} overlaps the route {route} in the main table, which overlay did not make; expected a subnet no other route covers (delete that route or choose another subnet)")]
    PeerOverlapsRoute {
        /// The rejected subnet.
        subnet: Ipv4Net,
        /// The route, as `ip route` shows it (e.g. "10.103.250.0/24 via 192.168.56.1 dev eth1 proto static").
        route: String,
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
    Sys(SysError),
    /// The dataplane refused; the tables were not changed.
    #[error("{action}: {source}")]
    Dataplane {
        /// What was being done, e.g. "adding peer 10.1.2.0/24".
        action: String,
        /// What the dataplane reported.
        #[source]
        source: Box<DataplaneError>,
    },
    /// An overlay network that cannot be carried as given.
    #[error("network {name} (VNI {vni}, {subnet}) {problem}; expected {expected}")]
    Network {
        /// The network's name.
        name: String,
        /// Its VNI.
        vni: u32,
        /// Its subnet.
        subnet: Ipv4Net,
        /// What is wrong, e.g. "overlaps this host's subnet 10.103.100.0/24".
        problem: String,
        /// What is expected instead.
        expected: String,
    },
    /// An overlay network this host does not carry.
    #[error("no overlay network with VNI {0} on this host; expected a network from `overlayctl network ls` (carried once the cluster store reports it)")]
    NoNetwork(u32),
    /// A network endpoint this host does not have.
    #[error("no endpoint {ip} on the overlay network with VNI {vni}")]
    NoNetEndpoint {
        /// The network's VNI.
        vni: u32,
        /// The address.
        ip: Ipv4Addr,
    },
    /// A network endpoint that is unusable as given.
    #[error("endpoint {ip} on network {network}: {problem}; expected {expected}")]
    NetEndpoint {
        /// The network's name.
        network: String,
        /// The address.
        ip: Ipv4Addr,
        /// What is wrong.
        problem: String,
        /// What is expected instead.
        expected: String,
    },
    /// A change this agent does not carry (yet): what, and why.
    #[error("{0}")]
    Unsupported(String),
    /// The state file exists but could not be read.
    #[error("cannot read state file {}: {source}", path.display())]
    StateRead {
        /// The file.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// The state file is not valid JSON of the expected shape.
    #[error("state file {} is corrupt: {source}; fix or remove it", path.display())]
    StateParse {
        /// The file.
        path: PathBuf,
        /// What serde_json reported (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// The state file was written by a newer overlayd.
    #[error("state file {} has version {found}; this overlayd understands version {supported}", path.display())]
    StateVersion {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build writes and reads.
        supported: u32,
    },
    /// Another overlayd holds the lock of this state or pin directory.
    #[error(
        "another overlayd {}is running with {what} {}; stop it first",
        pid.map(|p| format!("(pid {p}) ")).unwrap_or_default(),
        dir.display()
    )]
    AlreadyRunning {
        /// "state_dir" or "pin_dir".
        what: &'static str,
        /// The directory.
        dir: PathBuf,
        /// The holder's pid, from the lock file.
        pid: Option<u32>,
    },
    /// A lock file could not be created or locked.
    #[error("cannot create or lock {}: {source}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// A corrupt state file could not be moved aside.
    #[error("cannot move the corrupt state file {} aside to {}: {source}; move or remove it by hand", path.display(), aside.display())]
    StateSetAside {
        /// The corrupt file.
        path: PathBuf,
        /// Where it was to go.
        aside: PathBuf,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// Writing the state file (or its directory) failed.
    #[error("cannot write state file {}: {source}", path.display())]
    StateWrite {
        /// The file.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
}

impl From<SysError> for AgentError {
    fn from(e: SysError) -> Self {
        match e {
            SysError::NotFound(name) => AgentError::NoInterface(name),
            e => AgentError::Sys(e),
        }
    }
}
