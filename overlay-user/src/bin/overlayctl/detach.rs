//! `overlayctl detach`: remove what `overlayctl attach` made.

use overlay_user::model::attach::Detachment;
use overlay_user::sources::api::{Request, Response};

use crate::output::print_json;
use crate::{unexpected, CtlError, Ctx};

/// Remove what `overlayctl attach` made.
#[derive(clap::Args, Debug)]
#[command(
    long_about = "Remove what `overlayctl attach` made: the endpoint and the veth pair (which \
takes the container's eth0, its address and its route with it).",
    after_help = "Examples:\n  overlayctl detach web\n  overlayctl detach --netns blue"
)]
pub struct DetachArgs {
    /// The container (name or ID); leave out with --netns.
    #[arg(
        value_name = "CONTAINER",
        required_unless_present = "netns",
        conflicts_with = "netns"
    )]
    container: Option<String>,
    /// Detach the named network namespace instead of a container.
    #[arg(long, value_name = "NAME")]
    netns: Option<String>,
}

/// Run `overlayctl detach ...`.
pub async fn detach(ctx: &Ctx, args: DetachArgs) -> Result<(), CtlError> {
    let req = Request::Detach {
        container: args.container,
        netns: args.netns,
    };
    match ctx.request(req).await? {
        Response::Detached(d) if ctx.json => print_json(&d),
        Response::Detached(d) => println!("{}", describe_detach(&d)),
        other => return Err(unexpected(&other)),
    }
    Ok(())
}

fn describe_detach(d: &Detachment) -> String {
    let mut parts = Vec::new();
    if d.interface_removed {
        parts.push(format!("removed {} and its peer", d.host_ifname));
    }
    if let Some(ip) = d.ip {
        parts.push(format!("endpoint {ip} deleted"));
    }
    format!("detached {}: {}", d.target, parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlay_user::model::attach::Target;

    #[test]
    fn describes() {
        let d = Detachment {
            target: Target::Netns("blue".into()),
            host_ifname: "ovln0123456789a".into(),
            interface_removed: true,
            ip: Some("10.103.100.51".parse().unwrap()),
        };
        assert_eq!(
            describe_detach(&d),
            "detached network namespace blue: removed ovln0123456789a and its peer, endpoint 10.103.100.51 deleted"
        );
    }
}
