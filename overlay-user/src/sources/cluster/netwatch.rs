//! The overlay networks and the other hosts' endpoint records as the
//! registry reads and watches them (with the hosts, through the same
//! sessions, so an outage or a compaction leads to the same full read):
//! every network becomes `Change::AddNetwork` and every other host's
//! endpoint record on a network this host carries becomes
//! `Change::PutNetEndpoint` with a `Remote` location, both with source
//! `cluster`; what goes from the store goes from the core. This host's own
//! records are skipped: the source that made the endpoint reported it as
//! local. What is known is kept in the saved lease, so a restart while
//! etcd is down installs it again.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use etcd_client::{EventType, GetOptions, TxnOp, TxnOpResponse};

use crate::agent::handle::CoreGuard;
use crate::model::change::Change;
use crate::model::network_store::{
    endpoints_prefix, networks_prefix, parse_endpoint_key, parse_network_key,
};
use crate::model::overlay_network::{EndpointRecord, NetEndpointSpec, NetLocation, NetworkSpec};
use crate::model::source::Source;
use crate::sources::cluster::client::Store;
use crate::sources::cluster::ClusterError;

/// Networks by name, and other hosts' endpoint records by (network, address).
pub type Known = (
    BTreeMap<String, NetworkSpec>,
    BTreeMap<(String, Ipv4Addr), EndpointRecord>,
);

/// What the registry knows of networks and remote endpoints, and what it installed.
#[derive(Debug)]
pub struct NetWatch {
    me: String,
    my_ip: Ipv4Addr,
    nets: BTreeMap<String, NetworkSpec>,
    eps: BTreeMap<(String, Ipv4Addr), EndpointRecord>,
    installed_nets: BTreeMap<String, NetworkSpec>,
    installed_eps: BTreeMap<(String, Ipv4Addr), NetEndpointSpec>,
    warned: BTreeMap<String, String>,
    /// Whether what is known changed since the saved lease was written.
    pub dirty: bool,
}

impl NetWatch {
    /// For this host (`me` at `my_ip`), knowing `cached` (from the saved lease).
    pub fn new(
        me: String,
        my_ip: Ipv4Addr,
        cached: (Vec<NetworkSpec>, Vec<EndpointRecord>),
    ) -> Self {
        let mut w = NetWatch {
            me,
            my_ip,
            nets: BTreeMap::new(),
            eps: BTreeMap::new(),
            installed_nets: BTreeMap::new(),
            installed_eps: BTreeMap::new(),
            warned: BTreeMap::new(),
            dirty: false,
        };
        w.nets = cached.0.into_iter().map(|n| (n.name.clone(), n)).collect();
        w.eps = cached
            .1
            .into_iter()
            .filter(|r| w.is_remote(r))
            .map(|r| ((r.network.clone(), r.ip), r))
            .collect();
        w
    }

    /// Whether `r` is another host's record.
    fn is_remote(&self, r: &EndpointRecord) -> bool {
        r.host != self.me && r.underlay_ip != self.my_ip
    }

    /// What is known, for the saved lease.
    pub fn saved(&self) -> (Vec<NetworkSpec>, Vec<EndpointRecord>) {
        (
            self.nets.values().cloned().collect(),
            self.eps.values().cloned().collect(),
        )
    }

    /// How many networks and remote endpoints are known.
    pub fn counts(&self) -> (usize, usize) {
        (self.nets.len(), self.eps.len())
    }

    fn warn_once(&mut self, key: String, message: String) {
        if self.warned.get(&key) != Some(&message) {
            log::warn!("cluster: {message}");
            self.warned.insert(key, message);
        }
    }

    /// Parse the network record at `key`; `None` if `key` is not one.
    fn parse_network(
        &mut self,
        prefix: &str,
        key: &str,
        value: &[u8],
    ) -> Option<(String, Option<NetworkSpec>)> {
        let name = parse_network_key(prefix, key)?.to_string();
        let spec = serde_json::from_slice::<NetworkSpec>(value)
            .map_err(|e| e.to_string())
            .and_then(|s| {
                if s.name != name {
                    return Err(format!("it names network {}", s.name));
                }
                s.check().map(|_| s).map_err(|e| e.to_string())
            });
        match spec {
            Ok(s) => Some((name, Some(s))),
            Err(e) => {
                self.warn_once(key.to_string(), format!("skipping {key}: {e}"));
                Some((name, None))
            }
        }
    }

