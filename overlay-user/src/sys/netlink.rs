//! Read-only queries of links, addresses, the ARP table and the bridge FDB,
//! all through rtnetlink (never by running `ip` or `bridge`).
//!
//! The free functions take an rtnetlink [`Handle`]; the [`Netlink`] trait
//! bundles them so the agent and discovery can be tested with a fake host.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{LinkAttribute, LinkFlag, LinkInfo, LinkMessage};
pub use netlink_packet_route::neighbour::NeighbourState;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlag, NeighbourMessage,
};
use netlink_packet_route::AddressFamily;
pub use rtnetlink::Handle;
use rtnetlink::IpVersion;

use crate::sys::error::SysError;
use crate::sys::routes::{self, Route};

/// A network interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// ifindex.
    pub index: u32,
    /// Name, e.g. "eth1".
    pub name: String,
    /// Hardware address; all zeros when the link has none of 6 bytes.
    pub mac: [u8; 6],
    /// MTU.
    pub mtu: u32,
    /// ifindex of the bridge (or bond, VRF, ...) this link is enslaved to.
    pub master: Option<u32>,
    /// The link kind ("bridge", "veth", "vxlan", ...), when the kernel reports one.
    pub kind: Option<String>,
    /// Administratively up (IFF_UP).
    pub up: bool,
}

/// An IPv4 neighbour (ARP) table entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// The neighbour's address.
    pub ip: Ipv4Addr,
    /// Its MAC, absent for INCOMPLETE and FAILED entries.
    pub mac: Option<[u8; 6]>,
    /// NUD state.
    pub state: NeighbourState,
}

impl Neighbour {
    /// Whether the entry holds a usable MAC (not FAILED/INCOMPLETE, not all zeros).
    pub fn usable_mac(&self) -> Option<[u8; 6]> {
        match self.state {
            NeighbourState::Failed | NeighbourState::Incomplete => None,
            _ => self.mac.filter(|mac| *mac != [0; 6]),
        }
    }
}

/// A bridge forwarding-database entry learned on (or added to) a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    /// The station's MAC.
    pub mac: [u8; 6],
    /// ifindex of the bridge port behind which the MAC is.
    pub port: u32,
    /// VLAN, with VLAN filtering.
    pub vlan: Option<u16>,
    /// NUD state: REACHABLE/STALE when learned, NOARP when static.
    pub state: NeighbourState,
}

/// Open a route-netlink socket and drive it on the current tokio runtime.
pub fn connect() -> Result<Handle, SysError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(SysError::Connect)?;
    tokio::spawn(conn);
    Ok(handle)
}

fn is_enodev(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code().abs() == libc::ENODEV)
}

fn request_error(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> SysError {
    let what = what.into();
    move |source| SysError::Request {
        what,
        source: Box::new(source),
    }
}

fn mac6(bytes: &[u8]) -> Option<[u8; 6]> {
    <[u8; 6]>::try_from(bytes).ok()
}

fn link_from_message(msg: LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mac: [0; 6],
        mtu: 0,
        master: None,
        kind: None,
        up: msg.header.flags.contains(&LinkFlag::Up),
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name = name,
            LinkAttribute::Address(addr) => link.mac = mac6(&addr).unwrap_or([0; 6]),
            LinkAttribute::Mtu(mtu) => link.mtu = mtu,
            LinkAttribute::Controller(master) if master != 0 => link.master = Some(master),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = Some(kind.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}

/// The link called `name`.
pub async fn link_by_name(handle: &Handle, name: &str) -> Result<Link, SysError> {
    // The kernel rejects names it could not hold with EINVAL; answer as for any unknown name.
    if name.is_empty() || name.len() > 15 || name.contains('\0') {
        return Err(SysError::NotFound(name.to_owned()));
    }
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(link_from_message(msg)),
        Ok(None) => Err(SysError::NotFound(name.to_owned())),
        Err(e) if is_enodev(&e) => Err(SysError::NotFound(name.to_owned())),
        Err(e) => Err(request_error(format!("lookup of link {name}"))(e)),
    }
}

/// The link with ifindex `index`.
pub async fn link_by_index(handle: &Handle, index: u32) -> Result<Link, SysError> {
    if index == 0 {
        return Err(SysError::IndexNotFound(0));
    }
    let mut links = handle.link().get().match_index(index).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(link_from_message(msg)),
        Ok(None) => Err(SysError::IndexNotFound(index)),
        Err(e) if is_enodev(&e) => Err(SysError::IndexNotFound(index)),
        Err(e) => Err(request_error(format!("lookup of link {index}"))(e)),
    }
}

