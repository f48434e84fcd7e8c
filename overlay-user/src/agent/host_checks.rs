//! Checks of a peer subnet against this host: the networks of the underlay
//! interface and the main routing table. A peer subnet that overlaps one of
//! them would take traffic away from the underlay or from another route
//! (the pure checks, such as loopback or multicast ranges, are in
//! [`crate::model::validation`]).

use ipnet::Ipv4Net;

use crate::agent::error::AgentError;
use crate::model::config::Config;
use crate::model::network::overlaps;
use crate::sys::netlink::Netlink;
use crate::sys::routes::Route;

/// Refuses `subnet` when it overlaps a network of the underlay interface,
/// or a route of the main table that overlay did not make (the default
/// route aside: every subnet lies in it). A missing underlay interface is
/// not an error here: the dataplane reports it.
pub async fn check_peer_subnet_on_host(
    net: &dyn Netlink,
    cfg: &Config,
    subnet: Ipv4Net,
) -> Result<(), AgentError> {
    if let Ok(link) = net.link_by_name(&cfg.underlay_interface).await {
        for (ip, len) in net.ipv4_addrs(link.index).await? {
            let Ok(network) = Ipv4Net::new(ip, len).map(|n| n.trunc()) else {
                continue;
            };
            if overlaps(network, subnet) {
                return Err(AgentError::PeerOverlapsUnderlay {
                    subnet,
                    network,
                    interface: cfg.underlay_interface.clone(),
                });
            }
        }
    }
    for route in net.routes_v4().await? {
        if route.is_overlays() || route.dst.prefix_len() == 0 || !overlaps(route.dst, subnet) {
            continue;
        }
        return Err(AgentError::PeerOverlapsRoute {
            subnet,
            route: describe(net, &route).await,
        });
    }
    Ok(())
}

/// `route` as `ip route` shows it: "10.1.0.0/16 via 192.168.56.1 dev eth1 proto static".
pub async fn describe(net: &dyn Netlink, route: &Route) -> String {
    let dev = match route.oif {
        Some(oif) => net.link_by_index(oif).await.ok().map(|l| l.name),
        None => None,
    };
    route.describe(dev.as_deref())
}

#[cfg(test)]
mod tests;
