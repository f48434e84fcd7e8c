//! The [`NetworkDirectory`] of the cluster store: overlay networks
//! ([`super::networks`]), their addresses ([`super::ipam`]) and this host's
//! endpoint records ([`super::endpoints`]), all in etcd (layout in
//! [`crate::model::network_store`]). Every answer is read from etcd now;
//! while it is unreachable the calls fail with the reason (forwarding goes
//! on with what the registry's watch installed).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use etcd_client::{GetOptions, Txn, TxnResponse};
use ipnet::Ipv4Net;

use crate::model::cluster::ClusterSettings;
use crate::model::overlay_network::{EndpointRecord, NetworkRequest, NetworkSpec, NetworkView};
use crate::sources::cluster::client::Store;
use crate::sources::cluster::keeper::LeaseState;
use crate::sources::cluster::lease::Lease;
use crate::sources::cluster::ClusterError;
use crate::sources::{NetworkDirectory, SourceError};

/// How many times a transaction that lost a race is tried again.
pub(super) const TRIES: u32 = 64;

/// The cluster store's networks, IPAM and endpoint records; cheap to clone.
#[derive(Clone)]
pub struct Directory {
    pub(super) store: Store,
    pub(super) state: Arc<LeaseState>,
    /// This host's name in the store.
    pub(super) me: String,
    /// This host's underlay address.
    pub(super) underlay_ip: Ipv4Addr,
    /// The cluster's settings (the hosts' pool and per-host VNI).
    pub(super) settings: ClusterSettings,
    /// Where networks without a subnet get theirs, and the subnets' length.
    pub(super) network_pool: (Ipv4Net, u8),
    /// This host's endpoint records, to publish again under a new etcd lease.
    pub(super) published: Arc<Mutex<Published>>,
    /// Addresses this host's requests are trying to take right now, so
    /// that concurrent requests of one host do not race for the same one.
    pub(super) trying: Arc<Mutex<std::collections::BTreeSet<(String, Ipv4Addr)>>>,
    /// Every network and endpoint record, as [`super::netview`] follows
    /// them (empty until [`Directory::set_view`]).
    pub(super) view: tokio::sync::watch::Receiver<Arc<NetworkView>>,
}

/// The endpoint records this host published, and the etcd lease they are bound to.
#[derive(Debug, Default)]
pub(super) struct Published {
    /// By (network, address).
    pub records: BTreeMap<(String, Ipv4Addr), EndpointRecord>,
    /// The etcd lease they were written under.
    pub lease: i64,
}

/// A value read from etcd with its revisions.
#[derive(Clone, Debug)]
pub(super) struct Read<T> {
    /// The value, or why it cannot be parsed.
    pub value: Result<T, String>,
    /// The key's create revision (identifies this incarnation of the key).
    pub create_revision: i64,
    /// The key's last modification.
    pub mod_revision: i64,
}

impl Directory {
    /// The directory of `lease`'s store, for this host.
    pub fn new(lease: &Lease) -> Directory {
        Directory {
            store: lease.store.clone(),
            state: lease.state.clone(),
            me: lease.record.name.clone(),
            underlay_ip: lease.record.underlay_ip,
            settings: lease.settings.clone(),
            network_pool: lease.network_pool,
            published: Arc::default(),
            trying: Arc::default(),
            view: tokio::sync::watch::channel(Arc::default()).1,
        }
    }

    /// Answer [`NetworkDirectory::subscribe_view`] with `view` (from
    /// [`super::netview::spawn`]).
    pub fn set_view(&mut self, view: tokio::sync::watch::Receiver<Arc<NetworkView>>) {
        self.view = view;
    }

    /// The key prefix.
    pub(super) fn prefix(&self) -> &str {
        self.store.prefix()
    }

