//! Addresses of overlay networks, unique across all hosts: one key per
//! address (`<prefix>/ipam/<network>/<ip>`), taken with a transaction that
//! creates it only if absent and only while the network is the one read
//! (not removed and created again meanwhile). A free address is the
//! lowest one no key holds; losing a race to another host moves on to the
//! next. The gateway, network and broadcast addresses are never handed out.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use etcd_client::{Compare, CompareOp, TxnOp, TxnOpResponse};

use crate::model::network_store::{ipam_key, ipam_prefix, network_key, parse_ipam_key, IpamRecord};
use crate::model::overlay_network::NetworkSpec;
use crate::sources::cluster::directory::{Directory, TRIES};
use crate::sources::cluster::ClusterError;

/// How many of the first free addresses a request picks among after losing a race.
const SPREAD: usize = 16;

/// A pseudo-random index below `n` (`n` > 0), different between calls.
fn random_below(n: usize) -> usize {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut x = nanos
        ^ SEQ.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        ^ u64::from(std::process::id()) << 32
        | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    (x % n.max(1) as u64) as usize
}

/// What one attempt at taking an address found.
enum Take {
    /// Taken for us.
    Taken,
    /// Someone holds it (or we do, under this holder).
    Held(Result<IpamRecord, String>),
    /// The network changed or went meanwhile.
    NetworkChanged,
}

/// The addresses of `spec` for containers that `held` does not have, lowest first.
pub(super) fn free_ips<'a>(
    spec: &'a NetworkSpec,
    held: &'a BTreeSet<Ipv4Addr>,
) -> impl Iterator<Item = Ipv4Addr> + 'a {
    spec.container_ips().filter(|ip| !held.contains(ip))
}

impl Directory {
    /// Take `ip` on `spec` (read at `create_revision`) for `holder`.
    async fn take(
        &self,
        spec: &NetworkSpec,
        create_revision: i64,
        ip: Ipv4Addr,
        holder: &str,
    ) -> Result<Take, ClusterError> {
        let p = self.prefix();
        let key = ipam_key(p, &spec.name, ip);
        let nkey = network_key(p, &spec.name);
        let record = IpamRecord {
            holder: holder.to_string(),
            host: self.me.clone(),
        };
        let value = serde_json::to_string(&record).expect("records serialize");
        let txn = etcd_client::Txn::new()
            .when([
                Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                Compare::create_revision(nkey.clone(), CompareOp::Equal, create_revision),
            ])
            .and_then([TxnOp::put(key.clone(), value, None)])
            .or_else([TxnOp::get(key, None), TxnOp::get(nkey, None)]);
        let resp = self
            .txn(format!("taking {ip} on network {}", spec.name), txn)
            .await?;
        if resp.succeeded() {
            return Ok(Take::Taken);
        }
        let mut gets = resp.op_responses().into_iter().map(|r| match r {
            TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .map(|kv| (kv.value().to_vec(), kv.create_revision())),
            _ => None,
        });
        let (held, net) = (gets.next().flatten(), gets.next().flatten());
        if net.is_none_or(|(_, rev)| rev != create_revision) {
            return Ok(Take::NetworkChanged);
        }
        Ok(match held {
            Some((value, _)) => {
                Take::Held(serde_json::from_slice(&value).map_err(|e| e.to_string()))
            }
            None => Take::NetworkChanged,
        })
    }

    /// The addresses of network `name` someone holds.
    pub(super) async fn held(&self, name: &str) -> Result<BTreeSet<Ipv4Addr>, ClusterError> {
        let p = self.prefix();
        let (_, items) = self
            .read_prefix::<IpamRecord>(&ipam_prefix(p, name), true)
            .await?;
        Ok(items
            .iter()
            .filter_map(|(key, _)| parse_ipam_key(p, name, key))
            .collect())
    }

