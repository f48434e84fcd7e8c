//! `overlayctl attach`: plumb a container started with `--network none`
//! (or a named network namespace) into the overlay.

use clap::error::ErrorKind;
use clap::CommandFactory;

use overlay_user::model::attach::{Attachment, Target};
use overlay_user::sources::api::{Request, Response};
use overlay_user::sources::attach::parse_address;

use crate::output::print_json;
use crate::{unexpected, Cli, CtlError, Ctx};

/// Give a container (or a named network namespace) an interface on this host's bridge.
#[derive(clap::Args, Debug)]
#[command(
    long_about = "Give a container started with --network none (or a named network namespace) \
an interface on this host's bridge, as pipework does, and register it as an endpoint (source \
\"attach\").\n\n\
overlayd creates a veth pair, moves one end into the container's network namespace (found \
through the container's PID from the Docker API) as eth0 with ADDRESS, a Docker-style MAC \
(02:42 and the address), the overlay MTU (the underlay's minus 50 unless --mtu is given) and a \
default route via this host's gateway, and plugs the other end (ovlc... or ovln...) into the \
bridge. The address must be a free container address of this host's subnet, with the subnet's \
prefix length. The endpoint is kept across restarts of overlayd; it is removed when the \
container stops (with [docker] enabled) or by `overlayctl detach`.\n\n\
With --network NAME (overlayd with [cluster]) the container joins that overlay network of the \
cluster instead: its address comes from the network's IPAM, unique across hosts (or --ip), the \
default route goes via the network's gateway, the host end (ovn...) is served by the dataplane \
and the endpoint is published in the store so that every host reaches it. Give no ADDRESS then.",
    after_help = "Examples:\n  \
docker run -d --network none --name web busybox httpd -f\n  \
overlayctl attach web 10.103.100.50/24\n  \
overlayctl attach --netns blue 10.103.100.51/24 --mtu 1400\n  \
overlayctl attach web --network front\n  \
overlayctl attach --netns blue --network front --ip 10.103.240.9"
)]
pub struct AttachArgs {
    /// CONTAINER (name or ID) and ADDRESS (e.g. 10.103.100.50/24); with --netns, ADDRESS only;
    /// with --network, CONTAINER only (nothing with --netns).
    #[arg(value_name = "CONTAINER ADDRESS", num_args = 0..=2)]
    args: Vec<String>,
    /// Attach the named network namespace (/run/netns/NAME) instead of a container.
    #[arg(long, value_name = "NAME")]
    netns: Option<String>,
    /// The interface's MTU (default: the underlay interface's MTU minus 50).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(68..=65535))]
    mtu: Option<u32>,
    /// Join this overlay network of the cluster instead of the bridge.
    #[arg(long, value_name = "NAME")]
    network: Option<String>,
    /// With --network: this address instead of one from the network's IPAM.
    #[arg(long, value_name = "IP", requires = "network", value_parser = parse_ip)]
    ip: Option<std::net::Ipv4Addr>,
}

fn parse_ip(value: &str) -> Result<std::net::Ipv4Addr, String> {
    overlay_user::model::validation::parse_ipv4(value).map_err(|e| e.to_string())
}

fn usage(message: &str) -> ! {
    let mut cmd = Cli::command();
    cmd.build();
    let sub = cmd.find_subcommand_mut("attach").cloned();
    match sub {
        Some(mut sub) => sub.error(ErrorKind::WrongNumberOfValues, message).exit(),
        None => cmd.error(ErrorKind::WrongNumberOfValues, message).exit(),
    }
}

/// Run `overlayctl attach ...`.
pub async fn attach(ctx: &Ctx, args: AttachArgs) -> Result<(), CtlError> {
    let req = if let Some(network) = args.network {
        let container = match (&args.netns, args.args.as_slice()) {
            (Some(_), []) => None,
            (None, [container]) => Some(container.clone()),
            (Some(_), _) => usage("with --netns NAME --network NET, give no CONTAINER or ADDRESS"),
            (None, _) => usage("with --network NET, give only CONTAINER (the address comes from the network, or --ip)"),
        };
        Request::Attach {
            container,
            netns: args.netns,
            address: args.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            mtu: args.mtu,
            network: Some(network),
        }
    } else {
        let (container, address) = match (&args.netns, args.args.as_slice()) {
            (Some(_), [address]) => (None, address.clone()),
            (None, [container, address]) => (Some(container.clone()), address.clone()),
            (Some(_), _) => usage("with --netns NAME, give only ADDRESS (e.g. 10.103.100.50/24)"),
            (None, _) => usage("give CONTAINER and ADDRESS (e.g. web 10.103.100.50/24)"),
        };
        if let Err(e) = parse_address(&address) {
            usage(&e.to_string());
        }
        Request::Attach {
            container,
            netns: args.netns,
            address,
            mtu: args.mtu,
            network: None,
        }
    };
    match ctx.request(req).await? {
        Response::Attached(a) if ctx.json => print_json(&a),
        Response::Attached(a) => println!("{}", describe_attach(&a)),
        other => return Err(unexpected(&other)),
    }
    Ok(())
}

fn target(t: &Target) -> String {
    t.to_string()
}

fn describe_attach(a: &Attachment) -> String {
    if let Some(network) = &a.network {
        return format!(
            "attached {} to network {network}: {} {}/{} mac {} mtu {} gateway {}; host side {}",
            target(&a.target),
            a.ifname,
            a.ip,
            a.prefix,
            a.mac,
            a.mtu,
            a.gateway,
            a.host_ifname
        );
    }
    format!(
        "attached {}: {} {}/{} mac {} mtu {} gateway {}; host side {} on {}",
        target(&a.target),
        a.ifname,
        a.ip,
        a.prefix,
        a.mac,
        a.mtu,
        a.gateway,
        a.host_ifname,
        a.bridge
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes() {
        let a = Attachment {
            target: Target::Container("web".into()),
            ifname: "eth0".into(),
            ip: "10.103.100.50".parse().unwrap(),
            prefix: 24,
            mac: "02:42:0a:67:64:32".into(),
            mtu: 1450,
            gateway: "10.103.100.1".parse().unwrap(),
            host_ifname: "ovlc3ffd421aa32".into(),
            network: None,
            bridge: "docker0".into(),
        };
        assert_eq!(
            describe_attach(&a),
            "attached container web: eth0 10.103.100.50/24 mac 02:42:0a:67:64:32 mtu 1450 gateway 10.103.100.1; host side ovlc3ffd421aa32 on docker0"
        );
    }
}
