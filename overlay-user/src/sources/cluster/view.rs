//! The API's view of the cluster ([`ClusterView`]): the hosts with their
//! lease time left, the store's state, removing a dead host, and leaving.
//! Questions go to etcd live; while it is unreachable the registry's last
//! view answers.

use std::sync::{Arc, Mutex};

use futures::StreamExt;

use crate::model::cluster::{lease_hex, subnet_key, HostInfo, HostRecord};
use crate::model::status::StoreStatus;
use crate::sources::cluster::client::Store;
use crate::sources::cluster::keeper::LeaseState;
use crate::sources::cluster::lease::{read_hosts, revoke};
use crate::sources::cluster::ClusterError;
use crate::sources::{ClusterView, SourceError};

/// How many lease TTLs are asked for at once when listing hosts.
const TTL_QUERIES: usize = 32;

/// What the registry knows, for the API's view.
#[derive(Debug, Default)]
pub struct Shared {
    inner: Mutex<SharedState>,
}

/// The registry's state as the API's view sees it.
#[derive(Clone, Debug, Default)]
pub struct SharedState {
    /// Whether etcd answered last time.
    pub connected: bool,
    /// The member that answered.
    pub member: Option<String>,
    /// The leader.
    pub leader: Option<String>,
    /// The last revision seen.
    pub revision: i64,
    /// The last error, while it lasts.
    pub last_error: Option<String>,
    /// The other hosts' records, as installed.
    pub hosts: Vec<HostRecord>,
}

impl Shared {
    /// A copy of the state.
    pub fn get(&self) -> SharedState {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut SharedState)) {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The API's handle on the cluster source.
#[derive(Clone)]
pub struct ClusterHandle {
    store: Store,
    state: Arc<LeaseState>,
    shared: Arc<Shared>,
    me: HostRecord,
}

impl ClusterHandle {
    /// A handle on the registry's `shared` state and this host's lease.
    pub fn new(store: Store, state: Arc<LeaseState>, shared: Arc<Shared>, me: HostRecord) -> Self {
        ClusterHandle {
            store,
            state,
            shared,
            me,
        }
    }

    /// The seconds left on etcd lease `id` (`None` if unknown, -1 if expired).
    async fn ttl(&self, id: i64) -> Option<i64> {
        if id == 0 {
            return None;
        }
        self.store
            .call("reading a lease", |mut c| async move {
                c.lease_time_to_live(id, None).await
            })
            .await
            .ok()
            .map(|r| r.ttl())
    }

    /// Every host, this one included, with the time left on its lease.
    pub async fn list(&self) -> Result<Vec<HostInfo>, ClusterError> {
        let listing = match read_hosts(&self.store).await {
            Ok(l) => l,
            Err(e) if e.is_unreachable() => return Ok(self.cached_hosts()),
            Err(e) => return Err(e),
        };
        let entries: Vec<(HostRecord, i64)> = listing
            .hosts
            .into_values()
            .filter_map(|l| l.record.ok().map(|r| (r, l.lease)))
            .collect();
        let ids: Vec<i64> = entries.iter().map(|(_, id)| *id).collect();
        let ttls: Vec<Option<i64>> = futures::stream::iter(ids)
            .map(|id| {
                let this = self.clone();
                async move { this.ttl(id).await }
            })
            .buffered(TTL_QUERIES)
            .collect()
            .await;
        Ok(entries
            .into_iter()
            .zip(ttls)
            .map(|((record, _), lease_ttl)| HostInfo {
                this_host: record.subnet == self.me.subnet && record.name == self.me.name,
                record,
                lease_ttl,
            })
            .collect())
    }

    /// The hosts as the registry last saw them (etcd unreachable).
    fn cached_hosts(&self) -> Vec<HostInfo> {
        let mut hosts: Vec<HostInfo> = self
            .shared
            .get()
            .hosts
            .into_iter()
            .map(|record| HostInfo {
                record,
                lease_ttl: None,
                this_host: false,
            })
            .collect();
        hosts.push(HostInfo {
            record: self.me.clone(),
            lease_ttl: None,
            this_host: true,
        });
        hosts.sort_by_key(|h| h.record.subnet);
        hosts
    }

    /// The state as the registry last saw it, without asking etcd.
    pub fn summary(&self) -> StoreStatus {
        let s = self.shared.get();
        StoreStatus {
            endpoints: self.store.endpoints().to_vec(),
            prefix: self.store.prefix().to_string(),
            connected: s.connected,
            member: s.member,
            leader: s.leader,
            revision: s.revision,
            last_error: s.last_error,
            hosts: s.hosts.len(),
            subnet: self.me.subnet,
            lease_id: lease_hex(self.state.id()),
            lease_ttl: None,
        }
    }

    /// The state, with the answering member, leader, revision and lease asked of etcd now.
    pub async fn live_status(&self) -> StoreStatus {
        let mut status = self.summary();
        match self.store.member().await {
            Ok(m) => {
                status.connected = true;
                status.member = Some(m.member);
                status.leader = Some(m.leader);
                status.revision = status.revision.max(m.revision);
                status.lease_ttl = self.ttl(self.state.id()).await;
            }
            Err(e) => {
                status.connected = false;
                status.last_error = Some(e.to_string());
            }
        }
        status
    }

    /// Remove another host's record and revoke its lease (a dead host).
    pub async fn remove(&self, name: &str) -> Result<HostInfo, ClusterError> {
        if name == self.me.name {
            return Err(ClusterError::IsThisHost(name.to_string()));
        }
        let listing = read_hosts(&self.store).await?;
        let (record, lease) = listing
            .hosts
            .into_values()
            .find_map(|l| {
                l.record
                    .ok()
                    .filter(|r| r.name == name)
                    .map(|r| (r, l.lease))
            })
            .ok_or_else(|| ClusterError::NoSuchHost(name.to_string()))?;
        let key = subnet_key(self.store.prefix(), record.subnet);
        self.store
            .call(format!("deleting {key}"), |mut c| {
                let key = key.clone();
                async move { c.delete(key, None).await }
            })
            .await?;
        if lease != 0 {
            revoke(&self.store, lease).await;
        }
        log::info!(
            "cluster: removed host {} ({}, {}) from the store",
            record.name,
            record.underlay_ip,
            record.subnet
        );
        Ok(HostInfo {
            record,
            lease_ttl: None,
            this_host: false,
        })
    }

    /// Leave the cluster: revoke this host's lease, which deletes its record
    /// (every other host drops it at once).
    pub async fn leave(&self) -> Result<(), ClusterError> {
        let id = self.state.id();
        if id != 0 {
            self.store
                .call("revoking this host's lease", |mut c| async move {
                    c.lease_revoke(id).await
                })
                .await?;
            self.state.set_id(0);
        }
        log::info!("cluster: left: lease of {} released", self.me.subnet);
        Ok(())
    }
}

fn boxed(e: ClusterError) -> SourceError {
    SourceError::Cluster(Box::new(e))
}

#[async_trait::async_trait]
impl ClusterView for ClusterHandle {
    async fn hosts(&self) -> Result<Vec<HostInfo>, SourceError> {
        self.list().await.map_err(boxed)
    }

    async fn remove_host(&self, name: &str) -> Result<HostInfo, SourceError> {
        self.remove(name).await.map_err(boxed)
    }

    fn summary(&self) -> StoreStatus {
        ClusterHandle::summary(self)
    }

    async fn status(&self) -> StoreStatus {
        self.live_status().await
    }
}
