//! Leasing this host's subnet, before the dataplane starts: the subnet the
//! config names, else the saved one, else the one etcd holds under this
//! host's name, else a free subnet of the pool picked at random among the
//! first free ones. Each is claimed with a transaction that creates the key
//! only if it is absent (or rebinds it if the record is this host's), bound
//! to a fresh etcd lease, which the [`Keeper`] keeps alive.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use ipnet::Ipv4Net;

use crate::model::cluster::{
    parse_subnet_key, subnet_key, subnets_prefix, ClusterSettings, HostRecord, PICK_AMONG,
};
use crate::model::config::cluster::ClusterConfig;
use crate::model::overlay_network::{EndpointRecord, NetworkSpec};
use crate::model::validation::format_mac;
use crate::sources::cluster::client::Store;
use crate::sources::cluster::keeper::{Keeper, LeaseState};
use crate::sources::cluster::saved::{self, SavedLease};
use crate::sources::cluster::ClusterError;

/// Who this host is, and what its config asks for.
#[derive(Clone, Debug)]
pub struct Me {
    /// Its name in the store.
    pub name: String,
    /// Its underlay address.
    pub underlay_ip: Ipv4Addr,
    /// The subnet its config names, if any.
    pub subnet: Option<Ipv4Net>,
    /// The VNI its config names, if any.
    pub vni: Option<u32>,
    /// The VXLAN port its config names, if any.
    pub port: Option<u16>,
}

/// How the lease was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The subnet the config names.
    Configured,
    /// The subnet of the saved lease.
    Saved,
    /// The subnet etcd holds under this host's name.
    Reclaimed,
    /// A free subnet of the pool.
    Leased,
    /// etcd is unreachable: the saved lease, not registered yet.
    Offline,
}

/// A host record as read, with its etcd lease.
#[derive(Clone, Debug)]
pub struct Listed {
    /// The record, or why it is unusable.
    pub record: Result<HostRecord, String>,
    /// The etcd lease it is bound to.
    pub lease: i64,
}

/// Every record under the prefix, at one revision.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    /// The store's revision of the read.
    pub revision: i64,
    /// The records by subnet.
    pub hosts: BTreeMap<Ipv4Net, Listed>,
}

/// Parse one record read at `key`.
pub fn parse_record(
    prefix: &str,
    key: &str,
    value: &[u8],
) -> Option<(Ipv4Net, Result<HostRecord, String>)> {
    let subnet = parse_subnet_key(prefix, key)?;
    let record = serde_json::from_slice::<HostRecord>(value)
        .map_err(|e| e.to_string())
        .and_then(|r| r.check(subnet).map(|_| r).map_err(|e| e.to_string()));
    Some((subnet, record))
}

/// Read every host record.
pub async fn read_hosts(store: &Store) -> Result<Listing, ClusterError> {
    let prefix = subnets_prefix(store.prefix());
    let resp = store
        .call(format!("reading {prefix}"), |mut c| {
            let prefix = prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })
        .await?;
    let mut listing = Listing {
        revision: resp.header().map(|h| h.revision()).unwrap_or_default(),
        hosts: BTreeMap::new(),
    };
    for kv in resp.kvs() {
        let Ok(key) = kv.key_str() else { continue };
        if let Some((subnet, record)) = parse_record(store.prefix(), key, kv.value()) {
            listing.hosts.insert(
                subnet,
                Listed {
                    record,
                    lease: kv.lease(),
                },
            );
        }
    }
    Ok(listing)
}

/// What [`claim`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key holds our record now, bound to this etcd lease.
    Claimed(i64),
    /// Another host holds the subnet.
    Held(HostRecord),
    /// The key changed between reading and writing it: try again.
    Raced,
}

/// Whether `existing` (bound to `lease`) is this host's own record.
fn is_ours(
    existing: &Result<HostRecord, String>,
    lease: i64,
    me: &HostRecord,
    previous: i64,
) -> bool {
    (previous != 0 && lease == previous)
        || existing
            .as_ref()
            .is_ok_and(|r| r.name == me.name && r.underlay_ip == me.underlay_ip)
}

