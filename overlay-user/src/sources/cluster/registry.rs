//! The registry, the cluster's control source: keeps this host's record
//! current under its lease, reads every host's record and watches the
//! prefix from the next revision, and turns the other hosts into peers
//! (source `cluster`) through the core. See the [module docs](super).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use ipnet::Ipv4Net;

use crate::agent::handle::{Core, CoreGuard};
use crate::model::change::Change;
use crate::model::cluster::{subnet_key, ClusterSettings, HostRecord};
use crate::model::peer::PeerSpec;
use crate::model::source::Source;
use crate::model::validation::parse_vtep_mac;
use crate::sources::cluster::client::Store;
use crate::sources::cluster::directory::Directory;
use crate::sources::cluster::keeper::{Keeper, LeaseState};
use crate::sources::cluster::lease::{
    claim, parse_record, read_hosts, refresh_record, Claim, Lease,
};
use crate::sources::cluster::netwatch::NetWatch;
use crate::sources::cluster::saved::{self, SavedLease};
use crate::sources::cluster::view::{ClusterHandle, Shared};
use crate::sources::cluster::ClusterError;
use crate::sources::ControlSource;

/// The first retry after losing etcd comes this soon.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Retries are never further apart than this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often the saved lease is rewritten while hosts change.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Why a session with etcd ended.
#[derive(Debug)]
pub(super) enum End {
    /// etcd failed or went away.
    Failed(ClusterError),
    /// The watch's start revision was compacted: read everything again.
    Compacted {
        /// The revision the watch started from.
        from: i64,
        /// The compaction revision etcd reported.
        compacted: i64,
    },
}

impl From<ClusterError> for End {
    fn from(e: ClusterError) -> Self {
        End::Failed(e)
    }
}

/// The cluster's control source; see the module docs.
pub struct ClusterSource {
    store: Store,
    state: Arc<LeaseState>,
    shared: Arc<Shared>,
    record: HostRecord,
    settings: ClusterSettings,
    ttl: u64,
    saved_path: PathBuf,
    cached: Vec<HostRecord>,
    /// The other hosts installed as peers (or known and skipped), by subnet.
    installed: BTreeMap<Ipv4Net, HostRecord>,
    /// The last problem logged per subnet, to log each once.
    warned: BTreeMap<Ipv4Net, String>,
    /// The last store revision seen.
    pub(super) revision: i64,
    /// `Some(true)` while connected, `Some(false)` while not, `None` before the first try.
    connected: Option<bool>,
    dirty: bool,
    /// Another host took this host's subnet while it was away.
    held_by: Option<HostRecord>,
    /// The overlay networks and other hosts' endpoints on them.
    nets: NetWatch,
    /// This host's endpoint records, published again under a new lease.
    directory: Directory,
    _keeper: Keeper,
}

impl ClusterSource {
    /// The source for `lease` (from [`super::lease::acquire`]) and the API's view of it.
    pub fn new(lease: Lease) -> (ClusterSource, ClusterHandle) {
        let shared = Arc::new(Shared::default());
        let handle = ClusterHandle::new(
            lease.store.clone(),
            lease.state.clone(),
            shared.clone(),
            lease.record.clone(),
        );
        let directory = Directory::new(&lease);
        let nets = NetWatch::new(
            lease.record.name.clone(),
            lease.record.underlay_ip,
            lease.cached_networks,
        );
        let source = ClusterSource {
            nets,
            directory,
            store: lease.store,
            state: lease.state,
            shared,
            record: lease.record,
            settings: lease.settings,
            ttl: lease.ttl,
            saved_path: lease.saved_path,
            cached: lease.cached,
            installed: BTreeMap::new(),
            warned: BTreeMap::new(),
            revision: 0,
            connected: None,
            dirty: false,
            held_by: None,
            _keeper: lease.keeper,
        };
        (source, handle)
    }

    /// The overlay networks' directory of this store, for the API and the
    /// sources that make network endpoints.
    pub fn directory(&self) -> Directory {
        self.directory.clone()
    }

    /// The store's client (for [`super::netview::spawn`]).
    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// The view of networks and endpoint records the directory hands out
    /// ([`NetworkDirectory::subscribe_view`](crate::sources::NetworkDirectory::subscribe_view)),
    /// from [`super::netview::spawn`].
    pub fn set_view(
        &mut self,
        view: tokio::sync::watch::Receiver<Arc<crate::model::overlay_network::NetworkView>>,
    ) {
        self.directory.set_view(view);
    }

