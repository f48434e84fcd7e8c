//! overlayctl: the command-line client of overlayd's local API.
//!
//! One module per subcommand ([`peer`], [`endpoint`], [`status`],
//! [`attach`], [`detach`], [`hosts`], [`network`], [`cluster`],
//! [`docker_opts`], [`doctor`], [`monitor`]) and
//! [`output`] for tables and JSON. It talks to overlayd only through the
//! API's client and wire format (`overlay_user::sources::api`) and checks
//! values with the model's parsers; `cluster init` alone talks to etcd,
//! through the cluster source's client (`overlay_user::sources::cluster`),
//! and `docker-opts` reads overlayd's subnet file.

mod attach;
mod cluster;
mod detach;
mod docker_opts;
mod doctor;
mod endpoint;
mod hosts;
mod monitor;
mod network;
mod output;
mod peer;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use overlay_user::model::validation::InputError;
use overlay_user::sources::api::{self, ApiError, Request, Response};
use overlay_user::sources::cluster::ClusterError;

/// Manage the overlay agent (overlayd) of this host.
#[derive(Parser, Debug)]
#[command(
    name = "overlayctl",
    version,
    propagate_version = true,
    long_about = "Manage the overlay agent (overlayd) of this host through its local API socket.\n\n\
Peers are other hosts: their container subnet and the underlay address their VXLAN traffic \
goes to. Endpoints are this host's containers: an address in this host's subnet and the \
host-side interface (veth) behind which it sits. Containers plugged into the bridge are found \
automatically (source \"discovered\"); add endpoints by hand only for the others.\n\n\
Changes made here are kept by overlayd across restarts. Values are checked before anything is \
sent: a malformed value is reported with what is expected and exit status 2. A request overlayd \
refuses prints \"error: <why>\" and exits with status 1; nothing is changed then.",
    after_help = "Examples:\n  \
overlayctl peer add 10.103.200.0/24 192.168.56.5\n  \
overlayctl peer add 10.103.201.0/24 192.168.56.6 --vtep-mac 02:2a:c0:a8:38:06\n  \
overlayctl peer list\n  \
overlayctl peer del 10.103.200.0/24\n  \
overlayctl endpoint add 10.103.100.5 --dev veth1a2b3c\n  \
overlayctl endpoint list\n  \
overlayctl attach web 10.103.100.50/24\n  \
overlayctl detach web\n  \
overlayctl status\n  \
overlayctl --json status | jq .stats.drops\n  \
overlayctl doctor\n  \
overlayctl --socket /tmp/host1.sock peer list\n  \
overlayctl cluster init --etcd http://10.0.0.1:2379 --pool 10.103.0.0/16 --subnet-len 24 --vni 42\n  \
overlayctl hosts\n  \
overlayctl network create web --subnet 10.103.240.0/24\n  \
overlayctl network ls\n  \
overlayctl monitor --type drop\n  \
overlayctl docker-opts"
)]
struct Cli {
    /// overlayd's API socket.
    #[arg(long, global = true, value_name = "PATH", default_value = api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print JSON instead of tables (lists as arrays, status as an object, changes as {"ok":true}).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Other hosts' container subnets: add, delete, list.
    Peer(peer::Args),
    /// This host's containers: add, delete, list.
    Endpoint(endpoint::Args),
    /// Mode, settings, table sizes, counters and drops.
    Status(status::Args),
    /// Give a --network none container (or a namespace) an interface on the bridge and register it.
    Attach(attach::AttachArgs),
    /// Remove what `attach` made.
    Detach(detach::DetachArgs),
    /// The hosts of the cluster store (with [cluster]); `hosts rm NAME` removes a dead one.
    Hosts(hosts::Args),
    /// The cluster's overlay networks: create, ls, inspect, rm (with [cluster]).
    Network(network::Args),
    /// The cluster store: write its settings (`init`), show its state (`status`).
    Cluster(cluster::Args),
    /// Print dockerd's --bip and --mtu for this host's leased subnet.
    DockerOpts(docker_opts::Args),
    /// Check this host (MTU, sysctls, VXLAN port, firewall, addresses, peers, programs) and print the fixes.
    Doctor(doctor::Args),
    /// Watch the dataplane's events: drops with their reason, sampled encap/decap.
    Monitor(monitor::Args),
}

/// What every subcommand needs.
pub struct Ctx {
    /// overlayd's socket.
    pub socket: PathBuf,
    /// Print JSON.
    pub json: bool,
}

/// Why a subcommand failed; all exit with status 1.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// overlayd could not be reached or answered garbage.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// overlayd refused the request; nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// overlayd answered with a response of the wrong kind.
    #[error("overlayd sent an unexpected response: {0}")]
    Unexpected(String),
    /// A value given on the command line is not acceptable (exit status 2).
    #[error(transparent)]
    BadInput(InputError),
    /// `overlayctl doctor` found problems (listed on stdout).
    #[error("{0} problem(s) found")]
    Problems(usize),
    /// The subnet file's content is not what overlayd writes.
    #[error(transparent)]
    Input(#[from] InputError),
    /// etcd could not be used (`cluster init`).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The subnet file cannot be read (`docker-opts`).
    #[error("cannot read the subnet file {}: {source}; is overlayd running with a [cluster] section? (use --subnet-file PATH for another file)", path.display())]
    SubnetFile {
        /// The file.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
}

impl Ctx {
    /// Send `req`; an error response becomes [`CtlError::Refused`].
    pub async fn request(&self, req: Request) -> Result<Response, CtlError> {
        match api::call(&self.socket, &req).await? {
            Response::Error { message } => Err(CtlError::Refused(message)),
            resp => Ok(resp),
        }
    }

    /// Send a request that changes something, and confirm it with `done`.
    pub async fn change(&self, req: Request, done: String) -> Result<(), CtlError> {
        match self.request(req).await? {
            Response::Ok if self.json => output::print_json(&serde_json::json!({ "ok": true })),
            Response::Ok => println!("{done}"),
            other => return Err(unexpected(&other)),
        }
        Ok(())
    }
}

/// A response of the wrong kind.
pub fn unexpected(resp: &Response) -> CtlError {
    CtlError::Unexpected(serde_json::to_string(resp).unwrap_or_default())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = Ctx {
        socket: cli.socket,
        json: cli.json,
    };
    let result = match cli.command {
        Command::Peer(args) => peer::run(&ctx, args).await,
        Command::Endpoint(args) => endpoint::run(&ctx, args).await,
        Command::Status(args) => status::run(&ctx, args).await,
        Command::Attach(args) => attach::attach(&ctx, args).await,
        Command::Detach(args) => detach::detach(&ctx, args).await,
        Command::Hosts(args) => hosts::run(&ctx, args).await,
        Command::Network(args) => network::run(&ctx, args).await,
        Command::Cluster(args) => cluster::run(&ctx, args).await,
        Command::DockerOpts(args) => docker_opts::run(&ctx, args).await,
        Command::Doctor(args) => doctor::run(&ctx, args).await,
        Command::Monitor(args) => monitor::run(&ctx, args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ CtlError::Problems(_)) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
        Err(e @ CtlError::BadInput(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
