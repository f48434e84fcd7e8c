//! `overlayctl network create`.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use overlay_user::model::network_store::{check_network_subnet, check_network_vni};
use overlay_user::model::validation::{parse_cidr, parse_ipv4, InputError};
use overlay_user::sources::api::{Request, Response};

use crate::output::print_json;
use crate::{unexpected, CtlError, Ctx};

/// Create an overlay network.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
overlayctl network create web --subnet 10.103.240.0/24\n  \
overlayctl network create db                      # subnet, gateway and VNI chosen\n  \
overlayctl network create back --subnet 10.105.0.0/16 --gateway 10.105.255.254 --vni 5000\n  \
overlayctl --json network create web2             # prints the network created")]
pub struct Args {
    /// The network's name: 1 to 63 letters, digits, '_', '.' or '-'.
    #[arg(value_parser = super::parse_name)]
    name: String,
    /// Its subnet, shared by its containers on every host; default: the
    /// first free /24 of [cluster] network_pool (10.104.0.0/16).
    #[arg(long, value_name = "CIDR", value_parser = parse_subnet)]
    subnet: Option<Ipv4Net>,
    /// Its gateway, answered on every host; default: the subnet's first address.
    #[arg(long, value_name = "IP", value_parser = parse_ipv4)]
    gateway: Option<Ipv4Addr>,
    /// Its VXLAN network identifier (1 to 16777215, not the cluster's
    /// per-host VNI); default: the lowest free one from 4096 up.
    #[arg(long, value_name = "N", value_parser = parse_vni)]
    vni: Option<u32>,
}

fn parse_subnet(value: &str) -> Result<Ipv4Net, InputError> {
    let net = parse_cidr(value)?;
    check_network_subnet(net)?;
    Ok(net)
}

fn parse_vni(value: &str) -> Result<u32, String> {
    let vni: u32 = value
        .parse()
        .map_err(|_| format!("{value:?} is not a number; expected a VNI like 4096"))?;
    check_network_vni(vni).map_err(|e| e.to_string())?;
    Ok(vni)
}

/// Run `overlayctl network create`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<(), CtlError> {
    let req = Request::NetworkCreate {
        name: args.name,
        subnet: args.subnet.map(|s| s.to_string()),
        gateway: args.gateway.map(|g| g.to_string()),
        vni: args.vni,
    };
    match ctx.request(req).await? {
        Response::NetworkCreated(n) if ctx.json => print_json(&n),
        Response::NetworkCreated(n) => println!(
            "network {} created: VNI {}, subnet {}, gateway {}",
            n.name, n.vni, n.subnet, n.gateway
        ),
        other => return Err(unexpected(&other)),
    }
    Ok(())
}