/// Every link in the namespace.
pub async fn links(handle: &Handle) -> Result<Vec<Link>, SysError> {
    handle
        .link()
        .get()
        .execute()
        .map_ok(link_from_message)
        .try_collect()
        .await
        .map_err(request_error("dump of links"))
}

/// The links enslaved to the bridge `bridge_index`.
pub async fn bridge_ports(handle: &Handle, bridge_index: u32) -> Result<Vec<Link>, SysError> {
    Ok(links(handle)
        .await?
        .into_iter()
        .filter(|l| l.master == Some(bridge_index))
        .collect())
}

/// The IPv4 addresses (and prefix lengths) on link `index`, in kernel order.
pub async fn ipv4_addrs(handle: &Handle, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, SysError> {
    let mut req = handle.address().get().set_link_index_filter(index);
    req.message_mut().header.family = AddressFamily::Inet;
    let msgs: Vec<_> = req
        .execute()
        .try_collect()
        .await
        .map_err(request_error(format!("dump of addresses on link {index}")))?;
    let mut out = Vec::new();
    for msg in msgs {
        if msg.header.family != AddressFamily::Inet || msg.header.index != index {
            continue;
        }
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS differs from it
        // only on point-to-point links, where it is the far end.
        let mut local = None;
        let mut address = None;
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Local(IpAddr::V4(ip)) => local = Some(*ip),
                AddressAttribute::Address(IpAddr::V4(ip)) => address = Some(*ip),
                _ => {}
            }
        }
        if let Some(ip) = local.or(address) {
            out.push((ip, msg.header.prefix_len));
        }
    }
    Ok(out)
}

/// The address a host uses on link `index` as its underlay address: the
/// first IPv4 address that is neither loopback nor unspecified; `None` when
/// the link has none.
pub async fn usable_ipv4(handle: &Handle, index: u32) -> Result<Option<Ipv4Addr>, SysError> {
    Ok(ipv4_addrs(handle, index)
        .await?
        .into_iter()
        .map(|(ip, _)| ip)
        .find(|ip| !ip.is_loopback() && !ip.is_unspecified()))
}

fn neighbour_mac(msg: &NeighbourMessage) -> Option<[u8; 6]> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLocalAddress(bytes) => mac6(bytes),
        _ => None,
    })
}

/// The IPv4 neighbour (ARP) entries on link `index`.
pub async fn neighbours_v4(handle: &Handle, index: u32) -> Result<Vec<Neighbour>, SysError> {
    let msgs: Vec<NeighbourMessage> = handle
        .neighbours()
        .get()
        .set_family(IpVersion::V4)
        .execute()
        .try_collect()
        .await
        .map_err(request_error("dump of IPv4 neighbours"))?;
    Ok(msgs
        .iter()
        .filter(|m| m.header.ifindex == index && m.header.family == AddressFamily::Inet)
        .filter(|m| !m.header.flags.contains(&NeighbourFlag::Proxy))
        .filter_map(|m| {
            let ip = m.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
                _ => None,
            })?;
            Some(Neighbour {
                ip,
                mac: neighbour_mac(m),
                state: m.header.state,
            })
        })
        .collect())
}

/// The bridge `bridge_index`'s FDB entries behind its ports, without the
/// permanent ones (the ports' own MACs) and without the bridge's own entries.
pub async fn bridge_fdb(handle: &Handle, bridge_index: u32) -> Result<Vec<FdbEntry>, SysError> {
    let mut req = handle.neighbours().get();
    req.message_mut().header.family = AddressFamily::Bridge;
    let msgs: Vec<NeighbourMessage> = req
        .execute()
        .try_collect()
        .await
        .map_err(request_error("dump of the bridge FDB"))?;
    Ok(fdb_from_messages(&msgs, bridge_index))
}