    /// An address on `network` for `holder` (see the module docs).
    pub async fn request(
        &self,
        network: &str,
        wanted: Option<Ipv4Addr>,
        holder: &str,
    ) -> Result<Ipv4Addr, ClusterError> {
        let mut skip: BTreeSet<Ipv4Addr> = BTreeSet::new();
        let mut fresh = true;
        let mut lost = 0usize;
        for _ in 0..TRIES {
            let (spec, read) = self.spec_of(network).await?;
            let ip = match wanted {
                Some(ip) => {
                    spec.check_member(ip)?;
                    ip
                }
                None => {
                    if fresh {
                        skip.extend(self.held(network).await?);
                        fresh = false;
                    }
                    let Some(ip) = self.pick(&spec, &skip, lost) else {
                        return Err(ClusterError::NetworkFull {
                            network: network.to_string(),
                            subnet: spec.subnet,
                            count: spec.container_ips().count(),
                        });
                    };
                    ip
                }
            };
            let taken = self.take(&spec, read.create_revision, ip, holder).await;
            if wanted.is_none() {
                self.trying_set().remove(&(network.to_string(), ip));
            }
            match taken? {
                Take::Taken => {
                    log::debug!("cluster: {ip} on network {network} for {holder}");
                    return Ok(ip);
                }
                Take::NetworkChanged => fresh = true,
                Take::Held(Ok(r)) if r.holder == holder && r.host == self.me => return Ok(ip),
                Take::Held(found) if wanted.is_some() => {
                    let r = found.unwrap_or_else(|reason| IpamRecord {
                        holder: format!("(unreadable record: {reason})"),
                        host: "?".into(),
                    });
                    return Err(ClusterError::AddressHeld {
                        ip,
                        network: network.to_string(),
                        holder: r.holder,
                        host: r.host,
                    });
                }
                Take::Held(_) => {
                    skip.insert(ip);
                    lost += 1;
                }
            }
        }
        Err(ClusterError::Contended {
            what: format!("taking an address on network {network}"),
            tries: TRIES,
        })
    }

    fn trying_set(&self) -> std::sync::MutexGuard<'_, BTreeSet<(String, Ipv4Addr)>> {
        self.trying.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The address to try next, marked as tried by this host: the lowest
    /// free one, or after `lost` races to other hosts one of the first
    /// few free ones at random (so that hosts stop racing for the same).
    fn pick(&self, spec: &NetworkSpec, skip: &BTreeSet<Ipv4Addr>, lost: usize) -> Option<Ipv4Addr> {
        let mut trying = self.trying_set();
        let name = spec.name.clone();
        let mut free = free_ips(spec, skip).filter(|ip| !trying.contains(&(name.clone(), *ip)));
        let ip = if lost == 0 {
            free.next()?
        } else {
            let first: Vec<Ipv4Addr> = free.take(SPREAD).collect();
            *first.get(random_below(first.len()))?
        };
        trying.insert((name, ip));
        Some(ip)
    }

    /// Give `ip` on `network` back; a free one is fine.
    pub async fn release(&self, network: &str, ip: Ipv4Addr) -> Result<(), ClusterError> {
        crate::model::network_store::check_network_name(network)?;
        let key = ipam_key(self.prefix(), network, ip);
        self.store
            .call(format!("deleting {key}"), |mut c| {
                let key = key.clone();
                async move { c.delete(key, None).await }
            })
            .await?;
        log::debug!("cluster: released {ip} on network {network}");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_free_address_skips_the_reserved_ones() {
        let spec = NetworkSpec {
            name: "web".into(),
            vni: 4096,
            subnet: "10.104.0.0/29".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 104, 0, 1),
        };
        let mut held = BTreeSet::new();
        assert_eq!(
            free_ips(&spec, &held).next(),
            Some(Ipv4Addr::new(10, 104, 0, 2))
        );
        held.insert(Ipv4Addr::new(10, 104, 0, 2));
        held.insert(Ipv4Addr::new(10, 104, 0, 4));
        assert_eq!(
            free_ips(&spec, &held).next(),
            Some(Ipv4Addr::new(10, 104, 0, 3))
        );
        for i in 3..=6 {
            held.insert(Ipv4Addr::new(10, 104, 0, i));
        }
        assert_eq!(free_ips(&spec, &held).next(), None);
    }
}
