//! overlayd: the overlay agent of one host.
//!
//! The top of the crate: it reads the config file, with `[cluster]` leases
//! this host's subnet in etcd (`sources::cluster::lease`), starts the
//! dataplane (`dataplane::select`), hands the agent core to the control
//! sources (the config file's peers, the state file, the API with the
//! attach source, Docker, discovery, the cluster) and waits for SIGTERM or
//! SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use log::LevelFilter;
use tokio::signal::unix::{signal, Signal, SignalKind};

use overlay_user::agent::handle::Core;
use overlay_user::agent::tables::{resolve_underlay_ip, Agent};
use overlay_user::agent::{lock, state};
use overlay_user::dataplane::bpf::loader;
use overlay_user::dataplane::select;
use overlay_user::model::config::{Config, DataplaneChoice};
use overlay_user::model::status::mode_name;
use overlay_user::sources::api::{self, ApiSource};
use overlay_user::sources::attach::network::Networks;
use overlay_user::sources::attach::Attacher;
use overlay_user::sources::cluster::lease::{self, Lease, Me, Origin};
use overlay_user::sources::cluster::netview;
use overlay_user::sources::cluster::registry::ClusterSource;
use overlay_user::sources::cluster::view::ClusterHandle;
use overlay_user::sources::cluster::{saved, ClusterError};
use overlay_user::sources::config::{self as config_file, ConfigFile};
use overlay_user::sources::discovery::Discovery;
use overlay_user::sources::docker::watcher::Watcher;
use overlay_user::sources::metrics;
use overlay_user::sources::names::server::{bind_sockets, NamesServer, Settings};
use overlay_user::sources::plugin::{PluginSource, Settings as PluginSettings};
use overlay_user::sources::{self, ControlSource, NetworkDirectory};
use overlay_user::sys::netlink::{Netlink, RtNetlink};