/// Keep the entries the bridge `bridge_index` learned on its ports.
fn fdb_from_messages(msgs: &[NeighbourMessage], bridge_index: u32) -> Vec<FdbEntry> {
    msgs.iter()
        .filter(|m| m.header.family == AddressFamily::Bridge)
        .filter(|m| m.header.ifindex != bridge_index && m.header.ifindex != 0)
        // Entries of a device's own address list carry NTF_SELF and no NDA_MASTER.
        .filter(|m| !m.header.flags.contains(&NeighbourFlag::Own))
        .filter(|m| m.header.state != NeighbourState::Permanent)
        .filter(|m| {
            m.attributes
                .iter()
                .any(|a| matches!(a, NeighbourAttribute::Controller(i) if *i == bridge_index))
        })
        .filter_map(|m| {
            Some(FdbEntry {
                mac: neighbour_mac(m)?,
                port: m.header.ifindex,
                vlan: m.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Vlan(v) => Some(*v),
                    _ => None,
                }),
                state: m.header.state,
            })
        })
        .collect()
}

/// The host queries the agent and discovery need; [`RtNetlink`] asks the
/// kernel, tests substitute a fake.
#[async_trait::async_trait]
pub trait Netlink: Send + Sync {
    /// The link called `name` ([`SysError::NotFound`] names it if absent).
    async fn link_by_name(&self, name: &str) -> Result<Link, SysError>;
    /// The link with ifindex `index`.
    async fn link_by_index(&self, index: u32) -> Result<Link, SysError>;
    /// Every link.
    async fn links(&self) -> Result<Vec<Link>, SysError>;
    /// IPv4 addresses and prefix lengths on link `index`.
    async fn ipv4_addrs(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, SysError>;
    /// IPv4 neighbour entries on link `index`.
    async fn neighbours_v4(&self, index: u32) -> Result<Vec<Neighbour>, SysError>;
    /// FDB entries learned on the ports of bridge `bridge_index` (no permanent ones).
    async fn bridge_fdb(&self, bridge_index: u32) -> Result<Vec<FdbEntry>, SysError>;
    /// The IPv4 routes of the main table.
    async fn routes_v4(&self) -> Result<Vec<Route>, SysError>;
    /// Links whose master is `bridge_index`.
    async fn bridge_ports(&self, bridge_index: u32) -> Result<Vec<Link>, SysError> {
        Ok(self
            .links()
            .await?
            .into_iter()
            .filter(|l| l.master == Some(bridge_index))
            .collect())
    }
}

/// [`Netlink`] over an rtnetlink connection.
#[derive(Clone, Debug)]
pub struct RtNetlink {
    handle: Handle,
}

impl RtNetlink {
    /// Open a connection (needs a tokio runtime).
    pub fn connect() -> Result<RtNetlink, SysError> {
        Ok(RtNetlink { handle: connect()? })
    }

    /// Wrap an existing handle.
    pub fn new(handle: Handle) -> RtNetlink {
        RtNetlink { handle }
    }

