//! The `[dns]` section: the names resolver (`sources::names`), which
//! answers the names of the overlay networks' containers to the containers
//! of the same network, and forwards the other names to upstream resolvers.
//! Off unless the section is there.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Deserializer, Serialize};

use crate::model::validation::InputError;

/// The DNS port, used when an upstream resolver is given without one.
pub const DNS_PORT: u16 = 53;
/// The TTL of the resolver's own answers unless `[dns] ttl` says otherwise:
/// short, so that a removed or moved container is not cached for long.
pub const DEFAULT_TTL: u32 = 2;
/// The longest TTL accepted, in seconds.
pub const MAX_TTL: u32 = 300;

/// The `[dns]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Where the resolver listens (UDP and TCP), "IP:port", e.g. the host's
    /// underlay address "192.168.56.4:53"; dockerd is told with `--dns IP`.
    #[serde(deserialize_with = "de_listen")]
    pub listen: SocketAddr,
    /// The resolvers names outside the overlay go to ("IP" or "IP:port");
    /// empty: the nameservers of /etc/resolv.conf in overlayd's namespace.
    #[serde(default, deserialize_with = "de_upstream")]
    pub upstream: Vec<SocketAddr>,
    /// The TTL of the overlay's names, in seconds (1..=300, default 2).
    #[serde(default = "default_ttl")]
    pub ttl: u32,
}

fn default_ttl() -> u32 {
    DEFAULT_TTL
}

fn de_listen<'de, D: Deserializer<'de>>(de: D) -> Result<SocketAddr, D::Error> {
    let value = String::deserialize(de)?;
    parse_listen(&value).map_err(serde::de::Error::custom)
}

fn de_upstream<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<SocketAddr>, D::Error> {
    let values = Vec::<String>::deserialize(de)?;
    values
        .iter()
        .map(|v| parse_upstream(v))
        .collect::<Result<_, _>>()
        .map_err(serde::de::Error::custom)
}

/// Parse `[dns] listen`: an address with its port.
pub fn parse_listen(value: &str) -> Result<SocketAddr, InputError> {
    let addr: SocketAddr = value.trim().parse().map_err(|_| InputError::Dns {
        field: "listen",
        value: value.to_owned(),
        problem: "is not an address with a port",
        expected: "IP:port like \"192.168.56.4:53\"",
    })?;
    if addr.port() == 0 {
        return Err(InputError::Dns {
            field: "listen",
            value: value.to_owned(),
            problem: "has port 0",
            expected: "a fixed port, usually 53, like \"192.168.56.4:53\"",
        });
    }
    Ok(addr)
}

/// Parse one `[dns] upstream` entry: "IP" (port 53) or "IP:port".
pub fn parse_upstream(value: &str) -> Result<SocketAddr, InputError> {
    let v = value.trim();
    let addr = v.parse::<SocketAddr>().ok().or_else(|| {
        v.parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, DNS_PORT))
    });
    match addr {
        Some(a) if a.port() != 0 && !a.ip().is_unspecified() => Ok(a),
        _ => Err(InputError::Dns {
            field: "upstream",
            value: value.to_owned(),
            problem: "is not a resolver's address",
            expected: "\"IP\" or \"IP:port\" like \"192.168.56.2\" or \"10.0.0.2:5353\"",
        }),
    }
}

/// The `nameserver` lines of a resolv.conf, in order, at port 53; lines
/// that are not addresses (or carry a zone index) are skipped.
pub fn nameservers_of(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                .and_then(|w| w.parse::<IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, DNS_PORT))
        })
        .collect()
}

impl DnsConfig {
    /// Check the values serde does not.
    pub fn validate(&self) -> Result<(), InputError> {
        if !(1..=MAX_TTL).contains(&self.ttl) {
            return Err(InputError::Dns {
                field: "ttl",
                value: self.ttl.to_string(),
                problem: "is out of range",
                expected: "1..=300 seconds (default 2)",
            });
        }
        if let Some(up) = self.upstream.iter().find(|u| **u == self.listen) {
            return Err(InputError::Dns {
                field: "upstream",
                value: up.to_string(),
                problem: "is the resolver's own listen address",
                expected: "another resolver (names outside the overlay would loop)",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_in_order() {
        let text = "# generated\nsearch lab.example\nnameserver 192.168.56.2\nnameserver  ::1\nnameserver fe80::1%eth0\nnameserver\noptions ndots:1\nnameserver 10.0.0.2 # second\n";
        assert_eq!(
            nameservers_of(text),
            vec![
                "192.168.56.2:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap(),
                "10.0.0.2:53".parse().unwrap()
            ]
        );
        assert!(nameservers_of("").is_empty());
    }
}
