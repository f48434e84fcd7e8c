//! `overlayctl network rm`.

use overlay_user::sources::api::{Request, Response};

use crate::output::print_json;
use crate::{unexpected, CtlError, Ctx};

/// Remove an overlay network.
#[derive(clap::Args, Debug)]
#[command(
    long_about = "Remove an overlay network from the cluster store, with its VNI, subnet and \
addresses; every host stops carrying it within seconds. Refused while an endpoint (a container \
on any host) is on it: the error names each one (address, container, host).",
    after_help = "Example:\n  overlayctl network rm web"
)]
pub struct Args {
    /// The network's name, as `overlayctl network ls` lists it.
    #[arg(value_parser = super::parse_name)]
    name: String,
}

/// Run `overlayctl network rm`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<(), CtlError> {
    match ctx.request(Request::NetworkRm { name: args.name }).await? {
        Response::NetworkRemoved(n) if ctx.json => print_json(&n),
        Response::NetworkRemoved(n) => {
            println!(
                "network {} removed (VNI {}, subnet {})",
                n.name, n.vni, n.subnet
            )
        }
        other => return Err(unexpected(&other)),
    }
    Ok(())
}