    /// Run `txn`; `what` names it in errors.
    pub(super) async fn txn(&self, what: String, txn: Txn) -> Result<TxnResponse, ClusterError> {
        self.store
            .call(what, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await
    }

    /// Every key under `prefix`, parsed with `parse`, and the store's revision.
    pub(super) async fn read_prefix<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
        keys_only: bool,
    ) -> Result<(i64, Vec<(String, Read<T>)>), ClusterError> {
        let resp = self
            .store
            .call(format!("reading {prefix}"), |mut c| {
                let prefix = prefix.to_string();
                let mut opts = GetOptions::new().with_prefix();
                if keys_only {
                    opts = opts.with_keys_only();
                }
                async move { c.get(prefix, Some(opts)).await }
            })
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        let items = resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = kv.key_str().ok()?.to_string();
                let value = if keys_only {
                    Err("not read".to_string())
                } else {
                    serde_json::from_slice(kv.value()).map_err(|e| e.to_string())
                };
                Some((
                    key,
                    Read {
                        value,
                        create_revision: kv.create_revision(),
                        mod_revision: kv.mod_revision(),
                    },
                ))
            })
            .collect();
        Ok((revision, items))
    }

    /// One key, parsed.
    pub(super) async fn read_key<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<Read<T>>, ClusterError> {
        let resp = self
            .store
            .call(format!("reading {key}"), |mut c| {
                let key = key.to_string();
                async move { c.get(key, None).await }
            })
            .await?;
        Ok(resp.kvs().first().map(|kv| Read {
            value: serde_json::from_slice(kv.value()).map_err(|e| e.to_string()),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        }))
    }

    /// The network called `name`, with its key's revisions.
    pub(super) async fn spec_of(
        &self,
        name: &str,
    ) -> Result<(NetworkSpec, Read<NetworkSpec>), ClusterError> {
        crate::model::network_store::check_network_name(name)?;
        let key = crate::model::network_store::network_key(self.prefix(), name);
        let read = self
            .read_key::<NetworkSpec>(&key)
            .await?
            .ok_or_else(|| ClusterError::NoSuchNetwork(name.to_string()))?;
        let spec = read
            .value
            .clone()
            .map_err(|reason| ClusterError::BadValue {
                key: key.clone(),
                reason,
            })?;
        Ok((spec, read))
    }
}

fn boxed(e: ClusterError) -> SourceError {
    SourceError::Cluster(Box::new(e))
}

#[async_trait::async_trait]
impl NetworkDirectory for Directory {
    async fn create_network(&self, req: NetworkRequest) -> Result<NetworkSpec, SourceError> {
        self.create(req).await.map_err(boxed)
    }

    async fn remove_network(&self, name: &str) -> Result<NetworkSpec, SourceError> {
        self.remove(name).await.map_err(boxed)
    }

    async fn networks(&self) -> Result<Vec<NetworkSpec>, SourceError> {
        self.list().await.map_err(boxed)
    }

    async fn network(&self, name: &str) -> Result<(NetworkSpec, Vec<EndpointRecord>), SourceError> {
        self.inspect(name).await.map_err(boxed)
    }

    async fn request_address(
        &self,
        network: &str,
        wanted: Option<Ipv4Addr>,
        holder: &str,
    ) -> Result<Ipv4Addr, SourceError> {
        self.request(network, wanted, holder).await.map_err(boxed)
    }

    async fn release_address(&self, network: &str, ip: Ipv4Addr) -> Result<(), SourceError> {
        self.release(network, ip).await.map_err(boxed)
    }

    async fn publish_endpoint(&self, record: &EndpointRecord) -> Result<(), SourceError> {
        self.publish(record).await.map_err(boxed)
    }

    async fn withdraw_endpoint(&self, network: &str, ip: Ipv4Addr) -> Result<(), SourceError> {
        self.withdraw(network, ip).await.map_err(boxed)
    }

    fn subscribe_view(&self) -> tokio::sync::watch::Receiver<Arc<NetworkView>> {
        self.view.clone()
    }
}
