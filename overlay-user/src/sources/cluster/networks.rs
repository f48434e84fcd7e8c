//! Creating, removing, listing and inspecting overlay networks in the
//! store. A network is created in one transaction that writes its record,
//! its VNI's key and its subnet's key, each only if absent, and only if no
//! network record changed since the networks were read (so two hosts
//! creating overlapping networks at once cannot both succeed); it is
//! removed in one transaction that requires no endpoint record on it.

use std::collections::{BTreeMap, BTreeSet};

use etcd_client::{Compare, CompareOp, TxnOp, TxnOpResponse};
use ipnet::Ipv4Net;

use crate::model::cluster::ClusterSettings;
use crate::model::network::{gateway_of, overlaps, MAX_VNI};
use crate::model::network_store::{
    check_gateway, check_network_name, check_network_subnet, check_network_vni, ipam_prefix,
    net_endpoints_prefix, netsubnet_key, network_key, networks_prefix, vni_key, FIRST_AUTO_VNI,
};
use crate::model::overlay_network::{EndpointRecord, NetworkRequest, NetworkSpec};
use crate::sources::cluster::directory::{Directory, TRIES};
use crate::sources::cluster::ClusterError;

/// What a new network may not collide with.
#[derive(Debug, Default)]
pub(super) struct Taken {
    /// The networks, by name.
    pub networks: BTreeMap<String, NetworkSpec>,
    /// VNIs held by keys without a readable network (name of the holder).
    pub vnis: BTreeMap<u32, String>,
    /// Subnets held by keys without a readable network (name of the holder).
    pub subnets: BTreeMap<Ipv4Net, String>,
}

/// The lowest free VNI from [`FIRST_AUTO_VNI`] up, never `cluster_vni`.
pub(super) fn free_vni(taken: &BTreeSet<u32>, cluster_vni: u32) -> Option<u32> {
    (FIRST_AUTO_VNI..=MAX_VNI).find(|v| *v != cluster_vni && !taken.contains(v))
}

/// The first /`len` of `pool` that overlaps none of `taken`.
pub(super) fn free_subnet(pool: Ipv4Net, len: u8, taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    pool.subnets(len)
        .ok()?
        .find(|s| !taken.iter().any(|t| overlaps(*t, *s)))
}

/// The network `req` asks for, with what it leaves out chosen, given what
/// is `taken`; refused with the reason when it collides.
pub(super) fn plan(
    req: &NetworkRequest,
    taken: &Taken,
    settings: &ClusterSettings,
    pool: (Ipv4Net, u8),
) -> Result<NetworkSpec, ClusterError> {
    check_network_name(&req.name)?;
    if let Some(old) = taken.networks.get(&req.name) {
        return Err(ClusterError::NetworkExists {
            name: req.name.clone(),
            vni: old.vni,
            subnet: old.subnet,
        });
    }
    let vni_holder = |vni: u32| -> Option<String> {
        if vni == settings.vni {
            return Some("the cluster's per-host overlay (cluster settings)".into());
        }
        taken
            .networks
            .values()
            .find(|n| n.vni == vni)
            .map(|n| format!("network {}", n.name))
            .or_else(|| taken.vnis.get(&vni).map(|n| format!("network {n}")))
    };
    let vni = match req.vni {
        Some(vni) => {
            check_network_vni(vni)?;
            if let Some(holder) = vni_holder(vni) {
                return Err(ClusterError::VniTaken { vni, holder });
            }
            vni
        }
        None => {
            let mut used: BTreeSet<u32> = taken.networks.values().map(|n| n.vni).collect();
            used.extend(taken.vnis.keys());
            free_vni(&used, settings.vni)
                .ok_or_else(|| ClusterError::Exhausted("no free VNI is left (24 bits)".into()))?
        }
    };
    let mut others: Vec<(Ipv4Net, String)> = vec![(
        settings.pool,
        format!("the hosts' pool {} (cluster settings)", settings.pool),
    )];
    others.extend(
        taken
            .networks
            .values()
            .map(|n| (n.subnet, format!("network {} ({})", n.name, n.subnet))),
    );
    others.extend(
        taken
            .subnets
            .iter()
            .map(|(s, n)| (*s, format!("network {n} ({s})"))),
    );
    let subnet = match req.subnet {
        Some(subnet) => {
            check_network_subnet(subnet)?;
            if let Some((_, other)) = others.iter().find(|(s, _)| overlaps(*s, subnet)) {
                return Err(ClusterError::SubnetTaken {
                    subnet,
                    other: other.clone(),
                });
            }
            subnet
        }
        None => {
            let nets: Vec<Ipv4Net> = others.iter().map(|(s, _)| *s).collect();
            free_subnet(pool.0, pool.1, &nets).ok_or_else(|| {
                ClusterError::Exhausted(format!(
                    "the network pool {} (cluster.network_pool) has no free /{} left; expected --subnet, or a wider cluster.network_pool",
                    pool.0, pool.1
                ))
            })?
        }
    };
    let gateway = req.gateway.unwrap_or_else(|| gateway_of(subnet));
    check_gateway(subnet, gateway)?;
    Ok(NetworkSpec {
        name: req.name.clone(),
        vni,
        subnet,
        gateway,
    })
}