/// The overlay agent: connects this host's containers to other hosts' over VXLAN.
#[derive(Parser, Debug)]
#[command(
    name = "overlayd",
    version,
    long_about = "The overlay agent: connects this host's containers to the containers of other \
hosts over VXLAN.\n\n\
overlayd reads its config file, loads the dataplane (eBPF programs on the bridge ports and the \
underlay interface; or, with dataplane = kernel, and with auto when the eBPF programs cannot be \
loaded, a kernel VXLAN device ovl.<VNI> with a neighbour entry, an FDB entry and a route per \
peer, as flannel does), removes what the other mode left behind, routes the config's peers, re-applies the peers and endpoints added \
earlier through the API (kept in STATE_DIR/state.json), discovers the containers plugged into \
the bridge (at once on link and neighbour changes, and every second), follows Docker with a \
[docker] section, with a [cluster] section leases its subnet in etcd and makes every other \
host registered there a peer (source cluster; see overlayctl cluster and overlayctl hosts), \
with [dns] (and [cluster]) answers the overlay networks' container names to the containers of \
the same network and forwards other names upstream (docs/operations.md, \"Names across hosts\"), \
and serves overlayctl on a Unix socket. It runs until SIGTERM or \
SIGINT. Without --cleanup the dataplane keeps forwarding after it exits, and the next start \
takes over.\n\n\
A bad config file is reported with its problem and exit status 2; nothing is changed then. \
A second overlayd on the same state_dir or pin_dir refuses to start, naming the running one; \
pins of another map layout under pin_dir are refused with what to do; a corrupt state file is \
moved aside (state.json.corrupt-<unix time>) and the start goes on from the config file.",
    after_help = "Examples:\n  \
overlayd --config /etc/overlay/overlay.toml\n  \
overlayd --config ./host1.toml --socket /tmp/host1.sock --log-level debug\n  \
overlayd --config /etc/overlay/overlay.toml --log-format json   # one JSON object per line\n  \
overlayd --config /etc/overlay/overlay.toml --cleanup   # remove everything on exit\n\n\
Minimal config file:\n  \
underlay_interface = \"eth1\"\n  \
subnet = \"10.103.100.0/24\"\n  \
bridge = \"docker0\"\n  \
vni = 42\n  \
[[peers]]\n  \
subnet = \"10.103.200.0/24\"\n  \
underlay_ip = \"192.168.56.5\"\n\n\
Once running, manage it with overlayctl (see overlayctl --help)."
)]
struct Args {
    /// The TOML config file.
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
    /// The API socket overlayctl talks to.
    #[arg(short, long, value_name = "PATH", default_value = api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// On shutdown, remove every program, pin, map, device and route of ours
    /// (the state file of API-added peers is kept); with [cluster], leave:
    /// release the lease, so every other host drops this one at once.
    #[arg(long)]
    cleanup: bool,
    /// Log level: off, error, warn, info, debug or trace (default: info, or RUST_LOG).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<LevelFilter>,
    /// Log format on stderr: text (one human line per event) or json (one
    /// object per line, with the event's fields and its spans, for log shippers).
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// Which dataplane forwards packets, overriding `dataplane` in the config:
    /// auto (eBPF, else the kernel's VXLAN device), ebpf or kernel.
    #[arg(long, value_enum, value_name = "MODE")]
    dataplane: Option<DataplaneChoice>,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// `2026-12-01T12:00:00.000000Z  INFO reconcile{source=api}: overlay_user::agent: peer added ...`
    Text,
    /// `{"timestamp":...,"level":"INFO","fields":{"message":...},"span":{...},"spans":[...]}`
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_level, args.log_format);

    // A bad config changes nothing: check it before anything else.
    let mut cfg = match config_file::load(&args.config) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(choice) = args.dataplane {
        cfg.dataplane = choice;
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::BadInput(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Other(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// info by default; RUST_LOG refines it; --log-level overrides both.
/// Through `tracing` (spans of the agent's reconciles and refreshes), with
/// the `log` crate's records bridged in, so every `log::` call shows too.
fn init_logging(level: Option<LevelFilter>, format: LogFormat) {
    use tracing_subscriber::filter::{EnvFilter, LevelFilter as TraceLevel};
    let default = match level {
        Some(LevelFilter::Off) => TraceLevel::OFF,
        Some(LevelFilter::Error) => TraceLevel::ERROR,
        Some(LevelFilter::Warn) => TraceLevel::WARN,
        Some(LevelFilter::Info) | None => TraceLevel::INFO,
        Some(LevelFilter::Debug) => TraceLevel::DEBUG,
        Some(LevelFilter::Trace) => TraceLevel::TRACE,
    };
    // It warns about every link dump on kernels newer than it knows (IFLA_INET6_CONF size).
    let quiet = "netlink_packet_route=error";
    let filter = match (level, std::env::var("RUST_LOG")) {
        (None, Ok(env)) if !env.is_empty() => format!("{quiet},{env}"),
        _ => format!("{default},{quiet}"),
    };
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("warning: RUST_LOG: {e}; logging at info");
        EnvFilter::new(format!("info,{quiet}"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    // try_init also installs tracing-log's LogTracer, capped at the filter's level.
    if let Err(e) = installed {
        eprintln!("warning: cannot set up logging: {e}");
    }
}

/// How `run` failed: input problems (exit 2, nothing changed) or anything else (exit 1).
enum Failure {
    BadInput(anyhow::Error),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

async fn run(args: Args, mut cfg: Config) -> Result<(), Failure> {
    // Installed first, so that a signal at any point from here on is a clean shutdown.
    let term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let net: Arc<dyn Netlink> = Arc::new(RtNetlink::connect().context("netlink")?);

    // Everything that can be refused is checked before the dataplane is touched.
    let underlay_ip = resolve_underlay_ip(&cfg, &*net).await.map_err(|e| {
        Failure::BadInput(anyhow::Error::new(e).context(format!(
            "config file {}: underlay_interface {}",
            args.config.display(),
            cfg.underlay_interface
        )))
    })?;
    // Our pins are removed under pin_dir (--cleanup, kernel mode): never
    // where other tools pin. Pins of another map layout are refused in
    // every mode, before anything changes.
    loader::check_pin_dir(&cfg.pin_dir).map_err(|e| {
        Failure::BadInput(
            anyhow::Error::new(e).context(format!("config file {}", args.config.display())),
        )
    })?;
    loader::check_layout(&cfg.pin_dir).map_err(anyhow::Error::new)?;
    if let Err(e) = net.link_by_name(&cfg.bridge).await {
        log::warn!(
            "bridge {}: {e}; containers will be found once it exists",
            cfg.bridge
        );
    }
    // Before anything of the state or pin directory is touched (and the
    // API socket): one overlayd per directory. Held until the process ends.
    let _lock = lock::acquire(&cfg.state_dir, &cfg.pin_dir).map_err(anyhow::Error::new)?;
    let saved = state::load_or_set_aside(&state::path_in(&cfg.state_dir))
        .map_err(|e| Failure::BadInput(e.into()))?;
    let listener = api::bind(&args.socket)
        .await
        .map_err(|e| Failure::BadInput(e.into()))?;
    // The names resolver's port too, before anything changes.
    let dns_sockets = match cfg.dns.as_ref().map(|d| bind_sockets(d.listen)).transpose() {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&args.socket);
            return Err(Failure::BadInput(e.into()));
        }
    };
    // With [cluster], the subnet (and VNI, port) come from the lease, taken
    // before the dataplane starts.
    let lease = match join_cluster(&mut cfg, underlay_ip, &*net).await {
        Ok(lease) => lease,
        Err(e) => {
            let _ = std::fs::remove_file(&args.socket);
            return Err(e);
        }
    };

    let started = match select::start(&cfg, underlay_ip, cfg.dataplane).await {
        Ok(started) => started,
        Err(e) => {
            let _ = std::fs::remove_file(&args.socket);
            return Err(Failure::Other(
                anyhow::Error::new(e).context("starting the dataplane"),
            ));
        }
    };
    let mut agent = Agent::new(cfg.clone(), started.dataplane, net.clone(), underlay_ip);
    agent.set_mode_reason(Some(started.reason));
    let mode = agent.mode();
    let core = Core::new(agent);
    // The config file's peers first, then what the API and attach added earlier.
    Box::new(ConfigFile::new(&cfg)).run(core.clone()).await;
    core.restore(saved).await;
    // The cluster's last-known hosts too (other hosts' records become
    // peers; this host's record is kept current once it runs).
    let me = lease.as_ref().map(|l| l.record.name.clone());
    let (mut cluster, cluster_view) = match lease {
        Some(lease) => {
            let (source, view) = ClusterSource::new(lease);
            (Some(source), Some(view))
        }
        None => (None, None),
    };
    if let Some(c) = cluster.as_mut() {
        c.install_cached(&core).await;
    }
    // The names resolver reads the networks and endpoint records through
    // the directory, which follows them in the store (cluster::netview).
    let names = match (cluster.as_mut(), &cfg.dns, dns_sockets) {
        (Some(c), Some(dns), Some((udp, tcp))) => {
            let (view, follower) = netview::spawn(c.store());
            c.set_view(view);
            let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            let settings = Settings::from_config(dns, &resolv);
            let server = NamesServer::from_std(udp, tcp, settings, c.directory().subscribe_view())
                .context("the names resolver")?;
            if server.upstream().is_empty() {
                log::warn!("dns: no upstream resolver (dns.upstream is empty, /etc/resolv.conf names none): names outside the overlay get SERVFAIL");
            }
            log::info!(
                "dns: answering the overlay networks' names on {} (UDP and TCP); other names go to {:?}",
                dns.listen,
                server.upstream()
            );
            Some((server.spawn(), follower))
        }
        _ => None,
    };
    // What an earlier run left that no source added again goes now, before
    // it forwards unlisted.
    core.forget_unowned().await;
    let ready = format!(
        "overlayd ready: mode={} subnet={} underlay={} ({}) vni={} port={} api={}",
        mode_name(mode),
        cfg.subnet,
        cfg.underlay_interface,
        underlay_ip,
        cfg.vni,
        cfg.vxlan_port,
        args.socket.display()
    );
    // With [cluster], attach plumbs into the overlay networks too, and with
    // [docker] plugin = true the Docker plugin ovl serves them to Docker.
    let directory: Option<Arc<dyn NetworkDirectory>> = cluster
        .as_ref()
        .map(|c| Arc::new(c.directory()) as Arc<dyn NetworkDirectory>);
    let attacher = match (&directory, &me) {
        (Some(dir), Some(host)) => Attacher::with_networks(Networks {
            dir: dir.clone(),
            host: host.clone(),
            underlay_ip,
        }),
        _ => Attacher::default(),
    };
    let plugin = match (&directory, &me, cfg.docker.plugin) {
        (Some(dir), Some(host), true) => {
            let settings = PluginSettings::new(&cfg, host.clone(), underlay_ip);
            let source = PluginSource::new(dir.clone(), settings)
                .map_err(|e| Failure::BadInput(anyhow::Error::new(e)))?;
            Some(source)
        }
        _ => None,
    };
    let mut api_source = ApiSource::new(
        listener,
        Arc::new(attacher),
        api::Limits::from_config(&cfg.api),
    );
    if let Some(view) = &cluster_view {
        api_source = api_source.with_cluster(Arc::new(view.clone()));
    }
    if let Some(c) = &cluster {
        api_source = api_source.with_networks(Arc::new(c.directory()));
    }
    let server = sources::spawn(Box::new(api_source), core.clone());
    let cluster = cluster.map(|c| sources::spawn(Box::new(c), core.clone()));
    let plugin = plugin.map(|p| sources::spawn(Box::new(p), core.clone()));
    // Containers join by themselves when [docker] is enabled.
    let watcher =
        Watcher::from_config(&cfg.docker, cfg.subnet).context("netlink for the Docker watcher")?;
    // Prometheus metrics, with metrics_address.
    let metrics = match cfg.metrics_address {
        Some(address) => {
            let extra = metrics::Extra {
                cluster: cluster_view
                    .as_ref()
                    .map(|v| Arc::new(v.clone()) as Arc<dyn sources::ClusterView>),
                docker: watcher.as_ref().map(Watcher::state),
            };
            let source = metrics::MetricsSource::bind(address, extra)
                .await
                .map_err(|e| Failure::Other(e.into()))?;
            Some(sources::spawn(Box::new(source), core.clone()))
        }
        None => None,
    };
    let docker = watcher.map(|w| sources::spawn(Box::new(w), core.clone()));
    println!("{ready}");
    log::info!("{ready}");

    // Containers on the bridge, and the dataplane's housekeeping: every
    // second, and at once when a link or neighbour changes.
    let discovery = sources::spawn(
        Box::new(Discovery::new(
            net,
            cfg.bridge.clone(),
            cfg.subnet,
            cfg.learn_limit,
        )),
        core.clone(),
    );

    wait_for_signal(term, int).await;

    let (names, names_follower) = names.unzip();
    for task in [
        Some(discovery),
        Some(server),
        docker,
        plugin,
        cluster,
        names,
        names_follower,
        metrics,
    ]
    .into_iter()
    .flatten()
    {
        task.abort();
        let _ = task.await;
    }
    if let (true, Some(view)) = (args.cleanup, &cluster_view) {
        leave_cluster(&cfg, view).await;
    }
    let _ = std::fs::remove_file(&args.socket);
    log::info!(
        "shutting down{}",
        if args.cleanup {
            " and cleaning up"
        } else {
            "; the dataplane keeps forwarding"
        }
    );
    core.shutdown(args.cleanup).await.context("shutdown")?;
    Ok(())
}

/// With `[cluster]`: lease this host's subnet (see `sources::cluster::lease`),
/// fill in the config's subnet, VNI and port from it, and write the subnet file.
async fn join_cluster(
    cfg: &mut Config,
    underlay_ip: std::net::Ipv4Addr,
    net: &dyn Netlink,
) -> Result<Option<Lease>, Failure> {
    let Some(cluster) = cfg.cluster.clone() else {
        return Ok(None);
    };
    let refused = |e: ClusterError| match e {
        ClusterError::Contradiction { .. }
        | ClusterError::OutsidePool { .. }
        | ClusterError::SubnetHeld { .. }
        | ClusterError::NameTaken { .. }
        | ClusterError::Hostname { .. } => Failure::BadInput(anyhow::Error::new(e)),
        e => Failure::Other(anyhow::Error::new(e).context("joining the cluster")),
    };
    let name = match &cluster.name {
        Some(name) => name.clone(),
        None => hostname().map_err(refused)?,
    };
    let me = Me {
        name,
        underlay_ip,
        subnet: (!cfg.pending.subnet).then_some(cfg.subnet),
        vni: (!cfg.pending.vni).then_some(cfg.vni),
        port: (!cfg.pending.vxlan_port).then_some(cfg.vxlan_port),
    };
    let lease = lease::acquire(&cluster, &me, &cfg.state_dir)
        .await
        .map_err(refused)?;
    let s = &lease.settings;
    cfg.apply_cluster(lease.record.subnet, s.vni, s.port)
        .map_err(|e| Failure::BadInput(anyhow::Error::new(e).context("the leased subnet")))?;
    let how = match lease.origin {
        Origin::Configured => "registered as configured".to_string(),
        Origin::Saved => "the saved lease, renewed".into(),
        Origin::Reclaimed => "reclaimed from the store".into(),
        Origin::Leased => "leased".into(),
        Origin::Offline => format!(
            "the saved lease; etcd is unreachable ({}), so {} last-known hosts are used until it is back",
            lease.offline_reason.as_deref().unwrap_or("?"),
            lease.cached.len()
        ),
    };
    log::info!(
        "cluster: {} has {} ({how}) in pool {} (/{}), vni {}, port {}",
        me.name,
        lease.record.subnet,
        s.pool,
        s.subnet_len,
        s.vni,
        s.port
    );
    let mtu = net
        .link_by_name(&cfg.underlay_interface)
        .await
        .map(|l| l.mtu)
        .unwrap_or(1500)
        .saturating_sub(overlay_common::VXLAN_OVERHEAD);
    saved::write_subnet_file(&cluster.subnet_file, s.pool, lease.record.subnet, mtu)
        .map_err(|e| Failure::Other(e.into()))?;
    Ok(Some(lease))
}

/// This host's name: the kernel's hostname.
fn hostname() -> Result<String, ClusterError> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .map_err(|e| ClusterError::Hostname {
            hostname: String::new(),
            reason: e.to_string(),
        })?;
    overlay_user::model::config::cluster::check_host_name(&name).map_err(|e| {
        ClusterError::Hostname {
            hostname: name.clone(),
            reason: e.to_string(),
        }
    })?;
    Ok(name)
}

/// A clean leave (`--cleanup`): release the lease (every other host drops
/// this one at once), forget the saved lease, remove the subnet file.
async fn leave_cluster(cfg: &Config, view: &ClusterHandle) {
    if let Err(e) = view.leave().await {
        log::warn!("cluster: leaving: {e}; the other hosts drop this one when its lease expires");
    }
    saved::remove(&saved::path_in(&cfg.state_dir));
    if let Some(c) = &cfg.cluster {
        saved::remove(&c.subnet_file);
    }
}

/// Waits for SIGTERM or SIGINT.
async fn wait_for_signal(mut term: Signal, mut int: Signal) {
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM"),
        _ = int.recv() => log::info!("SIGINT"),
    }
}
