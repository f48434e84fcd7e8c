//! The API's server end: the socket, one task per connection, and each
//! request turned into a change for the core (or, for `attach` and
//! `detach`, into a call of the [`Plumber`]).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::agent::handle::Core;
use crate::agent::tables::Agent;
use crate::model::attach::Target;
use crate::model::change::Change;
use crate::model::peer::PeerSpec;
use crate::model::source::Source;
use crate::model::validation::{
    format_mac, parse_cidr, parse_ipv4, parse_underlay_ip, parse_vtep_mac, InputError,
};
use crate::sources::api::wire::{ApiError, EndpointInfo, PeerInfo, Request, Response, MAX_LINE};
use crate::sources::{ClusterView, ControlSource, Plumber};

/// What requests are served against: the core, and the attach source's plumbing.
#[derive(Clone)]
pub struct Api {
    /// The agent core.
    pub core: Core,
    /// Does `attach` and `detach`.
    pub plumber: Arc<dyn Plumber>,
    /// Answers about the cluster store, with `[cluster]`.
    pub cluster: Option<Arc<dyn ClusterView>>,
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
        Request::EndpointList => Response::Endpoints(endpoint_infos(&*core.lock().await)),
        Request::Status => match core.lock().await.status() {
            Ok(mut status) => {
                status.cluster = api.cluster.as_ref().map(|c| c.summary());
                Response::Status(Box::new(status))
            }
            Err(e) => Response::error(e),
        },
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
        } => {
            let target = match attach_target(container, netns) {
                Ok(t) => t,
                Err(e) => return e,
            };
            match api.plumber.attach(core, target, &address, mtu).await {
                Ok(a) => Response::Attached(Box::new(a)),
                Err(e) => Response::error(e),
            }
        }
        Request::Detach { container, netns } => match attach_target(container, netns) {
            Ok(target) => match api.plumber.detach(core, target).await {
                Ok(d) => Response::Detached(Box::new(d)),
                Err(e) => Response::error(e),
            },
            Err(e) => e,
        },
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
    agent
        .peers()
        .values()
        .map(|p| PeerInfo {
            subnet: p.spec.subnet,
            underlay_ip: p.spec.underlay_ip,
            vtep_mac: format_mac(&agent.effective_vtep_mac(&p.spec)),
            vtep_mac_derived: p.spec.vtep_mac.is_none(),
            source: p.source,
        })
        .collect()
}

/// The endpoint table as listed.
pub fn endpoint_infos(agent: &Agent) -> Vec<EndpointInfo> {
    agent
        .endpoints()
        .values()
        .map(|e| EndpointInfo {
            ip: e.spec.ip,
            dev: e.spec.ifname.clone(),
            ifindex: e.spec.ifindex,
            mac: (e.spec.mac != [0; 6]).then(|| format_mac(&e.spec.mac)),
            source: e.source,
        })
        .collect()
}

