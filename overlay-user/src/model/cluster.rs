//! The cluster store's data: the cluster settings, a host's record, the
//! keys they live at in etcd, the subnet pool's arithmetic, and the
//! `subnet.env` file for Docker. Plain data: talking to etcd is the cluster
//! source's job (`sources::cluster`).
//!
//! Layout under the prefix (default `/overlay`), as flannel's:
//!
//! ```text
//! /overlay/config                   {"pool":"10.103.0.0/16","subnet_len":24,"vni":42,"port":4789}
//! /overlay/subnets/10.103.5.0-24    {"name":"h1","underlay_ip":"192.168.56.4",...}   (under an etcd lease)
//! ```

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::model::network::{gateway_of, overlaps, MAX_SUBNET_PREFIX, MAX_VNI};
use crate::model::status::Mode;
use crate::model::validation::{check_network, check_underlay_ip, parse_vtep_mac, InputError};

/// How many free subnets a new host picks among at random, so that hosts
/// starting together rarely try the same one (flannel's idea).
pub const PICK_AMONG: usize = 100;

/// The settings every host of the cluster shares, kept at `<prefix>/config`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// The pool hosts lease their subnets from, e.g. 10.103.0.0/16.
    pub pool: Ipv4Net,
    /// The prefix length of each host's subnet, e.g. 24.
    pub subnet_len: u8,
    /// VXLAN network identifier.
    pub vni: u32,
    /// VXLAN UDP port.
    pub port: u16,
}

impl ClusterSettings {
    /// Check every value; the first problem found is returned.
    pub fn validate(&self) -> Result<(), InputError> {
        check_network(self.pool).map_err(|source| InputError::Field {
            field: "pool".into(),
            source: Box::new(source),
        })?;
        if self.subnet_len < self.pool.prefix_len() || self.subnet_len > MAX_SUBNET_PREFIX {
            return Err(InputError::SubnetLen {
                len: self.subnet_len,
                pool: self.pool,
            });
        }
        if self.vni == 0 || self.vni > MAX_VNI {
            return Err(InputError::Vni(self.vni));
        }
        if self.port == 0 {
            return Err(InputError::Port);
        }
        Ok(())
    }

    /// How many subnets the pool holds.
    pub fn subnet_count(&self) -> u64 {
        1u64 << (self.subnet_len - self.pool.prefix_len().min(self.subnet_len))
    }

    /// The pool's `index`th subnet (0-based).
    pub fn nth_subnet(&self, index: u64) -> Ipv4Net {
        let step = 1u64 << (32 - u32::from(self.subnet_len));
        let base = u64::from(u32::from(self.pool.network()));
        let addr = Ipv4Addr::from((base + index * step) as u32);
        Ipv4Net::new(addr, self.subnet_len).expect("subnet_len <= 32")
    }

    /// Whether `subnet` is one of the pool's subnets (inside it, of its length).
    pub fn fits(&self, subnet: Ipv4Net) -> bool {
        subnet.prefix_len() == self.subnet_len
            && subnet == subnet.trunc()
            && self.pool.contains(&subnet.network())
    }

    /// The pool's first subnets (at most `limit`) that overlap none of `taken`.
    pub fn free_subnets(&self, taken: &BTreeSet<Ipv4Net>, limit: usize) -> Vec<Ipv4Net> {
        let mut free = Vec::new();
        for i in 0..self.subnet_count() {
            if free.len() >= limit {
                break;
            }
            let s = self.nth_subnet(i);
            if !taken.contains(&s) && !taken.iter().any(|t| overlaps(*t, s)) {
                free.push(s);
            }
        }
        free
    }

    /// What differs from `given`, each as "pool 10.103.0.0/16 (given 10.104.0.0/16)".
    pub fn differences(&self, given: &ClusterSettings) -> Vec<String> {
        let mut out = Vec::new();
        if self.pool != given.pool {
            out.push(format!("pool {} (given {})", self.pool, given.pool));
        }
        if self.subnet_len != given.subnet_len {
            out.push(format!(
                "subnet length /{} (given /{})",
                self.subnet_len, given.subnet_len
            ));
        }
        if self.vni != given.vni {
            out.push(format!("vni {} (given {})", self.vni, given.vni));
        }
        if self.port != given.port {
            out.push(format!("port {} (given {})", self.port, given.port));
        }
        out
    }
}

