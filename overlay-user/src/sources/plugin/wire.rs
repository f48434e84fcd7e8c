//! The JSON of Docker's remote network driver and IPAM protocols
//! (libnetwork's docs/remote.md and docs/ipam.md), as far as `ovl` reads
//! and answers it. Docker sends no Content-Type header; bodies are parsed
//! here whatever the headers say. Unknown fields are ignored, missing ones
//! are empty.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The content type of every answer.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";
/// The address space `ovl`'s IPAM reports as its default, local and global;
/// `CreateNetwork` tells Docker's default IPAM (`LocalDefault`) by it.
pub const ADDRESS_SPACE: &str = "ovl";
/// The option with which Docker asks for a network's gateway address.
pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
/// Its value for the gateway.
pub const GATEWAY_REQUEST: &str = "com.docker.network.gateway";

/// One pool of `CreateNetwork`'s `IPv4Data`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct IpamData {
    /// The IPAM driver's address space (`ovl` for ours, `LocalDefault` for Docker's).
    #[serde(rename = "AddressSpace")]
    pub address_space: String,
    /// The pool, a CIDR.
    #[serde(rename = "Pool")]
    pub pool: String,
    /// The gateway, a.b.c.d/len.
    #[serde(rename = "Gateway")]
    pub gateway: String,
}

/// `NetworkDriver.CreateNetwork`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateNetwork {
    /// Docker's network ID.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// The IPv4 pools.
    #[serde(rename = "IPv4Data")]
    pub ipv4_data: Vec<IpamData>,
    /// The IPv6 pools.
    #[serde(rename = "IPv6Data")]
    pub ipv6_data: Option<Vec<IpamData>>,
}

/// A request that names a network only (`DeleteNetwork`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct NetworkOnly {
    /// Docker's network ID.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

/// The interface of `CreateEndpoint`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct EndpointInterface {
    /// The IPv4 address from IPAM, a.b.c.d/len.
    #[serde(rename = "Address")]
    pub address: String,
    /// The MAC (`--mac-address`), or empty.
    #[serde(rename = "MacAddress")]
    pub mac_address: String,
}

/// `NetworkDriver.CreateEndpoint`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateEndpoint {
    /// Docker's network ID.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// Docker's endpoint ID.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// The interface as Docker has it so far.
    #[serde(rename = "Interface")]
    pub interface: Option<EndpointInterface>,
}

/// `Join`, `Leave`, `DeleteEndpoint`, `EndpointOperInfo`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct EndpointRef {
    /// Docker's network ID.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// Docker's endpoint ID.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// The container's namespace (`Join` only).
    #[serde(rename = "SandboxKey")]
    pub sandbox_key: String,
}

/// `IpamDriver.RequestPool`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RequestPool {
    /// The address space.
    #[serde(rename = "AddressSpace")]
    pub address_space: String,
    /// The subnet asked for (`--subnet`), or empty for one from the pool.
    #[serde(rename = "Pool")]
    pub pool: String,
    /// A sub-range (`--ip-range`), or empty.
    #[serde(rename = "SubPool")]
    pub sub_pool: String,
    /// `--ipam-opt` options.
    #[serde(rename = "Options")]
    pub options: Option<HashMap<String, String>>,
    /// Whether it is an IPv6 pool.
    #[serde(rename = "V6")]
    pub v6: bool,
}

/// `IpamDriver.ReleasePool`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ReleasePool {
    /// The pool's ID (ours: the subnet).
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

/// `IpamDriver.RequestAddress` and `ReleaseAddress`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct AddressRequest {
    /// The pool's ID (ours: the subnet).
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// The address asked for (`--ip`, `--gateway`), or empty.
    #[serde(rename = "Address")]
    pub address: String,
    /// Options; [`REQUEST_ADDRESS_TYPE`] says it is the gateway.
    #[serde(rename = "Options")]
    pub options: Option<HashMap<String, String>>,
}

impl AddressRequest {
    /// Whether Docker asks for the network's gateway.
    pub fn is_gateway(&self) -> bool {
        self.options
            .as_ref()
            .and_then(|o| o.get(REQUEST_ADDRESS_TYPE))
            .is_some_and(|t| t == GATEWAY_REQUEST)
    }
}

/// Parse a request body; an empty body is an empty request.
pub fn parse<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        format!(
            "cannot read the request {:?}: {e}; expected the JSON of Docker's plugin protocol",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )
    })
}

/// An error answer, `{"Err": "..."}`.
pub fn error(message: &str) -> Value {
    serde_json::json!({ "Err": message })
}

/// The answer of `CreateEndpoint` when the MAC was chosen here.
#[derive(Clone, Debug, Serialize)]
pub struct CreateEndpointReply {
    /// The interface's fields Docker did not give.
    #[serde(rename = "Interface", skip_serializing_if = "Option::is_none")]
    pub interface: Option<ReplyInterface>,
}

/// The interface part of [`CreateEndpointReply`].
#[derive(Clone, Debug, Serialize)]
pub struct ReplyInterface {
    /// The MAC, 02:42:... .
    #[serde(rename = "MacAddress")]
    pub mac_address: String,
}