    /// The underlying handle.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

#[async_trait::async_trait]
impl Netlink for RtNetlink {
    async fn link_by_name(&self, name: &str) -> Result<Link, SysError> {
        link_by_name(&self.handle, name).await
    }
    async fn link_by_index(&self, index: u32) -> Result<Link, SysError> {
        link_by_index(&self.handle, index).await
    }
    async fn links(&self) -> Result<Vec<Link>, SysError> {
        links(&self.handle).await
    }
    async fn ipv4_addrs(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, SysError> {
        ipv4_addrs(&self.handle, index).await
    }
    async fn neighbours_v4(&self, index: u32) -> Result<Vec<Neighbour>, SysError> {
        neighbours_v4(&self.handle, index).await
    }
    async fn bridge_fdb(&self, bridge_index: u32) -> Result<Vec<FdbEntry>, SysError> {
        bridge_fdb(&self.handle, bridge_index).await
    }
    async fn routes_v4(&self) -> Result<Vec<Route>, SysError> {
        routes::routes_v4(&self.handle).await
    }
}

/// A stream that yields whenever a link, an IPv4 address or a neighbour
/// entry changes on this host (RTMGRP_LINK | RTMGRP_IPV4_IFADDR |
/// RTMGRP_NEIGH): new container veths, the underlay or the bridge deleted,
/// re-created or re-addressed, ARP entries of containers, next hops on the
/// underlay. overlayd reacts to it at once instead of waiting for its next
/// one-second tick.
pub fn change_events() -> Result<futures::channel::mpsc::UnboundedReceiver<()>, SysError> {
    use futures::StreamExt as _;
    use netlink_sys::AsyncSocket as _;
    let (mut conn, _handle, mut messages) =
        rtnetlink::new_connection().map_err(SysError::Connect)?;
    let groups = rtnetlink::constants::RTMGRP_LINK
        | rtnetlink::constants::RTMGRP_IPV4_IFADDR
        | rtnetlink::constants::RTMGRP_NEIGH;
    conn.socket_mut()
        .socket_mut()
        .bind(&netlink_sys::SocketAddr::new(0, groups))
        .map_err(SysError::Connect)?;
    tokio::spawn(conn);
    let (tx, rx) = futures::channel::mpsc::unbounded();
    tokio::spawn(async move {
        while messages.next().await.is_some() {
            if tx.unbounded_send(()).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::neighbour::NeighbourHeader;

    fn fdb_msg(
        ifindex: u32,
        state: NeighbourState,
        own: bool,
        master: Option<u32>,
    ) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header = NeighbourHeader {
            family: AddressFamily::Bridge,
            ifindex,
            state,
            flags: if own {
                vec![NeighbourFlag::Own]
            } else {
                vec![]
            },
            ..Default::default()
        };
        m.attributes.push(NeighbourAttribute::LinkLocalAddress(vec![
            2,
            0,
            0,
            0,
            0,
            ifindex as u8,
        ]));
        if let Some(master) = master {
            m.attributes.push(NeighbourAttribute::Controller(master));
        }
        m
    }

    #[test]
    fn fdb_keeps_learned_entries_on_ports_only() {
        let msgs = vec![
            fdb_msg(10, NeighbourState::Reachable, false, Some(3)),
            fdb_msg(11, NeighbourState::Stale, false, Some(3)),
            fdb_msg(12, NeighbourState::Noarp, false, Some(3)),
            fdb_msg(13, NeighbourState::Permanent, false, Some(3)),
            fdb_msg(3, NeighbourState::Permanent, false, Some(3)),
            fdb_msg(14, NeighbourState::Reachable, false, Some(4)),
            fdb_msg(2, NeighbourState::Permanent, true, None),
        ];
        let fdb = fdb_from_messages(&msgs, 3);
        assert_eq!(
            fdb.iter().map(|e| (e.port, e.mac[5])).collect::<Vec<_>>(),
            vec![(10, 10), (11, 11), (12, 12)]
        );
    }

    #[test]
    fn unusable_neighbours() {
        let mut n = Neighbour {
            ip: Ipv4Addr::new(10, 0, 0, 2),
            mac: Some([2, 0, 0, 0, 0, 1]),
            state: NeighbourState::Stale,
        };
        assert_eq!(n.usable_mac(), Some([2, 0, 0, 0, 0, 1]));
        n.state = NeighbourState::Failed;
        assert_eq!(n.usable_mac(), None);
        n.state = NeighbourState::Reachable;
        n.mac = Some([0; 6]);
        assert_eq!(n.usable_mac(), None);
    }

    /// Needs no privileges: reads the loopback link over a real netlink socket.
    #[tokio::test]
    async fn reads_loopback() {
        let handle = connect().unwrap();
        let lo = link_by_name(&handle, "lo").await.unwrap();
        assert_eq!(lo.name, "lo");
        assert_eq!(lo.mac, [0; 6]);
        assert_eq!(link_by_index(&handle, lo.index).await.unwrap().name, "lo");
        assert!(links(&handle)
            .await
            .unwrap()
            .iter()
            .any(|l| l.index == lo.index));
        let addrs = ipv4_addrs(&handle, lo.index).await.unwrap();
        assert!(addrs.contains(&(Ipv4Addr::LOCALHOST, 8)), "{addrs:?}");
        assert_eq!(usable_ipv4(&handle, lo.index).await.unwrap(), None);
        let e = link_by_name(&handle, "nosuchif0").await.unwrap_err();
        assert_eq!(e.to_string(), "no interface named nosuchif0");
        let e = link_by_index(&handle, 999_999).await.unwrap_err();
        assert_eq!(e.to_string(), "no interface with index 999999");
        neighbours_v4(&handle, lo.index).await.unwrap();
        bridge_fdb(&handle, lo.index).await.unwrap();
        // 127.0.0.0/8 lives in the local table, not in the main one.
        let routes = routes::routes_v4(&handle).await.unwrap();
        let loopback: ipnet::Ipv4Net = "127.0.0.0/8".parse().unwrap();
        assert!(routes.iter().all(|r| r.dst != loopback), "{routes:?}");
    }
}
