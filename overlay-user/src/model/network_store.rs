//! The overlay networks in the cluster store: where each thing lives, the
//! IPAM record, and the checks of a network and of an address on it.
//!
//! Layout under the prefix (default `/overlay`):
//!
//! ```text
//! /overlay/networks/web                   {"name":"web","vni":4096,"subnet":"10.104.0.0/24","gateway":"10.104.0.1"}
//! /overlay/vnis/4096                      web
//! /overlay/netsubnets/10.104.0.0-24       web
//! /overlay/ipam/web/10.104.0.2            {"holder":"3f2a...","host":"h1"}
//! /overlay/endpoints/web/10.104.0.2       {"network":"web","ip":"10.104.0.2",...}   (under the host's etcd lease)
//! ```

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::model::network::{MAX_SUBNET_PREFIX, MAX_VNI};
use crate::model::overlay_network::NetworkSpec;
use crate::model::validation::InputError;

/// The lowest VNI handed out to a network created without one; lower ones
/// are left to hand-picked VNIs and the cluster's per-host VNI.
pub const FIRST_AUTO_VNI: u32 = 4096;

/// Check a network's name: 1 to 63 of `[A-Za-z0-9_.-]`, starting with a letter or digit.
pub fn check_network_name(name: &str) -> Result<(), InputError> {
    let ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(InputError::NetworkName(name.to_string()))
    }
}

fn problem(
    what: &'static str,
    value: impl ToString,
    problem: String,
    expected: String,
) -> InputError {
    InputError::Network {
        what,
        value: value.to_string(),
        problem,
        expected,
    }
}

/// Check a VNI for a network: 24 bits, not 0.
pub fn check_network_vni(vni: u32) -> Result<(), InputError> {
    if vni == 0 || vni > MAX_VNI {
        return Err(problem(
            "vni",
            vni,
            "is out of range".into(),
            format!("1..={MAX_VNI}"),
        ));
    }
    Ok(())
}

/// Check a network's subnet: a network address, /30 or wider.
pub fn check_network_subnet(subnet: Ipv4Net) -> Result<(), InputError> {
    if subnet != subnet.trunc() {
        return Err(problem(
            "subnet",
            subnet,
            "has host bits set".into(),
            format!("a network address like {}", subnet.trunc()),
        ));
    }
    if subnet.prefix_len() > MAX_SUBNET_PREFIX {
        return Err(problem(
            "subnet",
            subnet,
            "is too small".into(),
            format!("a prefix of /{MAX_SUBNET_PREFIX} or shorter, like 10.104.0.0/24"),
        ));
    }
    Ok(())
}

/// Check `gateway` for `subnet`: inside it, not its network or broadcast address.
pub fn check_gateway(subnet: Ipv4Net, gateway: Ipv4Addr) -> Result<(), InputError> {
    let bad = |why: String| {
        problem(
            "gateway",
            gateway,
            why,
            format!(
                "an address of {subnet} other than its network and broadcast addresses, like {}",
                crate::model::network::gateway_of(subnet)
            ),
        )
    };
    if !subnet.contains(&gateway) {
        return Err(bad(format!("is not in the subnet {subnet}")));
    }
    if gateway == subnet.network() {
        return Err(bad(format!("is the network address of {subnet}")));
    }
    if gateway == subnet.broadcast() {
        return Err(bad(format!("is the broadcast address of {subnet}")));
    }
    Ok(())
}

impl NetworkSpec {
    /// Check every value (name, VNI, subnet, gateway).
    pub fn check(&self) -> Result<(), InputError> {
        check_network_name(&self.name)?;
        check_network_vni(self.vni)?;
        check_network_subnet(self.subnet)?;
        check_gateway(self.subnet, self.gateway)
    }

    /// Refuse `ip` unless it can be a container on this network: inside
    /// the subnet, not its network, broadcast or gateway address.
    pub fn check_member(&self, ip: Ipv4Addr) -> Result<(), InputError> {
        let reserved = if !self.subnet.contains(&ip) {
            Some(format!(
                "is not in network {}'s subnet {}",
                self.name, self.subnet
            ))
        } else if ip == self.subnet.network() {
            Some(format!("is the network address of network {}", self.name))
        } else if ip == self.subnet.broadcast() {
            Some(format!("is the broadcast address of network {}", self.name))
        } else if ip == self.gateway {
            Some(format!("is the gateway of network {}", self.name))
        } else {
            None
        };
        match reserved {
            None => Ok(()),
            Some(why) => Err(problem(
                "address",
                ip,
                why,
                format!(
                    "an address of {} other than its network, broadcast and gateway ({}) addresses",
                    self.subnet, self.gateway
                ),
            )),
        }
    }

