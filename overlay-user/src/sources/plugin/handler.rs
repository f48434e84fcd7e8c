//! The plugin's calls and what it remembers between them: [`Plugin`]
//! (its IPAM calls in `ipam`, its network driver calls in `driver`, the
//! sync with Docker in `sync`), its errors and the names it gives.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use bollard::Docker;
use ipnet::Ipv4Net;
use serde_json::{json, Value};

use crate::agent::error::AgentError;
use crate::agent::handle::Core;
use crate::model::config::Config;
use crate::model::overlay_network::NetworkSpec;
use crate::sources::plugin::wire;
use crate::sources::{NetworkDirectory, SourceError};
use crate::sys::docker;
use crate::sys::error::SysError;

/// The names networks get while Docker has not told their real name yet.
pub const PROVISIONAL_PREFIX: &str = "ovl-pending-";
/// Host-side veths of plugin endpoints: this and 11 hex digits of the endpoint ID.
pub const HOST_PREFIX: &str = "ovn";
/// The container end while it is still in the host's namespace.
pub const TEMP_PREFIX: &str = "ovq";
/// What the container end is called in the container (`eth0`, ...).
pub const DST_PREFIX: &str = "eth";

/// Errors of the plugin source; the messages reach `docker` users as is.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// A call the plugin does not implement.
    #[error("unknown call {0:?}; expected one of Docker's NetworkDriver or IpamDriver calls")]
    UnknownCall(String),
    /// A request body that is not the protocol's JSON.
    #[error("{0}")]
    BadRequest(String),
    /// The plugin socket cannot be made.
    #[error("plugin socket {path}: {reason}; expected a writable directory (docker.plugin_dir)")]
    Socket {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A network made with Docker's default IPAM.
    #[error("network {network} uses Docker's default IPAM (address space {address_space:?}); the ovl network driver needs ovl's IPAM: add --ipam-driver ovl, as in `docker network create -d ovl --ipam-driver ovl --subnet 10.103.240.0/24 NAME`")]
    DefaultIpam {
        /// Docker's network ID (short).
        network: String,
        /// The address space it came with.
        address_space: String,
    },
    /// An IPv6 pool.
    #[error("IPv6 is not supported by ovl; leave out --ipv6")]
    NoIpv6,
    /// A sub-range of the subnet.
    #[error("--ip-range {0} is not supported by ovl; leave it out (addresses come from the whole subnet, unique across hosts)")]
    IpRange(String),
    /// A value that does not parse.
    #[error("{what} {value:?} is not valid; expected {expected}")]
    BadValue {
        /// What it is.
        what: &'static str,
        /// The value.
        value: String,
        /// What is expected.
        expected: &'static str,
    },
    /// A pool ID that is no network's subnet.
    #[error("no overlay network has subnet {0}; expected a pool handed out by ovl (see overlayctl network ls)")]
    UnknownPool(String),
    /// A Docker network that is not one of the store's.
    #[error("Docker network {0} is no overlay network of the cluster store; expected one made with -d ovl --ipam-driver ovl")]
    UnknownNetwork(String),
    /// An endpoint this host does not know.
    #[error(
        "endpoint {0} is unknown to this host's ovl plugin; expected one made by CreateEndpoint"
    )]
    UnknownEndpoint(String),
    /// A gateway other than the network's.
    #[error("gateway {given} differs from network {network}'s gateway {gateway}; leave out --gateway or give {gateway}")]
    Gateway {
        /// The network.
        network: String,
        /// What was asked for.
        given: Ipv4Addr,
        /// The network's gateway.
        gateway: Ipv4Addr,
    },
    /// The address Docker gave is not in the network's subnet.
    #[error("address {ip} is outside network {network}'s subnet {subnet}; expected an address from ovl's IPAM")]
    Outside {
        /// The address.
        ip: Ipv4Addr,
        /// The network.
        network: String,
        /// Its subnet.
        subnet: Ipv4Net,
    },
    /// The store refused or failed (its message says why).
    #[error(transparent)]
    Directory(#[from] SourceError),
    /// The core refused the endpoint.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// Netlink or the Docker API failed.
    #[error(transparent)]
    Sys(#[from] SysError),
}

/// What the plugin needs to know of this host.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The plugin socket, `<plugin_dir>/ovl.sock`.
    pub socket: PathBuf,
    /// The Docker Engine API socket.
    pub docker_socket: PathBuf,
    /// This host's name in the cluster store.
    pub host: String,
    /// This host's underlay address.
    pub underlay_ip: Ipv4Addr,
    /// The underlay interface (the endpoints' MTU is its MTU minus 50).
    pub underlay_interface: String,
}

impl Settings {
    /// From the config and this host's cluster identity.
    pub fn new(cfg: &Config, host: String, underlay_ip: Ipv4Addr) -> Settings {
        Settings {
            socket: cfg.docker.plugin_socket(),
            docker_socket: cfg.docker.socket.clone(),
            host,
            underlay_ip,
            underlay_interface: cfg.underlay_interface.clone(),
        }
    }
}

/// An endpoint of this host, made by `CreateEndpoint`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalEndpoint {
    /// The store's network.
    pub network: NetworkSpec,
    /// Docker's network ID.
    pub docker_network: String,
    /// Docker's endpoint ID.
    pub endpoint_id: String,
    /// The address.
    pub ip: Ipv4Addr,
    /// The MAC.
    pub mac: [u8; 6],
    /// The host-side veth.
    pub ifname: String,
    /// Whether `Join` made the veth and reported it.
    pub joined: bool,
    /// Whether its record has the container's name (read from the Engine API after `Join`).
    pub named: bool,
}