/// How an endpoint is named in messages: "10.104.0.2 (web-1 on h1)".
pub fn describe(record: &EndpointRecord) -> String {
    let who = if record.name.is_empty() {
        record.container.chars().take(12).collect()
    } else {
        record.name.clone()
    };
    format!("{} ({who} on {})", record.ip, record.host)
}

impl Directory {
    /// What new networks may not collide with, and the revision read.
    async fn taken(&self) -> Result<(i64, Taken), ClusterError> {
        let p = self.prefix().to_string();
        let (revision, items) = self
            .read_prefix::<NetworkSpec>(&networks_prefix(&p), false)
            .await?;
        let mut taken = Taken::default();
        for (key, read) in items {
            let name = key.rsplit('/').next().unwrap_or_default().to_string();
            match read.value {
                Ok(spec) => {
                    taken.networks.insert(name, spec);
                }
                Err(reason) => {
                    log::warn!(
                        "cluster: {key} is not a network record ({reason}); its name stays taken"
                    );
                    taken.networks.insert(
                        name.clone(),
                        NetworkSpec {
                            name,
                            vni: 0,
                            subnet: Ipv4Net::default(),
                            gateway: std::net::Ipv4Addr::UNSPECIFIED,
                        },
                    );
                }
            }
        }
        Ok((revision, taken))
    }

    /// Create a network (see the module docs).
    pub async fn create(&self, req: NetworkRequest) -> Result<NetworkSpec, ClusterError> {
        let p = self.prefix().to_string();
        let mut stale = Taken::default();
        for _ in 0..TRIES {
            let (revision, mut taken) = self.taken().await?;
            taken.vnis.extend(stale.vnis.clone());
            taken.subnets.extend(stale.subnets.clone());
            let spec = plan(&req, &taken, &self.settings, self.network_pool)?;
            let (nkey, vkey, skey) = (
                network_key(&p, &spec.name),
                vni_key(&p, spec.vni),
                netsubnet_key(&p, spec.subnet),
            );
            let value = serde_json::to_string(&spec).expect("specs serialize");
            let txn = etcd_client::Txn::new()
                .when([
                    Compare::create_revision(nkey.clone(), CompareOp::Equal, 0),
                    Compare::create_revision(vkey.clone(), CompareOp::Equal, 0),
                    Compare::create_revision(skey.clone(), CompareOp::Equal, 0),
                    Compare::mod_revision(networks_prefix(&p), CompareOp::Less, revision + 1)
                        .with_prefix(),
                ])
                .and_then([
                    TxnOp::put(nkey, value, None),
                    TxnOp::put(vkey.clone(), spec.name.clone(), None),
                    TxnOp::put(skey.clone(), spec.name.clone(), None),
                ])
                .or_else([TxnOp::get(vkey, None), TxnOp::get(skey, None)]);
            let resp = self
                .txn(format!("creating network {}", spec.name), txn)
                .await?;
            if resp.succeeded() {
                log::info!(
                    "cluster: created network {} (VNI {}, subnet {}, gateway {})",
                    spec.name,
                    spec.vni,
                    spec.subnet,
                    spec.gateway
                );
                return Ok(spec);
            }
            // A VNI or subnet key left without its network (edited by
            // hand) stays taken; a race with another create is read again.
            let holders: Vec<Option<String>> = resp
                .op_responses()
                .into_iter()
                .map(|r| match r {
                    TxnOpResponse::Get(g) => g
                        .kvs()
                        .first()
                        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                    _ => None,
                })
                .collect();
            let stray = |i: usize| {
                holders
                    .get(i)
                    .cloned()
                    .flatten()
                    .filter(|h| !taken.networks.contains_key(h))
            };
            if let Some(h) = stray(0) {
                stale.vnis.insert(spec.vni, h);
            }
            if let Some(h) = stray(1) {
                stale.subnets.insert(spec.subnet, h);
            }
        }
        Err(ClusterError::Contended {
            what: format!("creating network {}", req.name),
            tries: TRIES,
        })
    }

