//! Docker integration: containers join the overlay by themselves.
//!
//! The [`Watcher`] follows the Docker Engine API (through bollard, never the
//! `docker` CLI). When a container starts, or is connected to a network, it
//! registers the container's endpoints on the watched networks whose address
//! lies in this host's subnet: address, MAC, and the host-side veth. That
//! veth is found from inside the container's network namespace: the
//! interface with the endpoint's MAC names its peer's ifindex (IFLA_LINK),
//! which is the host side. When a container dies, its endpoints go.
//!
//! On every (re)connection the watcher first reconciles with the containers
//! that run now (adding what is missing, removing Docker endpoints of
//! containers that are gone) and then follows the events from shortly before
//! the listing, so nothing that happened while it was away or while it
//! listed is missed. If the socket goes away, forwarding continues; the
//! watcher retries with backoff (at most [`MAX_BACKOFF`] apart) and logs
//! once per change between connected and disconnected.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerInspectResponse, EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use bollard::Docker;
use futures::{StreamExt, TryStreamExt};
use ipnet::Ipv4Net;
use netlink_packet_route::link::LinkAttribute;
use tokio::sync::Mutex;

use crate::agent::{Agent, Source};
use crate::config::{format_mac, parse_mac, DockerConfig};
use crate::discovery::is_container_ip;
use crate::netlink::Netlink;
use crate::netns;

/// The first retry after losing Docker comes this soon.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Retries are never further apart than this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long one Docker API request may take (the event stream is not limited).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Events are replayed from this long before each (re)connection.
const REPLAY: Duration = Duration::from_secs(2);

/// Errors talking to Docker or locating a container's interfaces.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The API could not be reached, or answered with an error.
    #[error("Docker API at {}: {source}", socket.display())]
    Api {
        /// The socket.
        socket: PathBuf,
        /// What bollard reported.
        #[source]
        source: Box<BollardError>,
    },
    /// The event stream ended (dockerd stopped).
    #[error("Docker API at {}: the event stream ended", socket.display())]
    StreamEnded {
        /// The socket.
        socket: PathBuf,
    },
    /// No container has this name or ID.
    #[error("no container named {0}")]
    NoContainer(String),
    /// The container exists but does not run (it has no network namespace).
    #[error("container {0} is not running")]
    NotRunning(String),
    /// The container's interfaces could not be read.
    #[error("container {container}: {reason}")]
    Interfaces {
        /// Its name.
        container: String,
        /// What failed.
        reason: String,
    },
}

impl DockerError {
    /// Whether the error means the connection to Docker is lost (rather than
    /// a problem with one container).
    pub fn is_connection(&self) -> bool {
        match self {
            DockerError::Api { source, .. } => !matches!(
                **source,
                BollardError::DockerResponseServerError { .. }
                    | BollardError::JsonDataError { .. }
                    | BollardError::JsonSerdeError { .. }
            ),
            DockerError::StreamEnded { .. } => true,
            _ => false,
        }
    }
}

fn api_error(socket: &Path) -> impl Fn(BollardError) -> DockerError + '_ {
    move |source| DockerError::Api {
        socket: socket.to_owned(),
        source: Box::new(source),
    }
}

/// Connect to the Docker API at `socket` and agree on an API version
/// (dockerd 20.10 speaks 1.41 at most; bollard would ask for newer).
pub async fn connect(socket: &Path) -> Result<Docker, DockerError> {
    let docker = Docker::connect_with_unix(
        &socket.to_string_lossy(),
        REQUEST_TIMEOUT.as_secs(),
        bollard::API_DEFAULT_VERSION,
    )
    .map_err(api_error(socket))?;
    docker.negotiate_version().await.map_err(api_error(socket))
}

/// Inspect container `name` (name or ID); `None` if there is no such container.
pub async fn inspect(
    docker: &Docker,
    socket: &Path,
    name: &str,
) -> Result<Option<ContainerInspectResponse>, DockerError> {
    match docker.inspect_container(name, None).await {
        Ok(c) => Ok(Some(c)),
        Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(api_error(socket)(e)),
    }
}

/// One endpoint of a container on a watched network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerEndpoint {
    /// The Docker network's name.
    pub network: String,
    /// The container's address on it.
    pub ip: Ipv4Addr,
    /// The container interface's MAC.
    pub mac: [u8; 6],
}

