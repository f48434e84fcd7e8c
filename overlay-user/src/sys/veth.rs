//! Plumbing a veth pair into another network namespace, as pipework does:
//! the pair is made in the host's namespace, its far end moved into the
//! target and configured there (name, MAC, MTU, address, default route), the
//! host end plugged into a bridge. Deleting the host end removes the pair.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use ipnet::Ipv4Net;

use crate::sys::error::SysError;
use crate::sys::netlink::{self, Handle};
use crate::sys::netns;

fn plumbing(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> SysError {
    let what = what.into();
    move |e| SysError::Plumbing {
        what,
        reason: e.to_string(),
    }
}

/// How the far end is set up inside the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inside {
    /// Its final name there (e.g. `eth0`).
    pub ifname: String,
    /// Its MAC.
    pub mac: [u8; 6],
    /// The MTU of both ends.
    pub mtu: u32,
    /// Its address and prefix.
    pub addr: Ipv4Net,
    /// The default route's gateway.
    pub gateway: Ipv4Addr,
}

/// Makes the pair `host` / `temp` in the host's namespace.
pub async fn create_pair(handle: &Handle, host: &str, temp: &str) -> Result<(), SysError> {
    handle
        .link()
        .add()
        .veth(temp.to_string(), host.to_string())
        .execute()
        .await
        .map_err(plumbing(format!("creating veth pair {host}/{temp}")))
}

/// Makes the pair `host` / `temp` for a container runtime that moves
/// `temp` into the container itself (Docker after a network driver's
/// `Join`): `temp` gets `mac`, both ends `mtu`, `host` is brought up.
/// Returns `host`'s ifindex; on a failure the pair is deleted again.
pub async fn create_unplugged(
    handle: &Handle,
    host: &str,
    temp: &str,
    mac: [u8; 6],
    mtu: u32,
) -> Result<u32, SysError> {
    create_pair(handle, host, temp).await?;
    let made = async {
        let host_link = netlink::link_by_name(handle, host).await?;
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
            .set(host_link.index)
            .mtu(mtu)
            .up()
            .execute()
            .await
            .map_err(plumbing(format!("bringing {host} up")))?;
        Ok::<_, SysError>(host_link.index)
    }
    .await;
    if made.is_err() {
        remove_link(handle, host).await;
    }
    made
}

/// Moves the pair's far end `temp` into the namespace at `ns_path` (open as
/// `ns_file`), configures it as `inside`, and plugs the host end `host` into
/// the bridge with ifindex `bridge_index` (if any) and brings it up.
pub async fn plumb(
    handle: &Handle,
    ns_path: &Path,
    ns_file: std::fs::File,
    host: &str,
    temp: &str,
    inside: &Inside,
    bridge_index: Option<u32>,
) -> Result<(), SysError> {
    let host_link = netlink::link_by_name(handle, host).await?;
    let peer = netlink::link_by_name(handle, temp).await?;
    handle
        .link()
        .set(peer.index)
        .mtu(inside.mtu)
        .address(inside.mac.to_vec())
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
            ns_path.display()
        )))?;
    drop(ns_file);
    let temp_name = temp.to_string();
    let inside_now = inside.clone();
    netns::run_in(ns_path, move |h| {
        Box::pin(async move { configure_inside(&h, &temp_name, &inside_now).await })
    })
    .await??;
    handle
        .link()
        .set(host_link.index)
        .mtu(inside.mtu)
        .execute()
        .await
        .map_err(plumbing(format!("setting MTU of {host}")))?;
    if let Some(bridge_index) = bridge_index {
        handle
            .link()
            .set(host_link.index)
            .controller(bridge_index)
            .execute()
            .await
            .map_err(plumbing(format!("plugging {host} into the bridge")))?;
    }
    handle
        .link()
        .set(host_link.index)
        .up()
        .execute()
        .await
        .map_err(plumbing(format!("bringing {host} up")))?;
    Ok(())
}

/// Inside the target: rename, up, address, default route; lo up.
async fn configure_inside(h: &Handle, temp: &str, inside: &Inside) -> Result<(), SysError> {
    let name = &inside.ifname;
    let link = netlink::link_by_name(h, temp).await?;
    h.link()
        .set(link.index)
        .name(name.clone())
        .mtu(inside.mtu)
        .execute()
        .await
        .map_err(plumbing(format!("renaming {temp} to {name}")))?;
    h.link()
        .set(link.index)
        .up()
        .execute()
        .await
        .map_err(plumbing(format!("bringing {name} up")))?;
    if let Ok(lo) = netlink::link_by_name(h, "lo").await {
        let _ = h.link().set(lo.index).up().execute().await;
    }
    let addr = inside.addr;
    h.address()
        .add(link.index, addr.addr().into(), addr.prefix_len())
        .execute()
        .await
        .map_err(plumbing(format!("adding {addr} to {name}")))?;
    let gateway = inside.gateway;
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

/// Deletes link `name` (with a veth, its peer too); whether it existed and went.
pub async fn remove_link(handle: &Handle, name: &str) -> bool {
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

/// Whether the namespace at `ns_path` has a link called `name`.
pub async fn has_link_in(ns_path: &Path, name: &str) -> Result<bool, SysError> {
    let name = name.to_string();
    netns::run_in(ns_path, |h| {
        Box::pin(async move { netlink::link_by_name(&h, &name).await.is_ok() })
    })
    .await
}

/// Interfaces inside `ns_path`, by name (used by tests and diagnostics).
pub async fn interfaces_in(ns_path: &Path) -> Result<Vec<String>, SysError> {
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
    names.map_err(|reason| SysError::Plumbing {
        what: format!("listing interfaces in {}", ns_path.display()),
        reason,
    })
}
