//! The control sources: each learns what the overlay should carry from one
//! place and reports it to the agent core, as a peer of the others.
//!
//! - [`config`]: the config file's peers, once at start;
//! - [`api`]: the local API `overlayctl` talks to;
//! - [`docker`]: Docker's events, containers joining and leaving;
//! - [`attach`]: containers plumbed by hand (`overlayctl attach`);
//! - [`discovery`]: containers found on the bridge, every second and on
//!   netlink changes;
//! - [`cluster`]: the cluster store (etcd): this host's subnet lease and
//!   the other hosts as peers;
//! - [`metrics`]: not a source of changes, but served beside them: the
//!   Prometheus `/metrics` endpoint, read from the core at scrape time;
//! - [`names`]: not a control source but the DNS resolver for the overlay
//!   networks' container names, fed by [`NetworkDirectory::subscribe_view`];
//! - room for the next ones (Docker's network and IPAM plugins): a new
//!   module here implementing [`ControlSource`].
//!
//! Owns: the interfaces the sources share: [`ControlSource`] (how a source
//! runs), [`Plumber`] (how the API asks the attach source to plumb) and
//! [`ClusterView`] (how the API asks the cluster source about hosts),
//! [`ConnectionState`] (whether a source reaches its service, for
//! [`metrics`]).
//! Every source reports changes through the one
//! [`Core`] handle.
//!
//! Must not touch: the dataplane (only the core drives it), and each
//! other: a source never names another; what two of them need lives below
//! (`model`, `sys`) or in this module's interfaces.

pub mod api;
pub mod attach;
pub mod cluster;
pub mod config;
pub mod discovery;
pub mod docker;
pub mod metrics;
pub mod names;
pub mod plugin;

#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use crate::agent::handle::Core;
use crate::model::attach::{Attachment, Detachment, Target};
use crate::model::cluster::HostInfo;
use crate::model::overlay_network::{EndpointRecord, NetworkRequest, NetworkSpec, NetworkView};
use crate::model::status::StoreStatus;

/// A control source: learns what the overlay should carry and reports it
/// to the core.
#[async_trait::async_trait]
pub trait ControlSource: Send {
    /// Its name, as in logs.
    fn name(&self) -> &'static str;

    /// Report to `core` what the source sees. A one-shot source (the config
    /// file) returns when done; the others run until their task is aborted.
    async fn run(self: Box<Self>, core: Core);
}

/// Whether a source is connected to the service it follows (Docker), shared
/// with whoever reports it. Cloning it shares it.
#[derive(Clone, Debug, Default)]
pub struct ConnectionState(Arc<AtomicU8>);

impl ConnectionState {
    /// Record that the service is reachable now, or not.
    pub fn set(&self, connected: bool) {
        self.0
            .store(if connected { 1 } else { 2 }, Ordering::Relaxed);
    }

    /// `None` before the first attempt.
    pub fn get(&self) -> Option<bool> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            v => Some(v == 1),
        }
    }
}

/// Runs `source` on a task of its own.
pub fn spawn(source: Box<dyn ControlSource>, core: Core) -> tokio::task::JoinHandle<()> {
    log::debug!("control source {} started", source.name());
    tokio::spawn(source.run(core))
}

/// Plumbing a container, asked for through another source (the API's
/// `attach` and `detach`) and done by the attach source.
#[async_trait::async_trait]
pub trait Plumber: Send + Sync {
    /// Plug `target` into the bridge with `address` ("a.b.c.d/len") and
    /// register it; `mtu` defaults to the underlay's minus 50.
    async fn attach(
        &self,
        core: &Core,
        target: Target,
        address: &str,
        mtu: Option<u32>,
    ) -> Result<Attachment, SourceError>;

    /// Plug `target` into the overlay network `network` with `ip` (else an
    /// address from its IPAM), report it and publish its record.
    async fn attach_network(
        &self,
        core: &Core,
        target: Target,
        network: &str,
        ip: Option<Ipv4Addr>,
        mtu: Option<u32>,
    ) -> Result<Attachment, SourceError>;

    /// Undo [`Plumber::attach`] or [`Plumber::attach_network`].
    async fn detach(&self, core: &Core, target: Target) -> Result<Detachment, SourceError>;
}

/// The cluster store as the API sees it, answered by the cluster source.
#[async_trait::async_trait]
pub trait ClusterView: Send + Sync {
    /// Every host in the store, this one marked, with its lease time left.
    async fn hosts(&self) -> Result<Vec<HostInfo>, SourceError>;

    /// Remove a (dead) host's record and lease.
    async fn remove_host(&self, name: &str) -> Result<HostInfo, SourceError>;

    /// The store's state as last seen, without asking etcd (for `status`).
    fn summary(&self) -> StoreStatus;

    /// The store's state, asked of etcd now.
    async fn status(&self) -> StoreStatus;
}

/// The cluster's overlay networks, their address management and endpoint
/// records, answered by the cluster source from the store and used by the
/// API (`overlayctl network`), the Docker plugins and attach.
#[async_trait::async_trait]
pub trait NetworkDirectory: Send + Sync {
    /// Create a network atomically; what `req` leaves out is chosen (a
    /// free VNI, a subnet from the default pool, the first address as
    /// gateway). Refused when the name, subnet or VNI is taken.
    async fn create_network(&self, req: NetworkRequest) -> Result<NetworkSpec, SourceError>;

    /// Remove a network; refused while endpoints exist on it, naming them.
    async fn remove_network(&self, name: &str) -> Result<NetworkSpec, SourceError>;

    /// Every network, by name.
    async fn networks(&self) -> Result<Vec<NetworkSpec>, SourceError>;

    /// One network and its endpoints on every host.
    async fn network(&self, name: &str) -> Result<(NetworkSpec, Vec<EndpointRecord>), SourceError>;

    /// An address on `network` for `holder` (a container or endpoint ID),
    /// unique across all hosts: `wanted` when given and free (refused when
    /// held, naming the holder), else a free one. The gateway is never
    /// handed out.
    async fn request_address(
        &self,
        network: &str,
        wanted: Option<Ipv4Addr>,
        holder: &str,
    ) -> Result<Ipv4Addr, SourceError>;

    /// Give an address back; releasing a free one succeeds.
    async fn release_address(&self, network: &str, ip: Ipv4Addr) -> Result<(), SourceError>;

    /// Publish this host's endpoint so that every host installs it.
    async fn publish_endpoint(&self, record: &EndpointRecord) -> Result<(), SourceError>;

    /// Withdraw this host's endpoint at `ip` on `network`.
    async fn withdraw_endpoint(&self, network: &str, ip: Ipv4Addr) -> Result<(), SourceError>;

    /// Every network and endpoint record (this host's too) as the store's
    /// watch last saw them; the receiver is told at once of every change
    /// (the names resolver, `sources::names`, rebuilds its table from it).
    /// While the store is unreachable the last view stays. The default, for
    /// directories without a store (test fakes), is an empty view that
    /// never changes.
    fn subscribe_view(&self) -> tokio::sync::watch::Receiver<Arc<NetworkView>> {
        tokio::sync::watch::channel(Arc::default()).1
    }
}

/// An error one source passes to another through these interfaces.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The attach source refused or failed; its message says why.
    #[error(transparent)]
    Plumbing(Box<dyn std::error::Error + Send + Sync>),
    /// The cluster source refused or failed; its message says why.
    #[error(transparent)]
    Cluster(Box<dyn std::error::Error + Send + Sync>),
}
