//! Attach, a control source: `overlayctl attach` plumbs a container started with `--network none`, or
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
//!
//! The API asks for it through the [`Plumber`] interface; the veth
//! plumbing itself is [`crate::sys::veth`], the container lookup
//! [`crate::sys::docker`], the naming [`crate::model::attach`].

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

use crate::agent::error::AgentError;
use crate::agent::handle::Core;
use crate::model::attach::{
    container_ifname, mac_for, netns_ifname, Attachment, Detachment, Target, CONTAINER_IFNAME,
    CONTAINER_PREFIX, TEMP_PREFIX, VXLAN_OVERHEAD,
};
use crate::model::change::Change;
use crate::model::source::Source;
use crate::model::validation::format_mac;
use crate::sources::{Plumber, SourceError};
use crate::sys::docker;
use crate::sys::error::SysError;
use crate::sys::netlink;
use crate::sys::netns;
use crate::sys::veth::{self, Inside};

/// The attach source: plumbs containers when the API asks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Attacher;

#[async_trait::async_trait]
impl Plumber for Attacher {
    async fn attach(
        &self,
        core: &Core,
        target: Target,
        address: &str,
        mtu: Option<u32>,
    ) -> Result<Attachment, SourceError> {
        let plumbing = |e: AttachError| SourceError::Plumbing(Box::new(e));
        let addr = parse_address(address).map_err(plumbing)?;
        attach(core, target, addr, mtu).await.map_err(plumbing)
    }

    async fn detach(&self, core: &Core, target: Target) -> Result<Detachment, SourceError> {
        detach(core, target)
            .await
            .map_err(|e| SourceError::Plumbing(Box::new(e)))
    }
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
    /// The named network namespace does not exist.
    #[error("no network namespace named {0} (expected /run/netns/{0})")]
    NoNetns(String),
    /// The container could not be found or does not run, its namespace could
    /// not be entered, a netlink query failed or a change was refused
    /// (whatever was made was removed again).
    #[error(transparent)]
    Sys(#[from] SysError),
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
                .ok_or_else(|| SysError::NoContainer(name.clone()))?;
            let info = docker::container(&inspect);
            let pid = info.pid.ok_or_else(|| SysError::NotRunning(name.clone()))?;
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

/// Attach `target` with address `addr` (e.g. 10.103.100.50/24); `mtu`
/// defaults to the underlay interface's MTU minus 50.
pub async fn attach(
    core: &Core,
    target: Target,
    addr: Ipv4Net,
    mtu: Option<u32>,
) -> Result<Attachment, AttachError> {
    let ip = addr.addr();
    let (cfg, gateway) = {
        let agent = core.lock().await;
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
        Err(SysError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let ns_file = netns::open(&resolved.ns_path)?;
    let has_eth0 = veth::has_link_in(&resolved.ns_path, CONTAINER_IFNAME).await?;
    if has_eth0 {
        return Err(AttachError::HasInterface {
            target,
            ifname: CONTAINER_IFNAME.into(),
        });
    }

    let mac = mac_for(ip);
    let temp = format!("{TEMP_PREFIX}{}", &host_ifname[CONTAINER_PREFIX.len()..]);
    veth::create_pair(&handle, &host_ifname, &temp).await?;
    let inside = Inside {
        ifname: CONTAINER_IFNAME.into(),
        mac,
        mtu,
        addr,
        gateway,
    };
    let made = veth::plumb(
        &handle,
        &resolved.ns_path,
        ns_file,
        &host_ifname,
        &temp,
        &inside,
        bridge.index,
    )
    .await
    .map_err(AttachError::from);
    let registered = match made {
        Ok(()) => {
            let change = Change::AddEndpoint {
                ip,
                ifname: host_ifname.clone(),
                mac: Some(mac),
            };
            core.apply(Source::Attach, change)
                .await
                .map_err(AttachError::from)
        }
        Err(e) => Err(e),
    };
    if let Err(e) = registered {
        veth::remove_link(&handle, &host_ifname).await;
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

/// Undo [`attach`]: remove the endpoint and the veth pair.
pub async fn detach(core: &Core, target: Target) -> Result<Detachment, AttachError> {
    let socket = core.lock().await.config().docker.socket.clone();
    let host_ifname = match &target {
        Target::Container(_) => resolve(&target, &socket).await?.host_ifname,
        Target::Netns(name) => netns_ifname(name),
    };
    let ip = {
        let mut agent = core.lock().await;
        let ip = agent
            .endpoints()
            .values()
            .find(|e| e.source == Source::Attach && e.spec.ifname == host_ifname)
            .map(|e| e.spec.ip);
        if let Some(ip) = ip {
            agent.apply(Source::Attach, Change::DelEndpoint(ip)).await?;
        }
        ip
    };
    let handle = netlink::connect()?;
    let interface_removed = veth::remove_link(&handle, &host_ifname).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::attach::mac_for;

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