    /// Parse the endpoint record at `key`; `None` if `key` is not one,
    /// `Some(.., None)` if it is unusable or this host's.
    fn parse_endpoint(
        &mut self,
        prefix: &str,
        key: &str,
        value: &[u8],
    ) -> Option<((String, Ipv4Addr), Option<EndpointRecord>)> {
        let (name, ip) = parse_endpoint_key(prefix, key)?;
        let id = (name.to_string(), ip);
        let record = serde_json::from_slice::<EndpointRecord>(value)
            .map_err(|e| e.to_string())
            .and_then(|r| {
                if r.network != name || r.ip != ip {
                    return Err(format!("it names {} on network {}", r.ip, r.network));
                }
                Ok(r)
            });
        match record {
            Ok(r) if self.is_remote(&r) => Some((id, Some(r))),
            Ok(_) => Some((id, None)),
            Err(e) => {
                self.warn_once(key.to_string(), format!("skipping {key}: {e}"));
                Some((id, None))
            }
        }
    }

    /// Read every network and endpoint record, at one revision.
    pub async fn read(&mut self, store: &Store) -> Result<(i64, Known), ClusterError> {
        let p = store.prefix().to_string();
        let txn = etcd_client::Txn::new().and_then([
            TxnOp::get(networks_prefix(&p), Some(GetOptions::new().with_prefix())),
            TxnOp::get(endpoints_prefix(&p), Some(GetOptions::new().with_prefix())),
        ]);
        let resp = store
            .call(
                format!("reading {p}/networks and {p}/endpoints"),
                |mut c| {
                    let txn = txn.clone();
                    async move { c.txn(txn).await }
                },
            )
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        let (mut nets, mut eps) = (BTreeMap::new(), BTreeMap::new());
        for r in resp.op_responses() {
            let TxnOpResponse::Get(g) = r else { continue };
            for kv in g.kvs() {
                let Ok(key) = kv.key_str() else { continue };
                if let Some((name, Some(spec))) = self.parse_network(&p, key, kv.value()) {
                    nets.insert(name, spec);
                } else if let Some((id, Some(rec))) = self.parse_endpoint(&p, key, kv.value()) {
                    eps.insert(id, rec);
                }
            }
        }
        Ok((revision, (nets, eps)))
    }

    /// Know exactly `known` (a full read).
    pub fn replace(&mut self, known: Known) {
        if self.nets != known.0 || self.eps != known.1 {
            self.dirty = true;
        }
        (self.nets, self.eps) = known;
    }

    /// Take one watch event into account; false if `key` is neither a
    /// network nor an endpoint record.
    pub fn event(&mut self, prefix: &str, key: &str, kind: EventType, value: &[u8]) -> bool {
        let put = kind == EventType::Put;
        if let Some((name, spec)) = self.parse_network(prefix, key, value) {
            match spec.filter(|_| put) {
                Some(s) => self.dirty |= self.nets.insert(name, s.clone()).as_ref() != Some(&s),
                None => self.dirty |= self.nets.remove(&name).is_some(),
            }
            return true;
        }
        if let Some((id, record)) = self.parse_endpoint(prefix, key, value) {
            match record.filter(|_| put) {
                Some(r) => self.dirty |= self.eps.insert(id, r.clone()).as_ref() != Some(&r),
                None => self.dirty |= self.eps.remove(&id).is_some(),
            }
            return true;
        }
        false
    }

    /// The endpoint `id` should be installed as, if its network is.
    fn wanted(&self, id: &(String, Ipv4Addr)) -> Option<NetEndpointSpec> {
        let r = self.eps.get(id)?;
        let net = self.installed_nets.get(&id.0)?;
        Some(NetEndpointSpec {
            vni: net.vni,
            ip: r.ip,
            mac: r.mac,
            location: NetLocation::Remote {
                host: r.underlay_ip,
            },
        })
    }

