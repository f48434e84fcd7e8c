//! Containers plumbed by hand (`overlayctl attach`): what to attach to,
//! what was made, and the names of the host-side interfaces, which both the
//! attach source (to find them again) and the Docker source (to forget a
//! stopped container's) derive from the target.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Host-side names of interfaces attached to containers start with this.
pub const CONTAINER_PREFIX: &str = "ovlc";
/// Host-side names of interfaces attached to named namespaces start with this.
pub const NETNS_PREFIX: &str = "ovln";
/// The container end's name while it is still in the host's namespace.
pub const TEMP_PREFIX: &str = "ovlt";
/// The interface's name inside the container.
pub const CONTAINER_IFNAME: &str = "eth0";
/// VXLAN over IPv4 overhead: the overlay MTU is the underlay's minus this.
pub const VXLAN_OVERHEAD: u32 = 50;

/// What to attach to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A Docker container, by name or ID.
    Container(String),
    /// A named network namespace (`/run/netns/NAME`).
    Netns(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Container(c) => write!(f, "container {c}"),
            Target::Netns(n) => write!(f, "network namespace {n}"),
        }
    }
}

/// What `attach` made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The target, as given.
    pub target: Target,
    /// The interface inside the target (`eth0`).
    pub ifname: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// Its MAC.
    pub mac: String,
    /// Its MTU.
    pub mtu: u32,
    /// The default route's gateway.
    pub gateway: Ipv4Addr,
    /// The host-side interface, a port of `bridge`.
    pub host_ifname: String,
    /// The bridge (empty for an overlay network).
    pub bridge: String,
    /// The overlay network (`attach --network`), if any.
    #[serde(default)]
    pub network: Option<String>,
}

/// What `detach` removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detachment {
    /// The target, as given.
    pub target: Target,
    /// The host-side interface that was deleted (with its peer in the target).
    pub host_ifname: String,
    /// Whether that interface still existed.
    pub interface_removed: bool,
    /// The endpoint that was removed, if there was one.
    pub ip: Option<Ipv4Addr>,
}

/// The host-side interface name for the container with full ID `id`.
pub fn container_ifname(id: &str) -> String {
    let hex: String = id
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(11)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("{CONTAINER_PREFIX}{hex}")
}

/// The host-side interface name for the named network namespace `name`.
pub fn netns_ifname(name: &str) -> String {
    // FNV-1a, 64 bits; 44 of them as 11 hex digits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{NETNS_PREFIX}{:011x}", h & 0xfff_ffff_ffff)
}

/// Host-side names of interfaces attached to overlay networks start with this.
pub const NETWORK_PREFIX: &str = "ovn";

/// The host-side name of a target on an overlay network, from its name on
/// the bridge ([`container_ifname`], [`netns_ifname`]): `ovn` and the same
/// 11 hex digits.
pub fn network_ifname(bridge_ifname: &str) -> String {
    let hex = bridge_ifname
        .strip_prefix(CONTAINER_PREFIX)
        .or_else(|| bridge_ifname.strip_prefix(NETNS_PREFIX))
        .unwrap_or(bridge_ifname);
    format!("{NETWORK_PREFIX}{hex}")
}

/// The Docker-style MAC for `ip`: 02:42 and the four address bytes.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_are_stable() {
        let id = "3ffd421aa325939c14bfb047be9507d7615f831d281543e20548c576ce19049d";
        assert_eq!(container_ifname(id), "ovlc3ffd421aa32");
        assert_eq!(container_ifname(id).len(), 15);
        let n = netns_ifname("ovl123x0-h1c1");
        assert_eq!(n.len(), 15);
        assert!(n.starts_with(NETNS_PREFIX));
        assert_eq!(n, netns_ifname("ovl123x0-h1c1"));
        assert_ne!(n, netns_ifname("ovl123x0-h1c2"));
    }
}
