//! `overlayctl endpoint`: this host's containers.

use std::net::Ipv4Addr;

use clap::Subcommand;

use overlay_user::model::validation::parse_ipv4;
use overlay_user::sources::api::{Request, Response};

use crate::output::{print_json, table, Align};
use crate::{unexpected, CtlError, Ctx};

/// This host's containers.
#[derive(clap::Args, Debug)]
#[command(
    long_about = "This host's containers. Traffic from peers to an endpoint's address is \
delivered to the interface behind which it sits. Containers plugged into the bridge are found \
automatically (source \"discovered\"); with attach = \"veth\" a container is also learned \
from its first packet to another host (source \"learned\", until a \
source registers it); add the others by hand.",
    after_help = "Examples:\n  \
overlayctl endpoint add 10.103.100.5 --dev veth1a2b3c\n  \
overlayctl endpoint list\n  \
overlayctl endpoint del 10.103.100.5"
)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Deliver traffic for a container address to a host interface.
    #[command(
        long_about = "Deliver traffic for a container address to a host interface.\n\n\
IP must be in this host's subnet and be neither its network, broadcast nor gateway (.1) \
address. IFNAME is the host-side interface (usually the veth whose peer is in the container). \
The container's MAC is looked up on the bridge; if it is not known yet it is filled in once \
the container has sent traffic. Adding an IP that is already an endpoint replaces it.",
        after_help = "Example:\n  overlayctl endpoint add 10.103.100.5 --dev veth1a2b3c"
    )]
    Add {
        /// The container's address, e.g. 10.103.100.5.
        #[arg(value_parser = parse_ipv4)]
        ip: Ipv4Addr,
        /// The host-side interface, e.g. veth1a2b3c.
        #[arg(long, value_name = "IFNAME")]
        dev: String,
    },
    /// Forget a container address.
    #[command(after_help = "Example:\n  overlayctl endpoint del 10.103.100.5")]
    Del {
        /// The container's address.
        #[arg(value_parser = parse_ipv4)]
        ip: Ipv4Addr,
    },
    /// List the endpoints with their interface, MAC and source.
    #[command(
        long_about = "List the endpoints: address, interface, ifindex, MAC (\"unknown\" until \
learned) and source (config, api, discovered, docker, attach, or learned: taken by the \
dataplane from the container's first packet to another host, at most learn_limit per port).",
        after_help = "Examples:\n  overlayctl endpoint list\n  overlayctl --json endpoint list"
    )]
    List,
}

/// Run `overlayctl endpoint ...`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<(), CtlError> {
    match args.command {
        Command::Add { ip, dev } => {
            let done = format!("endpoint {ip} on {dev} added");
            ctx.change(
                Request::EndpointAdd {
                    ip: ip.to_string(),
                    dev,
                },
                done,
            )
            .await
        }
        Command::Del { ip } => {
            ctx.change(
                Request::EndpointDel { ip: ip.to_string() },
                format!("endpoint {ip} deleted"),
            )
            .await
        }
        Command::List => match ctx.request(Request::EndpointList).await? {
            Response::Endpoints(eps) if ctx.json => {
                print_json(&eps);
                Ok(())
            }
            Response::Endpoints(eps) => {
                let rows: Vec<Vec<String>> = eps
                    .iter()
                    .map(|e| {
                        vec![
                            e.ip.to_string(),
                            if e.dev.is_empty() {
                                "-".into()
                            } else {
                                e.dev.clone()
                            },
                            e.ifindex.to_string(),
                            e.mac.clone().unwrap_or_else(|| "unknown".into()),
                            e.source.to_string(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &[
                            ("IP", Align::Left),
                            ("DEV", Align::Left),
                            ("IFINDEX", Align::Right),
                            ("MAC", Align::Left),
                            ("SOURCE", Align::Left),
                        ],
                        &rows
                    )
                );
                Ok(())
            }
            other => Err(unexpected(&other)),
        },
    }
}
