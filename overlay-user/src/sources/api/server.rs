//! The API's server end: the socket, one task per connection, and each
//! request turned into a change for the core (or, for `attach` and
//! `detach`, into a call of the [`Plumber`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::agent::error::AgentError;
use crate::agent::handle::Core;
use crate::agent::tables::Agent;
use crate::model::attach::Target;
use crate::model::change::Change;
use crate::model::endpoint::EndpointSpec;
use crate::model::limits::ApiConfig;
use crate::model::peer::PeerSpec;
use crate::model::source::Source;
use crate::model::validation::{
    format_mac, parse_cidr, parse_ipv4, parse_underlay_ip, parse_vtep_mac, InputError,
};
use crate::sources::api::socket::check_peer;
use crate::sources::api::wire::{ApiError, EndpointInfo, PeerInfo, Request, Response, MAX_LINE};
use crate::sources::{ClusterView, ControlSource, NetworkDirectory, Plumber};

/// What requests are served against: the core, and the attach source's plumbing.
#[derive(Clone)]
pub struct Api {
    /// The agent core.
    pub core: Core,
    /// Does `attach` and `detach`.
    pub plumber: Arc<dyn Plumber>,
    /// Answers about the cluster store, with `[cluster]`.
    pub cluster: Option<Arc<dyn ClusterView>>,
    /// The cluster store's overlay networks, with `[cluster]`.
    pub networks: Option<Arc<dyn NetworkDirectory>>,
}

/// The answer when a cluster request reaches an overlayd without `[cluster]`.
pub const NO_CLUSTER: &str = "this overlayd runs without a [cluster] section; hosts and the cluster store exist only in cluster mode";

/// Serve `req`: a change goes to the core, attach and detach to the plumber.
pub async fn handle(api: &Api, req: Request) -> Response {
    let core = &api.core;
    match req {
        Request::PeerAdd {
            subnet,
            underlay_ip,
            vtep_mac,
        } => {
            let parsed = (|| {
                let subnet = parse_cidr(&subnet)?;
                let underlay_ip = parse_underlay_ip(&underlay_ip)?;
                let mac = vtep_mac.as_deref().map(parse_vtep_mac).transpose()?;
                Ok::<_, InputError>((subnet, underlay_ip, mac))
            })();
            match parsed {
                Ok((subnet, underlay_ip, vtep_mac)) => {
                    let peer = PeerSpec {
                        subnet,
                        underlay_ip,
                        vtep_mac,
                    };
                    match core.apply(Source::Api, Change::AddPeer(peer)).await {
                        Ok(()) => Response::Ok,
                        Err(e) => Response::error(e),
                    }
                }
                Err(e) => Response::error(e),
            }
        }
        Request::PeerDel { subnet } => match parse_cidr(&subnet) {
            Ok(subnet) => match core.apply(Source::Api, Change::DelPeer(subnet)).await {
                Ok(()) => Response::Ok,
                Err(e) => Response::error(e),
            },
            Err(e) => Response::error(e),
        },
        Request::PeerList => Response::Peers(peer_infos(&*core.lock().await)),
        Request::EndpointAdd { ip, dev } => match parse_ipv4(&ip) {
            Ok(ip) => {
                let change = Change::AddEndpoint {
                    ip,
                    ifname: dev,
                    mac: None,
                };
                match core.apply(Source::Api, change).await {
                    Ok(()) => Response::Ok,
                    Err(e) => Response::error(e),
                }
            }
            Err(e) => Response::error(e),
        },
        Request::EndpointDel { ip } => match parse_ipv4(&ip) {
            Ok(ip) => match core.apply(Source::Api, Change::DelEndpoint(ip)).await {
                Ok(()) => Response::Ok,
                Err(e) => Response::error(e),
            },
            Err(e) => Response::error(e),
        },
        Request::EndpointList => match endpoint_infos(&*core.lock().await) {
            Ok(list) => Response::Endpoints(list),
            Err(e) => Response::error(e),
        },
        Request::Status => match core.lock().await.status() {
            Ok(mut status) => {
                status.cluster = api.cluster.as_ref().map(|c| c.summary());
                Response::Status(Box::new(status))
            }
            Err(e) => Response::error(e),
        },
        Request::Doctor => Response::Doctor(crate::agent::doctor::run(core).await),
        Request::Hosts => match &api.cluster {
            Some(c) => match c.hosts().await {
                Ok(hosts) => Response::Hosts(hosts),
                Err(e) => Response::error(e),
            },
            None => Response::error(NO_CLUSTER),
        },
        Request::HostRm { name } => match &api.cluster {
            Some(c) => match c.remove_host(&name).await {
                Ok(host) => Response::HostRemoved(Box::new(host)),
                Err(e) => Response::error(e),
            },
            None => Response::error(NO_CLUSTER),
        },
        Request::ClusterStatus => match &api.cluster {
            Some(c) => Response::Cluster(Box::new(c.status().await)),
            None => Response::error(NO_CLUSTER),
        },
        Request::Attach {
            container,
            netns,
            address,
            mtu,
            network,
        } => {
            let target = match attach_target(container, netns) {
                Ok(t) => t,
                Err(e) => return e,
            };
            let attached = match network {
                Some(network) => {
                    let ip = match address.as_str() {
                        "" => None,
                        a => match parse_ipv4(a.split('/').next().unwrap_or_default()) {
                            Ok(ip) => Some(ip),
                            Err(e) => return Response::error(e),
                        },
                    };
                    api.plumber
                        .attach_network(core, target, &network, ip, mtu)
                        .await
                }
                None => api.plumber.attach(core, target, &address, mtu).await,
            };
            match attached {
                Ok(a) => Response::Attached(Box::new(a)),
                Err(e) => Response::error(e),
            }
        }
        Request::Monitor { .. } => {
            Response::error("monitor streams: send it as a connection's request")
        }
        Request::Detach { container, netns } => match attach_target(container, netns) {
            Ok(target) => match api.plumber.detach(core, target).await {
                Ok(d) => Response::Detached(Box::new(d)),
                Err(e) => Response::error(e),
            },
            Err(e) => e,
        },
        req @ (Request::NetworkCreate { .. }
        | Request::NetworkList
        | Request::NetworkInspect { .. }
        | Request::NetworkRm { .. }) => {
            crate::sources::api::networks::handle(core, api.networks.as_deref(), req).await
        }
    }
}

