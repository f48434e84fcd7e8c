//! Address arithmetic of the overlay's networks: a host's container subnet,
//! its gateway, and which addresses can be containers.

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
    fn container_ips() {
        let s: Ipv4Net = "10.103.100.0/24".parse().unwrap();
        assert!(is_container_ip(s, [10, 103, 100, 2].into()));
        assert!(!is_container_ip(s, [10, 103, 100, 0].into()));
        assert!(!is_container_ip(s, [10, 103, 100, 1].into()));
        assert!(!is_container_ip(s, [10, 103, 100, 255].into()));
        assert!(!is_container_ip(s, [10, 103, 101, 2].into()));
    }
}