/// What the watcher needs to know of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Full ID.
    pub id: String,
    /// Name, without Docker's leading '/'.
    pub name: String,
    /// PID of its init process while it runs.
    pub pid: Option<u32>,
    /// Its endpoints on watched networks with an address in this host's subnet.
    pub endpoints: Vec<ContainerEndpoint>,
}

/// Pick out of `inspect` the endpoints on `networks` whose address is a
/// container address of `subnet`; others (other networks, other subnets,
/// no address yet, bad MAC) are skipped.
pub fn container_info(
    inspect: &ContainerInspectResponse,
    networks: &[String],
    subnet: Ipv4Net,
) -> ContainerInfo {
    let id = inspect.id.clone().unwrap_or_default();
    let name = inspect
        .name
        .as_deref()
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_else(|| short_id(&id).to_string());
    let running = inspect
        .state
        .as_ref()
        .is_some_and(|s| s.running == Some(true));
    let pid = inspect
        .state
        .as_ref()
        .and_then(|s| s.pid)
        .filter(|&p| running && p > 0)
        .and_then(|p| u32::try_from(p).ok());
    let mut endpoints = Vec::new();
    if let Some(nets) = inspect
        .network_settings
        .as_ref()
        .and_then(|s| s.networks.as_ref())
    {
        for (net, ep) in nets {
            if !networks.iter().any(|w| w == net) {
                continue;
            }
            let Some(ip) = ep
                .ip_address
                .as_deref()
                .and_then(|s| s.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let Some(mac) = ep.mac_address.as_deref().and_then(|m| parse_mac(m).ok()) else {
                continue;
            };
            if is_container_ip(subnet, ip) {
                endpoints.push(ContainerEndpoint {
                    network: net.clone(),
                    ip,
                    mac,
                });
            }
        }
    }
    endpoints.sort_by_key(|e| e.ip);
    ContainerInfo {
        id,
        name,
        pid,
        endpoints,
    }
}

/// The first 12 characters of a container ID, as Docker shows it.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Inside the network namespace of `pid`: for every interface with a MAC
/// and a peer link (a veth), MAC -> the peer's ifindex (in the peer's namespace).
pub async fn veth_peers(pid: u32) -> Result<HashMap<[u8; 6], u32>, String> {
    let path = netns::of_pid(pid);
    let result = netns::run_in(&path, |handle| {
        Box::pin(async move {
            let msgs: Vec<_> = handle
                .link()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(|e| format!("listing interfaces: {e}"))?;
            let mut peers = HashMap::new();
            for msg in msgs {
                let mut mac = None;
                let mut peer = None;
                for attr in &msg.attributes {
                    match attr {
                        LinkAttribute::Address(a) => mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
                        LinkAttribute::Link(i) if *i != 0 => peer = Some(*i),
                        _ => {}
                    }
                }
                if let (Some(mac), Some(peer)) = (mac, peer) {
                    peers.insert(mac, peer);
                }
            }
            Ok::<_, String>(peers)
        })
    })
    .await;
    match result {
        Ok(inner) => inner,
        Err(e) => Err(e.to_string()),
    }
}

/// Start a [`Watcher`] for the agent's `[docker]` section, if it is enabled.
pub async fn spawn(
    agent: Arc<Mutex<Agent>>,
) -> Result<Option<tokio::task::JoinHandle<()>>, crate::netlink::NetlinkError> {
    let (cfg, subnet) = {
        let a = agent.lock().await;
        (a.config().docker.clone(), a.config().subnet)
    };
    if !cfg.enabled {
        return Ok(None);
    }
    let net: Arc<dyn Netlink> = Arc::new(crate::netlink::RtNetlink::connect()?);
    log::info!(
        "docker: following {} for networks {}",
        cfg.socket.display(),
        cfg.networks.join(", ")
    );
    Ok(Some(tokio::spawn(
        Watcher::new(cfg, subnet, agent, net).run(),
    )))
}

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

/// Follows Docker and keeps the agent's Docker endpoints in step; see the module docs.
pub struct Watcher {
    cfg: DockerConfig,
    subnet: Ipv4Net,
    agent: Arc<Mutex<Agent>>,
    net: Arc<dyn Netlink>,
    owned: BTreeMap<Ipv4Addr, Owned>,
    /// `Some(true)` while connected, `Some(false)` while not, `None` before the first try.
    connected: Option<bool>,
}

impl Watcher {
    /// A watcher for the agent's `[docker]` settings; `net` queries the host's namespace.
    pub fn new(
        cfg: DockerConfig,
        subnet: Ipv4Net,
        agent: Arc<Mutex<Agent>>,
        net: Arc<dyn Netlink>,
    ) -> Watcher {
        Watcher {
            cfg,
            subnet,
            agent,
            net,
            owned: BTreeMap::new(),
            connected: None,
        }
    }

    /// Run forever: connect, reconcile, follow events; on loss, retry with backoff.
    pub async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let e = match self.session().await {
                Ok(()) => DockerError::StreamEnded {
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
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One connection: reconcile, then handle events until the stream fails.
    async fn session(&mut self) -> Result<(), DockerError> {
        let socket = self.cfg.socket.clone();
        let docker = connect(&socket).await?;
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(REPLAY)
            .as_secs();
        let (added, removed) = self.reconcile(&docker).await?;
        if self.connected != Some(true) {
            log::info!(
                "docker: connected to {} (API {}); reconciled: {} running container endpoints, {added} added, {removed} removed; following events",
                socket.display(),
                docker.client_version(),
                self.owned.len(),
            );
        }
        self.connected = Some(true);
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
            if let Err(e) = self.handle(&docker, event).await {
                if e.is_connection() {
                    return Err(e);
                }
                log::warn!("docker: {e}");
            }
        }
        Ok(())
    }

    async fn handle(&mut self, docker: &Docker, event: EventMessage) -> Result<(), DockerError> {
        let action = event.action.as_deref().unwrap_or_default();
        let actor = event.actor.unwrap_or_default();
        let id = actor.id.unwrap_or_default();
        let attrs = actor.attributes.unwrap_or_default();
        log::debug!("docker event: {:?} {action} {id}", event.typ);
        match (event.typ, action) {
            (Some(EventMessageTypeEnum::CONTAINER), "start") => {
                self.sync_container(docker, &id).await
            }
            (Some(EventMessageTypeEnum::CONTAINER), "die") => {
                self.forget_container(&id).await;
                Ok(())
            }
            (Some(EventMessageTypeEnum::NETWORK), "connect" | "disconnect") => {
                match attrs.get("container") {
                    Some(container) => self.sync_container(docker, container).await,
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
    ) -> Result<Option<(ContainerInfo, Vec<Resolved>)>, DockerError> {
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
            .map_err(|reason| DockerError::Interfaces {
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
    async fn sync_container(&mut self, docker: &Docker, id: &str) -> Result<(), DockerError> {
        match self.resolve(docker, id).await? {
            None => {
                self.forget_container(id).await;
                Ok(())
            }
            Some((info, resolved)) => {
                let shared = self.agent.clone();
                let mut agent = shared.lock().await;
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
    async fn ensure(&mut self, agent: &mut Agent, info: &ContainerInfo, r: Resolved) -> bool {
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
        match agent
            .add_endpoint_with_mac(r.ip, &r.ifname, r.mac, Source::Docker)
            .await
        {
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
    async fn remove_owned(&mut self, agent: &mut Agent, ip: Ipv4Addr) -> bool {
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
        match agent.del_endpoint(ip).await {
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
    async fn forget_container(&mut self, id: &str) {
        let shared = self.agent.clone();
        let mut agent = shared.lock().await;
        let ips: Vec<Ipv4Addr> = self
            .owned
            .iter()
            .filter(|(_, o)| o.container == id)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in ips {
            self.remove_owned(&mut agent, ip).await;
        }
        let attached = crate::attach::container_ifname(id);
        let gone: Vec<Ipv4Addr> = agent
            .endpoints()
            .values()
            .filter(|e| e.source == Source::Attach && e.spec.ifname == attached)
            .map(|e| e.spec.ip)
            .collect();
        for ip in gone {
            match agent.del_endpoint(ip).await {
                Ok(()) => log::info!(
                    "docker: attached container {} stopped: {ip} on {attached} removed",
                    short_id(id)
                ),
                Err(e) => log::warn!("docker: removing endpoint {ip}: {e}"),
            }
        }
    }

    /// Make the Docker endpoints match the running containers. Returns (added, removed).
    async fn reconcile(&mut self, docker: &Docker) -> Result<(usize, usize), DockerError> {
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
        let shared = self.agent.clone();
        let mut agent = shared.lock().await;
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
            match agent.del_endpoint(ip).await {
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
                    && e.spec.ifname.starts_with(crate::attach::CONTAINER_PREFIX)
                    && !links.contains(&e.spec.ifname)
                    && !running
                        .iter()
                        .any(|id| crate::attach::container_ifname(id) == e.spec.ifname)
            })
            .map(|e| e.spec.ip)
            .collect();
        for ip in orphans {
            if agent.del_endpoint(ip).await.is_ok() {
                removed += 1;
                log::info!("docker: {ip}: its attached container no longer runs; removed");
            }
        }
        Ok((added, removed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerState, EndpointSettings, NetworkSettings};

    fn inspect(running: bool, nets: &[(&str, &str, &str)]) -> ContainerInspectResponse {
        ContainerInspectResponse {
            id: Some("3ffd421aa325939c14bfb047be9507d7615f831d281543e20548c576ce19049d".into()),
            name: Some("/web1".into()),
            state: Some(ContainerState {
                running: Some(running),
                pid: Some(if running { 4242 } else { 0 }),
                ..Default::default()
            }),
            network_settings: Some(NetworkSettings {
                networks: Some(
                    nets.iter()
                        .map(|(net, ip, mac)| {
                            (
                                net.to_string(),
                                EndpointSettings {
                                    ip_address: Some(ip.to_string()),
                                    mac_address: Some(mac.to_string()),
                                    ..Default::default()
                                },
                            )
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn subnet() -> Ipv4Net {
        "10.103.100.0/24".parse().unwrap()
    }

    #[test]
    fn picks_watched_networks_in_the_subnet() {
        let c = inspect(
            true,
            &[
                ("bridge", "10.103.100.2", "02:42:0a:67:64:02"),
                ("other", "10.103.100.3", "02:42:0a:67:64:03"),
                ("ovl", "10.9.0.2", "02:42:0a:09:00:02"),
                ("ovl2", "", ""),
            ],
        );
        let nets = vec!["bridge".to_string(), "ovl".into(), "ovl2".into()];
        let info = container_info(&c, &nets, subnet());
        assert_eq!(info.name, "web1");
        assert_eq!(info.pid, Some(4242));
        assert_eq!(
            info.endpoints,
            vec![ContainerEndpoint {
                network: "bridge".into(),
                ip: "10.103.100.2".parse().unwrap(),
                mac: [2, 0x42, 10, 103, 100, 2]
            }]
        );
        assert_eq!(short_id(&info.id), "3ffd421aa325");
    }

    #[test]
    fn stopped_containers_have_no_pid() {
        let c = inspect(false, &[("bridge", "10.103.100.2", "02:42:0a:67:64:02")]);
        let info = container_info(&c, &["bridge".into()], subnet());
        assert_eq!(info.pid, None);
    }

    #[test]
    fn reserved_addresses_are_skipped() {
        let c = inspect(true, &[("bridge", "10.103.100.1", "02:42:0a:67:64:01")]);
        assert!(container_info(&c, &["bridge".into()], subnet())
            .endpoints
            .is_empty());
    }

    #[test]
    fn connection_errors() {
        let s = PathBuf::from("/x.sock");
        let server = DockerError::Api {
            socket: s.clone(),
            source: Box::new(BollardError::DockerResponseServerError {
                status_code: 500,
                message: "boom".into(),
            }),
        };
        assert!(!server.is_connection());
        let gone = DockerError::Api {
            socket: s.clone(),
            source: Box::new(BollardError::SocketNotFoundError("/x.sock".into())),
        };
        assert!(gone.is_connection());
        assert!(DockerError::StreamEnded { socket: s }.is_connection());
        assert!(!DockerError::NoContainer("x".into()).is_connection());
    }
}
