//! The VXLAN device `ovl.<VNI>`: its name, settings, creation (or take-over
//! from an earlier run) and removal.

use std::net::Ipv4Addr;

use futures::TryStreamExt;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::Handle;

use crate::dataplane::kernel::error::{is_missing, request};
use crate::dataplane::DataplaneError;
use crate::model::validation::format_mac;

/// Prefix of our VXLAN devices' names; the VNI follows.
pub const DEVICE_PREFIX: &str = "ovl.";

/// The alias (IFLA_IFALIAS, `ip link show` prints it as `alias overlay`)
/// that marks a device as made by overlay: only such devices are changed
/// or deleted.
pub const DEVICE_ALIAS: &str = "overlay";

/// Who made an existing device called `ovl.<N>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Overlay: it carries [`DEVICE_ALIAS`].
    Overlay,
    /// An earlier overlayd that did not mark its devices: a VXLAN device
    /// with our settings (VNI = the number in its name, learning off).
    Unmarked,
    /// Someone else; what it is, for messages.
    Foreign(String),
}

/// Who made the device of link message `msg`, called `name`.
pub fn owner(msg: &LinkMessage, name: &str) -> Owner {
    let alias = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(a) => Some(a.as_str()),
        _ => None,
    });
    if alias == Some(DEVICE_ALIAS) {
        return Owner::Overlay;
    }
    let vni = name
        .strip_prefix(DEVICE_PREFIX)
        .and_then(|v| v.parse::<u32>().ok());
    if let (Some(settings), Some(vni)) = (vxlan_settings(msg), vni) {
        let ours = settings.contains(&InfoVxlan::Id(vni))
            && settings.contains(&InfoVxlan::Learning(false));
        if ours {
            return Owner::Unmarked;
        }
    }
    let kind = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                LinkInfo::Kind(k) => Some(k.to_string()),
                _ => None,
            }),
            _ => None,
        })
        .unwrap_or_else(|| "network".into());
    let with = match alias {
        Some(a) => format!("with the alias {a:?}"),
        None => "without an alias".into(),
    };
    Owner::Foreign(format!(
        "a {kind} device {with}; ours are VXLAN devices with the alias {DEVICE_ALIAS:?}"
    ))
}

/// VXLAN over IPv4 overhead: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
pub const VXLAN_OVERHEAD: u32 = 50;

/// The name of our VXLAN device for `vni`, e.g. `ovl.42`.
pub fn device_name(vni: u32) -> String {
    format!("{DEVICE_PREFIX}{vni}")
}

/// Whether `name` is one of our device names (`ovl.` and a decimal VNI).
pub fn is_device_name(name: &str) -> bool {
    name.strip_prefix(DEVICE_PREFIX)
        .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

/// The settings the device is made with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSpec {
    /// `ovl.<VNI>`.
    pub name: String,
    /// Its VNI.
    pub vni: u32,
    /// Its UDP port.
    pub port: u16,
    /// This host's underlay address.
    pub local_ip: Ipv4Addr,
    /// The underlay interface's ifindex.
    pub underlay_index: u32,
    /// The underlay's MTU minus the VXLAN overhead.
    pub mtu: u32,
    /// This host's VTEP MAC.
    pub mac: [u8; 6],
    /// ARP/ND answered from the device's neighbour table (`proxy`; an
    /// overlay network's device, Docker's layout), not sent over VXLAN.
    pub proxy: bool,
}

/// The link message of `name`, if there is such a link.
pub(crate) async fn link_message(
    handle: &Handle,
    name: &str,
) -> Result<Option<LinkMessage>, DataplaneError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(msg) => Ok(msg),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(request(format!("lookup of link {name}"))(e)),
    }
}

/// The VXLAN settings of a link message; `None` if it is not a VXLAN device.
pub(crate) fn vxlan_settings(msg: &LinkMessage) -> Option<Vec<InfoVxlan>> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => {
            let is_vxlan = infos
                .iter()
                .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vxlan)));
            let data = infos.iter().find_map(|i| match i {
                LinkInfo::Data(InfoData::Vxlan(d)) => Some(d.clone()),
                _ => None,
            });
            is_vxlan.then(|| data.unwrap_or_default())
        }
        _ => None,
    })
}