    /// Every network, by name.
    pub async fn list(&self) -> Result<Vec<NetworkSpec>, ClusterError> {
        let (_, taken) = self.taken().await?;
        Ok(taken
            .networks
            .into_values()
            .filter(|n| n.vni != 0)
            .collect())
    }

    /// One network's endpoint records, by address.
    pub async fn endpoints_of(&self, name: &str) -> Result<Vec<EndpointRecord>, ClusterError> {
        let prefix = net_endpoints_prefix(self.prefix(), name);
        let (_, items) = self.read_prefix::<EndpointRecord>(&prefix, false).await?;
        let mut records: Vec<EndpointRecord> = items
            .into_iter()
            .filter_map(|(key, read)| {
                read.value
                    .map_err(|e| log::warn!("cluster: skipping {key}: {e}"))
                    .ok()
            })
            .collect();
        records.sort_by_key(|r| r.ip);
        Ok(records)
    }

    /// One network and its endpoints on every host.
    pub async fn inspect(
        &self,
        name: &str,
    ) -> Result<(NetworkSpec, Vec<EndpointRecord>), ClusterError> {
        let (spec, _) = self.spec_of(name).await?;
        Ok((spec, self.endpoints_of(name).await?))
    }

    /// Remove a network, its VNI and subnet keys and its addresses; refused
    /// while an endpoint record is on it, naming them.
    pub async fn remove(&self, name: &str) -> Result<NetworkSpec, ClusterError> {
        let p = self.prefix().to_string();
        for _ in 0..TRIES {
            let (spec, read) = self.spec_of(name).await?;
            let nkey = network_key(&p, name);
            let eps = net_endpoints_prefix(&p, name);
            let txn = etcd_client::Txn::new()
                .when([
                    Compare::mod_revision(nkey.clone(), CompareOp::Equal, read.mod_revision),
                    Compare::create_revision(eps.clone(), CompareOp::Equal, 0).with_prefix(),
                ])
                .and_then([
                    TxnOp::delete(nkey, None),
                    TxnOp::delete(vni_key(&p, spec.vni), None),
                    TxnOp::delete(netsubnet_key(&p, spec.subnet), None),
                    TxnOp::delete(
                        ipam_prefix(&p, name),
                        Some(etcd_client::DeleteOptions::new().with_prefix()),
                    ),
                ]);
            if self
                .txn(format!("removing network {name}"), txn)
                .await?
                .succeeded()
            {
                log::info!("cluster: removed network {name} (VNI {})", spec.vni);
                return Ok(spec);
            }
            let records = self.endpoints_of(name).await?;
            if !records.is_empty() {
                let list: Vec<String> = records.iter().map(describe).collect();
                return Err(ClusterError::NetworkInUse {
                    name: name.to_string(),
                    list: list.join(", "),
                });
            }
        }
        Err(ClusterError::Contended {
            what: format!("removing network {name}"),
            tries: TRIES,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn settings() -> ClusterSettings {
        ClusterSettings {
            pool: "10.103.0.0/16".parse().unwrap(),
            subnet_len: 24,
            vni: 4096,
            port: 4789,
        }
    }

    const POOL: (Ipv4Net, u8) = (Ipv4Net::new_assert(Ipv4Addr::new(10, 104, 0, 0), 22), 24);

    fn req(name: &str) -> NetworkRequest {
        NetworkRequest {
            name: name.into(),
            ..Default::default()
        }
    }

    fn add(taken: &mut Taken, spec: NetworkSpec) {
        taken.networks.insert(spec.name.clone(), spec);
    }

    #[test]
    fn allocation_picks_the_first_free_vni_and_subnet() {
        let s = settings();
        let mut taken = Taken::default();
        let web = plan(&req("web"), &taken, &s, POOL).unwrap();
        // 4096 is the cluster's own VNI: skipped.
        assert_eq!(web.vni, 4097);
        assert_eq!(web.subnet, "10.104.0.0/24".parse::<Ipv4Net>().unwrap());
        assert_eq!(web.gateway, Ipv4Addr::new(10, 104, 0, 1));
        add(&mut taken, web);
        let mut r = req("db");
        r.subnet = Some("10.104.1.0/24".parse().unwrap());
        r.gateway = Some(Ipv4Addr::new(10, 104, 1, 254));
        let db = plan(&r, &taken, &s, POOL).unwrap();
        assert_eq!((db.vni, db.gateway), (4098, Ipv4Addr::new(10, 104, 1, 254)));
        add(&mut taken, db);
        let third = plan(&req("c"), &taken, &s, POOL).unwrap();
        assert_eq!(third.subnet, "10.104.2.0/24".parse::<Ipv4Net>().unwrap());
        taken.vnis.insert(4099, "ghost".into());
        assert_eq!(plan(&req("c"), &taken, &s, POOL).unwrap().vni, 4100);
        add(&mut taken, third);
        let fourth = plan(&req("d"), &taken, &s, POOL).unwrap();
        add(&mut taken, fourth);
        assert_eq!(
            plan(&req("e"), &taken, &s, POOL).unwrap_err().to_string(),
            "the network pool 10.104.0.0/22 (cluster.network_pool) has no free /24 left; expected --subnet, or a wider cluster.network_pool"
        );
        assert_eq!(free_vni(&BTreeSet::new(), 42), Some(4096));
        let all: BTreeSet<u32> = (FIRST_AUTO_VNI..=MAX_VNI).collect();
        assert_eq!(free_vni(&all, 42), None);
    }

    #[test]
    fn collisions_are_refused_naming_the_other() {
        let s = settings();
        let mut taken = Taken::default();
        add(
            &mut taken,
            NetworkSpec {
                name: "web".into(),
                vni: 5000,
                subnet: "10.104.0.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(10, 104, 0, 1),
            },
        );
        let err = |r: NetworkRequest| plan(&r, &taken, &s, POOL).unwrap_err().to_string();
        assert_eq!(
            err(req("web")),
            "network web already exists (VNI 5000, subnet 10.104.0.0/24); expected a new name, or `overlayctl network rm web` first"
        );
        let mut r = req("x");
        r.vni = Some(5000);
        assert_eq!(
            err(r.clone()),
            "VNI 5000 is taken by network web; expected a free VNI, or no --vni to get one"
        );
        r.vni = Some(4096);
        assert_eq!(
            err(r),
            "VNI 4096 is taken by the cluster's per-host overlay (cluster settings); expected a free VNI, or no --vni to get one"
        );
        let mut r = req("x");
        r.subnet = Some("10.104.0.0/16".parse().unwrap());
        assert_eq!(
            err(r.clone()),
            "subnet 10.104.0.0/16 overlaps network web (10.104.0.0/24); expected a subnet disjoint from every network's and from the hosts' pool"
        );
        r.subnet = Some("10.103.5.0/24".parse().unwrap());
        assert_eq!(
            err(r.clone()),
            "subnet 10.103.5.0/24 overlaps the hosts' pool 10.103.0.0/16 (cluster settings); expected a subnet disjoint from every network's and from the hosts' pool"
        );
        r.subnet = Some("10.105.0.0/24".parse().unwrap());
        r.gateway = Some(Ipv4Addr::new(10, 105, 1, 1));
        assert_eq!(
            err(r),
            "gateway 10.105.1.1 is not in the subnet 10.105.0.0/24; expected an address of 10.105.0.0/24 other than its network and broadcast addresses, like 10.105.0.1"
        );
        assert!(err(req("bad/name")).starts_with("network name \"bad/name\" is not valid"));
    }

    #[test]
    fn endpoints_are_described_by_name_or_container() {
        let mut r = EndpointRecord {
            network: "web".into(),
            ip: Ipv4Addr::new(10, 104, 0, 2),
            mac: [2, 0, 0, 0, 0, 2],
            host: "h1".into(),
            underlay_ip: Ipv4Addr::new(192, 168, 56, 4),
            container: "0123456789abcdef".into(),
            name: String::new(),
            aliases: vec![],
        };
        assert_eq!(describe(&r), "10.104.0.2 (0123456789ab on h1)");
        r.name = "web-1".into();
        assert_eq!(describe(&r), "10.104.0.2 (web-1 on h1)");
    }
}
