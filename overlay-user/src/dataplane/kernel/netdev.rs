//! The devices of an overlay network in kernel mode, Docker's overlay
//! layout on the host: a bridge `ovb<VNI>` holding the gateway address,
//! and a VXLAN device `ovx<VNI>` (learning off, `proxy`) enslaved to it.
//! Their names, whose they are (the alias `overlay`, as for `ovl.<N>`),
//! their creation and removal.
//!
//! These names never match the per-host device's (`ovl.<N>`), so neither
//! removal touches the other's devices.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::Handle;

use crate::dataplane::kernel::device::{delete_link, link_message, DeviceSpec, DEVICE_ALIAS};
use crate::dataplane::kernel::entries::Entries;
use crate::dataplane::kernel::error::request;
use crate::dataplane::DataplaneError;
use crate::model::overlay_network::NetworkSpec;

/// Prefix of a network's bridge; the VNI follows.
pub const BRIDGE_PREFIX: &str = "ovb";

/// Prefix of a network's VXLAN device; the VNI follows.
pub const VXLAN_PREFIX: &str = "ovx";

/// The bridge of network `vni`, e.g. `ovb4096`.
pub fn bridge_name(vni: u32) -> String {
    format!("{BRIDGE_PREFIX}{vni}")
}

/// The VXLAN device of network `vni`, e.g. `ovx4096`.
pub fn vxlan_name(vni: u32) -> String {
    format!("{VXLAN_PREFIX}{vni}")
}

/// The VNI in a network device's name (`ovb` or `ovx` and a decimal VNI).
pub fn network_vni(name: &str) -> Option<u32> {
    let digits = name
        .strip_prefix(BRIDGE_PREFIX)
        .or_else(|| name.strip_prefix(VXLAN_PREFIX))?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The MAC of network `vni`'s bridge and VXLAN device on the host with
/// underlay address `local`: locally administered, unicast, fixed (so the
/// gateway's MAC does not change as ports come and go).
pub fn network_mac(local: Ipv4Addr, vni: u32) -> [u8; 6] {
    let [_, a, b, c] = vni.to_be_bytes();
    let o = local.octets();
    [0x06, a, b, c, o[2], o[3]]
}

/// A local endpoint of a network: the container's host-side veth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LocalPort {
    /// Its name.
    pub ifname: String,
    /// Its ifindex.
    pub ifindex: u32,
}

/// What one network put in the kernel.
pub(crate) struct Network {
    /// The network.
    pub spec: NetworkSpec,
    /// Its bridge's ifindex.
    pub bridge: u32,
    /// Its VXLAN device's settings.
    pub vxlan: DeviceSpec,
    /// Its VXLAN device's ifindex.
    pub vxlan_index: u32,
    /// Local endpoints: IP -> host veth.
    pub locals: BTreeMap<Ipv4Addr, LocalPort>,
    /// Remote endpoints: IP -> (MAC, host).
    pub remotes: BTreeMap<Ipv4Addr, ([u8; 6], Ipv4Addr)>,
}

impl Network {
    /// The entries on its VXLAN device.
    pub fn entries<'a>(&'a self, handle: &'a Handle) -> Entries<'a> {
        Entries {
            handle,
            index: self.vxlan_index,
            dev: &self.vxlan.name,
        }
    }

    /// The FDB entries wanted on the VXLAN device: MAC -> host.
    pub fn wanted_fdb(&self) -> BTreeMap<[u8; 6], Ipv4Addr> {
        self.remotes.values().copied().collect()
    }
}

fn alias(msg: &LinkMessage) -> Option<&str> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(a) => Some(a.as_str()),
        _ => None,
    })
}

fn kind(msg: &LinkMessage) -> Option<InfoKind> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k.clone()),
            _ => None,
        }),
        _ => None,
    })
}

/// Why the device `msg` is not ours, or `None` if it is (the alias
/// `overlay` and the kind `want`).
pub(crate) fn foreign(msg: &LinkMessage, want: InfoKind) -> Option<String> {
    let k = kind(msg);
    let a = alias(msg);
    if a == Some(DEVICE_ALIAS) && k.as_ref() == Some(&want) {
        return None;
    }
    let k = k.map_or_else(|| "network".to_string(), |k| k.to_string());
    let with = match a {
        Some(a) => format!("with the alias {a:?}"),
        None => "without an alias".into(),
    };
    Some(format!(
        "a {k} device {with}; ours are {want} devices with the alias {DEVICE_ALIAS:?}"
    ))
}

/// Creates the bridge `name` (or takes over ours), with the fixed `mac`,
/// marks it and brings it up; returns its ifindex. A device of that name
/// that overlay did not make is refused ([`DataplaneError::ForeignDevice`]).
pub(crate) async fn ensure_bridge(
    handle: &Handle,
    name: &str,
    mac: [u8; 6],
) -> Result<u32, DataplaneError> {
    let index = match link_message(handle, name).await? {
        Some(msg) => {
            if let Some(what) = foreign(&msg, InfoKind::Bridge) {
                return Err(DataplaneError::ForeignDevice {
                    name: name.into(),
                    what,
                });
            }
            msg.header.index
        }
        None => {
            handle
                .link()
                .add()
                .bridge(name.into())
                .execute()
                .await
                .map_err(request(format!("creating bridge {name}")))?;
            log::info!("created bridge {name}");
            link_message(handle, name)
                .await?
                .map(|m| m.header.index)
                .ok_or_else(|| DataplaneError::Interface {
                    name: name.into(),
                    reason: "vanished right after it was created".into(),
                })?
        }
    };
    let mut req = handle.link().set(index).address(mac.to_vec()).up();
    req.message_mut()
        .attributes
        .push(LinkAttribute::IfAlias(DEVICE_ALIAS.into()));
    req.execute()
        .await
        .map_err(request(format!("setting up bridge {name}")))?;
    Ok(index)
}

