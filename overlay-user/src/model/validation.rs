//! Strict parsers and checks for the values users type (config file, CLI,
//! API): CIDRs, addresses and MACs, with messages that say what is expected.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// A malformed or unusable value typed by a user (config file, CLI or
/// API), or a configuration value that parsed but is not acceptable
/// ([`Config::validate`](crate::model::config::Config::validate)): the
/// model's one error type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Not of the form a.b.c.d/len.
    #[error("{value:?} is not an IPv4 CIDR; expected a network address like 10.103.200.0/24")]
    NotCidr {
        /// What was given.
        value: String,
    },
    /// A CIDR whose address has bits set beyond the prefix.
    #[error("{value} has host bits set; expected a network address like {}", value.trunc())]
    HostBits {
        /// What was given.
        value: Ipv4Net,
    },
    /// Not a dotted-quad IPv4 address.
    #[error("{value:?} is not an IPv4 address; expected a dotted quad like 192.168.56.5")]
    NotIpv4 {
        /// What was given.
        value: String,
    },
    /// An address that cannot be a VTEP (unspecified, loopback, multicast, broadcast).
    #[error(
        "{ip} is {kind} address; expected a host's unicast underlay address like 192.168.56.5"
    )]
    UnderlayIp {
        /// The address.
        ip: Ipv4Addr,
        /// "an unspecified", "a loopback", "a multicast" or "a broadcast".
        kind: &'static str,
    },
    /// A peer subnet that overlaps a range no container network can use
    /// ([`RESERVED_RANGES`]).
    #[error("peer subnet {subnet} overlaps the {kind} range {range}; expected a container subnet outside 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4 and 255.255.255.255, like 10.103.200.0/24")]
    PeerSubnetReserved {
        /// The peer subnet given.
        subnet: Ipv4Net,
        /// "this-network", "loopback", "link-local", "multicast" or "broadcast".
        kind: &'static str,
        /// The range it overlaps.
        range: Ipv4Net,
    },
    /// Not six colon-separated hex bytes.
    #[error("{value:?} is not a MAC address; expected six hex bytes like 02:2a:c0:a8:38:05")]
    NotMac {
        /// What was given.
        value: String,
    },
    /// A MAC that cannot be a VTEP's (multicast or all zeros).
    #[error("{value} is not a unicast MAC address; expected one like 02:2a:c0:a8:38:05 (first byte even, not all zeros)")]
    NotUnicastMac {
        /// The MAC, formatted.
        value: String,
    },

    /// `vni` is 0 or does not fit in 24 bits.
    #[error("vni = {0} is out of range; expected 1..=16777215")]
    Vni(u32),
    /// `vxlan_port` is 0.
    #[error("vxlan_port = 0 is not a usable UDP port; expected 1..=65535 (usually 4789)")]
    Port,
    /// An interface name the kernel would not accept.
    #[error("{field} = {value:?} is not a valid interface name; expected 1 to 15 characters without '/', ':' or whitespace")]
    InterfaceName {
        /// `underlay_interface` or `bridge`.
        field: &'static str,
        /// The name given.
        value: String,
    },
    /// A field's value is malformed (host bits set, bad MAC, unusable address, ...).
    #[error("{field}: {source}")]
    Field {
        /// The field, e.g. `subnet` or `peers[1].vtep_mac`.
        field: String,
        /// The problem.
        #[source]
        source: Box<InputError>,
    },
    /// This host's subnet has no room for a gateway and containers.
    #[error("subnet {0} is too small; expected a prefix of /30 or shorter, like 10.103.100.0/24")]
    SubnetTooSmall(Ipv4Net),
    /// A peer's subnet overlaps this host's subnet.
    #[error("peers[{index}].subnet {peer} overlaps this host's subnet {own}; expected a subnet disjoint from it")]
    PeerOverlapsOwn {
        /// The peer's position in `[[peers]]`.
        index: usize,
        /// The peer's subnet.
        peer: Ipv4Net,
        /// This host's subnet.
        own: Ipv4Net,
    },
    /// Two peers' subnets overlap.
    #[error("peers[{index}].subnet {peer} overlaps peers[{other_index}].subnet {other}; expected disjoint peer subnets")]
    PeersOverlap {
        /// The later peer's position.
        index: usize,
        /// The later peer's subnet.
        peer: Ipv4Net,
        /// The earlier peer's position.
        other_index: usize,
        /// The earlier peer's subnet.
        other: Ipv4Net,
    },
    /// A peer's underlay address is this host's own.
    #[error("peers[{index}].underlay_ip {ip} is this host's own underlay address; expected the peer host's address")]
    PeerIsSelf {
        /// The peer's position.
        index: usize,
        /// The address.
        ip: Ipv4Addr,
    },
    /// An `[api]` limit is out of range.
    #[error("api.{field} = {value} is out of range; expected {expected}")]
    ApiLimit {
        /// `idle_timeout_secs` or `max_connections`.
        field: &'static str,
        /// The value given.
        value: u64,
        /// The accepted range, with the default.
        expected: &'static str,
    },
    /// `learn_limit` exceeds the container addresses of this host's subnet.
    #[error("learn_limit = {value} is more than the {max} container addresses of subnet {subnet}; expected 0 (no learning) to {max}")]
    LearnLimit {
        /// The value given.
        value: u32,
        /// How many container addresses the subnet has.
        max: u64,
        /// This host's subnet.
        subnet: Ipv4Net,
    },
    /// A `[dns]` value is not acceptable.
    #[error("dns.{field} = {value:?} {problem}; expected {expected}")]
    Dns {
        /// `listen` or `upstream`.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        problem: &'static str,
        /// What is expected instead.
        expected: &'static str,
    },
    /// A field the file must have (without `[cluster]`, `subnet` and `vni`).
    #[error("missing field `{field}`; expected {expected}")]
    MissingField {
        /// The field.
        field: &'static str,
        /// What it should hold.
        expected: &'static str,
    },
    /// A `[cluster]` value is not acceptable.
    #[error("cluster.{field} = {value} {problem}; expected {expected}")]
    Cluster {
        /// The field, e.g. `etcd` or `prefix`.
        field: &'static str,
        /// The value given, as written (strings quoted).
        value: String,
        /// What is wrong with it, e.g. "is not an etcd client URL".
        problem: &'static str,
        /// What is expected instead.
        expected: String,
    },
    /// The cluster's subnet length does not fit its pool.
    #[error("subnet length /{len} does not fit pool {pool}; expected /{} to /30", pool.prefix_len())]
    SubnetLen {
        /// The subnet length given.
        len: u8,
        /// The pool.
        pool: Ipv4Net,
    },
    /// A host record in the store names another subnet than its key.
    #[error("record for {key} names subnet {record}; expected the key's subnet")]
    RecordSubnet {
        /// The record's subnet.
        record: Ipv4Net,
        /// The subnet of the key it is stored at.
        key: Ipv4Net,
    },
    /// The subnet file lacks a line.
    #[error("the subnet file has no {missing} line; expected a file written by overlayd with a [cluster] section")]
    SubnetFile {
        /// The variable missing, e.g. `OVERLAY_SUBNET`.
        missing: &'static str,
    },
    /// An overlay network's name Docker and the store would not accept.
    #[error("network name {0:?} is not valid; expected 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit, like \"web\"")]
    NetworkName(String),
    /// An overlay network's value is unusable: its subnet, gateway, VNI or an address on it.
    #[error("{what} {value} {problem}; expected {expected}")]
    Network {
        /// What it is: "subnet", "gateway", "vni", "address".
        what: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        problem: String,
        /// What is expected instead.
        expected: String,
    },
    /// `metrics_address` is not an IP address with a port.
    #[error("metrics_address = {value:?} is not an IP address and port; expected one like \"127.0.0.1:9642\" (port 1 to 65535)")]
    MetricsAddress {
        /// What the file says.
        value: String,
    },
    /// `[docker]` is enabled with no network to watch.
    #[error("docker.networks is empty; expected the Docker networks to watch, like [\"bridge\"]")]
    DockerNoNetworks,
    /// `[docker] plugin_dir` is not an absolute directory.
    #[error("docker.plugin_dir = {0:?} is not usable; expected an absolute directory like /run/docker/plugins, where dockerd looks for plugin sockets")]
    DockerPluginDir(std::path::PathBuf),
    /// `[docker] plugin = true` without a `[cluster]` section.
    #[error("docker.plugin = true needs a [cluster] section; expected [cluster] with etcd, where the overlay networks live, or plugin = false")]
    DockerPluginNeedsCluster,
    /// `[docker] socket` is empty or a network name is empty.
    #[error("docker.{field} = {value:?} is empty; expected {expected}")]
    DockerEmpty {
        /// `socket` or `networks`.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is expected instead.
        expected: &'static str,
    },
}