/// A host as registered in the store, under its lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// The host's name (`[cluster] name`, default its hostname).
    pub name: String,
    /// Its underlay address, where its VXLAN goes.
    pub underlay_ip: Ipv4Addr,
    /// Its container subnet.
    pub subnet: Ipv4Net,
    /// Its VTEP MAC (aa:bb:cc:dd:ee:ff).
    pub vtep_mac: String,
    /// Its dataplane mode; `None` while it starts.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// The overlayd version it runs.
    #[serde(default)]
    pub version: String,
}

impl HostRecord {
    /// Check a record read at the key of `key_subnet`; returns its VTEP MAC.
    pub fn check(&self, key_subnet: Ipv4Net) -> Result<[u8; 6], InputError> {
        if self.subnet != key_subnet {
            return Err(InputError::RecordSubnet {
                record: self.subnet,
                key: key_subnet,
            });
        }
        check_network(self.subnet)?;
        check_underlay_ip(self.underlay_ip)?;
        parse_vtep_mac(&self.vtep_mac)
    }
}

/// A host as `overlayctl hosts` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// The record.
    #[serde(flatten)]
    pub record: HostRecord,
    /// Seconds left on its lease; `None` when unknown (etcd unreachable).
    pub lease_ttl: Option<i64>,
    /// Whether it is the host answering.
    pub this_host: bool,
}

/// The key of the cluster settings.
pub fn settings_key(prefix: &str) -> String {
    format!("{prefix}/config")
}

/// The prefix under which the hosts' records live (ends with '/').
pub fn subnets_prefix(prefix: &str) -> String {
    format!("{prefix}/subnets/")
}

/// The key of `subnet`'s record: `<prefix>/subnets/10.103.5.0-24`.
pub fn subnet_key(prefix: &str, subnet: Ipv4Net) -> String {
    format!(
        "{}{}-{}",
        subnets_prefix(prefix),
        subnet.network(),
        subnet.prefix_len()
    )
}

/// The subnet of a record's key, if `key` is one.
pub fn parse_subnet_key(prefix: &str, key: &str) -> Option<Ipv4Net> {
    let rest = key.strip_prefix(&subnets_prefix(prefix))?;
    let (addr, len) = rest.split_once('-')?;
    let net = Ipv4Net::new(addr.parse().ok()?, len.parse().ok()?).ok()?;
    (net == net.trunc()).then_some(net)
}

/// The lease id as etcdctl prints it (hex).
pub fn lease_hex(id: i64) -> String {
    format!("{id:x}")
}

/// The subnet file for Docker (flannel's `subnet.env`): the pool, this
/// host's subnet in gateway form (for `dockerd --bip`) and the container MTU.
pub fn subnet_env(pool: Ipv4Net, subnet: Ipv4Net, mtu: u32) -> String {
    format!(
        "OVERLAY_NETWORK={pool}\nOVERLAY_SUBNET={}/{}\nOVERLAY_MTU={mtu}\n",
        gateway_of(subnet),
        subnet.prefix_len()
    )
}

