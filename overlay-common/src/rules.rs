//! Address rules shared by the programs and user space: which container
//! addresses are this host's, and which of them belong to the host itself
//! (gateway, network, broadcast) rather than to a container.
//!
//! Plain functions over network-order byte arrays, so `cargo test` covers
//! them and the programs inline them.

use crate::Config;

/// True when `ip` lies in this host's container subnet.
#[inline(always)]
pub fn in_subnet(cfg: &Config, ip: &[u8; 4]) -> bool {
    let a = u32::from_ne_bytes(*ip);
    let n = u32::from_ne_bytes(cfg.subnet);
    let m = u32::from_ne_bytes(cfg.subnet_mask);
    m != 0 && a & m == n
}

/// True when `ip` is the subnet's gateway, network or broadcast address:
/// addresses of the host, never of a container. A /31 or /32 subnet has no
/// network or broadcast address (RFC 3021), only the gateway.
#[inline(always)]
pub fn is_host_address(cfg: &Config, ip: &[u8; 4]) -> bool {
    if *ip == cfg.gateway_ip {
        return true;
    }
    let a = u32::from_be_bytes(*ip);
    let m = u32::from_be_bytes(cfg.subnet_mask);
    if m == 0 || m >= 0xffff_fffe {
        return false;
    }
    let n = u32::from_be_bytes(cfg.subnet);
    a == n || a == n | !m
}

/// True when a container may send from `ip`: inside the subnet and not one
/// of the host's own addresses.
#[inline(always)]
pub fn is_container_address(cfg: &Config, ip: &[u8; 4]) -> bool {
    in_subnet(cfg, ip) && !is_host_address(cfg, ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(subnet: [u8; 4], mask: [u8; 4], gw: [u8; 4]) -> Config {
        Config {
            subnet,
            subnet_mask: mask,
            gateway_ip: gw,
            ..Config::default()
        }
    }

    #[test]
    fn slash_24() {
        let c = cfg([10, 103, 100, 0], [255, 255, 255, 0], [10, 103, 100, 1]);
        assert!(in_subnet(&c, &[10, 103, 100, 2]));
        assert!(!in_subnet(&c, &[10, 103, 101, 2]));
        assert!(is_host_address(&c, &[10, 103, 100, 0]), "network");
        assert!(is_host_address(&c, &[10, 103, 100, 1]), "gateway");
        assert!(is_host_address(&c, &[10, 103, 100, 255]), "broadcast");
        assert!(!is_host_address(&c, &[10, 103, 100, 2]));
        assert!(is_container_address(&c, &[10, 103, 100, 254]));
        assert!(!is_container_address(&c, &[10, 103, 100, 255]));
        assert!(!is_container_address(&c, &[10, 9, 9, 9]));
    }

    #[test]
    fn gateway_anywhere_and_odd_prefixes() {
        let c = cfg([10, 0, 0, 0], [255, 255, 0, 0], [10, 0, 3, 7]);
        assert!(is_host_address(&c, &[10, 0, 3, 7]));
        assert!(is_host_address(&c, &[10, 0, 255, 255]));
        assert!(!is_host_address(&c, &[10, 0, 0, 255]));
        let p2p = cfg([10, 0, 0, 0], [255, 255, 255, 254], [9, 9, 9, 9]);
        assert!(!is_host_address(&p2p, &[10, 0, 0, 0]));
        assert!(!is_host_address(&p2p, &[10, 0, 0, 1]));
        let none = Config::default();
        assert!(!in_subnet(&none, &[0, 0, 0, 0]), "no subnet configured");
    }
}
