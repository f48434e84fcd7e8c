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
//! With `--network NAME` ([`network`]) the target joins an overlay network
//! of the cluster instead of the bridge: its address comes from the
//! network's IPAM (or `--ip`), the host end (`ovn` + 11 hex digits) stays
//! unplugged, the endpoint is reported as a network endpoint and its record
//! published so that every host installs it.
//!
//! The API asks for it through the [`Plumber`] interface; the veth
//! plumbing itself is [`crate::sys::veth`], the container lookup
//! [`crate::sys::docker`], the naming [`crate::model::attach`].
//!
//! Owns: plumbing targets into the bridge or an overlay network.
//! Must not touch: the other sources (the store is reached through
//! [`NetworkDirectory`](crate::sources::NetworkDirectory)) and the dataplane.

pub mod network;
pub mod target;

use target::resolve;
pub use target::{parse_address, AttachError};

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::agent::handle::Core;
use crate::model::attach::{
    mac_for, netns_ifname, Attachment, Detachment, Target, CONTAINER_IFNAME, CONTAINER_PREFIX,
    TEMP_PREFIX, VXLAN_OVERHEAD,
};
use crate::model::change::Change;
use crate::model::source::Source;
use crate::model::validation::format_mac;
use crate::sources::{Plumber, SourceError};
use crate::sys::error::SysError;
use crate::sys::netlink;
use crate::sys::netns;
use crate::sys::veth::{self, Inside};

/// The attach source: plumbs containers when the API asks; with a network
/// directory (`[cluster]`) also into overlay networks.
#[derive(Clone, Default)]
pub struct Attacher {
    networks: Option<network::Networks>,
}

impl Attacher {
    /// An attacher that also plumbs into the overlay networks of `networks`.
    pub fn with_networks(networks: network::Networks) -> Attacher {
        Attacher {
            networks: Some(networks),
        }
    }
}

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

    async fn attach_network(
        &self,
        core: &Core,
        target: Target,
        network: &str,
        ip: Option<Ipv4Addr>,
        mtu: Option<u32>,
    ) -> Result<Attachment, SourceError> {
        let plumbing = |e: AttachError| SourceError::Plumbing(Box::new(e));
        let networks = self
            .networks
            .as_ref()
            .ok_or_else(|| plumbing(AttachError::NoCluster))?;
        network::attach(networks, core, target, network, ip, mtu)
            .await
            .map_err(plumbing)
    }

    async fn detach(&self, core: &Core, target: Target) -> Result<Detachment, SourceError> {
        let plumbing = |e: AttachError| SourceError::Plumbing(Box::new(e));
        if let Some(networks) = &self.networks {
            if let Some(d) = network::detach(networks, core, &target)
                .await
                .map_err(plumbing)?
            {
                return Ok(d);
            }
        }
        detach(core, target).await.map_err(plumbing)
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
        Some(bridge.index),
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
        network: None,
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