/// Reject a CIDR with host bits set.
pub fn check_network(net: Ipv4Net) -> Result<(), InputError> {
    if net != net.trunc() {
        return Err(InputError::HostBits { value: net });
    }
    Ok(())
}

/// Ranges a peer subnet may not overlap, with their names: traffic to them
/// never belongs in a tunnel (this host's own network, loopback, link-local,
/// multicast, the limited broadcast address).
pub const RESERVED_RANGES: [(&str, [u8; 4], u8); 5] = [
    ("this-network", [0, 0, 0, 0], 8),
    ("loopback", [127, 0, 0, 0], 8),
    ("link-local", [169, 254, 0, 0], 16),
    ("multicast", [224, 0, 0, 0], 4),
    ("broadcast", [255, 255, 255, 255], 32),
];

/// Reject a peer subnet with host bits set or overlapping one of the
/// [`RESERVED_RANGES`]. Overlaps with this host's own subnet, other peers,
/// the underlay and routes need the host's state and are checked by the agent.
pub fn check_peer_subnet(subnet: Ipv4Net) -> Result<(), InputError> {
    check_network(subnet)?;
    for (kind, addr, len) in RESERVED_RANGES {
        let range = Ipv4Net::new(Ipv4Addr::from(addr), len).expect("prefix length <= 32");
        if range.contains(&subnet.network()) || subnet.contains(&range.network()) {
            return Err(InputError::PeerSubnetReserved {
                subnet,
                kind,
                range,
            });
        }
    }
    Ok(())
}