    /// Installs the last-known hosts (from the saved lease) as peers now.
    /// overlayd calls it at start before the core removes what no source
    /// added again, so a restart keeps forwarding to them; [`Self::follow`]
    /// does it otherwise. Once only.
    pub async fn install_cached(&mut self, core: &Core) {
        self.record.mode = Some(core.lock().await.mode());
        let cached: BTreeMap<Ipv4Net, Result<HostRecord, String>> =
            std::mem::take(&mut self.cached)
                .into_iter()
                .map(|r| (r.subnet, Ok(r)))
                .collect();
        if !cached.is_empty() {
            let (added, _) = self.reconcile(core, cached).await;
            log::info!("cluster: {added} hosts from the saved lease installed as peers");
        }
        let (nets, eps) = self.nets.counts();
        if nets > 0 {
            self.nets.sync(&mut core.lock().await).await;
            log::info!("cluster: {nets} networks and {eps} remote endpoints from the saved lease");
        }
    }

    /// Run forever: the last-known hosts first, then sessions with etcd.
    pub async fn follow(mut self, core: Core) {
        self.install_cached(&core).await;
        let mut backoff = MIN_BACKOFF;
        loop {
            let e = match self.session(&core).await {
                End::Compacted { from, compacted } => {
                    log::info!("cluster: watching from revision {from} failed: compacted up to {compacted}; reading every host again");
                    continue;
                }
                End::Failed(e) => e,
            };
            if self.connected == Some(true) {
                backoff = MIN_BACKOFF;
            }
            if self.connected != Some(false) {
                log::warn!(
                    "cluster: {e}; forwarding continues with the {} hosts known, retrying every {} s at most",
                    self.installed.len(),
                    MAX_BACKOFF.as_secs()
                );
            } else {
                log::debug!("cluster: {e}");
            }
            self.connected = Some(false);
            self.shared.update(|s| {
                s.connected = false;
                s.last_error = Some(e.to_string());
            });
            self.flush();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One session: register, read everything, then follow the watch.
    async fn session(&mut self, core: &Core) -> End {
        match self.session_inner(core).await {
            Ok(never) => match never {},
            Err(end) => end,
        }
    }

    async fn session_inner(&mut self, core: &Core) -> Result<std::convert::Infallible, End> {
        self.resync(core).await?;
        Err(self.watch_from(core, self.revision + 1).await)
    }

    /// Register, read every record and make the installed hosts those.
    pub(super) async fn resync(&mut self, core: &Core) -> Result<(), ClusterError> {
        self.register().await?;
        let listing = read_hosts(&self.store).await?;
        let wanted = listing
            .hosts
            .into_iter()
            .map(|(subnet, l)| (subnet, l.record))
            .collect();
        let (added, removed) = self.reconcile(core, wanted).await;
        let (net_revision, known) = self.nets.read(&self.store).await?;
        self.nets.replace(known);
        self.nets.sync(&mut core.lock().await).await;
        // Events between the two reads come again in the watch; applying
        // them twice ends in the same state.
        self.revision = listing.revision.min(net_revision);
        let member = self.store.member().await.ok();
        if self.connected != Some(true) {
            log::info!(
                "cluster: connected to etcd{} at revision {}: {} other hosts ({added} added, {removed} removed); watching",
                member.as_ref().map(|m| format!(" (member {})", m.member)).unwrap_or_default(),
                self.revision,
                self.installed.len(),
            );
        }
        self.connected = Some(true);
        self.shared.update(|s| {
            s.connected = true;
            s.last_error = self.held_by.as_ref().map(held_message);
            s.revision = self.revision;
            if let Some(m) = member {
                s.member = Some(m.member);
                s.leader = Some(m.leader);
            }
        });
        self.flush();
        Ok(())
    }

    /// Follow the records from revision `from` until the watch fails or
    /// its start revision turns out to be compacted.
    pub(super) async fn watch_from(&mut self, core: &Core, from: i64) -> End {
        match self.watch_inner(core, from).await {
            Ok(never) => match never {},
            Err(end) => end,
        }
    }

    async fn watch_inner(
        &mut self,
        core: &Core,
        from: i64,
    ) -> Result<std::convert::Infallible, End> {
        // Hosts, networks and endpoint records alike.
        let prefix = format!("{}/", self.store.prefix());
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let mut stream = self
            .store
            .call(format!("watching {prefix}"), |mut c| {
                let (prefix, options) = (prefix.clone(), options.clone());
                async move { c.watch(prefix, Some(options)).await }
            })
            .await?;
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        loop {
            tokio::select! {
                message = stream.message() => {
                    let resp = match message {
                        Ok(Some(resp)) => resp,
                        Ok(None) => return Err(self.watch_error("the watch ended".into()).await),
                        Err(e) => return Err(self.watch_error(e.to_string()).await),
                    };
                    if resp.compact_revision() > 0 {
                        return Err(End::Compacted { from, compacted: resp.compact_revision() });
                    }
                    if resp.canceled() {
                        return Err(self.watch_error(format!("the watch was cancelled: {}", resp.cancel_reason())).await);
                    }
                    self.events(core, resp.events()).await?;
                    if let Some(h) = resp.header() {
                        self.revision = self.revision.max(h.revision());
                    }
                    let revision = self.revision;
                    self.shared.update(|s| s.revision = revision);
                }
                _ = self.state.lost.notified() => self.register().await?,
                _ = tick.tick() => self.flush(),
            }
        }
    }

    /// A broken watch: etcd gone (the endpoints are probed to say why), or the watch alone.
    async fn watch_error(&self, reason: String) -> End {
        End::Failed(self.store.explain(&format!("watching: {reason}")).await)
    }

    /// Apply one watch response's events, under one lock of the core.
    async fn events(&mut self, core: &Core, events: &[etcd_client::Event]) -> Result<(), End> {
        let own_key = subnet_key(self.store.prefix(), self.record.subnet);
        let mut reregister = false;
        let mut nets_changed = false;
        let mut agent = core.lock().await;
        for event in events {
            let Some(kv) = event.kv() else { continue };
            let Ok(key) = kv.key_str() else { continue };
            self.revision = self.revision.max(kv.mod_revision());
            if self
                .nets
                .event(self.store.prefix(), key, event.event_type(), kv.value())
            {
                nets_changed = true;
                continue;
            }
            if key == own_key {
                reregister |= event.event_type() == EventType::Delete;
                continue;
            }
            match event.event_type() {
                EventType::Put => {
                    if let Some((subnet, record)) =
                        parse_record(self.store.prefix(), key, kv.value())
                    {
                        self.install(&mut agent, subnet, record).await;
                    }
                }
                EventType::Delete => {
                    if let Some(subnet) =
                        crate::model::cluster::parse_subnet_key(self.store.prefix(), key)
                    {
                        if let Some(gone) = self.remove(&mut agent, subnet).await {
                            log::info!(
                                "cluster: host {} ({}) left: {subnet}",
                                gone.name,
                                gone.underlay_ip
                            );
                        }
                    }
                }
            }
        }
        if nets_changed {
            self.nets.sync(&mut agent).await;
        }
        drop(agent);
        if reregister {
            log::warn!("cluster: this host's record was deleted; registering again");
            self.register().await?;
        }
        Ok(())
    }

    /// Make the store hold this host's current record under a live lease.
    async fn register(&mut self) -> Result<(), ClusterError> {
        let id = self.state.id();
        if id != 0 && refresh_record(&self.store, &self.record, id).await? {
            self.held_by = None;
            self.directory.republish().await;
            return Ok(());
        }
        match claim(&self.store, &self.record, self.ttl, id).await? {
            Claim::Claimed(new) => {
                self.state.set_id(new);
                self.held_by = None;
                self.dirty = true;
                log::info!(
                    "cluster: registered {} as {} under lease {new:x}",
                    self.record.subnet,
                    self.record.name
                );
                self.directory.republish().await;
            }
            Claim::Held(holder) => {
                if self.held_by.as_ref() != Some(&holder) {
                    log::error!("cluster: {}", held_message(&holder));
                }
                self.held_by = Some(holder);
            }
            Claim::Raced => {
                return Err(ClusterError::Etcd {
                    what: format!("registering {}", self.record.subnet),
                    reason: "the key changed while it was written".into(),
                })
            }
        }
        Ok(())
    }

    /// Make the installed hosts those of `wanted`; returns (added or changed, removed).
    async fn reconcile(
        &mut self,
        core: &Core,
        wanted: BTreeMap<Ipv4Net, Result<HostRecord, String>>,
    ) -> (usize, usize) {
        let mut agent = core.lock().await;
        let gone: Vec<Ipv4Net> = self
            .installed
            .keys()
            .filter(|s| !wanted.get(s).is_some_and(Result::is_ok))
            .copied()
            .collect();
        let mut removed = 0;
        for subnet in gone {
            if self.remove(&mut agent, subnet).await.is_some() {
                removed += 1;
            }
        }
        let mut added = 0;
        for (subnet, record) in wanted {
            if self.install(&mut agent, subnet, record).await {
                added += 1;
            }
        }
        (added, removed)
    }

    fn warn_once(&mut self, subnet: Ipv4Net, message: String) {
        if self.warned.get(&subnet) != Some(&message) {
            log::warn!("cluster: {message}");
            self.warned.insert(subnet, message);
        }
    }

    /// Install (or update) another host's record as a peer; true if the peer changed.
    async fn install(
        &mut self,
        agent: &mut CoreGuard<'_>,
        subnet: Ipv4Net,
        record: Result<HostRecord, String>,
    ) -> bool {
        if subnet == self.record.subnet {
            return false;
        }
        let record = match record {
            Ok(r) => r,
            Err(reason) => {
                self.warn_once(subnet, format!("skipping the record of {subnet}: {reason}"));
                self.remove(agent, subnet).await;
                return false;
            }
        };
        if self.installed.get(&subnet) == Some(&record) {
            return false;
        }
        if record.underlay_ip == self.record.underlay_ip {
            self.warn_once(
                subnet,
                format!(
                    "skipping host {} for {subnet}: it claims this host's underlay address {}",
                    record.name, record.underlay_ip
                ),
            );
            return false;
        }
        let spec = peer_spec(&record, self.settings.vni);
        match agent.peers().get(&subnet) {
            Some(p) if p.source != Source::Cluster => {
                let source = p.source;
                self.warn_once(
                    subnet,
                    format!(
                        "host {} ({}) has {subnet}, already a peer from {source}; keeping that one",
                        record.name, record.underlay_ip
                    ),
                );
                return false;
            }
            Some(p) if p.spec == spec => {
                self.installed.insert(subnet, record);
                self.dirty = true;
                return false;
            }
            _ => {}
        }
        match agent.apply(Source::Cluster, Change::AddPeer(spec)).await {
            Ok(()) => {
                log::debug!(
                    "cluster: host {} ({}) has {subnet}",
                    record.name,
                    record.underlay_ip
                );
                self.warned.remove(&subnet);
                self.installed.insert(subnet, record);
                self.dirty = true;
                true
            }
            Err(e) => {
                self.warn_once(
                    subnet,
                    format!("host {} ({}): {e}", record.name, record.underlay_ip),
                );
                false
            }
        }
    }

    /// Forget another host; its peer goes if the cluster put it there.
    async fn remove(&mut self, agent: &mut CoreGuard<'_>, subnet: Ipv4Net) -> Option<HostRecord> {
        let gone = self.installed.remove(&subnet)?;
        self.dirty = true;
        let ours = agent
            .peers()
            .get(&subnet)
            .is_some_and(|p| p.source == Source::Cluster);
        if ours {
            if let Err(e) = agent.apply(Source::Cluster, Change::DelPeer(subnet)).await {
                log::warn!("cluster: removing peer {subnet}: {e}");
            }
        }
        Some(gone)
    }

    /// Rewrite the saved lease and the view's copy of the hosts, if they changed.
    fn flush(&mut self) {
        if !self.dirty && !self.nets.dirty {
            return;
        }
        self.dirty = false;
        self.nets.dirty = false;
        let (networks, net_endpoints) = self.nets.saved();
        let hosts: Vec<HostRecord> = self.installed.values().cloned().collect();
        let saved = SavedLease {
            version: saved::VERSION,
            prefix: self.store.prefix().to_string(),
            name: self.record.name.clone(),
            subnet: self.record.subnet,
            lease_id: self.state.id(),
            settings: self.settings.clone(),
            hosts: hosts.clone(),
            networks,
            net_endpoints,
        };
        if let Err(e) = saved::save(&self.saved_path, &saved) {
            log::error!(
                "cluster: {e}; a restart while etcd is down would not know the current hosts"
            );
        }
        self.shared.update(|s| s.hosts = hosts);
    }
}

/// The peer a host record stands for; its VTEP MAC is given only when it is not the derived one.
pub fn peer_spec(record: &HostRecord, vni: u32) -> PeerSpec {
    let derived = overlay_common::vtep_mac(record.underlay_ip.octets(), vni);
    let mac = parse_vtep_mac(&record.vtep_mac)
        .ok()
        .filter(|m| *m != derived);
    PeerSpec {
        subnet: record.subnet,
        underlay_ip: record.underlay_ip,
        vtep_mac: mac,
    }
}

fn held_message(holder: &HostRecord) -> String {
    format!(
        "this host's subnet {} is now held by host {} ({}): this host keeps forwarding but is not registered; restart overlayd to lease another subnet",
        holder.subnet, holder.name, holder.underlay_ip
    )
}

#[async_trait::async_trait]
impl ControlSource for ClusterSource {
    fn name(&self) -> &'static str {
        "cluster"
    }

    async fn run(self: Box<Self>, core: Core) {
        self.follow(core).await
    }
}