    /// The addresses containers may have, in order.
    pub fn container_ips(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let first = u32::from(self.subnet.network()) + 1;
        let last = u32::from(self.subnet.broadcast());
        (first..last)
            .map(Ipv4Addr::from)
            .filter(move |ip| *ip != self.gateway)
    }
}

/// Who holds an address of a network, at `<prefix>/ipam/<network>/<ip>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamRecord {
    /// The container or endpoint ID it was requested for.
    pub holder: String,
    /// The host that requested it.
    pub host: String,
}

/// `<prefix>/networks/` (ends with '/').
pub fn networks_prefix(prefix: &str) -> String {
    format!("{prefix}/networks/")
}

/// `<prefix>/networks/<name>`.
pub fn network_key(prefix: &str, name: &str) -> String {
    format!("{}{name}", networks_prefix(prefix))
}

/// `<prefix>/vnis/<vni>`: which network has the VNI.
pub fn vni_key(prefix: &str, vni: u32) -> String {
    format!("{prefix}/vnis/{vni}")
}

/// `<prefix>/netsubnets/<a.b.c.d>-<len>`: which network has the subnet.
pub fn netsubnet_key(prefix: &str, subnet: Ipv4Net) -> String {
    format!(
        "{prefix}/netsubnets/{}-{}",
        subnet.network(),
        subnet.prefix_len()
    )
}

/// `<prefix>/ipam/<name>/` (ends with '/').
pub fn ipam_prefix(prefix: &str, name: &str) -> String {
    format!("{prefix}/ipam/{name}/")
}

/// `<prefix>/ipam/<name>/<ip>`.
pub fn ipam_key(prefix: &str, name: &str, ip: Ipv4Addr) -> String {
    format!("{}{ip}", ipam_prefix(prefix, name))
}

/// `<prefix>/endpoints/` (ends with '/'): every network's endpoint records.
pub fn endpoints_prefix(prefix: &str) -> String {
    format!("{prefix}/endpoints/")
}

/// `<prefix>/endpoints/<name>/` (ends with '/'): one network's endpoint records.
pub fn net_endpoints_prefix(prefix: &str, name: &str) -> String {
    format!("{}{name}/", endpoints_prefix(prefix))
}

/// `<prefix>/endpoints/<name>/<ip>`.
pub fn endpoint_key(prefix: &str, name: &str, ip: Ipv4Addr) -> String {
    format!("{}{ip}", net_endpoints_prefix(prefix, name))
}

/// The network name of a network's key, if `key` is one.
pub fn parse_network_key<'a>(prefix: &str, key: &'a str) -> Option<&'a str> {
    let name = key.strip_prefix(&networks_prefix(prefix))?;
    check_network_name(name).ok().map(|_| name)
}

/// The network and address of an endpoint record's key, if `key` is one.
pub fn parse_endpoint_key<'a>(prefix: &str, key: &'a str) -> Option<(&'a str, Ipv4Addr)> {
    let rest = key.strip_prefix(&endpoints_prefix(prefix))?;
    let (name, ip) = rest.split_once('/')?;
    check_network_name(name).ok()?;
    Some((name, ip.parse().ok()?))
}