/// Parse a network in CIDR form strictly: "a.b.c.d/len" with no host bits set.
pub fn parse_cidr(value: &str) -> Result<Ipv4Net, InputError> {
    let trimmed = value.trim();
    if !trimmed.contains('/') {
        return Err(InputError::NotCidr {
            value: value.to_owned(),
        });
    }
    let net: Ipv4Net = trimmed.parse().map_err(|_| InputError::NotCidr {
        value: value.to_owned(),
    })?;
    check_network(net)?;
    Ok(net)
}

/// Parse a dotted-quad IPv4 address.
pub fn parse_ipv4(value: &str) -> Result<Ipv4Addr, InputError> {
    value.trim().parse().map_err(|_| InputError::NotIpv4 {
        value: value.to_owned(),
    })
}

/// Reject addresses that cannot be a host's VTEP address.
pub fn check_underlay_ip(ip: Ipv4Addr) -> Result<(), InputError> {
    let kind = if ip.is_unspecified() {
        "an unspecified"
    } else if ip.is_loopback() {
        "a loopback"
    } else if ip.is_multicast() {
        "a multicast"
    } else if ip.is_broadcast() {
        "a broadcast"
    } else {
        return Ok(());
    };
    Err(InputError::UnderlayIp { ip, kind })
}

/// Parse and check a peer's underlay address.
pub fn parse_underlay_ip(value: &str) -> Result<Ipv4Addr, InputError> {
    let ip = parse_ipv4(value)?;
    check_underlay_ip(ip)?;
    Ok(ip)
}

