//! `overlayctl network inspect`.

use overlay_user::sources::api::{NetworkDetail, Request, Response};

use crate::output::{print_json, table, Align};
use crate::{unexpected, CtlError, Ctx};

/// Show an overlay network and its endpoints.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
overlayctl network inspect web\n  \
overlayctl --json network inspect web | jq '.endpoints[].ip'")]
pub struct Args {
    /// The network's name, as `overlayctl network ls` lists it.
    #[arg(value_parser = super::parse_name)]
    name: String,
}

/// The network's settings, then its endpoints on every host; INSTALLED
/// names who put each in this host's dataplane ("-" for none).
pub fn render(d: &NetworkDetail) -> String {
    let s = &d.info.spec;
    let settings = vec![
        vec!["name".into(), s.name.clone()],
        vec!["vni".into(), s.vni.to_string()],
        vec!["subnet".into(), s.subnet.to_string()],
        vec!["gateway".into(), s.gateway.to_string()],
        vec![
            "carried".into(),
            if d.info.carried { "yes" } else { "no" }.into(),
        ],
        vec!["endpoints".into(), d.endpoints.len().to_string()],
    ];
    let mut out = table(
        &[("SETTING", Align::Left), ("VALUE", Align::Left)],
        &settings,
    );
    if d.endpoints.is_empty() {
        return out;
    }
    let rows: Vec<Vec<String>> = d
        .endpoints
        .iter()
        .map(|e| {
            vec![
                e.ip.to_string(),
                e.mac.clone(),
                format!("{} ({})", e.host, e.underlay_ip),
                if e.name.is_empty() {
                    e.container.chars().take(12).collect()
                } else {
                    e.name.clone()
                },
                e.installed.map_or("-".into(), |s| s.to_string()),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(
        &[
            ("IP", Align::Left),
            ("MAC", Align::Left),
            ("HOST", Align::Left),
            ("CONTAINER", Align::Left),
            ("INSTALLED", Align::Left),
        ],
        &rows,
    ));
    out
}

/// Run `overlayctl network inspect`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<(), CtlError> {
    match ctx
        .request(Request::NetworkInspect { name: args.name })
        .await?
    {
        Response::Network(d) if ctx.json => print_json(&d),
        Response::Network(d) => print!("{}", render(&d)),
        other => return Err(unexpected(&other)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlay_user::model::overlay_network::NetworkSpec;
    use overlay_user::model::source::Source;
    use overlay_user::sources::api::{NetEndpointInfo, NetworkInfo};

    #[test]
    fn renders() {
        let ep = |last: u8, name: &str, installed| NetEndpointInfo {
            ip: [10, 104, 0, last].into(),
            mac: format!("02:00:00:00:00:{last:02x}"),
            host: format!("h{last}"),
            underlay_ip: [192, 168, 56, last].into(),
            container: "0123456789abcdef".into(),
            name: name.into(),
            installed,
        };
        let d = NetworkDetail {
            info: NetworkInfo {
                spec: NetworkSpec {
                    name: "web".into(),
                    vni: 4096,
                    subnet: "10.104.0.0/24".parse().unwrap(),
                    gateway: "10.104.0.1".parse().unwrap(),
                },
                carried: true,
            },
            endpoints: vec![ep(2, "a", Some(Source::Cluster)), ep(3, "", None)],
        };
        let out = render(&d);
        assert!(
            out.starts_with("SETTING    VALUE\nname       web\nvni        4096\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "\nIP          MAC                HOST               CONTAINER     INSTALLED\n\
10.104.0.2  02:00:00:00:00:02  h2 (192.168.56.2)  a             cluster\n\
10.104.0.3  02:00:00:00:00:03  h3 (192.168.56.3)  0123456789ab  -\n"
            ),
            "{out}"
        );
    }
}
