//! The local API: newline-delimited JSON over a Unix socket.
//!
//! A client writes one [`Request`] per line and reads one [`Response`] per
//! line; a connection may carry any number of requests. Values arrive as
//! strings and are parsed here with the same strict parsers as the config
//! and the CLI, so a bad value is answered with a message that names it.
//!
//! ```text
//! > {"peer_add":{"subnet":"10.103.200.0/24","underlay_ip":"192.168.56.5","vtep_mac":null}}
//! < "ok"
//! > "peer_list"
//! < {"peers":[{"subnet":"10.103.200.0/24","underlay_ip":"192.168.56.5",...,"source":"api"}]}
//! > {"peer_del":{"subnet":"10.103.200.5/24"}}
//! < {"error":{"message":"10.103.200.5/24 has host bits set; expected a network address like 10.103.200.0/24"}}
//! ```

use std::net::Ipv4Addr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;

use crate::agent::{Agent, Source, Status};
use crate::attach::{self, Attachment, Detachment, Target};
use crate::config::{format_mac, parse_cidr, parse_ipv4, parse_underlay_ip, parse_vtep_mac};

/// Where overlayd listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/overlay/overlayd.sock";

/// The longest request line accepted.
pub const MAX_LINE: usize = 64 * 1024;

/// How long a client waits for an answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Add or replace a peer.
    PeerAdd {
        /// Remote container subnet, e.g. "10.103.200.0/24".
        subnet: String,
        /// Remote host's underlay address, e.g. "192.168.56.5".
        underlay_ip: String,
        /// Remote VTEP MAC when it does not follow the derivation rule.
        #[serde(default)]
        vtep_mac: Option<String>,
    },
    /// Delete a peer.
    PeerDel {
        /// Its subnet.
        subnet: String,
    },
    /// List peers.
    PeerList,
    /// Add or replace an endpoint.
    EndpointAdd {
        /// Container address, e.g. "10.103.100.5".
        ip: String,
        /// Host-side interface, e.g. "veth1a2b3c".
        dev: String,
    },
    /// Delete an endpoint.
    EndpointDel {
        /// Its address.
        ip: String,
    },
    /// List endpoints.
    EndpointList,
    /// Settings and counters.
    Status,
    /// Plumb a container (by name or ID) or a named network namespace into
    /// the bridge with `address`, and register it (source `attach`).
    Attach {
        /// The container; exactly one of `container` and `netns`.
        #[serde(default)]
        container: Option<String>,
        /// The named network namespace.
        #[serde(default)]
        netns: Option<String>,
        /// Address and prefix, e.g. "10.103.100.50/24".
        address: String,
        /// MTU; default: the underlay's minus 50.
        #[serde(default)]
        mtu: Option<u32>,
    },
    /// Undo `attach`.
    Detach {
        /// The container; exactly one of `container` and `netns`.
        #[serde(default)]
        container: Option<String>,
        /// The named network namespace.
        #[serde(default)]
        netns: Option<String>,
    },
}

/// A peer as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Remote container subnet.
    pub subnet: Ipv4Net,
    /// Remote host's underlay address.
    pub underlay_ip: Ipv4Addr,
    /// The VTEP MAC in use.
    pub vtep_mac: String,
    /// Whether `vtep_mac` was derived from the underlay address (not given explicitly).
    pub vtep_mac_derived: bool,
    /// Who added it.
    pub source: Source,
}

/// An endpoint as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    /// Container address.
    pub ip: Ipv4Addr,
    /// Host-side interface.
    pub dev: String,
    /// Its ifindex.
    pub ifindex: u32,
    /// Container MAC, `None` while unknown.
    pub mac: Option<String>,
    /// Who added it.
    pub source: Source,
}

/// A response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Done.
    Ok,
    /// Refused or failed; nothing was changed.
    Error {
        /// What went wrong, naming the bad value.
        message: String,
    },
    /// Answer to [`Request::PeerList`].
    Peers(Vec<PeerInfo>),
    /// Answer to [`Request::EndpointList`].
    Endpoints(Vec<EndpointInfo>),
    /// Answer to [`Request::Status`].
    Status(Box<Status>),
    /// Answer to [`Request::Attach`].
    Attached(Box<Attachment>),
    /// Answer to [`Request::Detach`].
    Detached(Box<Detachment>),
}

