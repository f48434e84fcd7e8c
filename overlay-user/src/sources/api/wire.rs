//! The API's wire format: requests, responses and the listings in them,
//! one JSON document per line, and the errors of both ends.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::model::attach::{Attachment, Detachment};
use crate::model::cluster::HostInfo;
use crate::model::doctor::Finding;
use crate::model::observe::{MonitorEvent, MonitorLoss, PeerTraffic};
use crate::model::overlay_network::NetworkSpec;
use crate::model::source::Source;
use crate::model::status::Status;
use crate::model::status::StoreStatus;

/// Where overlayd listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/overlay/overlayd.sock";

/// The longest request line accepted.
pub const MAX_LINE: usize = 64 * 1024;

/// How long a client waits for an answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Add or replace a peer.
    PeerAdd {
        /// Remote container subnet, e.g. "10.103.200.0/24".
        subnet: String,
        /// Remote host's underlay address, e.g. "192.168.56.5".
        underlay_ip: String,
        /// Remote VTEP MAC when it does not follow the derivation rule.
        #[serde(default)]
        vtep_mac: Option<String>,
    },
    /// Delete a peer.
    PeerDel {
        /// Its subnet.
        subnet: String,
    },
    /// List peers.
    PeerList,
    /// Add or replace an endpoint.
    EndpointAdd {
        /// Container address, e.g. "10.103.100.5".
        ip: String,
        /// Host-side interface, e.g. "veth1a2b3c".
        dev: String,
    },
    /// Delete an endpoint.
    EndpointDel {
        /// Its address.
        ip: String,
    },
    /// List endpoints.
    EndpointList,
    /// Settings and counters.
    Status,
    /// Plumb a container (by name or ID) or a named network namespace into
    /// the bridge with `address`, and register it (source `attach`).
    Attach {
        /// The container; exactly one of `container` and `netns`.
        #[serde(default)]
        container: Option<String>,
        /// The named network namespace.
        #[serde(default)]
        netns: Option<String>,
        /// Address and prefix, e.g. "10.103.100.50/24"; with `network`, an
        /// address ("10.103.240.9") or empty for one from its IPAM.
        #[serde(default)]
        address: String,
        /// MTU; default: the underlay's minus 50.
        #[serde(default)]
        mtu: Option<u32>,
        /// The overlay network to join instead of the bridge.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<String>,
    },
    /// Undo `attach`.
    Detach {
        /// The container; exactly one of `container` and `netns`.
        #[serde(default)]
        container: Option<String>,
        /// The named network namespace.
        #[serde(default)]
        netns: Option<String>,
    },
    /// The hosts in the cluster store (with `[cluster]`).
    Hosts,
    /// Remove a dead host from the cluster store.
    HostRm {
        /// Its name, as `hosts` lists it.
        name: String,
    },
    /// The cluster store's state.
    ClusterStatus,
    /// Check this host (`overlayctl doctor`).
    Doctor,
    /// Create an overlay network in the cluster store.
    NetworkCreate {
        /// Its name, e.g. "web".
        name: String,
        /// Its subnet, e.g. "10.104.0.0/24"; default: from the network pool.
        #[serde(default)]
        subnet: Option<String>,
        /// Its gateway; default: the subnet's first address.
        #[serde(default)]
        gateway: Option<String>,
        /// Its VNI; default: a free one.
        #[serde(default)]
        vni: Option<u32>,
    },
    /// The overlay networks of the cluster store.
    NetworkList,
    /// One network with its endpoints on every host.
    NetworkInspect {
        /// Its name.
        name: String,
    },
    /// Remove an overlay network (refused while it has endpoints).
    NetworkRm {
        /// Its name.
        name: String,
    },
    /// Stream dataplane events: one [`Response::Ok`] once subscribed, then
    /// [`Response::Event`]s and, each second events were lost,
    /// [`Response::Lost`], until the client closes the connection.
    Monitor {
        /// Drops.
        #[serde(default)]
        drop: bool,
        /// Sampled encap/decap events.
        #[serde(default)]
        trace: bool,
        /// Only drops with one of these reasons (`unknown_vni`, ...).
        #[serde(default)]
        reasons: Vec<String>,
        /// Only events with this inner or outer address.
        #[serde(default)]
        ip: Option<String>,
        /// Only events to or from this peer host (underlay address).
        #[serde(default)]
        peer: Option<String>,
        /// Trace one encap/decap in this many (default 1: each, within the rate limit).
        #[serde(default)]
        sample: Option<u32>,
    },
}