/// Whether an existing VXLAN device has the settings of `dev` that cannot be changed in place.
pub(crate) fn matches_spec(settings: &[InfoVxlan], dev: &DeviceSpec) -> bool {
    // Absent means off.
    let mut ok = [false, false, false, false, false, !dev.proxy];
    for s in settings {
        match s {
            InfoVxlan::Id(v) => ok[0] = *v == dev.vni,
            InfoVxlan::Port(p) => ok[1] = *p == dev.port,
            InfoVxlan::Local(ip) => ok[2] = ip.as_slice() == dev.local_ip.octets(),
            InfoVxlan::Link(i) => ok[3] = *i == dev.underlay_index,
            InfoVxlan::Learning(l) => ok[4] = !*l,
            InfoVxlan::Proxy(p) => ok[5] = *p == dev.proxy,
            _ => {}
        }
    }
    ok.iter().all(|b| *b)
}

/// Creates the device (or keeps a matching one of ours), sets its MTU, MAC
/// and alias and brings it up; returns its ifindex. A device of that name
/// that overlay did not make is left alone and refused
/// ([`DataplaneError::ForeignDevice`]).
pub(crate) async fn ensure_device(
    handle: &Handle,
    dev: &DeviceSpec,
) -> Result<u32, DataplaneError> {
    if let Some(msg) = link_message(handle, &dev.name).await? {
        let settings = vxlan_settings(&msg);
        match owner(&msg, &dev.name) {
            Owner::Foreign(what) => {
                return Err(DataplaneError::ForeignDevice {
                    name: dev.name.clone(),
                    what,
                })
            }
            Owner::Overlay if settings.is_some_and(|s| matches_spec(&s, dev)) => {
                log::info!("taking over {} from an earlier run", dev.name);
            }
            Owner::Overlay => {
                log::info!("replacing {}: its settings differ", dev.name);
                delete_link(handle, msg.header.index, &dev.name).await?;
            }
            Owner::Unmarked => {
                // Its routes lack our mark: a fresh device takes them away.
                log::info!("replacing {}, made by an earlier overlayd", dev.name);
                delete_link(handle, msg.header.index, &dev.name).await?;
            }
        }
    }
    if link_message(handle, &dev.name).await?.is_none() {
        let mut req = handle.link().add();
        req.message_mut()
            .attributes
            .push(LinkAttribute::Mtu(dev.mtu));
        req.address(dev.mac.to_vec())
            .vxlan(dev.name.clone(), dev.vni)
            .link(dev.underlay_index)
            .local(dev.local_ip)
            .port(dev.port)
            .learning(false)
            .proxy(dev.proxy)
            .execute()
            .await
            .map_err(request(format!("creating VXLAN device {}", dev.name)))?;
        log::info!(
            "created {} (vni {}, port {}, local {}, dev #{}, mtu {}, mac {}{})",
            dev.name,
            dev.vni,
            dev.port,
            dev.local_ip,
            dev.underlay_index,
            dev.mtu,
            format_mac(&dev.mac),
            if dev.proxy { ", proxy" } else { "" }
        );
    }
    let index = link_message(handle, &dev.name)
        .await?
        .map(|m| m.header.index)
        .ok_or_else(|| DataplaneError::Interface {
            name: dev.name.clone(),
            reason: "vanished right after it was created".into(),
        })?;
    let mut req = handle
        .link()
        .set(index)
        .mtu(dev.mtu)
        .address(dev.mac.to_vec())
        .up();
    req.message_mut()
        .attributes
        .push(LinkAttribute::IfAlias(DEVICE_ALIAS.into()));
    req.execute()
        .await
        .map_err(request(format!("setting up {}", dev.name)))?;
    Ok(index)
}

pub(crate) async fn delete_link(
    handle: &Handle,
    index: u32,
    name: &str,
) -> Result<(), DataplaneError> {
    match handle.link().del(index).execute().await {
        Err(e) if !is_missing(&e) => Err(request(format!("deleting {name}"))(e)),
        _ => Ok(()),
    }
}