/// A network stored under a provisional name until Docker's name is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// As stored now.
    pub spec: NetworkSpec,
    /// The gateway Docker asked for (`--gateway`), if any.
    pub gateway: Option<Ipv4Addr>,
}

/// What the plugin remembers between calls.
#[derive(Debug, Default)]
pub struct State {
    /// Docker's network ID -> the network's subnet.
    pub networks: HashMap<String, Ipv4Net>,
    /// Docker's endpoint ID -> the endpoint.
    pub endpoints: HashMap<String, LocalEndpoint>,
    /// Subnet -> the network stored under a provisional name.
    pub pending: HashMap<Ipv4Net, Pending>,
}

/// The plugin: its calls, shared by the server's connections and the sync.
pub struct Plugin {
    pub(super) dir: Arc<dyn NetworkDirectory>,
    pub(super) core: Core,
    pub(super) settings: Settings,
    docker: tokio::sync::Mutex<Option<Docker>>,
    state: Mutex<State>,
    pub(super) wake: tokio::sync::Notify,
}

impl Plugin {
    /// A plugin reporting to `core`, with the store behind `dir`.
    pub fn new(dir: Arc<dyn NetworkDirectory>, core: Core, settings: Settings) -> Plugin {
        Plugin {
            dir,
            core,
            settings,
            docker: tokio::sync::Mutex::new(None),
            state: Mutex::new(State::default()),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Wake the sync loop (a network to rename, an endpoint to name).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The remembered state.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The Docker Engine API client, connected on first use.
    pub async fn docker(&self) -> Result<Docker, SysError> {
        let mut d = self.docker.lock().await;
        if let Some(d) = d.as_ref() {
            return Ok(d.clone());
        }
        let client = docker::connect(&self.settings.docker_socket).await?;
        *d = Some(client.clone());
        Ok(client)
    }

    /// Answer the call `name` (`NetworkDriver.Join`, ...) with body `body`.
    pub async fn call(&self, name: &str, body: &[u8]) -> Result<Value, PluginError> {
        fn p<T: for<'de> serde::Deserialize<'de> + Default>(b: &[u8]) -> Result<T, PluginError> {
            wire::parse(b).map_err(PluginError::BadRequest)
        }
        match name {
            "Plugin.Activate" => Ok(json!({ "Implements": ["NetworkDriver", "IpamDriver"] })),
            "NetworkDriver.GetCapabilities" => {
                Ok(json!({ "Scope": "local", "ConnectivityScope": "global" }))
            }
            "NetworkDriver.CreateNetwork" => self.create_network(p(body)?).await,
            "NetworkDriver.DeleteNetwork" => self.delete_network(p(body)?).await,
            "NetworkDriver.CreateEndpoint" => self.create_endpoint(p(body)?).await,
            "NetworkDriver.Join" => self.join(p(body)?).await,
            "NetworkDriver.DeleteEndpoint" => self.delete_endpoint(p(body)?).await,
            "NetworkDriver.EndpointOperInfo" => Ok(json!({ "Value": {} })),
            "NetworkDriver.Leave"
            | "NetworkDriver.ProgramExternalConnectivity"
            | "NetworkDriver.RevokeExternalConnectivity"
            | "NetworkDriver.DiscoverNew"
            | "NetworkDriver.DiscoverDelete" => Ok(json!({})),
            "IpamDriver.GetCapabilities" => Ok(json!({ "RequiresMACAddress": false })),
            "IpamDriver.GetDefaultAddressSpaces" => Ok(json!({
                "LocalDefaultAddressSpace": wire::ADDRESS_SPACE,
                "GlobalDefaultAddressSpace": wire::ADDRESS_SPACE,
            })),
            "IpamDriver.RequestPool" => self.request_pool(p(body)?).await,
            "IpamDriver.ReleasePool" => self.release_pool(p(body)?).await,
            "IpamDriver.RequestAddress" => self.request_address(p(body)?).await,
            "IpamDriver.ReleaseAddress" => self.release_address(p(body)?).await,
            other => Err(PluginError::UnknownCall(other.to_string())),
        }
    }

    /// The store's network with `subnet`, if any.
    pub async fn stored_by_subnet(
        &self,
        subnet: Ipv4Net,
    ) -> Result<Option<NetworkSpec>, PluginError> {
        Ok(self
            .dir
            .networks()
            .await?
            .into_iter()
            .find(|n| n.subnet == subnet))
    }
}

/// The host-side veth name for Docker's endpoint `id`: `ovn` + 11 hex digits.
pub fn host_ifname(id: &str) -> String {
    let hex: String = id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(11)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("{HOST_PREFIX}{hex}")
}

/// The container end's name while it is in the host's namespace.
pub fn temp_ifname(id: &str) -> String {
    format!("{TEMP_PREFIX}{}", &host_ifname(id)[HOST_PREFIX.len()..])
}

/// Parse "a.b.c.d/len" or "a.b.c.d" as an address.
pub fn parse_ip(what: &'static str, value: &str) -> Result<Ipv4Addr, PluginError> {
    let bare = value.split('/').next().unwrap_or_default();
    bare.parse().map_err(|_| PluginError::BadValue {
        what,
        value: value.to_string(),
        expected: "an IPv4 address like 10.103.240.2/24",
    })
}

/// Parse a pool (a subnet without host bits).
pub fn parse_subnet(what: &'static str, value: &str) -> Result<Ipv4Net, PluginError> {
    let bad = || PluginError::BadValue {
        what,
        value: value.to_string(),
        expected: "an IPv4 subnet like 10.103.240.0/24",
    };
    let net: Ipv4Net = value.parse().map_err(|_| bad())?;
    if net.trunc() != net {
        return Err(bad());
    }
    Ok(net)
}