/// An overlay network as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    /// The network.
    #[serde(flatten)]
    pub spec: NetworkSpec,
    /// Whether this host carries it (its dataplane has it).
    pub carried: bool,
}

/// An endpoint of an overlay network, as `network inspect` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetEndpointInfo {
    /// The container's address.
    pub ip: Ipv4Addr,
    /// Its MAC.
    pub mac: String,
    /// The host it is on.
    pub host: String,
    /// That host's underlay address.
    pub underlay_ip: Ipv4Addr,
    /// The container's ID.
    pub container: String,
    /// The container's name (empty when none).
    pub name: String,
    /// Who installed it in this host's dataplane, if anyone.
    pub installed: Option<Source>,
}

/// An overlay network with its endpoints, as `network inspect` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkDetail {
    /// The network and whether this host carries it.
    #[serde(flatten)]
    pub info: NetworkInfo,
    /// Its endpoints on every host, by address.
    pub endpoints: Vec<NetEndpointInfo>,
}

/// A peer as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Remote container subnet.
    pub subnet: Ipv4Net,
    /// Remote host's underlay address.
    pub underlay_ip: Ipv4Addr,
    /// The VTEP MAC in use.
    pub vtep_mac: String,
    /// Whether `vtep_mac` was derived from the underlay address (not given explicitly).
    pub vtep_mac_derived: bool,
    /// Who added it.
    pub source: Source,
    /// Traffic to and from its host (shared by the subnets behind one
    /// host); absent when the dataplane does not count it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<PeerTraffic>,
}

/// An endpoint as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    /// Container address.
    pub ip: Ipv4Addr,
    /// Host-side interface.
    pub dev: String,
    /// Its ifindex.
    pub ifindex: u32,
    /// Container MAC, `None` while unknown.
    pub mac: Option<String>,
    /// Who added it.
    pub source: Source,
}

/// A response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Done.
    Ok,
    /// Refused or failed; nothing was changed.
    Error {
        /// What went wrong, naming the bad value.
        message: String,
    },
    /// Answer to [`Request::PeerList`].
    Peers(Vec<PeerInfo>),
    /// Answer to [`Request::EndpointList`].
    Endpoints(Vec<EndpointInfo>),
    /// Answer to [`Request::Status`].
    Status(Box<Status>),
    /// Answer to [`Request::Attach`].
    Attached(Box<Attachment>),
    /// Answer to [`Request::Detach`].
    Detached(Box<Detachment>),
    /// Answer to [`Request::Hosts`].
    Hosts(Vec<HostInfo>),
    /// Answer to [`Request::HostRm`]: the host removed.
    HostRemoved(Box<HostInfo>),
    /// Answer to [`Request::ClusterStatus`].
    Cluster(Box<StoreStatus>),
    /// Answer to [`Request::Doctor`]: one finding per check.
    Doctor(Vec<Finding>),
    /// Answer to [`Request::NetworkCreate`]: the network created.
    NetworkCreated(Box<NetworkSpec>),
    /// Answer to [`Request::NetworkList`].
    Networks(Vec<NetworkInfo>),
    /// Answer to [`Request::NetworkInspect`].
    Network(Box<NetworkDetail>),
    /// Answer to [`Request::NetworkRm`]: the network removed.
    NetworkRemoved(Box<NetworkSpec>),
    /// One event of a [`Request::Monitor`] stream.
    Event(Box<MonitorEvent>),
    /// Events a [`Request::Monitor`] stream lost in the last second.
    Lost(MonitorLoss),
}

impl Response {
    /// An error response with `e`'s message.
    pub fn error(e: impl std::fmt::Display) -> Response {
        Response::Error {
            message: e.to_string(),
        }
    }
}

