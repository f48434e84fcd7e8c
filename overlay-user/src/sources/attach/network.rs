//! `overlayctl attach --network NAME`: a `--network none` container or a
//! named namespace joins an overlay network of the cluster. The veth's
//! host end (`ovn` + 11 hex digits) is not plugged anywhere: the dataplane
//! serves it as a local endpoint of the network (reported with source
//! `attach`); the record published in the store makes every host install
//! it. Detach withdraws the record, gives the address back, removes the
//! endpoint and deletes the veth (found from the store's records of this host).

use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;

use crate::agent::handle::Core;
use crate::model::attach::{
    mac_for, network_ifname, Attachment, Detachment, Target, CONTAINER_IFNAME, VXLAN_OVERHEAD,
};
use crate::model::change::Change;
use crate::model::overlay_network::{EndpointRecord, NetEndpointSpec, NetLocation};
use crate::model::source::Source;
use crate::model::validation::format_mac;
use crate::sources::attach::target::{resolve, AttachError};
use crate::sources::NetworkDirectory;
use crate::sys::error::SysError;
use crate::sys::netlink;
use crate::sys::netns;
use crate::sys::veth::{self, Inside};

/// The store's networks and who this host is in it.
#[derive(Clone)]
pub struct Networks {
    /// The store.
    pub dir: Arc<dyn NetworkDirectory>,
    /// This host's name in the store.
    pub host: String,
    /// This host's underlay address.
    pub underlay_ip: Ipv4Addr,
}

/// Attach `target` to `network` with `ip` or an address from its IPAM.
pub async fn attach(
    nets: &Networks,
    core: &Core,
    target: Target,
    network: &str,
    ip: Option<Ipv4Addr>,
    mtu: Option<u32>,
) -> Result<Attachment, AttachError> {
    if let Some(m) = mtu {
        if !(68..=65535).contains(&m) {
            return Err(AttachError::BadMtu(m));
        }
    }
    let (spec, _) = nets.dir.network(network).await?;
    let cfg = core.lock().await.config().clone();
    let resolved = resolve(&target, &cfg.docker.socket).await?;
    let host_ifname = network_ifname(&resolved.host_ifname);
    let handle = netlink::connect()?;
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
    if veth::has_link_in(&resolved.ns_path, CONTAINER_IFNAME).await? {
        return Err(AttachError::HasInterface {
            target,
            ifname: CONTAINER_IFNAME.into(),
        });
    }
    let mtu = match mtu {
        Some(m) => m,
        None => netlink::link_by_name(&handle, &cfg.underlay_interface)
            .await?
            .mtu
            .saturating_sub(VXLAN_OVERHEAD),
    };
    let holder = format!("{target}");
    let ip = nets.dir.request_address(&spec.name, ip, &holder).await?;
    let mac = mac_for(ip);
    let addr = Ipv4Net::new(ip, spec.subnet.prefix_len())
        .map_err(|_| AttachError::BadAddress(ip.to_string()))?;
    let temp = format!("ovq{}", &host_ifname[3..]);
    let made = async {
        let ns_file = netns::open(&resolved.ns_path)?;
        veth::create_pair(&handle, &host_ifname, &temp).await?;
        let inside = Inside {
            ifname: CONTAINER_IFNAME.into(),
            mac,
            mtu,
            addr,
            gateway: spec.gateway,
        };
        veth::plumb(
            &handle,
            &resolved.ns_path,
            ns_file,
            &host_ifname,
            &temp,
            &inside,
            None,
        )
        .await?;
        let link = netlink::link_by_name(&handle, &host_ifname).await?;
        let change = Change::PutNetEndpoint(NetEndpointSpec {
            vni: spec.vni,
            ip,
            mac,
            location: NetLocation::Local {
                ifname: host_ifname.clone(),
                ifindex: link.index,
            },
        });
        core.apply(Source::Attach, change).await?;
        let record = EndpointRecord {
            network: spec.name.clone(),
            ip,
            mac,
            host: nets.host.clone(),
            underlay_ip: nets.underlay_ip,
            container: resolved.id.clone(),
            name: resolved.name.clone(),
            aliases: Vec::new(),
        };
        if let Err(e) = nets.dir.publish_endpoint(&record).await {
            let _ = core
                .apply(Source::Attach, Change::DelNetEndpoint { vni: spec.vni, ip })
                .await;
            return Err(AttachError::from(e));
        }
        Ok::<_, AttachError>(())
    }
    .await;
    if let Err(e) = made {
        veth::remove_link(&handle, &host_ifname).await;
        let _ = nets.dir.release_address(&spec.name, ip).await;
        return Err(e);
    }
    log::info!(
        "attached {target} to network {}: {CONTAINER_IFNAME} {addr} mac {} mtu {mtu} via {host_ifname}",
        spec.name,
        format_mac(&mac)
    );
    Ok(Attachment {
        target,
        ifname: CONTAINER_IFNAME.into(),
        ip,
        prefix: addr.prefix_len(),
        mac: format_mac(&mac),
        mtu,
        gateway: spec.gateway,
        host_ifname,
        bridge: String::new(),
        network: Some(spec.name),
    })
}

/// Undo [`attach`] when `target` is on an overlay network; `None` when it is not.
pub async fn detach(
    nets: &Networks,
    core: &Core,
    target: &Target,
) -> Result<Option<Detachment>, AttachError> {
    let socket = core.lock().await.config().docker.socket.clone();
    let (host_ifname, id) = match target {
        Target::Container(_) => {
            let r = resolve(target, &socket).await?;
            (network_ifname(&r.host_ifname), r.id)
        }
        Target::Netns(name) => (
            network_ifname(&crate::model::attach::netns_ifname(name)),
            name.clone(),
        ),
    };
    let mut found = None;
    for spec in nets.dir.networks().await? {
        let (_, records) = nets.dir.network(&spec.name).await?;
        if let Some(r) = records
            .into_iter()
            .find(|r| r.host == nets.host && r.container == id)
        {
            found = Some((spec, r));
            break;
        }
    }
    let handle = netlink::connect()?;
    let Some((spec, record)) = found else {
        if veth::remove_link(&handle, &host_ifname).await {
            return Ok(Some(Detachment {
                target: target.clone(),
                host_ifname,
                interface_removed: true,
                ip: None,
            }));
        }
        return Ok(None);
    };
    nets.dir.withdraw_endpoint(&spec.name, record.ip).await?;
    let change = Change::DelNetEndpoint {
        vni: spec.vni,
        ip: record.ip,
    };
    if let Err(e) = core.apply(Source::Attach, change).await {
        log::warn!("detach {target}: removing endpoint {}: {e}", record.ip);
    }
    nets.dir.release_address(&spec.name, record.ip).await?;
    let interface_removed = veth::remove_link(&handle, &host_ifname).await;
    log::info!(
        "detached {target} from network {}: {} and {host_ifname} removed",
        spec.name,
        record.ip
    );
    Ok(Some(Detachment {
        target: target.clone(),
        host_ifname,
        interface_removed,
        ip: Some(record.ip),
    }))
}
