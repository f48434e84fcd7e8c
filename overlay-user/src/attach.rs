//! `overlayctl attach`: plumb a container started with `--network none`, or
//! a named network namespace, into this host's bridge, as pipework does.
//!
//! A veth pair is made in the host's namespace; one end is moved into the
//! target's namespace (found through the container's PID from the Docker
//! API, or `/run/netns/NAME`) and becomes `eth0` there with the address, the
//! overlay MTU (underlay MTU - 50 unless given), a Docker-style MAC
//! (`02:42:` + the address) and a default route via this host's gateway.
//! The other end is plugged into the bridge and registered as an endpoint
//! with source `attach` (kept in the state file). The host-side name is
//! derived from the target (`ovlc` + the container ID's first 11 hex
//! digits, `ovln` + a hash of the namespace name), so `detach` finds it
//! again, also after a restart of overlayd. Deleting that interface removes
//! the pair, and with it the container's `eth0`, its address and route.
//!
//! Any failure after the pair exists deletes the pair again: a failed attach
//! leaves nothing behind.

use std::fmt;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::agent::{Agent, AgentError, Source};
use crate::config::format_mac;
use crate::docker::{self, DockerError};
use crate::netlink::{self, Handle, NetlinkError};
use crate::netns::{self, NetnsError};

/// Host-side names of interfaces attached to containers start with this.
pub const CONTAINER_PREFIX: &str = "ovlc";
/// Host-side names of interfaces attached to named namespaces start with this.
pub const NETNS_PREFIX: &str = "ovln";
/// The container end's name while it is still in the host's namespace.
const TEMP_PREFIX: &str = "ovlt";
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
    /// The bridge.
    pub bridge: String,
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

/// Errors of attach and detach; the messages are shown to users as is.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The address is not of the form a.b.c.d/len.
    #[error("{0:?} is not an address with a prefix length; expected one like 10.103.100.50/24")]
    BadAddress(String),
    /// The prefix length differs from this host's subnet's.
    #[error("{given} does not match this host's subnet {subnet}; expected {ip}/{}", subnet.prefix_len())]
    WrongPrefix {
        /// What was given.
        given: Ipv4Net,
        /// The address.
        ip: Ipv4Addr,
        /// This host's subnet.
        subnet: Ipv4Net,
    },
    /// The MTU is out of range.
    #[error("MTU {0} is out of range; expected 68 to 65535")]
    BadMtu(u32),
    /// The address is unusable (not in the subnet, reserved).
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The address is already an endpoint.
    #[error("{ip} is already an endpoint on {dev} ({by}); detach or delete it first, or choose another address")]
    InUse {
        /// The address.
        ip: Ipv4Addr,
        /// Its interface.
        dev: String,
        /// Who added it.
        by: Source,
    },
    /// The target already has our interface.
    #[error("{target} is already attached (host interface {host_ifname} exists); detach it first")]
    AlreadyAttached {
        /// The target.
        target: Target,
        /// Our host-side interface.
        host_ifname: String,
    },
    /// The target already has an interface with the name we would use.
    #[error("{target} already has an interface {ifname}; attach is for containers started with --network none")]
    HasInterface {
        /// The target.
        target: Target,
        /// The name.
        ifname: String,
    },
    /// The target is not attached.
    #[error("{target} is not attached (no host interface {host_ifname}, no endpoint on it)")]
    NotAttached {
        /// The target.
        target: Target,
        /// The host-side name it would have.
        host_ifname: String,
    },
    /// The container could not be found or does not run.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// The named network namespace does not exist.
    #[error("no network namespace named {0} (expected /run/netns/{0})")]
    NoNetns(String),
    /// Entering the target's namespace failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A netlink query failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// A netlink change was refused; whatever was made was removed again.
    #[error("{what}: {reason}")]
    Plumbing {
        /// What was being done.
        what: String,
        /// What the kernel reported.
        reason: String,
    },
}

