//! `overlayctl network ls`.

use overlay_user::sources::api::{NetworkInfo, Request, Response};

use crate::output::{print_json, table, Align};
use crate::{unexpected, CtlError, Ctx};

/// List the overlay networks.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
overlayctl network ls\n  \
overlayctl --json network ls | jq -r '.[].name'")]
pub struct Args {}

/// The networks as a table; CARRIED says whether this host's dataplane has it.
pub fn render(nets: &[NetworkInfo]) -> String {
    let rows: Vec<Vec<String>> = nets
        .iter()
        .map(|n| {
            vec![
                n.spec.name.clone(),
                n.spec.vni.to_string(),
                n.spec.subnet.to_string(),
                n.spec.gateway.to_string(),
                if n.carried { "yes" } else { "no" }.into(),
            ]
        })
        .collect();
    table(
        &[
            ("NAME", Align::Left),
            ("VNI", Align::Right),
            ("SUBNET", Align::Left),
            ("GATEWAY", Align::Left),
            ("CARRIED", Align::Left),
        ],
        &rows,
    )
}

/// Run `overlayctl network ls`.
pub async fn run(ctx: &Ctx, _args: Args) -> Result<(), CtlError> {
    match ctx.request(Request::NetworkList).await? {
        Response::Networks(nets) if ctx.json => print_json(&nets),
        Response::Networks(nets) => print!("{}", render(&nets)),
        other => return Err(unexpected(&other)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlay_user::model::overlay_network::NetworkSpec;

    #[test]
    fn renders() {
        let n = NetworkInfo {
            spec: NetworkSpec {
                name: "web".into(),
                vni: 4096,
                subnet: "10.104.0.0/24".parse().unwrap(),
                gateway: "10.104.0.1".parse().unwrap(),
            },
            carried: false,
        };
        assert_eq!(
            render(&[n]),
            "NAME   VNI  SUBNET         GATEWAY     CARRIED\n\
             web   4096  10.104.0.0/24  10.104.0.1  no\n"
        );
    }
}
