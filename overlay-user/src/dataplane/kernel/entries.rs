//! The per-peer entries on the device: a permanent neighbour entry, an FDB
//! entry and an `onlink` route, added, listed and removed through rtnetlink.
//!
//! Routes carry overlay's protocol ([`RTPROT_OVERLAY`], `proto 79`); only
//! those are ever replaced or deleted, and a route to a peer subnet that
//! overlay did not make is refused, never overwritten.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlag, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteFlag, RouteMessage, RouteProtocol};
use netlink_packet_route::AddressFamily;
use rtnetlink::Handle;

use crate::dataplane::kernel::error::{is_missing, request};
use crate::dataplane::DataplaneError;
use crate::model::validation::format_mac;
use crate::sys::netlink;
use crate::sys::routes::{self, Route, RTPROT_OVERLAY};

/// The entries on one device.
pub struct Entries<'a> {
    /// The netlink connection.
    pub handle: &'a Handle,
    /// The device's ifindex.
    pub index: u32,
    /// The device's name, for messages.
    pub dev: &'a str,
}

impl Entries<'_> {
    /// The permanent neighbour entry `gateway` -> `vtep_mac`.
    pub async fn add_neighbour(
        &self,
        gateway: Ipv4Addr,
        vtep_mac: [u8; 6],
    ) -> Result<(), DataplaneError> {
        self.handle
            .neighbours()
            .add(self.index, IpAddr::V4(gateway))
            .link_local_address(&vtep_mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(request(format!(
                "adding neighbour {} -> {} on {}",
                gateway,
                format_mac(&vtep_mac),
                self.dev
            )))
    }

    /// Removes the neighbour entry of `gateway`; a missing one is fine.
    pub async fn del_neighbour(&self, gateway: Ipv4Addr) -> Result<(), DataplaneError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = self.index;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                gateway,
            )));
        match self.handle.neighbours().del(msg).execute().await {
            Err(e) if !is_missing(&e) => Err(request(format!(
                "deleting neighbour {gateway} on {}",
                self.dev
            ))(e)),
            _ => Ok(()),
        }
    }

    /// The FDB entry `mac` -> `dst`.
    pub async fn add_fdb(&self, mac: [u8; 6], dst: Ipv4Addr) -> Result<(), DataplaneError> {
        self.handle
            .neighbours()
            .add_bridge(self.index, &mac)
            .destination(IpAddr::V4(dst))
            .flags(vec![NeighbourFlag::Own])
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(request(format!(
                "adding FDB entry {} dst {dst} on {}",
                format_mac(&mac),
                self.dev
            )))
    }

    /// Removes the FDB entry `mac` -> `dst`; a missing one is fine.
    pub async fn del_fdb(&self, mac: [u8; 6], dst: Ipv4Addr) -> Result<(), DataplaneError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = self.index;
        msg.header.flags = vec![NeighbourFlag::Own];
        msg.header.state = NeighbourState::Permanent;
        msg.attributes
            .push(NeighbourAttribute::LinkLocalAddress(mac.to_vec()));
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
        match self.handle.neighbours().del(msg).execute().await {
            Err(e) if !is_missing(&e) => Err(request(format!(
                "deleting FDB entry {} dst {dst} on {}",
                format_mac(&mac),
                self.dev
            ))(e)),
            _ => Ok(()),
        }
    }

    /// The route to `subnet` via `gateway`, on the device, `onlink`, marked
    /// as overlay's ([`RTPROT_OVERLAY`]). Replaces a route of ours to
    /// `subnet`; refuses ([`DataplaneError::ForeignRoute`]) when the main
    /// table has a route to `subnet` that overlay did not make.
    pub async fn add_route(
        &self,
        subnet: Ipv4Net,
        gateway: Ipv4Addr,
    ) -> Result<(), DataplaneError> {
        self.check_no_foreign_route(subnet).await?;
        let mut req = self
            .handle
            .route()
            .add()
            .v4()
            .destination_prefix(subnet.network(), subnet.prefix_len())
            .gateway(gateway)
            .output_interface(self.index)
            .protocol(RouteProtocol::from(RTPROT_OVERLAY))
            .replace();
        req.message_mut().header.flags.push(RouteFlag::Onlink);
        req.execute().await.map_err(request(format!(
            "adding route {subnet} via {gateway} dev {} onlink",
            self.dev
        )))
    }

    /// Refuses ([`DataplaneError::ForeignRoute`]) when the main table has a
    /// route to `subnet` that overlay did not make.
    pub async fn check_no_foreign_route(&self, subnet: Ipv4Net) -> Result<(), DataplaneError> {
        for (route, _) in main_routes(self.handle).await? {
            if route.dst == subnet && !route.is_overlays() {
                return Err(DataplaneError::ForeignRoute {
                    route: describe(self.handle, &route).await,
                });
            }
        }
        Ok(())
    }

    /// Overlay's routes ([`RTPROT_OVERLAY`]) of the main table out of the device.
    pub async fn our_routes(&self) -> Result<Vec<(Route, RouteMessage)>, DataplaneError> {
        Ok(main_routes(self.handle)
            .await?
            .into_iter()
            .filter(|(r, _)| r.oif == Some(self.index) && r.is_overlays())
            .collect())
    }

    /// Removes overlay's routes to `subnet` on the device; others stay.
    pub async fn del_route(&self, subnet: Ipv4Net) -> Result<(), DataplaneError> {
        for (route, msg) in self.our_routes().await? {
            if route.dst == subnet {
                if let Err(e) = self.handle.route().del(msg).execute().await {
                    if !is_missing(&e) {
                        return Err(
                            request(format!("deleting route {subnet} dev {}", self.dev))(e),
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

/// The IPv4 routes of the main table.
pub async fn main_routes(handle: &Handle) -> Result<Vec<(Route, RouteMessage)>, DataplaneError> {
    routes::route_messages(handle)
        .await
        .map_err(|e| DataplaneError::Netlink(e.to_string()))
}

/// `route` as `ip route` shows it, with its interface's name.
pub async fn describe(handle: &Handle, route: &Route) -> String {
    let dev = match route.oif {
        Some(oif) => netlink::link_by_index(handle, oif)
            .await
            .ok()
            .map(|l| l.name),
        None => None,
    };
    route.describe(dev.as_deref())
}

/// The FDB entries with a destination address on link `index`: (MAC, destination).
pub async fn fdb_entries(
    handle: &Handle,
    index: u32,
) -> Result<BTreeSet<([u8; 6], Ipv4Addr)>, DataplaneError> {
    let mut req = handle.neighbours().get();
    req.message_mut().header.family = AddressFamily::Bridge;
    let msgs: Vec<NeighbourMessage> = req
        .execute()
        .try_collect()
        .await
        .map_err(request("dump of the FDB"))?;
    Ok(msgs
        .iter()
        .filter(|m| m.header.family == AddressFamily::Bridge && m.header.ifindex == index)
        .filter_map(|m| {
            let mut mac = None;
            let mut dst = None;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::LinkLocalAddress(b) => {
                        mac = <[u8; 6]>::try_from(b.as_slice()).ok()
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => dst = Some(*ip),
                    _ => {}
                }
            }
            Some((mac?, dst?))
        })
        .collect())
}
