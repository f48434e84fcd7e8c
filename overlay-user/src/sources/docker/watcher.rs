//! Follows Docker and keeps the core's Docker endpoints in step; see the
//! [module docs](super).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use bollard::Docker;
use futures::StreamExt;
use ipnet::Ipv4Net;

use crate::agent::handle::{Core, CoreGuard};
use crate::model::attach::{container_ifname, CONTAINER_PREFIX};
use crate::model::change::Change;
use crate::model::config::DockerConfig;
use crate::model::source::Source;
use crate::model::status::Connection;
use crate::model::validation::format_mac;
use crate::sources::docker::containers::{container_info, ContainerInfo};
use crate::sources::{ConnectionState, ControlSource};
use crate::sys::docker::{api_error, connect, inspect, short_id, veth_peers};
use crate::sys::error::SysError;
use crate::sys::netlink::{Netlink, RtNetlink};

/// The first retry after losing Docker comes this soon.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Retries are never further apart than this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Events are replayed from this long before each (re)connection.
const REPLAY: Duration = Duration::from_secs(2);

/// An endpoint this watcher registered.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Owned {
    /// The container's full ID.
    container: String,
    /// The host-side interface.
    ifname: String,
}

/// A container endpoint with its host-side interface found.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Resolved {
    ip: Ipv4Addr,
    ifname: String,
    mac: [u8; 6],
}

/// Follows Docker and keeps the core's Docker endpoints in step; see the module docs.
pub struct Watcher {
    cfg: DockerConfig,
    subnet: Ipv4Net,
    net: Arc<dyn Netlink>,
    owned: BTreeMap<Ipv4Addr, Owned>,
    /// `Some(true)` while connected, `Some(false)` while not, `None` before the first try.
    connected: Option<bool>,
    /// `connected`, for the metrics.
    state: ConnectionState,
}

impl Watcher {
    /// A watcher for the `[docker]` settings `cfg`, for containers of
    /// `subnet`, if the section is enabled (then it says so in the log).
    pub fn from_config(cfg: &DockerConfig, subnet: Ipv4Net) -> Result<Option<Watcher>, SysError> {
        if !cfg.enabled {
            return Ok(None);
        }
        let net: Arc<dyn Netlink> = Arc::new(RtNetlink::connect()?);
        log::info!(
            "docker: following {} for networks {}",
            cfg.socket.display(),
            cfg.networks.join(", ")
        );
        Ok(Some(Watcher::new(cfg.clone(), subnet, net)))
    }

    /// A watcher for the `[docker]` settings `cfg`; `net` queries the host's namespace.
    pub fn new(cfg: DockerConfig, subnet: Ipv4Net, net: Arc<dyn Netlink>) -> Watcher {
        Watcher {
            cfg,
            subnet,
            net,
            owned: BTreeMap::new(),
            connected: None,
            state: ConnectionState::default(),
        }
    }

    /// Whether the watcher is connected to Docker, as it changes.
    pub fn state(&self) -> ConnectionState {
        self.state.clone()
    }

    /// Run forever: connect, reconcile, follow events; on loss, retry with backoff.
    pub async fn follow(mut self, core: Core) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let e = match self.session(&core).await {
                Ok(()) => SysError::DockerStreamEnded {
                    socket: self.cfg.socket.clone(),
                },
                Err(e) => e,
            };
            if self.connected == Some(true) {
                backoff = MIN_BACKOFF;
            }
            if self.connected != Some(false) {
                log::warn!(
                    "docker: {e}; forwarding continues, retrying every {} s at most",
                    MAX_BACKOFF.as_secs_f32()
                );
            } else {
                log::debug!("docker: {e}");
            }
            self.connected = Some(false);
            core.lock().await.set_docker_connection(Connection {
                connected: false,
                detail: e.to_string(),
            });
            self.state.set(false);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One connection: reconcile, then handle events until the stream fails.
    async fn session(&mut self, core: &Core) -> Result<(), SysError> {
        let socket = self.cfg.socket.clone();
        let docker = connect(&socket).await?;
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(REPLAY)
            .as_secs();
        let (added, removed) = self.reconcile(core, &docker).await?;
        if self.connected != Some(true) {
            log::info!(
                "docker: connected to {} (API {}); reconciled: {} running container endpoints, {added} added, {removed} removed; following events",
                socket.display(),
                docker.client_version(),
                self.owned.len(),
            );
        }
        self.connected = Some(true);
        core.lock().await.set_docker_connection(Connection {
            connected: true,
            detail: format!(
                "connected to {} (API {})",
                socket.display(),
                docker.client_version()
            ),
        });
        self.state.set(true);
        let filters: HashMap<&str, Vec<&str>> = HashMap::from([
            ("type", vec!["container", "network"]),
            ("event", vec!["start", "die", "connect", "disconnect"]),
        ]);
        let opts = EventsOptionsBuilder::new()
            .since(&since.to_string())
            .filters(&filters)
            .build();
        let mut events = docker.events(Some(opts));
        while let Some(event) = events.next().await {
            let event = event.map_err(api_error(&socket))?;
            if let Err(e) = self.handle(core, &docker, event).await {
                if e.is_connection() {
                    return Err(e);
                }
                log::warn!("docker: {e}");
            }
        }
        Ok(())
    }

