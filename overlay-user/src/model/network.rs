//! Address arithmetic of the overlay's networks: a host's container subnet,
//! its gateway, and which addresses can be containers.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = 16_777_215;

/// The longest container-subnet prefix: a /30 still has room for the
/// gateway (.1) and one container next to the network and broadcast addresses.
pub const MAX_SUBNET_PREFIX: u8 = 30;

/// The gateway address of `subnet`: its network address plus one.
pub fn gateway_of(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).wrapping_add(1))
}

/// Whether two subnets share at least one address.
pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// An entry of `map` (keyed by subnet) other than `subnet` itself that
/// overlaps `subnet`, found without a walk over the whole map: its
/// supernets are looked up one prefix length at a time, its subnets in the
/// key range of its addresses.
pub fn overlapping<V>(map: &BTreeMap<Ipv4Net, V>, subnet: Ipv4Net) -> Option<(&Ipv4Net, &V)> {
    for len in 0..subnet.prefix_len() {
        let sup = Ipv4Net::new(subnet.network(), len)
            .expect("a shorter prefix")
            .trunc();
        if let Some(found) = map.get_key_value(&sup) {
            return Some(found);
        }
    }
    let lo = Ipv4Net::new(subnet.network(), 0).expect("prefix 0");
    let hi = Ipv4Net::new(subnet.broadcast(), 32).expect("prefix 32");
    map.range(lo..=hi)
        .find(|(net, _)| **net != subnet && overlaps(**net, subnet))
}

/// Whether `ip` can be a container of `subnet` (not its network, broadcast or gateway address).
pub fn is_container_ip(subnet: Ipv4Net, ip: Ipv4Addr) -> bool {
    subnet.contains(&ip)
        && ip != subnet.network()
        && ip != subnet.broadcast()
        && ip != gateway_of(subnet)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn overlap() {
        assert!(overlaps(net("10.0.0.0/8"), net("10.1.0.0/16")));
        assert!(overlaps(net("10.1.0.0/16"), net("10.0.0.0/8")));
        assert!(!overlaps(net("10.1.0.0/24"), net("10.1.1.0/24")));
    }

    #[test]
    fn overlapping_entries_are_found_without_a_walk() {
        let map: BTreeMap<Ipv4Net, u8> = [
            (net("10.1.0.0/16"), 1),
            (net("10.2.3.0/24"), 2),
            (net("10.4.0.0/24"), 3),
            (net("10.4.1.128/25"), 4),
        ]
        .into();
        assert_eq!(
            overlapping(&map, net("10.1.5.0/24")),
            Some((&net("10.1.0.0/16"), &1))
        );
        assert_eq!(
            overlapping(&map, net("10.2.0.0/16")),
            Some((&net("10.2.3.0/24"), &2))
        );
        assert_eq!(
            overlapping(&map, net("10.2.3.0/24")),
            None,
            "itself is no overlap"
        );
        assert_eq!(overlapping(&map, net("10.2.4.0/24")), None);
        assert_eq!(
            overlapping(&map, net("10.4.1.0/24")),
            Some((&net("10.4.1.128/25"), &4))
        );
        assert_eq!(
            overlapping(&map, net("10.4.0.0/23")),
            Some((&net("10.4.0.0/24"), &3))
        );
        assert_eq!(
            overlapping(&map, net("0.0.0.0/0")),
            Some((&net("10.1.0.0/16"), &1))
        );
        assert_eq!(overlapping(&map, net("10.3.0.0/16")), None);
    }

    #[test]
    fn container_ips() {
        let s: Ipv4Net = "10.103.100.0/24".parse().unwrap();
        assert!(is_container_ip(s, [10, 103, 100, 2].into()));
        assert!(!is_container_ip(s, [10, 103, 100, 0].into()));
        assert!(!is_container_ip(s, [10, 103, 100, 1].into()));
        assert!(!is_container_ip(s, [10, 103, 100, 255].into()));
        assert!(!is_container_ip(s, [10, 103, 101, 2].into()));
    }
}