/// Parse a MAC written as six colon-separated hex bytes (aa:bb:cc:dd:ee:ff).
pub fn parse_mac(value: &str) -> Result<[u8; 6], InputError> {
    let bad = || InputError::NotMac {
        value: value.to_owned(),
    };
    let mut mac = [0u8; 6];
    let mut parts = value.trim().split(':');
    for byte in mac.iter_mut() {
        let part = parts.next().ok_or_else(bad)?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(mac)
}

/// Parse a VTEP MAC: [`parse_mac`], and it must be unicast and not all zeros.
pub fn parse_vtep_mac(value: &str) -> Result<[u8; 6], InputError> {
    let mac = parse_mac(value)?;
    if mac[0] & 1 == 1 || mac == [0; 6] {
        return Err(InputError::NotUnicastMac {
            value: format_mac(&mac),
        });
    }
    Ok(mac)
}

/// Format a MAC as lowercase aa:bb:cc:dd:ee:ff.
pub fn format_mac(mac: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_parsing_is_strict() {
        assert_eq!(parse_cidr("10.1.2.0/24").unwrap(), net("10.1.2.0/24"));
        assert_eq!(
            parse_cidr("10.1.2.3/24").unwrap_err().to_string(),
            "10.1.2.3/24 has host bits set; expected a network address like 10.1.2.0/24"
        );
        for bad in ["10.1.2.0", "10.1.2.0/33", "banana", "10.1.2/24", "::/0", ""] {
            assert_eq!(
                parse_cidr(bad).unwrap_err().to_string(),
                format!(
                    "{bad:?} is not an IPv4 CIDR; expected a network address like 10.103.200.0/24"
                )
            );
        }
    }

    #[test]
    fn reserved_peer_subnets_are_refused() {
        let tail = "; expected a container subnet outside 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4 and 255.255.255.255, like 10.103.200.0/24";
        for (subnet, kind, range) in [
            ("127.0.0.0/8", "loopback", "127.0.0.0/8"),
            ("127.1.0.0/16", "loopback", "127.0.0.0/8"),
            ("169.254.1.0/24", "link-local", "169.254.0.0/16"),
            ("224.0.0.0/24", "multicast", "224.0.0.0/4"),
            ("239.255.0.0/16", "multicast", "224.0.0.0/4"),
            ("0.0.0.0/8", "this-network", "0.0.0.0/8"),
            ("0.0.0.0/0", "this-network", "0.0.0.0/8"),
            ("255.255.255.255/32", "broadcast", "255.255.255.255/32"),
            ("255.255.255.0/24", "broadcast", "255.255.255.255/32"),
            // A supernet of a reserved range overlaps it too.
            ("168.0.0.0/6", "link-local", "169.254.0.0/16"),
        ] {
            assert_eq!(
                check_peer_subnet(net(subnet)).unwrap_err().to_string(),
                format!("peer subnet {subnet} overlaps the {kind} range {range}{tail}"),
                "{subnet}"
            );
        }
        for ok in [
            "10.103.200.0/24",
            "1.0.0.0/8",
            "126.0.0.0/8",
            "169.253.0.0/16",
            "223.0.0.0/8",
            "240.0.0.0/5",
        ] {
            assert_eq!(check_peer_subnet(net(ok)), Ok(()), "{ok}");
        }
        assert_eq!(
            check_peer_subnet(net("10.1.2.3/24"))
                .unwrap_err()
                .to_string(),
            "10.1.2.3/24 has host bits set; expected a network address like 10.1.2.0/24"
        );
    }

    #[test]
    fn address_parsing() {
        assert_eq!(
            parse_underlay_ip("192.168.56.5").unwrap(),
            Ipv4Addr::new(192, 168, 56, 5)
        );
        assert_eq!(
            parse_underlay_ip("192.168.56").unwrap_err().to_string(),
            "\"192.168.56\" is not an IPv4 address; expected a dotted quad like 192.168.56.5"
        );
        assert_eq!(
            parse_underlay_ip("127.0.0.2").unwrap_err().to_string(),
            "127.0.0.2 is a loopback address; expected a host's unicast underlay address like 192.168.56.5"
        );
    }

    #[test]
    fn mac_round_trip() {
        let mac = parse_mac("AA:bb:0c:dd:ee:ff").unwrap();
        assert_eq!(mac, [0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0xff]);
        assert_eq!(format_mac(&mac), "aa:bb:0c:dd:ee:ff");
        for bad in [
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa-bb-cc-dd-ee-ff",
            "a:bb:cc:dd:ee:ff0",
            "gg:bb:cc:dd:ee:ff",
            "+a:bb:cc:dd:ee:ff",
        ] {
            assert_eq!(
                parse_mac(bad).unwrap_err().to_string(),
                format!(
                    "{bad:?} is not a MAC address; expected six hex bytes like 02:2a:c0:a8:38:05"
                )
            );
        }
        assert!(parse_vtep_mac("00:00:00:00:00:00").is_err());
        assert!(parse_vtep_mac("02:00:00:00:00:01").is_ok());
    }
}