/// Errors of the API server and client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The client could not connect.
    #[error("cannot connect to overlayd at {}: {source}; is overlayd running? (use --socket PATH if it listens elsewhere)", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the connection failed.
    #[error("talking to overlayd at {}: {source}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// overlayd closed the connection without answering.
    #[error("overlayd at {} closed the connection without answering", path.display())]
    Closed {
        /// The socket.
        path: PathBuf,
    },
    /// overlayd did not answer in time.
    #[error("overlayd at {} did not answer within {} s", path.display(), CLIENT_TIMEOUT.as_secs())]
    Timeout {
        /// The socket.
        path: PathBuf,
    },
    /// The answer was not a valid response.
    #[error("overlayd sent an invalid response: {0}")]
    Protocol(String),
    /// The server could not create its socket.
    #[error("cannot listen on {}: {source}", path.display())]
    Bind {
        /// The socket.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// Another process already answers on the socket.
    #[error("{} is in use: another overlayd is running; stop it or use --socket PATH", path.display())]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// A peer that is not root connected (its uid from SO_PEERCRED).
    #[error(
        "permission denied: overlayd's API accepts requests from root (uid 0) only, not uid {uid}"
    )]
    NotRoot {
        /// The peer's user ID.
        uid: u32,
    },
    /// The peer's credentials could not be read, so it is refused.
    #[error("permission denied: cannot read the peer's credentials (SO_PEERCRED): {reason}")]
    NoCredentials {
        /// What the OS reported.
        reason: String,
    },
    /// A connection beyond `api.max_connections`.
    #[error("too many connections: overlayd serves at most {max} API connections at once (api.max_connections); close idle ones or try again")]
    TooManyConnections {
        /// The cap.
        max: usize,
    },
    /// A connection sent no whole request (or read no answer) within the
    /// idle timeout and is closed.
    #[error("closing the connection: idle for {idle:?} (api.idle_timeout_secs)")]
    Idle {
        /// The idle timeout.
        idle: Duration,
    },
    /// Something that is not a socket sits at the path.
    #[error("{} exists and is not a socket; remove it or use --socket PATH", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::status::{Mode, Stats};

    fn round_trip<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        v: T,
        json: &str,
    ) {
        assert_eq!(serde_json::to_string(&v).unwrap(), json);
        assert_eq!(serde_json::from_str::<T>(json).unwrap(), v);
    }

    #[test]
    fn request_json() {
        round_trip(
            Request::PeerAdd {
                subnet: "10.103.200.0/24".into(),
                underlay_ip: "192.168.56.5".into(),
                vtep_mac: None,
            },
            r#"{"peer_add":{"subnet":"10.103.200.0/24","underlay_ip":"192.168.56.5","vtep_mac":null}}"#,
        );
        round_trip(
            Request::PeerDel {
                subnet: "10.103.200.0/24".into(),
            },
            r#"{"peer_del":{"subnet":"10.103.200.0/24"}}"#,
        );
        round_trip(Request::PeerList, r#""peer_list""#);
        round_trip(
            Request::EndpointAdd {
                ip: "10.103.100.5".into(),
                dev: "veth1".into(),
            },
            r#"{"endpoint_add":{"ip":"10.103.100.5","dev":"veth1"}}"#,
        );
        round_trip(
            Request::EndpointDel {
                ip: "10.103.100.5".into(),
            },
            r#"{"endpoint_del":{"ip":"10.103.100.5"}}"#,
        );
        round_trip(Request::EndpointList, r#""endpoint_list""#);
        round_trip(
            Request::Attach {
                container: Some("web".into()),
                netns: None,
                address: "10.103.100.50/24".into(),
                mtu: None,
                network: None,
            },
            r#"{"attach":{"container":"web","netns":null,"address":"10.103.100.50/24","mtu":null}}"#,
        );
        round_trip(
            Request::Detach {
                container: None,
                netns: Some("ns1".into()),
            },
            r#"{"detach":{"container":null,"netns":"ns1"}}"#,
        );
        round_trip(Request::Status, r#""status""#);
        round_trip(Request::Hosts, r#""hosts""#);
        round_trip(
            Request::HostRm { name: "h2".into() },
            r#"{"host_rm":{"name":"h2"}}"#,
        );
        round_trip(Request::ClusterStatus, r#""cluster_status""#);
        round_trip(
            Request::NetworkCreate {
                name: "web".into(),
                subnet: Some("10.104.0.0/24".into()),
                gateway: None,
                vni: Some(4096),
            },
            r#"{"network_create":{"name":"web","subnet":"10.104.0.0/24","gateway":null,"vni":4096}}"#,
        );
        round_trip(Request::NetworkList, r#""network_list""#);
        round_trip(
            Request::NetworkRm { name: "web".into() },
            r#"{"network_rm":{"name":"web"}}"#,
        );
        // vtep_mac may be left out.
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"peer_add":{"subnet":"a","underlay_ip":"b"}}"#)
                .unwrap(),
            Request::PeerAdd {
                subnet: "a".into(),
                underlay_ip: "b".into(),
                vtep_mac: None
            }
        );
    }

    #[test]
    fn response_json() {
        round_trip(Response::Ok, r#""ok""#);
        round_trip(
            Response::Networks(vec![NetworkInfo {
                spec: NetworkSpec {
                    name: "web".into(),
                    vni: 4096,
                    subnet: "10.104.0.0/24".parse().unwrap(),
                    gateway: Ipv4Addr::new(10, 104, 0, 1),
                },
                carried: true,
            }]),
            r#"{"networks":[{"name":"web","vni":4096,"subnet":"10.104.0.0/24","gateway":"10.104.0.1","carried":true}]}"#,
        );
        round_trip(
            Response::Error {
                message: "no peer for 10.1.2.0/24".into(),
            },
            r#"{"error":{"message":"no peer for 10.1.2.0/24"}}"#,
        );
        round_trip(
            Response::Peers(vec![PeerInfo {
                subnet: "10.103.200.0/24".parse().unwrap(),
                underlay_ip: Ipv4Addr::new(192, 168, 56, 5),
                vtep_mac: "02:2a:c0:a8:38:05".into(),
                vtep_mac_derived: true,
                source: Source::Config,
                traffic: None,
            }]),
            r#"{"peers":[{"subnet":"10.103.200.0/24","underlay_ip":"192.168.56.5","vtep_mac":"02:2a:c0:a8:38:05","vtep_mac_derived":true,"source":"config"}]}"#,
        );
        round_trip(
            Response::Endpoints(vec![EndpointInfo {
                ip: Ipv4Addr::new(10, 103, 100, 2),
                dev: "veth1".into(),
                ifindex: 10,
                mac: None,
                source: Source::Discovered,
            }]),
            r#"{"endpoints":[{"ip":"10.103.100.2","dev":"veth1","ifindex":10,"mac":null,"source":"discovered"}]}"#,
        );
        let mut stats = Stats::default();
        stats.counters.insert("encap_packets".into(), 3);
        let status = Response::Status(Box::new(Status {
            mode: Mode::Ebpf,
            mode_reason: None,
            subnet: "10.103.100.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 103, 100, 1),
            underlay_interface: "eth1".into(),
            underlay_ip: Ipv4Addr::new(192, 168, 56, 4),
            vtep_mac: "02:2a:c0:a8:38:04".into(),
            bridge: "docker0".into(),
            vni: 42,
            vxlan_port: 4789,
            attach: crate::model::config::AttachPoint::Veth,
            xdp: crate::model::config::XdpMode::Generic,
            path: None,
            peers: 1,
            endpoints: 2,
            networks: 0,
            net_endpoints: 0,
            stats,
            cluster: None,
            health: Default::default(),
        }));
        let json = serde_json::to_string(&status).unwrap();
        assert!(
            json.starts_with(r#"{"status":{"mode":"ebpf","subnet":"10.103.100.0/24""#),
            "{json}"
        );
        assert!(
            json.contains(r#""stats":{"counters":{"encap_packets":3},"drops":{}}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Response>(&json).unwrap(), status);
    }
}
