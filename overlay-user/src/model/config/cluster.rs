//! The `[cluster]` section: this host joins the overlay through the cluster
//! store (etcd), leasing its subnet there and finding the other hosts.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::model::validation::InputError;

/// The key prefix unless `[cluster] prefix` says otherwise.
pub const DEFAULT_PREFIX: &str = "/overlay";
/// A lease's time to live unless `[cluster] lease_ttl` says otherwise: 24 h, as flannel's.
pub const DEFAULT_LEASE_TTL: u64 = 86_400;
/// Where overlayd writes the subnet file for Docker unless `[cluster] subnet_file` says otherwise.
pub const DEFAULT_SUBNET_FILE: &str = "/run/overlay/subnet.env";
/// The shortest lease TTL accepted, in seconds (etcd's own minimum is a few seconds).
pub const MIN_LEASE_TTL: u64 = 5;
/// The longest lease TTL accepted, in seconds (a year).
pub const MAX_LEASE_TTL: u64 = 365 * 86_400;

/// The `[cluster]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// etcd's client URLs, e.g. `["http://10.0.0.1:2379"]`.
    pub etcd: Vec<String>,
    /// The key prefix of this overlay in etcd.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// This host's name in the store; default: its hostname.
    #[serde(default)]
    pub name: Option<String>,
    /// The CA certificate (PEM) that signed etcd's server certificates, for https:// endpoints.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for etcd's client authentication.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The lease's time to live in seconds; overlayd keeps it alive while it runs.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl: u64,
    /// Where overlayd writes the subnet file for Docker (`overlayctl docker-opts` reads it).
    #[serde(default = "default_subnet_file")]
    pub subnet_file: PathBuf,
    /// How long start-up waits for etcd, in seconds, before it falls back to the saved lease.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// Where overlay networks created without a subnet get theirs: the
    /// first free /`network_subnet_len` of this pool.
    #[serde(default = "default_network_pool")]
    pub network_pool: ipnet::Ipv4Net,
    /// The prefix length of subnets taken from `network_pool`.
    #[serde(default = "default_network_subnet_len")]
    pub network_subnet_len: u8,
}

/// The default pool of overlay networks' subnets.
pub const DEFAULT_NETWORK_POOL: &str = "10.104.0.0/16";

fn default_network_pool() -> ipnet::Ipv4Net {
    DEFAULT_NETWORK_POOL.parse().expect("a CIDR")
}

fn default_network_subnet_len() -> u8 {
    24
}

fn default_prefix() -> String {
    DEFAULT_PREFIX.into()
}

fn default_lease_ttl() -> u64 {
    DEFAULT_LEASE_TTL
}

fn default_subnet_file() -> PathBuf {
    PathBuf::from(DEFAULT_SUBNET_FILE)
}

fn default_timeout() -> u64 {
    5
}

/// Check one etcd client URL: `http://HOST:PORT` or `https://HOST:PORT`.
pub fn check_etcd_url(url: &str) -> Result<(), InputError> {
    let bad = || InputError::Cluster {
        field: "etcd",
        value: format!("{url:?}"),
        problem: "is not an etcd client URL",
        expected: "http://HOST:PORT or https://HOST:PORT, like http://10.0.0.1:2379".into(),
    };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(bad)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    match port.parse::<u16>() {
        Ok(p) if p > 0 && host_ok => Ok(()),
        _ => Err(bad()),
    }
}

/// Check a host name: 1 to 63 letters, digits, '-', '_' or '.', not starting with '-' or '.'.
pub fn check_host_name(name: &str) -> Result<(), InputError> {
    let ok = (1..=63).contains(&name.len())
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(InputError::Cluster {
            field: "name",
            value: format!("{name:?}"),
            problem: "is not a host name",
            expected: "1 to 63 letters, digits, '-', '_' or '.', like \"node-1\"".into(),
        })
    }
}

impl ClusterConfig {
    /// Whether the endpoints are https:// (validated: all or none).
    pub fn uses_tls(&self) -> bool {
        self.etcd.iter().any(|e| e.starts_with("https://"))
    }