/// Parse "a.b.c.d/len" (host bits expected: it is an interface address).
pub fn parse_address(value: &str) -> Result<Ipv4Net, AttachError> {
    let v = value.trim();
    if !v.contains('/') {
        return Err(AttachError::BadAddress(value.to_owned()));
    }
    v.parse()
        .map_err(|_| AttachError::BadAddress(value.to_owned()))
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

/// The Docker-style MAC for `ip`: 02:42 and the four address bytes.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// The target's namespace file, its host-side interface name, and a label.
struct Resolved {
    ns_path: PathBuf,
    host_ifname: String,
}

async fn resolve(target: &Target, socket: &std::path::Path) -> Result<Resolved, AttachError> {
    match target {
        Target::Container(name) => {
            let client = docker::connect(socket).await?;
            let inspect = docker::inspect(&client, socket, name)
                .await?
                .ok_or_else(|| DockerError::NoContainer(name.clone()))?;
            let info = docker::container_info(&inspect, &[], Ipv4Net::default());
            let pid = info
                .pid
                .ok_or_else(|| DockerError::NotRunning(name.clone()))?;
            Ok(Resolved {
                ns_path: netns::of_pid(pid),
                host_ifname: container_ifname(&info.id),
            })
        }
        Target::Netns(name) => {
            let path = netns::named(name);
            if name.is_empty() || name.contains('/') || !path.exists() {
                return Err(AttachError::NoNetns(name.clone()));
            }
            Ok(Resolved {
                ns_path: path,
                host_ifname: netns_ifname(name),
            })
        }
    }
}

fn plumbing(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> AttachError {
    let what = what.into();
    move |e| AttachError::Plumbing {
        what,
        reason: e.to_string(),
    }
}

/// Attach `target` with address `addr` (e.g. 10.103.100.50/24); `mtu`
/// defaults to the underlay interface's MTU minus 50.
pub async fn attach(
    agent: &Mutex<Agent>,
    target: Target,
    addr: Ipv4Net,
    mtu: Option<u32>,
) -> Result<Attachment, AttachError> {
    let ip = addr.addr();
    let (cfg, gateway) = {
        let agent = agent.lock().await;
        let cfg = agent.config().clone();
        if addr.prefix_len() != cfg.subnet.prefix_len() {
            return Err(AttachError::WrongPrefix {
                given: addr,
                ip,
                subnet: cfg.subnet,
            });
        }
        agent.check_endpoint_ip(ip)?;
        if let Some(e) = agent.endpoints().get(&ip) {
            return Err(AttachError::InUse {
                ip,
                dev: e.spec.ifname.clone(),
                by: e.source,
            });
        }
        let gateway = cfg.gateway();
        (cfg, gateway)
    };
    if let Some(m) = mtu {
        if !(68..=65535).contains(&m) {
            return Err(AttachError::BadMtu(m));
        }
    }
    let resolved = resolve(&target, &cfg.docker.socket).await?;
    let host_ifname = resolved.host_ifname.clone();
    let handle = netlink::connect()?;
    let mtu = match mtu {
        Some(m) => m,
        None => netlink::link_by_name(&handle, &cfg.underlay_interface)
            .await?
            .mtu
            .saturating_sub(VXLAN_OVERHEAD),
    };
    let bridge = netlink::link_by_name(&handle, &cfg.bridge).await?;
    match netlink::link_by_name(&handle, &host_ifname).await {
        Ok(_) => {
            return Err(AttachError::AlreadyAttached {
                target,
                host_ifname,
            })
        }
        Err(NetlinkError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let ns_file = netns::open(&resolved.ns_path)?;
    let has_eth0 = netns::run_in(&resolved.ns_path, |h| {
        Box::pin(async move { netlink::link_by_name(&h, CONTAINER_IFNAME).await.is_ok() })
    })
    .await?;
    if has_eth0 {
        return Err(AttachError::HasInterface {
            target,
            ifname: CONTAINER_IFNAME.into(),
        });
    }

    let mac = mac_for(ip);
    let temp = format!("{TEMP_PREFIX}{}", &host_ifname[CONTAINER_PREFIX.len()..]);
    handle
        .link()
        .add()
        .veth(temp.clone(), host_ifname.clone())
        .execute()
        .await
        .map_err(plumbing(format!("creating veth pair {host_ifname}/{temp}")))?;
    let made = plumb(
        &handle,
        &resolved,
        ns_file,
        &temp,
        mac,
        mtu,
        addr,
        gateway,
        bridge.index,
    )
    .await;
    let registered = match made {
        Ok(()) => agent
            .lock()
            .await
            .add_endpoint_with_mac(ip, &host_ifname, mac, Source::Attach)
            .await
            .map_err(AttachError::from),
        Err(e) => Err(e),
    };
    if let Err(e) = registered {
        remove_link(&handle, &host_ifname).await;
        return Err(e);
    }
    log::info!(
        "attached {target}: {CONTAINER_IFNAME} {addr} mac {} mtu {mtu} via {host_ifname} on {}",
        format_mac(&mac),
        cfg.bridge
    );
    Ok(Attachment {
        target,
        ifname: CONTAINER_IFNAME.into(),
        ip,
        prefix: addr.prefix_len(),
        mac: format_mac(&mac),
        mtu,
        gateway,
        host_ifname,
        bridge: cfg.bridge,
    })
}

/// Move the pair's far end into the target and configure both ends.
#[allow(clippy::too_many_arguments)]
async fn plumb(
    handle: &Handle,
    resolved: &Resolved,
    ns_file: std::fs::File,
    temp: &str,
    mac: [u8; 6],
    mtu: u32,
    addr: Ipv4Net,
    gateway: Ipv4Addr,
    bridge_index: u32,
) -> Result<(), AttachError> {
    let host = netlink::link_by_name(handle, &resolved.host_ifname).await?;
    let peer = netlink::link_by_name(handle, temp).await?;
    handle
        .link()
        .set(peer.index)
        .mtu(mtu)
        .address(mac.to_vec())
        .execute()
        .await
        .map_err(plumbing(format!("setting MTU and MAC of {temp}")))?;
    handle
        .link()
        .set(peer.index)
        .setns_by_fd(ns_file.as_raw_fd())
        .execute()
        .await
        .map_err(plumbing(format!(
            "moving {temp} into {}",
            resolved.ns_path.display()
        )))?;
    drop(ns_file);
    let temp_name = temp.to_string();
    netns::run_in(&resolved.ns_path, move |h| {
        Box::pin(async move { configure_inside(&h, &temp_name, mtu, addr, gateway).await })
    })
    .await??;
    handle
        .link()
        .set(host.index)
        .mtu(mtu)
        .execute()
        .await
        .map_err(plumbing(format!("setting MTU of {}", resolved.host_ifname)))?;
    handle
        .link()
        .set(host.index)
        .controller(bridge_index)
        .execute()
        .await
        .map_err(plumbing(format!(
            "plugging {} into the bridge",
            resolved.host_ifname
        )))?;
    handle
        .link()
        .set(host.index)
        .up()
        .execute()
        .await
        .map_err(plumbing(format!("bringing {} up", resolved.host_ifname)))?;
    Ok(())
}

/// Inside the target: rename to eth0, up, address, default route; lo up.
async fn configure_inside(
    h: &Handle,
    temp: &str,
    mtu: u32,
    addr: Ipv4Net,
    gateway: Ipv4Addr,
) -> Result<(), AttachError> {
    let link = netlink::link_by_name(h, temp).await?;
    h.link()
        .set(link.index)
        .name(CONTAINER_IFNAME.into())
        .mtu(mtu)
        .execute()
        .await
        .map_err(plumbing(format!("renaming {temp} to {CONTAINER_IFNAME}")))?;
    h.link()
        .set(link.index)
        .up()
        .execute()
        .await
        .map_err(plumbing(format!("bringing {CONTAINER_IFNAME} up")))?;
    if let Ok(lo) = netlink::link_by_name(h, "lo").await {
        let _ = h.link().set(lo.index).up().execute().await;
    }
    h.address()
        .add(link.index, addr.addr().into(), addr.prefix_len())
        .execute()
        .await
        .map_err(plumbing(format!("adding {addr} to {CONTAINER_IFNAME}")))?;
    h.route()
        .add()
        .v4()
        .output_interface(link.index)
        .gateway(gateway)
        .execute()
        .await
        .map_err(plumbing(format!("adding the default route via {gateway}")))?;
    Ok(())
}

async fn remove_link(handle: &Handle, name: &str) -> bool {
    match netlink::link_by_name(handle, name).await {
        Ok(link) => match handle.link().del(link.index).execute().await {
            Ok(()) => true,
            Err(e) => {
                log::warn!("removing {name}: {e}");
                false
            }
        },
        Err(_) => false,
    }
}

/// Undo [`attach`]: remove the endpoint and the veth pair.
pub async fn detach(agent: &Mutex<Agent>, target: Target) -> Result<Detachment, AttachError> {
    let socket = agent.lock().await.config().docker.socket.clone();
    let host_ifname = match &target {
        Target::Container(_) => resolve(&target, &socket).await?.host_ifname,
        Target::Netns(name) => netns_ifname(name),
    };
    let ip = {
        let mut agent = agent.lock().await;
        let ip = agent
            .endpoints()
            .values()
            .find(|e| e.source == Source::Attach && e.spec.ifname == host_ifname)
            .map(|e| e.spec.ip);
        if let Some(ip) = ip {
            agent.del_endpoint(ip).await?;
        }
        ip
    };
    let handle = netlink::connect()?;
    let interface_removed = remove_link(&handle, &host_ifname).await;
    if ip.is_none() && !interface_removed {
        return Err(AttachError::NotAttached {
            target,
            host_ifname,
        });
    }
    log::info!(
        "detached {target}: {host_ifname} {} removed",
        ip.map(|ip| format!("and endpoint {ip}"))
            .unwrap_or_default()
    );
    Ok(Detachment {
        target,
        host_ifname,
        interface_removed,
        ip,
    })
}

/// Interfaces inside `ns_path`, by name (used by tests and diagnostics).
pub async fn interfaces_in(ns_path: &std::path::Path) -> Result<Vec<String>, AttachError> {
    let names = netns::run_in(ns_path, |h| {
        Box::pin(async move {
            h.link()
                .get()
                .execute()
                .try_collect::<Vec<_>>()
                .await
                .map(|msgs| {
                    msgs.into_iter()
                        .filter_map(|m| {
                            m.attributes.into_iter().find_map(|a| match a {
                                netlink_packet_route::link::LinkAttribute::IfName(n) => Some(n),
                                _ => None,
                            })
                        })
                        .collect::<Vec<_>>()
                })
                .map_err(|e| e.to_string())
        })
    })
    .await?;
    names.map_err(|reason| AttachError::Plumbing {
        what: format!("listing interfaces in {}", ns_path.display()),
        reason,
    })
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

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("10.103.100.50/24").unwrap().to_string(),
            "10.103.100.50/24"
        );
        for bad in ["10.103.100.50", "10.103.100.50/33", "x/24", ""] {
            assert_eq!(
                parse_address(bad).unwrap_err().to_string(),
                format!("{bad:?} is not an address with a prefix length; expected one like 10.103.100.50/24")
            );
        }
        assert_eq!(
            mac_for("10.103.100.50".parse().unwrap()),
            [2, 0x42, 10, 103, 100, 50]
        );
    }

    #[test]
    fn messages() {
        let e = AttachError::WrongPrefix {
            given: "10.103.100.50/16".parse().unwrap(),
            ip: "10.103.100.50".parse().unwrap(),
            subnet: "10.103.100.0/24".parse().unwrap(),
        };
        assert_eq!(
            e.to_string(),
            "10.103.100.50/16 does not match this host's subnet 10.103.100.0/24; expected 10.103.100.50/24"
        );
        let e = AttachError::HasInterface {
            target: Target::Container("web".into()),
            ifname: "eth0".into(),
        };
        assert_eq!(
            e.to_string(),
            "container web already has an interface eth0; attach is for containers started with --network none"
        );
    }
}
