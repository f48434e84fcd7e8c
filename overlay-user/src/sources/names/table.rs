//! The name table and the answer rules, without I/O: which network asks
//! (the asking address's subnet), what a name means there, and what the
//! resolver does with a question (answer, NXDOMAIN, forward or refuse).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::rr::RecordType;
use ipnet::Ipv4Net;

use crate::model::overlay_network::NetworkView;

/// One network's names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct NetNames {
    /// The network's name, lower case.
    name: String,
    /// Its subnet: an asking address inside it asks for this network.
    subnet: Ipv4Net,
    /// Container names and aliases (lower case) -> their addresses, sorted.
    names: BTreeMap<String, Vec<Ipv4Addr>>,
    /// Address -> the container's name (for reverse lookups).
    by_ip: BTreeMap<Ipv4Addr, String>,
}

/// The names of every overlay network, built from the store's view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameTable {
    networks: Vec<NetNames>,
}

/// What the resolver does with one question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The asker is in no overlay network: REFUSED (not an open resolver).
    Refused,
    /// A name of the asker's network: NOERROR with these A records (none
    /// for another record type, e.g. AAAA).
    Addresses(Vec<Ipv4Addr>),
    /// A reverse lookup of an address of the asker's network: NOERROR with
    /// this PTR target (`name.network`).
    Pointer(String),
    /// A single-label name, or a name under an overlay network (or its
    /// reverse zone), that the asker's network does not have: NXDOMAIN.
    NxDomain,
    /// Any other name: ask the upstream resolvers.
    Forward,
}

/// A name as the table keys it: lower case, no trailing dot, no leading
/// slash (Docker's container names carry one in some APIs).
pub fn normalize(name: &str) -> String {
    name.trim()
        .trim_start_matches('/')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

impl NameTable {
    /// The table of `view`: each network's records by name and alias.
    /// Records of unknown networks, or outside their network's subnet, are
    /// left out (they cannot be asked for).
    pub fn build(view: &NetworkView) -> NameTable {
        let mut networks: Vec<NetNames> = view
            .networks
            .iter()
            .map(|n| NetNames {
                name: normalize(&n.name),
                subnet: n.subnet,
                ..NetNames::default()
            })
            .collect();
        for r in &view.endpoints {
            let network = normalize(&r.network);
            let Some(net) = networks
                .iter_mut()
                .find(|n| n.name == network && n.subnet.contains(&r.ip))
            else {
                continue;
            };
            let name = normalize(&r.name);
            let mut labels = vec![name.clone()];
            labels.extend(r.aliases.iter().map(|a| normalize(a)));
            for label in labels.into_iter().filter(|l| !l.is_empty()) {
                let ips = net.names.entry(label).or_default();
                if !ips.contains(&r.ip) {
                    ips.push(r.ip);
                    ips.sort();
                }
            }
            if !name.is_empty() {
                net.by_ip.insert(r.ip, name);
            }
        }
        NameTable { networks }
    }

    /// How many networks and names the table holds (for logs).
    pub fn counts(&self) -> (usize, usize) {
        (
            self.networks.len(),
            self.networks.iter().map(|n| n.names.len()).sum(),
        )
    }

    /// The network an address belongs to.
    fn network_of(&self, ip: Ipv4Addr) -> Option<&NetNames> {
        self.networks.iter().find(|n| n.subnet.contains(&ip))
    }

    /// What to do with a question for `qname` (any case, with or without
    /// the trailing dot) of type `qtype` from `asker`.
    pub fn decide(&self, asker: IpAddr, qname: &str, qtype: RecordType) -> Verdict {
        let asker = match asker {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4,
                None => return Verdict::Refused,
            },
        };
        let Some(net) = self.network_of(asker) else {
            return Verdict::Refused;
        };
        let name = normalize(qname);
        if name.is_empty() {
            return Verdict::Forward;
        }
        if let Some(ip) = reverse_v4(&name) {
            return match (net.subnet.contains(&ip), net.by_ip.get(&ip)) {
                (true, Some(n)) if qtype == RecordType::PTR || qtype == RecordType::ANY => {
                    Verdict::Pointer(format!("{n}.{}", net.name))
                }
                (true, Some(_)) => Verdict::Addresses(Vec::new()),
                _ if self.network_of(ip).is_some() => Verdict::NxDomain,
                _ => Verdict::Forward,
            };
        }
        let suffix = format!(".{}", net.name);
        let found = net.names.get(&name).or_else(|| {
            name.strip_suffix(&suffix)
                .and_then(|short| net.names.get(short))
        });
        if let Some(ips) = found {
            return Verdict::Addresses(match qtype {
                RecordType::A | RecordType::ANY => ips.clone(),
                _ => Vec::new(),
            });
        }
        let single_label = !name.contains('.');
        let under_a_network = self
            .networks
            .iter()
            .any(|n| name.strip_suffix(&n.name).is_some_and(|p| p.ends_with('.')));
        if single_label || under_a_network {
            Verdict::NxDomain
        } else {
            Verdict::Forward
        }
    }
}

/// The address of a reverse name `d.c.b.a.in-addr.arpa`, if it is one.
fn reverse_v4(name: &str) -> Option<Ipv4Addr> {
    let labels: Vec<u8> = name
        .strip_suffix(".in-addr.arpa")?
        .split('.')
        .map(|l| l.parse().ok())
        .collect::<Option<_>>()?;
    match labels[..] {
        [d, c, b, a] => Some(Ipv4Addr::new(a, b, c, d)),
        _ => None,
    }
}