    /// Check every value; the first problem found is returned.
    pub fn validate(&self) -> Result<(), InputError> {
        let problem = |field, value: String, problem, expected: &str| InputError::Cluster {
            field,
            value,
            problem,
            expected: expected.into(),
        };
        if self.etcd.is_empty() {
            return Err(problem(
                "etcd",
                "[]".into(),
                "is empty",
                "etcd client URLs like [\"http://10.0.0.1:2379\"]",
            ));
        }
        for url in &self.etcd {
            check_etcd_url(url)?;
        }
        let https = self
            .etcd
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        if https != 0 && https != self.etcd.len() {
            return Err(problem(
                "etcd",
                format!("{:?}", self.etcd),
                "mixes http:// and https:// endpoints",
                "one scheme for all of them",
            ));
        }
        let ok_prefix = self.prefix.starts_with('/')
            && self.prefix.len() > 1
            && !self.prefix.ends_with('/')
            && !self
                .prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control());
        if !ok_prefix {
            return Err(problem(
                "prefix",
                format!("{:?}", self.prefix),
                "is not a key prefix",
                "an absolute path without a trailing '/' or whitespace, like \"/overlay\"",
            ));
        }
        if let Some(name) = &self.name {
            check_host_name(name)?;
        }
        let tls_files = [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ];
        for (field, file) in tls_files {
            if let Some(path) = file {
                if https == 0 {
                    return Err(problem(
                        field,
                        format!("{:?}", path.display().to_string()),
                        "is set but the etcd endpoints are http://",
                        "https:// endpoints with TLS files, or no TLS files",
                    ));
                }
                if path.as_os_str().is_empty() {
                    return Err(problem(field, "\"\"".into(), "is empty", "a PEM file"));
                }
            }
        }
        if https != 0 && self.ca_file.is_none() {
            return Err(problem(
                "ca_file",
                "(not set)".into(),
                "is required with https:// endpoints",
                "the CA certificate (PEM) that signed etcd's server certificate",
            ));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            let (field, other) = if self.cert_file.is_some() {
                ("cert_file", "key_file")
            } else {
                ("key_file", "cert_file")
            };
            return Err(InputError::Cluster {
                field,
                value: "(set)".into(),
                problem: "is set alone",
                expected: format!(
                    "cluster.{other} as well (a client certificate and its key), or neither"
                ),
            });
        }
        if !(MIN_LEASE_TTL..=MAX_LEASE_TTL).contains(&self.lease_ttl) {
            return Err(problem(
                "lease_ttl",
                self.lease_ttl.to_string(),
                "is out of range",
                "5 to 31536000 seconds (default 86400, 24 h)",
            ));
        }
        if self.subnet_file.as_os_str().is_empty() {
            return Err(problem(
                "subnet_file",
                "\"\"".into(),
                "is empty",
                "a file path like /run/overlay/subnet.env",
            ));
        }
        if !(1..=300).contains(&self.timeout) {
            return Err(problem(
                "timeout",
                self.timeout.to_string(),
                "is out of range",
                "1 to 300 seconds (default 5)",
            ));
        }
        if self.network_pool != self.network_pool.trunc() {
            return Err(problem(
                "network_pool",
                self.network_pool.to_string(),
                "has host bits set",
                &format!("a network address like {}", self.network_pool.trunc()),
            ));
        }
        let len = self.network_subnet_len;
        if len < self.network_pool.prefix_len() || len > crate::model::network::MAX_SUBNET_PREFIX {
            return Err(problem(
                "network_subnet_len",
                len.to_string(),
                "does not fit cluster.network_pool",
                &format!("/{} to /30 (default 24)", self.network_pool.prefix_len()),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> ClusterConfig {
        toml::from_str("etcd = [\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379/\"]").unwrap()
    }

    fn err_of(edit: impl FnOnce(&mut ClusterConfig)) -> String {
        let mut c = example();
        edit(&mut c);
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let c = example();
        c.validate().unwrap();
        assert_eq!(c.prefix, "/overlay");
        assert_eq!(c.name, None);
        assert_eq!(c.lease_ttl, 86_400);
        assert_eq!(c.subnet_file, PathBuf::from("/run/overlay/subnet.env"));
        assert_eq!(c.timeout, 5);
        assert!(!c.uses_tls());
        assert_eq!(c.network_pool.to_string(), "10.104.0.0/16");
        assert_eq!(c.network_subnet_len, 24);
        assert_eq!(
            err_of(|c| c.network_pool = "10.104.0.1/16".parse().unwrap()),
            "cluster.network_pool = 10.104.0.1/16 has host bits set; expected a network address like 10.104.0.0/16"
        );
        assert_eq!(
            err_of(|c| c.network_subnet_len = 8),
            "cluster.network_subnet_len = 8 does not fit cluster.network_pool; expected /16 to /30 (default 24)"
        );
    }

    #[test]
    fn validation_errors() {
        assert_eq!(
            err_of(|c| c.etcd.clear()),
            "cluster.etcd = [] is empty; expected etcd client URLs like [\"http://10.0.0.1:2379\"]"
        );
        for bad in [
            "10.0.0.1:2379",
            "http://10.0.0.1",
            "ftp://a:1",
            "http://:2379",
            "http://a b:1",
        ] {
            assert_eq!(
                err_of(|c| c.etcd = vec![bad.into()]),
                format!("cluster.etcd = {bad:?} is not an etcd client URL; expected http://HOST:PORT or https://HOST:PORT, like http://10.0.0.1:2379")
            );
        }
        assert_eq!(
            err_of(|c| c.etcd.push("https://10.0.0.3:2379".into())),
            "cluster.etcd = [\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379/\", \"https://10.0.0.3:2379\"] mixes http:// and https:// endpoints; expected one scheme for all of them"
        );
        assert_eq!(
            err_of(|c| c.prefix = "overlay/".into()),
            "cluster.prefix = \"overlay/\" is not a key prefix; expected an absolute path without a trailing '/' or whitespace, like \"/overlay\""
        );
        assert_eq!(
            err_of(|c| c.name = Some("a/b".into())),
            "cluster.name = \"a/b\" is not a host name; expected 1 to 63 letters, digits, '-', '_' or '.', like \"node-1\""
        );
        assert_eq!(
            err_of(|c| c.ca_file = Some("/etc/ca.pem".into())),
            "cluster.ca_file = \"/etc/ca.pem\" is set but the etcd endpoints are http://; expected https:// endpoints with TLS files, or no TLS files"
        );
        assert_eq!(
            err_of(|c| c.etcd = vec!["https://10.0.0.1:2379".into()]),
            "cluster.ca_file = (not set) is required with https:// endpoints; expected the CA certificate (PEM) that signed etcd's server certificate"
        );
        assert_eq!(
            err_of(|c| {
                c.etcd = vec!["https://10.0.0.1:2379".into()];
                c.ca_file = Some("/ca.pem".into());
                c.cert_file = Some("/c.pem".into());
            }),
            "cluster.cert_file = (set) is set alone; expected cluster.key_file as well (a client certificate and its key), or neither"
        );
        assert_eq!(
            err_of(|c| c.lease_ttl = 1),
            "cluster.lease_ttl = 1 is out of range; expected 5 to 31536000 seconds (default 86400, 24 h)"
        );
        assert_eq!(
            err_of(|c| c.timeout = 0),
            "cluster.timeout = 0 is out of range; expected 1 to 300 seconds (default 5)"
        );
    }
}