/// Exactly one of a container and a namespace.
fn attach_target(container: Option<String>, netns: Option<String>) -> Result<Target, Response> {
    match (container, netns) {
        (Some(c), None) => Ok(Target::Container(c)),
        (None, Some(n)) => Ok(Target::Netns(n)),
        _ => Err(Response::error(
            "give either a container or a network namespace (--netns NAME), not both or neither",
        )),
    }
}

/// The peer table as listed.
pub fn peer_infos(agent: &Agent) -> Vec<PeerInfo> {
    let traffic = agent.peer_traffic().unwrap_or_else(|e| {
        log::warn!("peer list: {e}");
        Default::default()
    });
    agent
        .peers()
        .values()
        .map(|p| PeerInfo {
            traffic: traffic.get(&p.spec.underlay_ip).copied(),
            subnet: p.spec.subnet,
            underlay_ip: p.spec.underlay_ip,
            vtep_mac: format_mac(&agent.effective_vtep_mac(&p.spec)),
            vtep_mac_derived: p.spec.vtep_mac.is_none(),
            source: p.source,
        })
        .collect()
}

/// The endpoint table as listed, with the endpoints the dataplane learned
/// by itself (source `learned`), by address.
pub fn endpoint_infos(agent: &Agent) -> Result<Vec<EndpointInfo>, AgentError> {
    let info = |e: &EndpointSpec, source| EndpointInfo {
        ip: e.ip,
        dev: e.ifname.clone(),
        ifindex: e.ifindex,
        mac: (e.mac != [0; 6]).then(|| format_mac(&e.mac)),
        source,
    };
    let mut list: Vec<EndpointInfo> = agent
        .endpoints()
        .values()
        .map(|e| info(&e.spec, e.source))
        .collect();
    for e in agent.learned_endpoints()? {
        list.push(info(&e, Source::Learned));
    }
    list.sort_by_key(|e| e.ip);
    Ok(list)
}

/// Limits of the API server (the `[api]` section).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How long a connection may wait without a whole request line (or
    /// without reading an answer) before it is closed.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Limits {
    /// The limits of `cfg`.
    pub fn from_config(cfg: &ApiConfig) -> Limits {
        Limits {
            idle_timeout: cfg.idle_timeout(),
            max_connections: cfg.max_connections as usize,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_config(&ApiConfig::default())
    }
}