/// Write `record` at its subnet's key under a fresh lease of `ttl` seconds,
/// if the key is absent or holds this host's record (`previous`: the etcd
/// lease this host last had, 0 for none).
pub async fn claim(
    store: &Store,
    record: &HostRecord,
    ttl: u64,
    previous: i64,
) -> Result<Claim, ClusterError> {
    let key = subnet_key(store.prefix(), record.subnet);
    let current = store
        .call(format!("reading {key}"), |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })
        .await?;
    let (compare, old_lease) = match current.kvs().first() {
        None => (
            Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            0,
        ),
        Some(kv) => {
            let existing = parse_record(store.prefix(), &key, kv.value())
                .map(|(_, r)| r)
                .unwrap_or_else(|| Err("not a record".into()));
            if !is_ours(&existing, kv.lease(), record, previous) {
                let holder = existing.unwrap_or_else(|reason| HostRecord {
                    name: format!("(unreadable record: {reason})"),
                    underlay_ip: Ipv4Addr::UNSPECIFIED,
                    subnet: record.subnet,
                    vtep_mac: String::new(),
                    mode: None,
                    version: String::new(),
                });
                return Ok(Claim::Held(holder));
            }
            let rev = kv.mod_revision();
            (
                Compare::mod_revision(key.clone(), CompareOp::Equal, rev),
                kv.lease(),
            )
        }
    };
    let grant = store
        .call("granting a lease", |mut c| async move {
            c.lease_grant(ttl as i64, None).await
        })
        .await?;
    let id = grant.id();
    let value = serde_json::to_string(record).expect("records serialize");
    let txn = Txn::new().when([compare]).and_then([TxnOp::put(
        key.clone(),
        value,
        Some(PutOptions::new().with_lease(id)),
    )]);
    let done = store
        .call(format!("writing {key}"), |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await;
    if !done.as_ref().is_ok_and(|r| r.succeeded()) {
        revoke(store, id).await;
        return done.map(|_| Claim::Raced);
    }
    if old_lease != 0 && old_lease != id {
        revoke(store, old_lease).await;
    }
    Ok(Claim::Claimed(id))
}

