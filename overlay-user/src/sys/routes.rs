//! The main IPv4 routing table, read through rtnetlink, and the mark
//! ([`RTPROT_OVERLAY`]) that tells overlay's routes from everybody else's.

use std::net::Ipv4Addr;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, IpVersion};

use crate::sys::error::SysError;

/// The route protocol (`rtm_protocol`) overlay marks its routes with, shown
/// by `ip route` as `proto 79`: routes without it were not made by overlay
/// and are never replaced or deleted by it.
pub const RTPROT_OVERLAY: u8 = 0x4f;

/// The main routing table's id.
pub const RT_TABLE_MAIN: u32 = 254;

/// A route of the main IPv4 table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Destination network.
    pub dst: Ipv4Net,
    /// Gateway, if any.
    pub gateway: Option<Ipv4Addr>,
    /// Output interface, if any.
    pub oif: Option<u32>,
    /// Who made it (`rtm_protocol`: 2 kernel, 3 boot, 4 static, [`RTPROT_OVERLAY`], ...).
    pub protocol: u8,
}

impl Route {
    /// Whether overlay made this route ([`RTPROT_OVERLAY`]).
    pub fn is_overlays(&self) -> bool {
        self.protocol == RTPROT_OVERLAY
    }

    /// The route as `ip route` shows it, with the name `dev` of its output
    /// interface: "10.1.0.0/16 via 192.168.56.1 dev eth1 proto static".
    pub fn describe(&self, dev: Option<&str>) -> String {
        let mut text = self.dst.to_string();
        if let Some(gw) = self.gateway {
            text.push_str(&format!(" via {gw}"));
        }
        match (dev, self.oif) {
            (Some(name), _) => text.push_str(&format!(" dev {name}")),
            (None, Some(oif)) => text.push_str(&format!(" dev #{oif}")),
            (None, None) => {}
        }
        text.push_str(&format!(" proto {}", protocol_name(self.protocol)));
        text
    }
}

/// A route protocol's name as `ip route` shows it ("kernel", "static", "79").
pub fn protocol_name(protocol: u8) -> String {
    let name = match protocol {
        0 => "unspec",
        1 => "redirect",
        2 => "kernel",
        3 => "boot",
        4 => "static",
        9 => "ra",
        11 => "zebra",
        12 => "bird",
        16 => "dhcp",
        42 => "babel",
        186 => "bgp",
        187 => "isis",
        188 => "ospf",
        189 => "rip",
        n => return n.to_string(),
    };
    name.to_string()
}

/// The route a route message describes, if it is an IPv4 route of the main table.
pub fn route_from_message(m: &RouteMessage) -> Option<Route> {
    if m.header.address_family != AddressFamily::Inet {
        return None;
    }
    let mut table = u32::from(m.header.table);
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut gateway = None;
    let mut oif = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    if table != RT_TABLE_MAIN {
        return None;
    }
    Some(Route {
        dst: Ipv4Net::new(dst, m.header.destination_prefix_length).ok()?,
        gateway,
        oif,
        protocol: u8::from(m.header.protocol),
    })
}

/// The IPv4 routes of the main table, as (route, message) pairs: the
/// message is what deleting the route takes.
pub async fn route_messages(handle: &Handle) -> Result<Vec<(Route, RouteMessage)>, SysError> {
    let msgs: Vec<RouteMessage> = handle
        .route()
        .get(IpVersion::V4)
        .execute()
        .try_collect()
        .await
        .map_err(|source| SysError::Request {
            what: "dump of IPv4 routes".into(),
            source: Box::new(source),
        })?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| Some((route_from_message(&m)?, m)))
        .collect())
}

/// The IPv4 routes of the main table.
pub async fn routes_v4(handle: &Handle) -> Result<Vec<Route>, SysError> {
    Ok(route_messages(handle)
        .await?
        .into_iter()
        .map(|(r, _)| r)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names() {
        assert_eq!(protocol_name(2), "kernel");
        assert_eq!(protocol_name(4), "static");
        assert_eq!(protocol_name(RTPROT_OVERLAY), "79");
    }
}