/// Accept connections forever, each served on its own task: root only
/// (SO_PEERCRED), at most `limits.max_connections` at once, each closed
/// when idle for `limits.idle_timeout`. A refused client gets one error
/// line saying why, and is disconnected.
pub async fn serve(listener: UnixListener, api: Api, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut full = false;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                log::warn!("API accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Err(e) = check_peer(&stream) {
            log::warn!("API: refused a connection: {e}");
            refuse(&stream, &e);
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let e = ApiError::TooManyConnections {
                max: limits.max_connections,
            };
            // Once per episode, not once per refused client.
            if !std::mem::replace(&mut full, true) {
                log::warn!("API: {e}");
            }
            refuse(&stream, &e);
            continue;
        };
        full = false;
        let api = api.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = connection(stream, &api, limits.idle_timeout).await {
                log::debug!("API connection: {e}");
            }
        });
    }
}

/// One error line, without waiting (a new connection's buffer has room for
/// it), before the connection is dropped.
fn refuse(stream: &UnixStream, e: &ApiError) {
    let _ = stream.try_write(&line_of(&Response::error(e)));
}

async fn connection(stream: UnixStream, api: &Api, idle: Duration) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        let mut limited = (&mut reader).take(MAX_LINE as u64 + 1);
        let n = match tokio::time::timeout(idle, limited.read_line(&mut line)).await {
            Err(_) => {
                let _ = write.try_write(&line_of(&Response::error(ApiError::Idle { idle })));
                return Ok(());
            }
            Ok(Ok(n)) => n,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                let resp = Response::error("invalid request: not UTF-8");
                send(&mut write, &resp, idle).await?;
                return Ok(());
            }
            Ok(Err(e)) => return Err(e),
        };
        if n == 0 {
            return Ok(());
        }
        if n > MAX_LINE {
            let resp = Response::error(format!("invalid request: longer than {MAX_LINE} bytes"));
            send(&mut write, &resp, idle).await?;
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        let resp = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Monitor {
                drop,
                trace,
                reasons,
                ip,
                peer,
                sample,
            }) => match monitor::filter(drop, trace, reasons, ip, peer) {
                Ok(filter) => {
                    let sample = sample.unwrap_or(1);
                    return monitor::stream(&api.core, filter, sample, reader, write, idle).await;
                }
                Err(resp) => resp,
            },
            Ok(req) => {
                log::debug!("API request: {req:?}");
                handle(api, req).await
            }
            Err(e) => Response::error(format!("invalid request: {e}")),
        };
        send(&mut write, &resp, idle).await?;
    }
}

/// The API as a control source: serves the socket until aborted.
pub struct ApiSource {
    listener: UnixListener,
    plumber: Arc<dyn Plumber>,
    limits: Limits,
    cluster: Option<Arc<dyn ClusterView>>,
    networks: Option<Arc<dyn NetworkDirectory>>,
}

impl ApiSource {
    /// Serve on `listener` (from [`bind`](crate::sources::api::socket::bind))
    /// within `limits`; `plumber` does `attach` and `detach`.
    pub fn new(listener: UnixListener, plumber: Arc<dyn Plumber>, limits: Limits) -> ApiSource {
        ApiSource {
            listener,
            plumber,
            limits,
            cluster: None,
            networks: None,
        }
    }

    /// Answer the cluster requests through `cluster`.
    pub fn with_cluster(mut self, cluster: Arc<dyn ClusterView>) -> ApiSource {
        self.cluster = Some(cluster);
        self
    }

    /// Answer the network requests through `networks`.
    pub fn with_networks(mut self, networks: Arc<dyn NetworkDirectory>) -> ApiSource {
        self.networks = Some(networks);
        self
    }
}

#[async_trait::async_trait]
impl ControlSource for ApiSource {
    fn name(&self) -> &'static str {
        "api"
    }

    async fn run(self: Box<Self>, core: Core) {
        let api = Api {
            core,
            plumber: self.plumber,
            cluster: self.cluster,
            networks: self.networks,
        };
        serve(self.listener, api, self.limits).await
    }
}

mod lines;
mod monitor;
use lines::{line_of, send};
pub use monitor::NO_MONITOR;

#[cfg(test)]
mod tests;
