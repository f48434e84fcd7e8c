//! The DNS server: hickory-server's UDP and TCP loops on the listen
//! address, our request handler ([`super::answer`]) behind them, and the
//! task that rebuilds the name table on every change of the store's view.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Header, HeaderCounts};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use super::answer::{reply, response_edns};
use super::table::NameTable;
use super::upstream::{Upstream, DEFAULT_TIMEOUT};
use super::NamesError;
use crate::model::config::dns::{nameservers_of, DnsConfig};
use crate::model::overlay_network::NetworkView;

/// How long a TCP connection may stay without a request.
const TCP_IDLE: Duration = Duration::from_secs(5);
/// Room for queued TCP responses per connection.
const TCP_BUFFER: usize = 32;

/// What the resolver needs besides its sockets and the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The upstream resolvers, asked in order.
    pub upstream: Vec<SocketAddr>,
    /// The TTL of the overlay's own records, in seconds.
    pub ttl: u32,
    /// How long one upstream resolver may take.
    pub upstream_timeout: Duration,
}

impl Settings {
    /// From `[dns]`: its upstream resolvers, else the nameservers of
    /// `resolv_conf` (the text of /etc/resolv.conf) other than the
    /// resolver's own address.
    pub fn from_config(cfg: &DnsConfig, resolv_conf: &str) -> Settings {
        let upstream = if cfg.upstream.is_empty() {
            nameservers_of(resolv_conf)
                .into_iter()
                .filter(|a| *a != cfg.listen)
                .collect()
        } else {
            cfg.upstream.clone()
        };
        Settings {
            upstream,
            ttl: cfg.ttl,
            upstream_timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// What every request reads: the current table and the upstream.
struct State {
    table: RwLock<Arc<NameTable>>,
    upstream: Upstream,
    ttl: u32,
}

impl State {
    fn table(&self) -> Arc<NameTable> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_table(&self, table: NameTable) {
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }
}

/// hickory-server's handler: one reply per request.
struct Handler {
    state: Arc<State>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let table = self.state.table();
        let r = reply(&table, &self.state.upstream, self.state.ttl, request).await;
        let edns = response_edns(request);
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let response = builder.build(
            r.metadata,
            r.answers.iter(),
            r.authorities.iter(),
            std::iter::empty(),
            r.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                log::debug!("dns: answering {}: {e}", request.src());
                ResponseInfo::from(Header {
                    metadata: r.metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// The resolver, bound and ready to run.
pub struct NamesServer {
    udp: UdpSocket,
    tcp: TcpListener,
    state: Arc<State>,
    view: watch::Receiver<Arc<NetworkView>>,
}

impl NamesServer {
    /// Bind UDP and TCP on `listen` (a port of 0 picks one free for both).
    pub async fn bind(
        listen: SocketAddr,
        settings: Settings,
        view: watch::Receiver<Arc<NetworkView>>,
    ) -> Result<NamesServer, NamesError> {
        let bind_err = |proto| {
            move |source| NamesError::Bind {
                addr: listen,
                proto,
                source,
            }
        };
        let udp = UdpSocket::bind(listen).await.map_err(bind_err("udp"))?;
        let bound = udp.local_addr().map_err(bind_err("udp"))?;
        let tcp = TcpListener::bind(bound).await.map_err(bind_err("tcp"))?;
        Ok(NamesServer::with_sockets(udp, tcp, settings, view))
    }

    /// Sockets from [`bind_sockets`], or bound elsewhere (e.g. in another
    /// network namespace); needs a Tokio runtime.
    pub fn from_std(
        udp: std::net::UdpSocket,
        tcp: std::net::TcpListener,
        settings: Settings,
        view: watch::Receiver<Arc<NetworkView>>,
    ) -> Result<NamesServer, NamesError> {
        let addr = udp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let wrap = |proto| {
            move |source| NamesError::Bind {
                addr,
                proto,
                source,
            }
        };
        udp.set_nonblocking(true).map_err(wrap("udp"))?;
        tcp.set_nonblocking(true).map_err(wrap("tcp"))?;
        let udp = UdpSocket::from_std(udp).map_err(wrap("udp"))?;
        let tcp = TcpListener::from_std(tcp).map_err(wrap("tcp"))?;
        Ok(NamesServer::with_sockets(udp, tcp, settings, view))
    }

    fn with_sockets(
        udp: UdpSocket,
        tcp: TcpListener,
        settings: Settings,
        view: watch::Receiver<Arc<NetworkView>>,
    ) -> NamesServer {
        let table = NameTable::build(&view.borrow());
        NamesServer {
            udp,
            tcp,
            state: Arc::new(State {
                table: RwLock::new(Arc::new(table)),
                upstream: Upstream::new(settings.upstream, settings.upstream_timeout),
                ttl: settings.ttl,
            }),
            view,
        }
    }

    /// The address it answers on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.udp.local_addr().ok()
    }

    /// The upstream resolvers it forwards to.
    pub fn upstream(&self) -> &[SocketAddr] {
        self.state.upstream.servers()
    }

    /// Serve until the task is aborted, following the view.
    pub async fn run(self) {
        let follower = tokio::spawn(follow(self.view, self.state.clone()));
        let mut server = Server::new(Handler { state: self.state });
        server.register_socket(self.udp);
        server.register_listener(self.tcp, TCP_IDLE, TCP_BUFFER);
        // Aborting this future drops the server, whose tasks go with it.
        let _abort = AbortOnDrop(follower);
        if let Err(e) = server.block_until_done().await {
            log::error!("dns: the resolver stopped: {e}");
        }
    }

    /// [`NamesServer::run`] on a task of its own.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }
}

/// Bind UDP and TCP on `listen` (a port of 0 picks one free for both),
/// before a runtime exists: overlayd binds before anything changes, so a
/// taken port is refused with nothing disturbed; then
/// [`NamesServer::from_std`].
pub fn bind_sockets(
    listen: SocketAddr,
) -> Result<(std::net::UdpSocket, std::net::TcpListener), NamesError> {
    let err = |proto| {
        move |source| NamesError::Bind {
            addr: listen,
            proto,
            source,
        }
    };
    let udp = std::net::UdpSocket::bind(listen).map_err(err("udp"))?;
    let bound = udp.local_addr().map_err(err("udp"))?;
    let tcp = std::net::TcpListener::bind(bound).map_err(err("tcp"))?;
    Ok((udp, tcp))
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Rebuild the table on every change of the view, at once. When the
/// sender goes (the cluster source stopped), the last table stays.
async fn follow(mut view: watch::Receiver<Arc<NetworkView>>, state: Arc<State>) {
    loop {
        let snapshot = view.borrow_and_update().clone();
        let table = NameTable::build(&snapshot);
        let (networks, names) = table.counts();
        log::debug!("dns: {networks} networks, {names} names");
        state.set_table(table);
        if view.changed().await.is_err() {
            return;
        }
    }
}