/// Makes `addr/prefix` the only IPv4 address of the bridge `index` (`name`).
pub(crate) async fn set_gateway(
    handle: &Handle,
    index: u32,
    name: &str,
    addr: Ipv4Addr,
    prefix: u8,
) -> Result<(), DataplaneError> {
    let mut req = handle.address().get().set_link_index_filter(index);
    req.message_mut().header.family = AddressFamily::Inet;
    let msgs: Vec<AddressMessage> = req
        .execute()
        .try_collect()
        .await
        .map_err(request(format!("dump of addresses on {name}")))?;
    let mut present = false;
    for msg in msgs {
        if msg.header.family != AddressFamily::Inet || msg.header.index != index {
            continue;
        }
        let len = msg.header.prefix_len;
        let ip = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        match ip {
            Some(ip) if (ip, len) == (addr, prefix) => present = true,
            // Another gateway or prefix, left by an earlier spec of the network.
            _ => {
                let ip = ip.map_or_else(|| "an address".to_string(), |ip| ip.to_string());
                handle
                    .address()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(request(format!("removing {ip}/{len} from {name}")))?
            }
        }
    }
    if !present {
        handle
            .address()
            .add(index, IpAddr::V4(addr), prefix)
            .replace()
            .execute()
            .await
            .map_err(request(format!("adding {addr}/{prefix} to {name}")))?;
    }
    Ok(())
}

/// Deletes network `vni`'s VXLAN device and bridge if they are ours; a
/// device of such a name that is not ours stays.
pub async fn remove_network_device(handle: &Handle, vni: u32) -> Result<(), DataplaneError> {
    for (name, want) in [
        (vxlan_name(vni), InfoKind::Vxlan),
        (bridge_name(vni), InfoKind::Bridge),
    ] {
        let Some(msg) = link_message(handle, &name).await? else {
            continue;
        };
        if let Some(what) = foreign(&msg, want) {
            log::info!("leaving {name} alone: {what}");
            continue;
        }
        delete_link(handle, msg.header.index, &name).await?;
        log::info!("removed {name}");
    }
    Ok(())
}

/// Deletes every network device of ours (`ovb<VNI>`, `ovx<VNI>` with the
/// alias `overlay`) whose VNI is not in `keep`, the VXLAN device first (and
/// with it its FDB and neighbour entries); devices of such names that are
/// not ours stay. Returns the names deleted.
pub async fn remove_network_devices(
    handle: &Handle,
    keep: &BTreeSet<u32>,
) -> Result<Vec<String>, DataplaneError> {
    let links: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(request("dump of links"))?;
    let mut doomed: Vec<(String, u32)> = Vec::new();
    for msg in &links {
        let name = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        });
        let Some(name) = name else { continue };
        let Some(vni) = network_vni(&name) else {
            continue;
        };
        if keep.contains(&vni) {
            continue;
        }
        let want = if name.starts_with(VXLAN_PREFIX) {
            InfoKind::Vxlan
        } else {
            InfoKind::Bridge
        };
        if let Some(what) = foreign(msg, want) {
            log::info!("leaving {name} alone: {what}");
            continue;
        }
        doomed.push((name, msg.header.index));
    }
    // VXLAN devices before bridges.
    doomed.sort_by_key(|(name, _)| !name.starts_with(VXLAN_PREFIX));
    let mut removed = Vec::new();
    for (name, index) in doomed {
        delete_link(handle, index, &name).await?;
        log::info!("removed {name}");
        removed.push(name);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_device_names() {
        assert_eq!(bridge_name(4096), "ovb4096");
        assert_eq!(vxlan_name(16_777_215), "ovx16777215");
        assert!(vxlan_name(16_777_215).len() <= 15);
        assert_eq!(network_vni("ovb4096"), Some(4096));
        assert_eq!(network_vni("ovx7"), Some(7));
        assert_eq!(network_vni("ovx"), None);
        assert_eq!(network_vni("ovx7a"), None);
        // The per-host device and the BPF dataplane's veths are not network devices.
        assert_eq!(network_vni("ovl.42"), None);
        assert_eq!(network_vni("ovn0123456789a"), None);
        assert!(!crate::dataplane::kernel::device::is_device_name("ovx42"));
        assert!(!crate::dataplane::kernel::device::is_device_name("ovb42"));
    }

    #[test]
    fn network_macs() {
        let mac = network_mac(Ipv4Addr::new(192, 168, 56, 5), 0x01_02_03);
        assert_eq!(mac, [0x06, 1, 2, 3, 56, 5]);
        // Locally administered, unicast.
        assert_eq!(mac[0] & 0b11, 0b10);
    }

    fn message(kind: InfoKind, alias: Option<&str>) -> LinkMessage {
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind)]));
        if let Some(a) = alias {
            msg.attributes.push(LinkAttribute::IfAlias(a.into()));
        }
        msg
    }

    #[test]
    fn ownership() {
        let ours = message(InfoKind::Bridge, Some(DEVICE_ALIAS));
        assert_eq!(foreign(&ours, InfoKind::Bridge), None);
        assert_eq!(
            foreign(&ours, InfoKind::Vxlan).as_deref(),
            Some("a bridge device with the alias \"overlay\"; ours are vxlan devices with the alias \"overlay\"")
        );
        assert_eq!(
            foreign(&message(InfoKind::Bridge, None), InfoKind::Bridge).as_deref(),
            Some("a bridge device without an alias; ours are bridge devices with the alias \"overlay\"")
        );
    }
}