/// Docker's options from a subnet file's text: `--bip=10.103.5.1/24 --mtu=1450`.
pub fn docker_opts(subnet_env: &str) -> Result<String, InputError> {
    let value = |name: &'static str| {
        subnet_env
            .lines()
            .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix('='))
            .map(str::trim)
            .ok_or(InputError::SubnetFile { missing: name })
    };
    let bip = value("OVERLAY_SUBNET")?;
    let mtu = value("OVERLAY_MTU")?;
    Ok(format!("--bip={bip} --mtu={mtu}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn settings() -> ClusterSettings {
        ClusterSettings {
            pool: net("10.103.0.0/21"),
            subnet_len: 24,
            vni: 42,
            port: 4789,
        }
    }

    #[test]
    fn pool_arithmetic() {
        let s = settings();
        s.validate().unwrap();
        assert_eq!(s.subnet_count(), 8);
        assert_eq!(s.nth_subnet(0), net("10.103.0.0/24"));
        assert_eq!(s.nth_subnet(7), net("10.103.7.0/24"));
        assert!(s.fits(net("10.103.3.0/24")));
        assert!(!s.fits(net("10.103.8.0/24")));
        assert!(!s.fits(net("10.103.3.0/25")));
        let taken: BTreeSet<Ipv4Net> = [net("10.103.0.0/24"), net("10.103.2.0/23")].into();
        assert_eq!(
            s.free_subnets(&taken, 3),
            vec![
                net("10.103.1.0/24"),
                net("10.103.4.0/24"),
                net("10.103.5.0/24")
            ]
        );
        let all: BTreeSet<Ipv4Net> = (0..8).map(|i| s.nth_subnet(i)).collect();
        assert!(s.free_subnets(&all, 100).is_empty());
    }

    #[test]
    fn settings_validation_and_differences() {
        let mut s = settings();
        s.subnet_len = 20;
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "subnet length /20 does not fit pool 10.103.0.0/21; expected /21 to /30"
        );
        s = settings();
        s.pool = net("10.103.0.1/21");
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "pool: 10.103.0.1/21 has host bits set; expected a network address like 10.103.0.0/21"
        );
        let mut other = settings();
        other.vni = 7;
        other.pool = net("10.104.0.0/16");
        assert_eq!(
            settings().differences(&other),
            vec![
                "pool 10.103.0.0/21 (given 10.104.0.0/16)".to_string(),
                "vni 42 (given 7)".to_string()
            ]
        );
        let json = serde_json::to_string(&settings()).unwrap();
        assert_eq!(
            json,
            r#"{"pool":"10.103.0.0/21","subnet_len":24,"vni":42,"port":4789}"#
        );
    }

    #[test]
    fn keys() {
        let k = subnet_key("/overlay", net("10.103.5.0/24"));
        assert_eq!(k, "/overlay/subnets/10.103.5.0-24");
        assert_eq!(parse_subnet_key("/overlay", &k), Some(net("10.103.5.0/24")));
        assert_eq!(parse_subnet_key("/other", &k), None);
        assert_eq!(parse_subnet_key("/overlay", "/overlay/subnets/x-24"), None);
        assert_eq!(
            parse_subnet_key("/overlay", "/overlay/subnets/10.1.2.3-24"),
            None
        );
        assert_eq!(settings_key("/overlay"), "/overlay/config");
        assert_eq!(lease_hex(255), "ff");
    }

    #[test]
    fn records() {
        let r = HostRecord {
            name: "h1".into(),
            underlay_ip: Ipv4Addr::new(192, 168, 56, 4),
            subnet: net("10.103.5.0/24"),
            vtep_mac: "02:2a:c0:a8:38:04".into(),
            mode: Some(Mode::Ebpf),
            version: "0.1.0".into(),
        };
        assert_eq!(r.check(net("10.103.5.0/24")).unwrap()[5], 4);
        assert_eq!(
            r.check(net("10.103.6.0/24")).unwrap_err().to_string(),
            "record for 10.103.6.0/24 names subnet 10.103.5.0/24; expected the key's subnet"
        );
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"name":"h1","underlay_ip":"192.168.56.4","subnet":"10.103.5.0/24","vtep_mac":"02:2a:c0:a8:38:04","mode":"ebpf","version":"0.1.0"}"#
        );
        let starting: HostRecord = serde_json::from_str(
            r#"{"name":"h1","underlay_ip":"192.168.56.4","subnet":"10.103.5.0/24","vtep_mac":"02:2a:c0:a8:38:04"}"#,
        )
        .unwrap();
        assert_eq!(starting.mode, None);
    }

    #[test]
    fn subnet_file() {
        let text = subnet_env(net("10.103.0.0/16"), net("10.103.5.0/24"), 1450);
        assert_eq!(
            text,
            "OVERLAY_NETWORK=10.103.0.0/16\nOVERLAY_SUBNET=10.103.5.1/24\nOVERLAY_MTU=1450\n"
        );
        assert_eq!(
            docker_opts(&text).unwrap(),
            "--bip=10.103.5.1/24 --mtu=1450"
        );
        assert_eq!(
            docker_opts("OVERLAY_SUBNET=10.1.1.1/24\n")
                .unwrap_err()
                .to_string(),
            "the subnet file has no OVERLAY_MTU line; expected a file written by overlayd with a [cluster] section"
        );
    }
}