/// Deletes every device of ours (`ovl.<VNI>`, [`Owner::Overlay`] or
/// [`Owner::Unmarked`]) except `keep`, and with each its routes, neighbour
/// and FDB entries; foreign devices of such names stay. Returns the names deleted.
pub async fn remove_devices(
    handle: &Handle,
    keep: Option<&str>,
) -> Result<Vec<String>, DataplaneError> {
    let links: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(request("dump of links"))?;
    let mut removed = Vec::new();
    for msg in links {
        let name = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        });
        let Some(name) = name else { continue };
        if !is_device_name(&name) || Some(name.as_str()) == keep {
            continue;
        }
        if let Owner::Foreign(what) = owner(&msg, &name) {
            log::info!("leaving {name} alone: {what}");
            continue;
        }
        delete_link(handle, msg.header.index, &name).await?;
        log::info!("removed VXLAN device {name}");
        removed.push(name);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names() {
        assert_eq!(device_name(42), "ovl.42");
        assert_eq!(device_name(16_777_215), "ovl.16777215");
        assert!(device_name(16_777_215).len() <= 15);
        assert!(is_device_name("ovl.1"));
        assert!(!is_device_name("ovl."));
        assert!(!is_device_name("ovl.1a"));
        assert!(!is_device_name("flannel.1"));
    }

    #[test]
    fn spec_matching() {
        let dev = DeviceSpec {
            name: "ovl.42".into(),
            vni: 42,
            port: 4789,
            local_ip: Ipv4Addr::new(192, 168, 56, 4),
            underlay_index: 2,
            mtu: 1450,
            mac: [2, 42, 192, 168, 56, 4],
            proxy: false,
        };
        let mut s = vec![
            InfoVxlan::Id(42),
            InfoVxlan::Port(4789),
            InfoVxlan::Local(vec![192, 168, 56, 4]),
            InfoVxlan::Link(2),
            InfoVxlan::Learning(false),
        ];
        assert!(matches_spec(&s, &dev));
        s[1] = InfoVxlan::Port(8472);
        assert!(!matches_spec(&s, &dev));
        s[1] = InfoVxlan::Port(4789);
        s.push(InfoVxlan::Proxy(false));
        assert!(matches_spec(&s, &dev));
        let proxied = DeviceSpec {
            proxy: true,
            ..dev.clone()
        };
        assert!(!matches_spec(&s, &proxied));
        s.pop();
        assert!(!matches_spec(&s, &proxied));
        s.push(InfoVxlan::Proxy(true));
        assert!(matches_spec(&s, &proxied));
        assert!(!matches_spec(&s, &dev));
        // Learning off is needed as before.
        s.retain(|x| !matches!(x, InfoVxlan::Learning(_)));
        assert!(!matches_spec(&s, &proxied));
    }

    fn message(kind: InfoKind, data: Option<Vec<InfoVxlan>>, alias: Option<&str>) -> LinkMessage {
        let mut msg = LinkMessage::default();
        let mut info = vec![LinkInfo::Kind(kind)];
        if let Some(d) = data {
            info.push(LinkInfo::Data(InfoData::Vxlan(d)));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(info));
        if let Some(a) = alias {
            msg.attributes.push(LinkAttribute::IfAlias(a.into()));
        }
        msg
    }

    #[test]
    fn ownership() {
        let ours = vec![InfoVxlan::Id(42), InfoVxlan::Learning(false)];
        let marked = message(InfoKind::Vxlan, Some(ours.clone()), Some(DEVICE_ALIAS));
        assert_eq!(owner(&marked, "ovl.42"), Owner::Overlay);
        // Made by an earlier overlayd: VXLAN, VNI of its name, learning off.
        let unmarked = message(InfoKind::Vxlan, Some(ours.clone()), None);
        assert_eq!(owner(&unmarked, "ovl.42"), Owner::Unmarked);
        assert_eq!(
            owner(&unmarked, "ovl.7"),
            Owner::Foreign(
                "a vxlan device without an alias; ours are VXLAN devices with the alias \"overlay\""
                    .into()
            )
        );
        let learning = message(
            InfoKind::Vxlan,
            Some(vec![InfoVxlan::Id(42), InfoVxlan::Learning(true)]),
            None,
        );
        assert!(matches!(owner(&learning, "ovl.42"), Owner::Foreign(_)));
        assert_eq!(
            owner(&message(InfoKind::Dummy, None, None), "ovl.42"),
            Owner::Foreign(
                "a dummy device without an alias; ours are VXLAN devices with the alias \"overlay\""
                    .into()
            )
        );
        assert_eq!(
            owner(&message(InfoKind::Bridge, None, Some("lab")), "ovl.42"),
            Owner::Foreign(
                "a bridge device with the alias \"lab\"; ours are VXLAN devices with the alias \"overlay\""
                    .into()
            )
        );
    }
}