/// Rewrite `record` at its key if the key is still bound to `lease`; false if it is not.
pub async fn refresh_record(
    store: &Store,
    record: &HostRecord,
    lease: i64,
) -> Result<bool, ClusterError> {
    let key = subnet_key(store.prefix(), record.subnet);
    let value = serde_json::to_string(record).expect("records serialize");
    let txn = Txn::new()
        .when([Compare::lease(key.clone(), CompareOp::Equal, lease)])
        .and_then([TxnOp::put(
            key.clone(),
            value,
            Some(PutOptions::new().with_lease(lease)),
        )]);
    let resp = store
        .call(format!("writing {key}"), |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
    Ok(resp.succeeded())
}

/// Revoke an etcd lease (deleting the keys bound to it); failures are logged.
pub async fn revoke(store: &Store, id: i64) {
    if let Err(e) = store
        .call("revoking a lease", |mut c| async move {
            c.lease_revoke(id).await
        })
        .await
    {
        log::debug!("cluster: revoking lease {id:x}: {e}");
    }
}

/// This host's lease, as start-up obtained it.
pub struct Lease {
    /// The client.
    pub store: Store,
    /// The cluster settings.
    pub settings: ClusterSettings,
    /// This host's record (mode unknown yet).
    pub record: HostRecord,
    /// How it was obtained.
    pub origin: Origin,
    /// Why etcd could not be used ([`Origin::Offline`]).
    pub offline_reason: Option<String>,
    /// The lease's TTL in seconds.
    pub ttl: u64,
    /// The hosts as last seen by the previous run (from the saved lease).
    pub cached: Vec<HostRecord>,
    /// The etcd lease, shared with the keeper.
    pub state: Arc<LeaseState>,
    /// Keeps it alive.
    pub keeper: Keeper,
    /// The saved lease's file.
    pub saved_path: PathBuf,
    /// The last-known overlay networks and other hosts' endpoint records (from the saved lease).
    pub cached_networks: (Vec<NetworkSpec>, Vec<EndpointRecord>),
    /// Where networks created without a subnet get theirs, and its subnets' length.
    pub network_pool: (Ipv4Net, u8),
}

/// A random index below `n`, different between hosts and runs.
fn random_below(n: usize, salt: u32) -> usize {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut x = nanos ^ (u64::from(std::process::id()) << 32) ^ u64::from(salt).rotate_left(17) | 1;
    for _ in 0..3 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    (x % n.max(1) as u64) as usize
}

fn check_settings(me: &Me, s: &ClusterSettings, key: &str) -> Result<(), ClusterError> {
    let contradiction = |field, host: String, cluster: String| ClusterError::Contradiction {
        field,
        host,
        cluster,
        key: key.to_string(),
    };
    if let Some(vni) = me.vni.filter(|v| *v != s.vni) {
        return Err(contradiction("vni", vni.to_string(), s.vni.to_string()));
    }
    if let Some(port) = me.port.filter(|p| *p != s.port) {
        return Err(contradiction(
            "vxlan_port",
            port.to_string(),
            s.port.to_string(),
        ));
    }
    if let Some(subnet) = me.subnet.filter(|n| !s.fits(*n)) {
        return Err(ClusterError::OutsidePool {
            subnet,
            pool: s.pool,
            len: s.subnet_len,
        });
    }
    Ok(())
}

/// Lease this host's subnet (see the module docs); with etcd unreachable
/// for `cfg.timeout` seconds, fall back to the saved lease in `state_dir`.
pub async fn acquire(
    cfg: &ClusterConfig,
    me: &Me,
    state_dir: &Path,
) -> Result<Lease, ClusterError> {
    let saved_path = saved::path_in(state_dir);
    let saved = saved::load(&saved_path)?.filter(|s| s.prefix == cfg.prefix && s.name == me.name);
    let store = Store::connect(cfg).await?;
    let key = crate::model::cluster::settings_key(&cfg.prefix);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(cfg.timeout);
    let settings = loop {
        match store.settings().await {
            Err(e) if e.is_unreachable() && tokio::time::Instant::now() < deadline => {
                log::debug!("cluster: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => break other,
        }
    };
    let settings = match settings {
        Ok(s) => s,
        Err(e) if e.is_unreachable() => return offline(cfg, me, saved, store, saved_path, e),
        Err(e) => return Err(e),
    };
    check_settings(me, &settings, &key)?;
    let mut record = HostRecord {
        name: me.name.clone(),
        underlay_ip: me.underlay_ip,
        subnet: Ipv4Net::default(),
        vtep_mac: format_mac(&overlay_common::vtep_mac(
            me.underlay_ip.octets(),
            settings.vni,
        )),
        mode: None,
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let previous = saved.as_ref().map(|s| s.lease_id).unwrap_or(0);
    let mut listing = read_hosts(&store).await?;
    if let Some(other) = listing
        .hosts
        .values()
        .filter_map(|l| l.record.as_ref().ok())
        .find(|r| r.name == me.name && r.underlay_ip != me.underlay_ip)
    {
        return Err(ClusterError::NameTaken {
            name: me.name.clone(),
            holder_ip: other.underlay_ip,
            subnet: other.subnet,
        });
    }
    let mut attempts = 0u64;
    let (subnet, id, origin) = loop {
        attempts += 1;
        let mine = listing
            .hosts
            .iter()
            .find(|(_, l)| l.record.as_ref().is_ok_and(|r| r.name == me.name))
            .map(|(s, _)| *s);
        let (candidate, origin) = if let Some(s) = me.subnet {
            (s, Origin::Configured)
        } else if let Some(s) = saved
            .as_ref()
            .map(|s| s.subnet)
            .filter(|s| settings.fits(*s) && attempts == 1)
        {
            (s, Origin::Saved)
        } else if let Some(s) = mine.filter(|s| settings.fits(*s)) {
            (s, Origin::Reclaimed)
        } else {
            let taken = listing.hosts.keys().copied().collect();
            let free = settings.free_subnets(&taken, PICK_AMONG);
            if free.is_empty() {
                return Err(ClusterError::PoolExhausted {
                    pool: settings.pool,
                    len: settings.subnet_len,
                    count: settings.subnet_count(),
                });
            }
            (
                free[random_below(free.len(), u32::from(me.underlay_ip))],
                Origin::Leased,
            )
        };
        record.subnet = candidate;
        match claim(&store, &record, cfg.lease_ttl, previous).await? {
            Claim::Claimed(id) => break (candidate, id, origin),
            Claim::Held(holder) if origin == Origin::Configured => {
                return Err(ClusterError::SubnetHeld {
                    subnet: candidate,
                    holder: holder.name,
                    holder_ip: holder.underlay_ip,
                })
            }
            Claim::Held(holder) if origin == Origin::Saved => log::warn!(
                "cluster: the saved subnet {candidate} is now held by {} ({}); leasing another",
                holder.name,
                holder.underlay_ip
            ),
            Claim::Held(_) | Claim::Raced => {}
        }
        if attempts > settings.subnet_count().min(1000) + 20 {
            return Err(ClusterError::Etcd {
                what: "leasing a subnet".into(),
                reason: format!(
                    "gave up after {attempts} attempts: other hosts took every subnet tried"
                ),
            });
        }
        listing = read_hosts(&store).await?;
    };
    record.subnet = subnet;
    let state = Arc::new(LeaseState::default());
    state.set_id(id);
    let (cached, cached_networks) = saved
        .map(|s| (s.hosts, (s.networks, s.net_endpoints)))
        .unwrap_or_default();
    saved::save(
        &saved_path,
        &SavedLease {
            version: saved::VERSION,
            prefix: cfg.prefix.clone(),
            name: me.name.clone(),
            subnet,
            lease_id: id,
            settings: settings.clone(),
            hosts: cached.clone(),
            networks: cached_networks.0.clone(),
            net_endpoints: cached_networks.1.clone(),
        },
    )?;
    Ok(Lease {
        keeper: Keeper::start(store.clone(), state.clone(), cfg.lease_ttl),
        store,
        settings,
        record,
        origin,
        offline_reason: None,
        ttl: cfg.lease_ttl,
        cached,
        state,
        saved_path,
        cached_networks,
        network_pool: (cfg.network_pool, cfg.network_subnet_len),
    })
}

/// etcd is unreachable: the saved lease, if there is one that fits the config.
fn offline(
    cfg: &ClusterConfig,
    me: &Me,
    saved: Option<SavedLease>,
    store: Store,
    saved_path: PathBuf,
    e: ClusterError,
) -> Result<Lease, ClusterError> {
    let Some(saved) = saved.filter(|s| me.subnet.is_none_or(|n| n == s.subnet)) else {
        return Err(ClusterError::NoSavedLease {
            path: saved_path,
            source: Box::new(e),
        });
    };
    let key = crate::model::cluster::settings_key(&cfg.prefix);
    check_settings(me, &saved.settings, &key)?;
    let state = Arc::new(LeaseState::default());
    state.set_id(saved.lease_id);
    Ok(Lease {
        keeper: Keeper::start(store.clone(), state.clone(), cfg.lease_ttl),
        store,
        record: HostRecord {
            name: me.name.clone(),
            underlay_ip: me.underlay_ip,
            subnet: saved.subnet,
            vtep_mac: format_mac(&overlay_common::vtep_mac(
                me.underlay_ip.octets(),
                saved.settings.vni,
            )),
            mode: None,
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
        settings: saved.settings,
        origin: Origin::Offline,
        offline_reason: Some(e.to_string()),
        ttl: cfg.lease_ttl,
        cached: saved.hosts,
        state,
        saved_path,
        cached_networks: (saved.networks, saved.net_endpoints),
        network_pool: (cfg.network_pool, cfg.network_subnet_len),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_picks_stay_in_range() {
        for n in [1, 2, 8, 100] {
            for salt in 0..50 {
                assert!(random_below(n, salt) < n);
            }
        }
    }

    #[test]
    fn ownership() {
        let me = HostRecord {
            name: "h1".into(),
            underlay_ip: Ipv4Addr::new(192, 168, 56, 4),
            subnet: "10.103.1.0/24".parse().unwrap(),
            vtep_mac: "02:2a:c0:a8:38:04".into(),
            mode: None,
            version: String::new(),
        };
        let other = HostRecord {
            name: "h2".into(),
            ..me.clone()
        };
        assert!(is_ours(&Ok(me.clone()), 5, &me, 0));
        assert!(!is_ours(&Ok(other.clone()), 5, &me, 0));
        assert!(is_ours(&Ok(other), 5, &me, 5));
        assert!(!is_ours(&Err("garbage".into()), 5, &me, 6));
    }

    #[test]
    fn settings_contradictions_name_both_values() {
        let s = ClusterSettings {
            pool: "10.103.0.0/16".parse().unwrap(),
            subnet_len: 24,
            vni: 42,
            port: 4789,
        };
        let mut me = Me {
            name: "h1".into(),
            underlay_ip: Ipv4Addr::new(192, 168, 56, 4),
            subnet: None,
            vni: Some(7),
            port: None,
        };
        assert_eq!(
            check_settings(&me, &s, "/overlay/config").unwrap_err().to_string(),
            "this host's config sets vni = 7, but the cluster's settings at /overlay/config say vni = 42; expected the same value, or leave vni out"
        );
        me.vni = Some(42);
        me.port = Some(8472);
        assert!(check_settings(&me, &s, "/k")
            .unwrap_err()
            .to_string()
            .contains("vxlan_port = 8472"));
        me.port = None;
        me.subnet = Some("10.104.1.0/24".parse().unwrap());
        assert_eq!(
            check_settings(&me, &s, "/k").unwrap_err().to_string(),
            "subnet 10.104.1.0/24 is not one of the cluster's subnets; expected a /24 inside the pool 10.103.0.0/16, or no subnet to lease one"
        );
        me.subnet = Some("10.103.100.0/24".parse().unwrap());
        check_settings(&me, &s, "/k").unwrap();
    }
}