    async fn handle(
        &mut self,
        core: &Core,
        docker: &Docker,
        event: EventMessage,
    ) -> Result<(), SysError> {
        let action = event.action.as_deref().unwrap_or_default();
        let actor = event.actor.unwrap_or_default();
        let id = actor.id.unwrap_or_default();
        let attrs = actor.attributes.unwrap_or_default();
        log::debug!("docker event: {:?} {action} {id}", event.typ);
        match (event.typ, action) {
            (Some(EventMessageTypeEnum::CONTAINER), "start") => {
                self.sync_container(core, docker, &id).await
            }
            (Some(EventMessageTypeEnum::CONTAINER), "die") => {
                self.forget_container(core, &id).await;
                Ok(())
            }
            (Some(EventMessageTypeEnum::NETWORK), "connect" | "disconnect") => {
                match attrs.get("container") {
                    Some(container) => self.sync_container(core, docker, container).await,
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// Inspect a container and find the host side of its endpoints.
    async fn resolve(
        &self,
        docker: &Docker,
        id: &str,
    ) -> Result<Option<(ContainerInfo, Vec<Resolved>)>, SysError> {
        let Some(inspect) = inspect(docker, &self.cfg.socket, id).await? else {
            return Ok(None);
        };
        let info = container_info(&inspect, &self.cfg.networks, self.subnet);
        let Some(pid) = info.pid else {
            return Ok(None);
        };
        if info.endpoints.is_empty() {
            return Ok(Some((info, Vec::new())));
        }
        let peers = veth_peers(pid)
            .await
            .map_err(|reason| SysError::ContainerInterfaces {
                container: info.name.clone(),
                reason,
            })?;
        let mut resolved = Vec::new();
        for ep in &info.endpoints {
            let found = match peers.get(&ep.mac) {
                Some(&index) => self.net.link_by_index(index).await.ok(),
                None => None,
            };
            match found {
                Some(link) => resolved.push(Resolved {
                    ip: ep.ip,
                    ifname: link.name,
                    mac: ep.mac,
                }),
                None => log::warn!(
                    "docker: container {} ({}): no host-side interface for {} (MAC {}) on network {}",
                    info.name,
                    short_id(&info.id),
                    ep.ip,
                    format_mac(&ep.mac),
                    ep.network
                ),
            }
        }
        Ok(Some((info, resolved)))
    }

    /// Bring one container's endpoints in line with what Docker says now.
    async fn sync_container(
        &mut self,
        core: &Core,
        docker: &Docker,
        id: &str,
    ) -> Result<(), SysError> {
        match self.resolve(docker, id).await? {
            None => {
                self.forget_container(core, id).await;
                Ok(())
            }
            Some((info, resolved)) => {
                let mut agent = core.lock().await;
                let keep: BTreeSet<Ipv4Addr> = resolved.iter().map(|r| r.ip).collect();
                let stale: Vec<Ipv4Addr> = self
                    .owned
                    .iter()
                    .filter(|(ip, o)| o.container == info.id && !keep.contains(ip))
                    .map(|(ip, _)| *ip)
                    .collect();
                for ip in stale {
                    self.remove_owned(&mut agent, ip).await;
                }
                for r in resolved {
                    self.ensure(&mut agent, &info, r).await;
                }
                Ok(())
            }
        }
    }

    /// Register (or confirm) one endpoint of a running container.
    async fn ensure(
        &mut self,
        agent: &mut CoreGuard<'_>,
        info: &ContainerInfo,
        r: Resolved,
    ) -> bool {
        match agent.endpoints().get(&r.ip) {
            Some(e)
                if e.source == Source::Docker
                    && e.spec.ifname == r.ifname
                    && e.spec.mac == r.mac =>
            {
                self.owned.insert(
                    r.ip,
                    Owned {
                        container: info.id.clone(),
                        ifname: r.ifname,
                    },
                );
                return false;
            }
            Some(e) if matches!(e.source, Source::Api | Source::Config | Source::Attach) => {
                log::warn!(
                    "docker: container {} has {}, which is already an endpoint on {} ({}); leaving that one",
                    info.name,
                    r.ip,
                    e.spec.ifname,
                    e.source
                );
                return false;
            }
            _ => {}
        }
        let change = Change::AddEndpoint {
            ip: r.ip,
            ifname: r.ifname.clone(),
            mac: Some(r.mac),
        };
        match agent.apply(Source::Docker, change).await {
            Ok(()) => {
                log::info!(
                    "docker: container {} ({}) joined: {} on {}",
                    info.name,
                    short_id(&info.id),
                    r.ip,
                    r.ifname
                );
                self.owned.insert(
                    r.ip,
                    Owned {
                        container: info.id.clone(),
                        ifname: r.ifname,
                    },
                );
                true
            }
            Err(e) => {
                log::warn!("docker: container {}: endpoint {}: {e}", info.name, r.ip);
                false
            }
        }
    }

    /// Remove an endpoint this watcher registered, unless someone replaced it since.
    async fn remove_owned(&mut self, agent: &mut CoreGuard<'_>, ip: Ipv4Addr) -> bool {
        let Some(o) = self.owned.remove(&ip) else {
            return false;
        };
        let ours = agent
            .endpoints()
            .get(&ip)
            .is_some_and(|e| e.source == Source::Docker && e.spec.ifname == o.ifname);
        if !ours {
            return false;
        }
        match agent.apply(Source::Docker, Change::DelEndpoint(ip)).await {
            Ok(()) => {
                log::info!(
                    "docker: container {} left: {ip} on {} removed",
                    short_id(&o.container),
                    o.ifname
                );
                true
            }
            Err(e) => {
                log::warn!("docker: removing endpoint {ip}: {e}");
                false
            }
        }
    }

    /// A container stopped: remove its endpoints, and the one `attach` gave it.
    async fn forget_container(&mut self, core: &Core, id: &str) {
        let mut agent = core.lock().await;
        let ips: Vec<Ipv4Addr> = self
            .owned
            .iter()
            .filter(|(_, o)| o.container == id)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in ips {
            self.remove_owned(&mut agent, ip).await;
        }
        let attached = container_ifname(id);
        let gone: Vec<Ipv4Addr> = agent
            .endpoints()
            .values()
            .filter(|e| e.source == Source::Attach && e.spec.ifname == attached)
            .map(|e| e.spec.ip)
            .collect();
        for ip in gone {
            match agent.apply(Source::Docker, Change::DelEndpoint(ip)).await {
                Ok(()) => log::info!(
                    "docker: attached container {} stopped: {ip} on {attached} removed",
                    short_id(id)
                ),
                Err(e) => log::warn!("docker: removing endpoint {ip}: {e}"),
            }
        }
    }

    /// Make the Docker endpoints match the running containers. Returns (added, removed).
    async fn reconcile(
        &mut self,
        core: &Core,
        docker: &Docker,
    ) -> Result<(usize, usize), SysError> {
        let socket = self.cfg.socket.clone();
        let list = docker
            .list_containers(Some(ListContainersOptionsBuilder::new().all(false).build()))
            .await
            .map_err(api_error(&socket))?;
        let mut wanted = Vec::new();
        for c in list {
            let Some(id) = c.id else { continue };
            match self.resolve(docker, &id).await {
                Ok(Some(found)) => wanted.push(found),
                Ok(None) => {}
                Err(e) if e.is_connection() => return Err(e),
                Err(e) => log::warn!("docker: {e}"),
            }
        }
        let wanted_ips: BTreeSet<Ipv4Addr> = wanted
            .iter()
            .flat_map(|(_, r)| r.iter().map(|r| r.ip))
            .collect();
        let running: BTreeSet<String> = wanted.iter().map(|(i, _)| i.id.clone()).collect();
        let mut agent = core.lock().await;
        let (mut added, mut removed) = (0, 0);
        // Docker endpoints of containers that are gone (also those of a previous run of ours).
        let stale: Vec<Ipv4Addr> = agent
            .endpoints()
            .values()
            .filter(|e| e.source == Source::Docker && !wanted_ips.contains(&e.spec.ip))
            .map(|e| e.spec.ip)
            .collect();
        for ip in stale {
            self.owned.remove(&ip);
            match agent.apply(Source::Docker, Change::DelEndpoint(ip)).await {
                Ok(()) => {
                    removed += 1;
                    log::info!("docker: {ip}: its container no longer runs; removed");
                }
                Err(e) => log::warn!("docker: removing endpoint {ip}: {e}"),
            }
        }
        self.owned.retain(|ip, _| wanted_ips.contains(ip));
        for (info, resolved) in wanted {
            for r in resolved {
                if self.ensure(&mut agent, &info, r).await {
                    added += 1;
                }
            }
        }
        // Endpoints `attach` gave to containers that no longer run: their veth went with them.
        let links: BTreeSet<String> = match self.net.links().await {
            Ok(l) => l.into_iter().map(|l| l.name).collect(),
            Err(e) => {
                log::warn!("docker: listing interfaces: {e}");
                return Ok((added, removed));
            }
        };
        let orphans: Vec<Ipv4Addr> = agent
            .endpoints()
            .values()
            .filter(|e| {
                e.source == Source::Attach
                    && e.spec.ifname.starts_with(CONTAINER_PREFIX)
                    && !links.contains(&e.spec.ifname)
                    && !running
                        .iter()
                        .any(|id| container_ifname(id) == e.spec.ifname)
            })
            .map(|e| e.spec.ip)
            .collect();
        for ip in orphans {
            if agent
                .apply(Source::Docker, Change::DelEndpoint(ip))
                .await
                .is_ok()
            {
                removed += 1;
                log::info!("docker: {ip}: its attached container no longer runs; removed");
            }
        }
        Ok((added, removed))
    }
}

#[async_trait::async_trait]
impl ControlSource for Watcher {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn run(self: Box<Self>, core: Core) {
        self.follow(core).await
    }
}
