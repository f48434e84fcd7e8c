//! `overlayctl network`: the cluster's overlay networks (create, ls,
//! inspect, rm), one module per subcommand.

mod create;
mod inspect;
mod ls;
mod rm;

use clap::Subcommand;

use overlay_user::model::network_store::check_network_name;
use overlay_user::model::validation::InputError;

use crate::{CtlError, Ctx};

/// The cluster's overlay networks.
#[derive(clap::Args, Debug)]
#[command(
    long_about = "The cluster's overlay networks (overlayd with a [cluster] section), Docker's \
overlay model: a network is created once, on any host, and exists on every host; its containers \
share one subnet across hosts and one VXLAN VNI keeps it apart from the others. The name, VNI \
and subnet are unique in the cluster; what is not given is chosen (a free VNI from 4096 up, the \
first free /24 of [cluster] network_pool, the subnet's first address as gateway).",
    after_help = "Examples:\n  \
overlayctl network create web --subnet 10.103.240.0/24\n  \
overlayctl network create db\n  \
overlayctl network ls\n  \
overlayctl network inspect web\n  \
overlayctl network rm web"
)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a network in the cluster store; every host carries it within seconds.
    Create(create::Args),
    /// List the networks, marking those this host carries.
    #[command(alias = "list")]
    Ls(ls::Args),
    /// Show a network and its endpoints on every host.
    Inspect(inspect::Args),
    /// Remove a network; refused while containers are on it.
    #[command(alias = "remove")]
    Rm(rm::Args),
}

/// A network's name, checked before anything is sent.
pub fn parse_name(value: &str) -> Result<String, InputError> {
    check_network_name(value)?;
    Ok(value.to_string())
}

/// Run `overlayctl network ...`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<(), CtlError> {
    match args.command {
        Command::Create(a) => create::run(ctx, a).await,
        Command::Ls(a) => ls::run(ctx, a).await,
        Command::Inspect(a) => inspect::run(ctx, a).await,
        Command::Rm(a) => rm::run(ctx, a).await,
    }
}
