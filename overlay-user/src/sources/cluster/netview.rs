//! The overlay networks and every host's endpoint records as a watch
//! channel of [`NetworkView`], for the names resolver
//! ([`NetworkDirectory::subscribe_view`](crate::sources::NetworkDirectory::subscribe_view)):
//! `<prefix>/networks/<name>` and `<prefix>/endpoints/<network>/<ip>` read
//! at one revision, then watched from the next; every watch response is
//! pushed at once (only when the view changed). When etcd is unreachable
//! the last view stays in the channel, the outage is logged once, and the
//! next session reads everything again; a compacted start revision too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, WatchOptions};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::model::network_store::{endpoints_prefix, networks_prefix};
use crate::model::overlay_network::{EndpointRecord, NetworkSpec, NetworkView};
use crate::sources::cluster::client::Store;
use crate::sources::cluster::ClusterError;

/// The pause between sessions while etcd is unreachable.
const RETRY: Duration = Duration::from_secs(1);

/// Follows the store; [`spawn`] runs it.
struct Follower {
    store: Store,
    tx: watch::Sender<Arc<NetworkView>>,
    networks: BTreeMap<String, NetworkSpec>,
    endpoints: BTreeMap<String, EndpointRecord>,
    /// Keys whose value did not parse, to log each once.
    bad: BTreeMap<String, String>,
}

/// Why a session ended.
enum End {
    /// The watch's start revision was compacted: read again at once.
    Compacted,
    /// etcd failed or went away.
    Failed(ClusterError),
}

impl From<ClusterError> for End {
    fn from(e: ClusterError) -> Self {
        End::Failed(e)
    }
}

/// Follow `store`'s networks and endpoint records on a task of its own;
/// the receiver starts with an empty view.
pub fn spawn(
    store: Store,
) -> (
    watch::Receiver<Arc<NetworkView>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = watch::channel(Arc::new(NetworkView::default()));
    let follower = Follower {
        store,
        tx,
        networks: BTreeMap::new(),
        endpoints: BTreeMap::new(),
        bad: BTreeMap::new(),
    };
    (rx, tokio::spawn(follower.run()))
}

impl Follower {
    async fn run(mut self) {
        let mut down = false;
        loop {
            match self.session(&mut down).await {
                End::Compacted => continue,
                End::Failed(e) if !down => {
                    log::warn!(
                        "dns: the store's records: {e}; the {} names known are kept until it is back",
                        self.endpoints.len()
                    );
                    down = true;
                }
                End::Failed(e) => log::debug!("dns: the store's records: {e}"),
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    async fn session(&mut self, down: &mut bool) -> End {
        let revision = match self.read_all().await {
            Ok(r) => r,
            Err(e) => return End::Failed(e),
        };
        if std::mem::take(down) {
            log::info!("dns: the store's records are back");
        }
        self.publish();
        match self.watch_from(revision + 1).await {
            Ok(never) => match never {},
            Err(end) => end,
        }
    }

    /// Read every network and endpoint record at one revision; returns it.
    async fn read_all(&mut self) -> Result<i64, ClusterError> {
        let nets = networks_prefix(self.store.prefix());
        let (networks, revision) = self.read(&nets, 0).await?;
        let eps = endpoints_prefix(self.store.prefix());
        let (endpoints, _) = self.read(&eps, revision).await?;
        self.networks.clear();
        self.endpoints.clear();
        for (key, value) in networks {
            self.put_network(key, &value);
        }
        for (key, value) in endpoints {
            self.put_endpoint(key, &value);
        }
        Ok(revision)
    }

    /// The keys and values under `prefix` (at `revision`, 0: the latest)
    /// and the revision read.
    async fn read(
        &self,
        prefix: &str,
        revision: i64,
    ) -> Result<(Vec<(String, Vec<u8>)>, i64), ClusterError> {
        let resp = self
            .store
            .call(format!("reading {prefix}"), |mut c| {
                let prefix = prefix.to_string();
                async move {
                    let opts = GetOptions::new().with_prefix().with_revision(revision);
                    c.get(prefix, Some(opts)).await
                }
            })
            .await?;
        let kvs = resp
            .kvs()
            .iter()
            .filter_map(|kv| Some((kv.key_str().ok()?.to_string(), kv.value().to_vec())))
            .collect();
        let read = resp.header().map(|h| h.revision()).unwrap_or(revision);
        Ok((kvs, read))
    }

    async fn watch_from(&mut self, from: i64) -> Result<std::convert::Infallible, End> {
        let prefix = format!("{}/", self.store.prefix());
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let mut stream = self
            .store
            .call(format!("watching {prefix}"), |mut c| {
                let (prefix, options) = (prefix.clone(), options.clone());
                async move { c.watch(prefix, Some(options)).await }
            })
            .await?;
        let (nets, eps) = (
            networks_prefix(self.store.prefix()),
            endpoints_prefix(self.store.prefix()),
        );
        loop {
            let resp = match stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => return Err(self.failed("the watch ended").await),
                Err(e) => return Err(self.failed(&e.to_string()).await),
            };
            if resp.compact_revision() > 0 {
                return Err(End::Compacted);
            }
            if resp.canceled() {
                let why = format!("the watch was cancelled: {}", resp.cancel_reason());
                return Err(self.failed(&why).await);
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                let Ok(key) = kv.key_str() else { continue };
                let put = event.event_type() == EventType::Put;
                if key.starts_with(&nets) {
                    if put {
                        self.put_network(key.to_string(), kv.value());
                    } else {
                        self.networks.remove(key);
                    }
                } else if key.starts_with(&eps) {
                    if put {
                        self.put_endpoint(key.to_string(), kv.value());
                    } else {
                        self.endpoints.remove(key);
                    }
                }
            }
            self.publish();
        }
    }

    async fn failed(&self, reason: &str) -> End {
        End::Failed(self.store.explain(&format!("watching: {reason}")).await)
    }

    fn put_network(&mut self, key: String, value: &[u8]) {
        if let Some(spec) = self.parse::<NetworkSpec>(&key, value) {
            self.networks.insert(key, spec);
        } else {
            self.networks.remove(&key);
        }
    }

    fn put_endpoint(&mut self, key: String, value: &[u8]) {
        if let Some(record) = self.parse::<EndpointRecord>(&key, value) {
            self.endpoints.insert(key, record);
        } else {
            self.endpoints.remove(&key);
        }
    }

    /// A value, or `None` (logged once per key and problem).
    fn parse<T: DeserializeOwned>(&mut self, key: &str, value: &[u8]) -> Option<T> {
        match serde_json::from_slice(value) {
            Ok(v) => {
                self.bad.remove(key);
                Some(v)
            }
            Err(e) => {
                let e = e.to_string();
                if self.bad.get(key) != Some(&e) {
                    log::warn!("dns: {key} is not a valid record ({e}); skipped");
                    self.bad.insert(key.to_string(), e);
                }
                None
            }
        }
    }

    /// Push the view if it changed.
    fn publish(&self) {
        let view = NetworkView {
            networks: self.networks.values().cloned().collect(),
            endpoints: self.endpoints.values().cloned().collect(),
        };
        self.tx.send_if_modified(|current| {
            if **current == view {
                false
            } else {
                *current = Arc::new(view);
                true
            }
        });
    }
}