/// Listen on `path`: create its directory, replace a stale socket (one
/// nobody answers on), and restrict it to the owner (0600).
pub async fn bind(path: &Path) -> Result<UnixListener, ApiError> {
    let berr = |source| ApiError::Bind {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(berr)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).await.is_ok() {
                return Err(ApiError::InUse {
                    path: path.to_owned(),
                });
            }
            log::info!("removing stale socket {}", path.display());
            std::fs::remove_file(path).map_err(berr)?;
        }
        Ok(_) => {
            return Err(ApiError::NotASocket {
                path: path.to_owned(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(berr(e)),
    }
    let listener = UnixListener::bind(path).map_err(berr)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(berr)?;
    Ok(listener)
}

/// Accept connections forever, each served on its own task.
pub async fn serve(listener: UnixListener, api: Api) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let api = api.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, &api).await {
                        log::debug!("API connection: {e}");
                    }
                });
            }
            Err(e) => {
                log::warn!("API accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: UnixStream, api: &Api) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        let n = match (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_line(&mut line)
            .await
        {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let resp = Response::error("invalid request: not UTF-8");
                send(&mut write, &resp).await?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(());
        }
        if n > MAX_LINE {
            let resp = Response::error(format!("invalid request: longer than {MAX_LINE} bytes"));
            send(&mut write, &resp).await?;
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        let resp = match serde_json::from_str::<Request>(&line) {
            Ok(req) => {
                log::debug!("API request: {req:?}");
                handle(api, req).await
            }
            Err(e) => Response::error(format!("invalid request: {e}")),
        };
        send(&mut write, &resp).await?;
    }
}

async fn send(write: &mut (impl AsyncWriteExt + Unpin), resp: &Response) -> std::io::Result<()> {
    let mut json = serde_json::to_vec(resp).expect("responses serialize");
    json.push(b'\n');
    write.write_all(&json).await
}

/// The API as a control source: serves the socket until aborted.
pub struct ApiSource {
    listener: UnixListener,
    plumber: Arc<dyn Plumber>,
    cluster: Option<Arc<dyn ClusterView>>,
}

impl ApiSource {
    /// Serve on `listener` (from [`bind`]); `plumber` does `attach` and `detach`.
    pub fn new(listener: UnixListener, plumber: Arc<dyn Plumber>) -> ApiSource {
        ApiSource {
            listener,
            plumber,
            cluster: None,
        }
    }

    /// Answer the cluster requests through `cluster`.
    pub fn with_cluster(mut self, cluster: Arc<dyn ClusterView>) -> ApiSource {
        self.cluster = Some(cluster);
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
        };
        serve(self.listener, api).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::testing::{core, temp_dir, Call, FakeDataplane};
    use crate::model::attach::{Attachment, Detachment};
    use crate::sources::api::client::call;
    use crate::sources::SourceError;
    use std::net::Ipv4Addr;
    use std::path::PathBuf;

    /// No attach source in these tests.
    struct NoPlumbing;

    #[async_trait::async_trait]
    impl Plumber for NoPlumbing {
        async fn attach(
            &self,
            _core: &Core,
            _target: Target,
            _address: &str,
            _mtu: Option<u32>,
        ) -> Result<Attachment, SourceError> {
            unreachable!("no attach in these tests")
        }
        async fn detach(&self, _core: &Core, _target: Target) -> Result<Detachment, SourceError> {
            unreachable!("no detach in these tests")
        }
    }

    async fn server(name: &str) -> (PathBuf, FakeDataplane, tokio::task::JoinHandle<()>) {
        let dir = temp_dir(name);
        let (core, dp, _) = core(dir.join("state")).await;
        let sock = dir.join("run/overlayd.sock");
        let listener = bind(&sock).await.unwrap();
        let api = Api {
            core,
            plumber: Arc::new(NoPlumbing),
            cluster: None,
        };
        let task = tokio::spawn(serve(listener, api));
        (sock, dp, task)
    }

    fn err(message: &str) -> Response {
        Response::Error {
            message: message.into(),
        }
    }

    #[tokio::test]
    async fn server_and_client() {
        let (sock, dp, task) = server("api").await;
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let add = Request::PeerAdd {
            subnet: "10.103.201.0/24".into(),
            underlay_ip: "192.168.56.6".into(),
            vtep_mac: None,
        };
        assert_eq!(call(&sock, &add).await.unwrap(), Response::Ok);
        assert_eq!(
            dp.take(),
            vec![Call::AddPeer(PeerSpec {
                subnet: "10.103.201.0/24".parse().unwrap(),
                underlay_ip: Ipv4Addr::new(192, 168, 56, 6),
                vtep_mac: None
            })]
        );

        let Response::Peers(peers) = call(&sock, &Request::PeerList).await.unwrap() else {
            panic!("not a peer list");
        };
        let listed: Vec<_> = peers
            .iter()
            .map(|p| (p.subnet.to_string(), p.source))
            .collect();
        assert_eq!(
            listed,
            vec![
                ("10.103.200.0/24".to_string(), Source::Config),
                ("10.103.201.0/24".to_string(), Source::Api)
            ]
        );
        assert_eq!(peers[1].vtep_mac, "02:2a:c0:a8:38:06");
        assert!(peers[1].vtep_mac_derived);

        // Overlap: refused, nothing reaches the dataplane.
        let overlap = Request::PeerAdd {
            subnet: "10.103.201.0/25".into(),
            underlay_ip: "192.168.56.7".into(),
            vtep_mac: None,
        };
        assert_eq!(
            call(&sock, &overlap).await.unwrap(),
            err("peer subnet 10.103.201.0/25 overlaps peer subnet 10.103.201.0/24 (via 192.168.56.6); delete that peer first or choose a disjoint subnet")
        );
        let bad = Request::PeerAdd {
            subnet: "10.103.202.1/24".into(),
            underlay_ip: "192.168.56.7".into(),
            vtep_mac: Some("zz".into()),
        };
        assert_eq!(
            call(&sock, &bad).await.unwrap(),
            err("10.103.202.1/24 has host bits set; expected a network address like 10.103.202.0/24")
        );
        let bad_mac = Request::PeerAdd {
            subnet: "10.103.202.0/24".into(),
            underlay_ip: "192.168.56.7".into(),
            vtep_mac: Some("zz".into()),
        };
        assert_eq!(
            call(&sock, &bad_mac).await.unwrap(),
            err("\"zz\" is not a MAC address; expected six hex bytes like 02:2a:c0:a8:38:05")
        );
        assert_eq!(dp.take(), vec![]);

        let del = Request::PeerDel {
            subnet: "10.103.201.0/24".into(),
        };
        assert_eq!(call(&sock, &del).await.unwrap(), Response::Ok);
        assert_eq!(
            dp.take(),
            vec![Call::DelPeer("10.103.201.0/24".parse().unwrap())]
        );
        assert_eq!(
            call(&sock, &del).await.unwrap(),
            err("no peer for 10.103.201.0/24")
        );

        // Endpoints.
        let ep = Request::EndpointAdd {
            ip: "10.103.100.2".into(),
            dev: "veth1".into(),
        };
        assert_eq!(call(&sock, &ep).await.unwrap(), Response::Ok);
        let Response::Endpoints(eps) = call(&sock, &Request::EndpointList).await.unwrap() else {
            panic!("not an endpoint list");
        };
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].mac.as_deref(), Some("02:42:00:00:00:02"));
        assert_eq!(eps[0].source, Source::Api);
        let missing = Request::EndpointAdd {
            ip: "10.103.100.9".into(),
            dev: "nosuch0".into(),
        };
        assert_eq!(
            call(&sock, &missing).await.unwrap(),
            err("no interface named nosuch0")
        );
        let bad_ip = Request::EndpointDel {
            ip: "10.103.100".into(),
        };
        assert_eq!(
            call(&sock, &bad_ip).await.unwrap(),
            err("\"10.103.100\" is not an IPv4 address; expected a dotted quad like 192.168.56.5")
        );
        let del_ep = Request::EndpointDel {
            ip: "10.103.100.2".into(),
        };
        assert_eq!(call(&sock, &del_ep).await.unwrap(), Response::Ok);

        let Response::Status(status) = call(&sock, &Request::Status).await.unwrap() else {
            panic!("not a status");
        };
        assert_eq!(status.peers, 1);
        assert_eq!(status.endpoints, 0);
        assert_eq!(status.cluster, None);
        for req in [
            Request::Hosts,
            Request::ClusterStatus,
            Request::HostRm { name: "h2".into() },
        ] {
            assert_eq!(call(&sock, &req).await.unwrap(), err(NO_CLUSTER));
        }

        task.abort();
    }

    #[tokio::test]
    async fn raw_protocol() {
        let (sock, _dp, task) = server("api-raw").await;
        let stream = UnixStream::connect(&sock).await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        write
            .write_all(b"\"peer_list\"\n\nnot json\n\"status\"\n")
            .await
            .unwrap();
        let first = lines.next_line().await.unwrap().unwrap();
        assert!(
            first.starts_with(r#"{"peers":[{"subnet":"10.103.200.0/24""#),
            "{first}"
        );
        let second = lines.next_line().await.unwrap().unwrap();
        assert!(
            second.starts_with(r#"{"error":{"message":"invalid request: "#),
            "{second}"
        );
        let third = lines.next_line().await.unwrap().unwrap();
        assert!(third.starts_with(r#"{"status":{"mode":"ebpf""#), "{third}");
        task.abort();
    }

    #[tokio::test]
    async fn bind_replaces_stale_and_refuses_live_sockets() {
        let dir = temp_dir("api-bind");
        let sock = dir.join("s.sock");
        let first = bind(&sock).await.unwrap();
        // Live: refused.
        let e = bind(&sock).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{} is in use: another overlayd is running; stop it or use --socket PATH",
                sock.display()
            )
        );
        drop(first);
        // Stale (the file remains, nobody listens): replaced.
        assert!(sock.exists());
        let _second = bind(&sock).await.unwrap();
        // Not a socket: refused.
        let file = dir.join("plain");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(
            bind(&file).await.unwrap_err(),
            ApiError::NotASocket { .. }
        ));
    }
}
