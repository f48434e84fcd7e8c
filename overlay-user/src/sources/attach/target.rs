//! What attach and detach share: their errors, the address parser and
//! finding a target's namespace and host-side interface name.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

use crate::agent::error::AgentError;
use crate::model::attach::{container_ifname, netns_ifname, Target};
use crate::model::source::Source;
use crate::sources::SourceError;
use crate::sys::docker;
use crate::sys::error::SysError;
use crate::sys::netns;

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
    /// `--network` without a `[cluster]` section.
    #[error("--network needs overlayd with a [cluster] section (overlay networks live in the cluster store)")]
    NoCluster,
    /// The cluster store refused or failed (its message says why).
    #[error(transparent)]
    Directory(#[from] SourceError),
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

/// The target's namespace file, its host-side interface name, its ID and name.
pub(crate) struct Resolved {
    pub(crate) ns_path: PathBuf,
    pub(crate) host_ifname: String,
    pub(crate) id: String,
    pub(crate) name: String,
}

pub(crate) async fn resolve(
    target: &Target,
    socket: &std::path::Path,
) -> Result<Resolved, AttachError> {
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
                id: info.id,
                name: info.name,
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
                id: name.clone(),
                name: name.clone(),
            })
        }
    }
}