    /// Make the core carry what is known: networks and remote endpoints
    /// added, changed or removed (see the module docs).
    pub async fn sync(&mut self, agent: &mut CoreGuard<'_>) {
        let gone: Vec<(String, NetworkSpec)> = self
            .installed_nets
            .iter()
            .filter(|(name, spec)| self.nets.get(*name) != Some(*spec))
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect();
        for (name, spec) in gone {
            if let Err(e) = agent
                .apply(Source::Cluster, Change::DelNetwork(spec.vni))
                .await
            {
                log::warn!("cluster: removing network {name} (VNI {}): {e}", spec.vni);
            } else {
                log::info!("cluster: network {name} (VNI {}) removed", spec.vni);
            }
            self.installed_nets.remove(&name);
            self.installed_eps.retain(|(n, _), _| *n != name);
        }
        let stale: Vec<((String, Ipv4Addr), u32)> = self
            .installed_eps
            .iter()
            .filter(|(id, _)| self.wanted(id).is_none())
            .map(|(id, spec)| (id.clone(), spec.vni))
            .collect();
        for ((name, ip), vni) in stale {
            if let Err(e) = agent
                .apply(Source::Cluster, Change::DelNetEndpoint { vni, ip })
                .await
            {
                log::warn!("cluster: removing endpoint {ip} on network {name}: {e}");
            }
            self.installed_eps.remove(&(name, ip));
        }
        let new: Vec<NetworkSpec> = self
            .nets
            .values()
            .filter(|n| !self.installed_nets.contains_key(&n.name))
            .cloned()
            .collect();
        for spec in new {
            let key = format!("network {}", spec.name);
            match agent
                .apply(Source::Cluster, Change::AddNetwork(spec.clone()))
                .await
            {
                Ok(()) => {
                    log::info!(
                        "cluster: network {} (VNI {}, {}) carried",
                        spec.name,
                        spec.vni,
                        spec.subnet
                    );
                    self.warned.remove(&key);
                    self.installed_nets.insert(spec.name.clone(), spec);
                }
                Err(e) => self.warn_once(
                    key,
                    format!("network {} (VNI {}): {e}", spec.name, spec.vni),
                ),
            }
        }
        let ids: Vec<(String, Ipv4Addr)> = self.eps.keys().cloned().collect();
        for id in ids {
            let Some(want) = self.wanted(&id) else {
                continue;
            };
            if self.installed_eps.get(&id) == Some(&want) {
                continue;
            }
            let key = format!("endpoint {}/{}", id.0, id.1);
            match agent
                .apply(Source::Cluster, Change::PutNetEndpoint(want.clone()))
                .await
            {
                Ok(()) => {
                    self.warned.remove(&key);
                    self.installed_eps.insert(id, want);
                }
                Err(e) => {
                    self.warn_once(key, format!("endpoint {} on network {}: {e}", id.1, id.0))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_track_networks_and_other_hosts_records() {
        let mut w = NetWatch::new(
            "me".into(),
            Ipv4Addr::new(192, 168, 56, 4),
            Default::default(),
        );
        let spec = br#"{"name":"web","vni":4096,"subnet":"10.104.0.0/24","gateway":"10.104.0.1"}"#;
        assert!(w.event("/o", "/o/networks/web", EventType::Put, spec));
        assert!(w.dirty);
        let rec = |host: &str, last: u8| {
            format!(
                r#"{{"network":"web","ip":"10.104.0.2","mac":[2,0,0,0,0,2],"host":"{host}","underlay_ip":"192.168.56.{last}","container":"c"}}"#
            )
        };
        assert!(w.event(
            "/o",
            "/o/endpoints/web/10.104.0.2",
            EventType::Put,
            rec("h2", 5).as_bytes()
        ));
        assert_eq!(w.counts(), (1, 1));
        // This host's own record is not a remote endpoint.
        assert!(w.event(
            "/o",
            "/o/endpoints/web/10.104.0.2",
            EventType::Put,
            rec("me", 4).as_bytes()
        ));
        assert_eq!(w.counts(), (1, 0));
        // A record at the wrong key, a bad spec: skipped.
        assert!(w.event(
            "/o",
            "/o/endpoints/web/10.104.0.3",
            EventType::Put,
            rec("h2", 5).as_bytes()
        ));
        assert_eq!(w.counts(), (1, 0));
        assert!(w.event("/o", "/o/networks/db", EventType::Put, spec));
        assert_eq!(w.counts(), (1, 0));
        assert!(w.event("/o", "/o/networks/web", EventType::Delete, b""));
        assert_eq!(w.counts(), (0, 0));
        assert!(!w.event("/o", "/o/subnets/10.103.1.0-24", EventType::Put, b"{}"));
        assert!(!w.event("/o", "/o/ipam/web/10.104.0.2", EventType::Put, b"{}"));
    }
}