impl Response {
    fn error(e: impl std::fmt::Display) -> Response {
        Response::Error {
            message: e.to_string(),
        }
    }
}

/// Errors of the API server and client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The client could not connect.
    #[error("cannot connect to overlayd at {}: {source}; is overlayd running? (use --socket PATH if it listens elsewhere)", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the connection failed.
    #[error("talking to overlayd at {}: {source}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// overlayd closed the connection without answering.
    #[error("overlayd at {} closed the connection without answering", path.display())]
    Closed {
        /// The socket.
        path: PathBuf,
    },
    /// overlayd did not answer in time.
    #[error("overlayd at {} did not answer within {} s", path.display(), CLIENT_TIMEOUT.as_secs())]
    Timeout {
        /// The socket.
        path: PathBuf,
    },
    /// The answer was not a valid response.
    #[error("overlayd sent an invalid response: {0}")]
    Protocol(String),
    /// The server could not create its socket.
    #[error("cannot listen on {}: {source}", path.display())]
    Bind {
        /// The socket.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// Another process already answers on the socket.
    #[error("{} is in use: another overlayd is running; stop it or use --socket PATH", path.display())]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// Something that is not a socket sits at the path.
    #[error("{} exists and is not a socket; remove it or use --socket PATH", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
}

/// Serve `req` against the agent.
pub async fn handle(agent: &Mutex<Agent>, req: Request) -> Response {
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
                Ok::<_, crate::config::InputError>((subnet, underlay_ip, mac))
            })();
            match parsed {
                Ok((subnet, ip, mac)) => {
                    let mut agent = agent.lock().await;
                    match agent.add_peer(subnet, ip, mac, Source::Api).await {
                        Ok(()) => Response::Ok,
                        Err(e) => Response::error(e),
                    }
                }
                Err(e) => Response::error(e),
            }
        }
        Request::PeerDel { subnet } => match parse_cidr(&subnet) {
            Ok(subnet) => match agent.lock().await.del_peer(subnet).await {
                Ok(()) => Response::Ok,
                Err(e) => Response::error(e),
            },
            Err(e) => Response::error(e),
        },
        Request::PeerList => Response::Peers(peer_infos(&*agent.lock().await)),
        Request::EndpointAdd { ip, dev } => match parse_ipv4(&ip) {
            Ok(ip) => match agent.lock().await.add_endpoint(ip, &dev, Source::Api).await {
                Ok(()) => Response::Ok,
                Err(e) => Response::error(e),
            },
            Err(e) => Response::error(e),
        },
        Request::EndpointDel { ip } => match parse_ipv4(&ip) {
            Ok(ip) => match agent.lock().await.del_endpoint(ip).await {
                Ok(()) => Response::Ok,
                Err(e) => Response::error(e),
            },
            Err(e) => Response::error(e),
        },
        Request::EndpointList => Response::Endpoints(endpoint_infos(&*agent.lock().await)),
        Request::Status => match agent.lock().await.status() {
            Ok(status) => Response::Status(Box::new(status)),
            Err(e) => Response::error(e),
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
            match attach::parse_address(&address) {
                Ok(addr) => match attach::attach(agent, target, addr, mtu).await {
                    Ok(a) => Response::Attached(Box::new(a)),
                    Err(e) => Response::error(e),
                },
                Err(e) => Response::error(e),
            }
        }
        Request::Detach { container, netns } => match attach_target(container, netns) {
            Ok(target) => match attach::detach(agent, target).await {
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
pub async fn serve(listener: UnixListener, agent: Arc<Mutex<Agent>>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let agent = agent.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, &agent).await {
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

async fn connection(stream: UnixStream, agent: &Mutex<Agent>) -> std::io::Result<()> {
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
                handle(agent, req).await
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

/// Send one request to overlayd at `path` and read its answer.
pub async fn call(path: &Path, req: &Request) -> Result<Response, ApiError> {
    match tokio::time::timeout(CLIENT_TIMEOUT, call_inner(path, req)).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::Timeout {
            path: path.to_owned(),
        }),
    }
}

async fn call_inner(path: &Path, req: &Request) -> Result<Response, ApiError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ApiError::Connect {
            path: path.to_owned(),
            source,
        })?;
    let ioerr = |source| ApiError::Io {
        path: path.to_owned(),
        source,
    };
    let (read, mut write) = stream.into_split();
    let mut json = serde_json::to_vec(req).expect("requests serialize");
    json.push(b'\n');
    write.write_all(&json).await.map_err(ioerr)?;
    let mut line = String::new();
    BufReader::new(read)
        .read_line(&mut line)
        .await
        .map_err(ioerr)?;
    if line.is_empty() {
        return Err(ApiError::Closed {
            path: path.to_owned(),
        });
    }
    serde_json::from_str(&line).map_err(|e| ApiError::Protocol(format!("{e}: {}", line.trim())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::tests::{agent, temp_dir, Call, FakeDataplane};
    use crate::dataplane::{Mode, PeerSpec};

    fn round_trip<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        v: T,
        json: &str,
    ) {
        assert_eq!(serde_json::to_string(&v).unwrap(), json);
        assert_eq!(serde_json::from_str::<T>(json).unwrap(), v);
    }

    #[test]
    fn request_json() {
        round_trip(
            Request::PeerAdd {
                subnet: "10.103.200.0/24".into(),
                underlay_ip: "192.168.56.5".into(),
                vtep_mac: None,
            },
            r#"{"peer_add":{"subnet":"10.103.200.0/24","underlay_ip":"192.168.56.5","vtep_mac":null}}"#,
        );
        round_trip(
            Request::PeerDel {
                subnet: "10.103.200.0/24".into(),
            },
            r#"{"peer_del":{"subnet":"10.103.200.0/24"}}"#,
        );
        round_trip(Request::PeerList, r#""peer_list""#);
        round_trip(
            Request::EndpointAdd {
                ip: "10.103.100.5".into(),
                dev: "veth1".into(),
            },
            r#"{"endpoint_add":{"ip":"10.103.100.5","dev":"veth1"}}"#,
        );
        round_trip(
            Request::EndpointDel {
                ip: "10.103.100.5".into(),
            },
            r#"{"endpoint_del":{"ip":"10.103.100.5"}}"#,
        );
        round_trip(Request::EndpointList, r#""endpoint_list""#);
        round_trip(
            Request::Attach {
                container: Some("web".into()),
                netns: None,
                address: "10.103.100.50/24".into(),
                mtu: None,
            },
            r#"{"attach":{"container":"web","netns":null,"address":"10.103.100.50/24","mtu":null}}"#,
        );
        round_trip(
            Request::Detach {
                container: None,
                netns: Some("ns1".into()),
            },
            r#"{"detach":{"container":null,"netns":"ns1"}}"#,
        );
        round_trip(Request::Status, r#""status""#);
        // vtep_mac may be left out.
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"peer_add":{"subnet":"a","underlay_ip":"b"}}"#)
                .unwrap(),
            Request::PeerAdd {
                subnet: "a".into(),
                underlay_ip: "b".into(),
                vtep_mac: None
            }
        );
    }

    #[test]
    fn response_json() {
        round_trip(Response::Ok, r#""ok""#);
        round_trip(
            Response::Error {
                message: "no peer for 10.1.2.0/24".into(),
            },
            r#"{"error":{"message":"no peer for 10.1.2.0/24"}}"#,
        );
        round_trip(
            Response::Peers(vec![PeerInfo {
                subnet: "10.103.200.0/24".parse().unwrap(),
                underlay_ip: Ipv4Addr::new(192, 168, 56, 5),
                vtep_mac: "02:2a:c0:a8:38:05".into(),
                vtep_mac_derived: true,
                source: Source::Config,
            }]),
            r#"{"peers":[{"subnet":"10.103.200.0/24","underlay_ip":"192.168.56.5","vtep_mac":"02:2a:c0:a8:38:05","vtep_mac_derived":true,"source":"config"}]}"#,
        );
        round_trip(
            Response::Endpoints(vec![EndpointInfo {
                ip: Ipv4Addr::new(10, 103, 100, 2),
                dev: "veth1".into(),
                ifindex: 10,
                mac: None,
                source: Source::Discovered,
            }]),
            r#"{"endpoints":[{"ip":"10.103.100.2","dev":"veth1","ifindex":10,"mac":null,"source":"discovered"}]}"#,
        );
        let mut stats = crate::dataplane::Stats::default();
        stats.counters.insert("encap_packets".into(), 3);
        let status = Response::Status(Box::new(Status {
            mode: Mode::Ebpf,
            mode_reason: None,
            subnet: "10.103.100.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 103, 100, 1),
            underlay_interface: "eth1".into(),
            underlay_ip: Ipv4Addr::new(192, 168, 56, 4),
            vtep_mac: "02:2a:c0:a8:38:04".into(),
            bridge: "docker0".into(),
            vni: 42,
            vxlan_port: 4789,
            attach: crate::config::AttachPoint::Veth,
            xdp: crate::config::XdpMode::Generic,
            peers: 1,
            endpoints: 2,
            stats,
        }));
        let json = serde_json::to_string(&status).unwrap();
        assert!(
            json.starts_with(r#"{"status":{"mode":"ebpf","subnet":"10.103.100.0/24""#),
            "{json}"
        );
        assert!(
            json.contains(r#""stats":{"counters":{"encap_packets":3},"drops":{}}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Response>(&json).unwrap(), status);
    }

    async fn server(name: &str) -> (PathBuf, FakeDataplane, tokio::task::JoinHandle<()>) {
        let dir = temp_dir(name);
        let (agent, dp, _) = agent(dir.join("state")).await;
        let sock = dir.join("run/overlayd.sock");
        let listener = bind(&sock).await.unwrap();
        let task = tokio::spawn(serve(listener, Arc::new(Mutex::new(agent))));
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

        task.abort();
    }

    #[tokio::test]
    async fn attach_needs_one_target_and_a_prefix() {
        let (agent, dp, _) = agent(temp_dir("api-attach")).await;
        let agent = Mutex::new(agent);
        let both = Request::Attach {
            container: Some("web".into()),
            netns: Some("ns1".into()),
            address: "10.103.100.50/24".into(),
            mtu: None,
        };
        assert_eq!(
            handle(&agent, both).await,
            err("give either a container or a network namespace (--netns NAME), not both or neither")
        );
        let neither = Request::Detach {
            container: None,
            netns: None,
        };
        assert_eq!(
            handle(&agent, neither).await,
            err("give either a container or a network namespace (--netns NAME), not both or neither")
        );
        let no_prefix = Request::Attach {
            container: None,
            netns: Some("ns1".into()),
            address: "10.103.100.50".into(),
            mtu: None,
        };
        assert_eq!(
            handle(&agent, no_prefix).await,
            err("\"10.103.100.50\" is not an address with a prefix length; expected one like 10.103.100.50/24")
        );
        let gateway = Request::Attach {
            container: None,
            netns: Some("ns1".into()),
            address: "10.103.100.1/24".into(),
            mtu: None,
        };
        assert_eq!(
            handle(&agent, gateway).await,
            err("10.103.100.1 is the gateway address of 10.103.100.0/24; expected a container address")
        );
        let wrong_prefix = Request::Attach {
            container: None,
            netns: Some("ns1".into()),
            address: "10.103.100.50/16".into(),
            mtu: None,
        };
        assert_eq!(
            handle(&agent, wrong_prefix).await,
            err("10.103.100.50/16 does not match this host's subnet 10.103.100.0/24; expected 10.103.100.50/24")
        );
        let missing = Request::Detach {
            container: None,
            netns: Some("no-such-ns-overlay".into()),
        };
        let Response::Error { message } = handle(&agent, missing).await else {
            panic!("detach of nothing succeeded");
        };
        assert!(message.contains("is not attached"), "{message}");
        assert_eq!(dp.take(), vec![]);
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

    #[tokio::test]
    async fn client_connect_error_names_the_socket() {
        let path = temp_dir("api-none").join("nobody.sock");
        let e = call(&path, &Request::Status).await.unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "cannot connect to overlayd at {}: ",
                path.display()
            )),
            "{e}"
        );
        assert!(
            e.ends_with("is overlayd running? (use --socket PATH if it listens elsewhere)"),
            "{e}"
        );
    }
}