/// The address of an IPAM key of network `name`, if `key` is one.
pub fn parse_ipam_key(prefix: &str, name: &str, key: &str) -> Option<Ipv4Addr> {
    key.strip_prefix(&ipam_prefix(prefix, name))?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NetworkSpec {
        NetworkSpec {
            name: "web".into(),
            vni: 4096,
            subnet: "10.104.0.0/29".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 104, 0, 1),
        }
    }

    #[test]
    fn names() {
        for ok in ["web", "a", "db-1.prod_x", &"x".repeat(63)] {
            check_network_name(ok).unwrap();
        }
        for bad in ["", "-web", ".x", "a/b", "a b", "ü", &"x".repeat(64)] {
            assert_eq!(
                check_network_name(bad).unwrap_err(),
                InputError::NetworkName(bad.to_string())
            );
        }
        assert_eq!(
            check_network_name("a/b").unwrap_err().to_string(),
            "network name \"a/b\" is not valid; expected 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit, like \"web\""
        );
    }

    #[test]
    fn specs_and_members() {
        let s = spec();
        s.check().unwrap();
        let ips: Vec<Ipv4Addr> = s.container_ips().collect();
        assert_eq!(
            ips,
            (2..=6)
                .map(|i| Ipv4Addr::new(10, 104, 0, i))
                .collect::<Vec<_>>()
        );
        s.check_member(Ipv4Addr::new(10, 104, 0, 2)).unwrap();
        assert_eq!(
            s.check_member(Ipv4Addr::new(10, 104, 0, 1)).unwrap_err().to_string(),
            "address 10.104.0.1 is the gateway of network web; expected an address of 10.104.0.0/29 other than its network, broadcast and gateway (10.104.0.1) addresses"
        );
        assert!(s
            .check_member(Ipv4Addr::new(10, 104, 0, 7))
            .unwrap_err()
            .to_string()
            .starts_with("address 10.104.0.7 is the broadcast address of network web;"));
        assert!(s
            .check_member(Ipv4Addr::new(10, 104, 1, 2))
            .unwrap_err()
            .to_string()
            .starts_with("address 10.104.1.2 is not in network web's subnet 10.104.0.0/29;"));
        let mut g = spec();
        g.gateway = Ipv4Addr::new(10, 104, 0, 6);
        g.check().unwrap();
        assert_eq!(g.container_ips().count(), 5);
        assert_eq!(g.container_ips().next(), Some(Ipv4Addr::new(10, 104, 0, 1)));
        g.gateway = Ipv4Addr::new(10, 104, 0, 0);
        assert_eq!(
            g.check().unwrap_err().to_string(),
            "gateway 10.104.0.0 is the network address of 10.104.0.0/29; expected an address of 10.104.0.0/29 other than its network and broadcast addresses, like 10.104.0.1"
        );
        let mut v = spec();
        v.vni = 1 << 24;
        assert_eq!(
            v.check().unwrap_err().to_string(),
            "vni 16777216 is out of range; expected 1..=16777215"
        );
        assert_eq!(
            check_network_subnet("10.104.0.1/24".parse().unwrap())
                .unwrap_err()
                .to_string(),
            "subnet 10.104.0.1/24 has host bits set; expected a network address like 10.104.0.0/24"
        );
        assert!(check_network_subnet("10.104.0.0/31".parse().unwrap()).is_err());
    }

    #[test]
    fn keys() {
        let p = "/overlay";
        assert_eq!(network_key(p, "web"), "/overlay/networks/web");
        assert_eq!(parse_network_key(p, "/overlay/networks/web"), Some("web"));
        assert_eq!(parse_network_key(p, "/overlay/networks/a/b"), None);
        assert_eq!(vni_key(p, 4096), "/overlay/vnis/4096");
        assert_eq!(
            netsubnet_key(p, "10.104.0.0/24".parse().unwrap()),
            "/overlay/netsubnets/10.104.0.0-24"
        );
        let ip = Ipv4Addr::new(10, 104, 0, 2);
        assert_eq!(ipam_key(p, "web", ip), "/overlay/ipam/web/10.104.0.2");
        assert_eq!(
            parse_ipam_key(p, "web", "/overlay/ipam/web/10.104.0.2"),
            Some(ip)
        );
        assert_eq!(
            parse_ipam_key(p, "we", "/overlay/ipam/web/10.104.0.2"),
            None
        );
        let k = endpoint_key(p, "web", ip);
        assert_eq!(k, "/overlay/endpoints/web/10.104.0.2");
        assert_eq!(parse_endpoint_key(p, &k), Some(("web", ip)));
        assert_eq!(parse_endpoint_key(p, "/overlay/endpoints/web/x"), None);
        assert_eq!(parse_endpoint_key(p, "/overlay/networks/web"), None);
    }
}
