//! `overlayctl hosts`: the hosts of the cluster store, and removing a dead one.

use clap::Subcommand;

use overlay_user::model::cluster::HostInfo;
use overlay_user::model::config::cluster::check_host_name;
use overlay_user::model::status::mode_name;
use overlay_user::model::validation::InputError;
use overlay_user::sources::api::{Request, Response};

use crate::output::{print_json, table, Align};
use crate::{unexpected, CtlError, Ctx};

/// The hosts of the cluster store.
#[derive(clap::Args, Debug)]
#[command(
    long_about = "The hosts of the cluster store (overlayd with a [cluster] section): name, \
underlay address, leased subnet, dataplane mode and the time left on its lease; this host is \
marked. Every other host is a peer with source \"cluster\". With `rm NAME`, remove a dead \
host's record and lease: every host drops it at once (a running host registers again).",
    after_help = "Examples:\n  \
overlayctl hosts\n  \
overlayctl --json hosts\n  \
overlayctl hosts rm node-7"
)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Remove a dead host from the cluster store (its record and its lease).
    #[command(after_help = "Example:\n  overlayctl hosts rm node-7")]
    Rm {
        /// The host's name, as `overlayctl hosts` lists it.
        #[arg(value_parser = parse_name)]
        name: String,
    },
}

fn parse_name(value: &str) -> Result<String, InputError> {
    check_host_name(value)?;
    Ok(value.to_string())
}

/// Seconds as "23h59m", "4m10s" or "9s"; "expired" below zero.
pub fn duration(secs: i64) -> String {
    if secs < 0 {
        return "expired".into();
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

fn render(hosts: &[HostInfo]) -> String {
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            let r = &h.record;
            vec![
                if h.this_host {
                    format!("{} (this host)", r.name)
                } else {
                    r.name.clone()
                },
                r.underlay_ip.to_string(),
                r.subnet.to_string(),
                r.mode.map(mode_name).unwrap_or("-").to_string(),
                h.lease_ttl.map(duration).unwrap_or_else(|| "?".into()),
            ]
        })
        .collect();
    table(
        &[
            ("NAME", Align::Left),
            ("UNDERLAY IP", Align::Left),
            ("SUBNET", Align::Left),
            ("MODE", Align::Left),
            ("LEASE LEFT", Align::Right),
        ],
        &rows,
    )
}

/// Run `overlayctl hosts ...`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<(), CtlError> {
    match args.command {
        None => match ctx.request(Request::Hosts).await? {
            Response::Hosts(hosts) if ctx.json => print_json(&hosts),
            Response::Hosts(hosts) => print!("{}", render(&hosts)),
            other => return Err(unexpected(&other)),
        },
        Some(Command::Rm { name }) => match ctx.request(Request::HostRm { name }).await? {
            Response::HostRemoved(h) if ctx.json => print_json(&h),
            Response::HostRemoved(h) => println!(
                "host {} ({}, {}) removed",
                h.record.name, h.record.underlay_ip, h.record.subnet
            ),
            other => return Err(unexpected(&other)),
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlay_user::model::cluster::HostRecord;
    use overlay_user::model::status::Mode;

    #[test]
    fn renders() {
        assert_eq!(duration(86_399), "23h59m");
        assert_eq!(duration(250), "4m10s");
        assert_eq!(duration(9), "9s");
        assert_eq!(duration(-1), "expired");
        let host = |name: &str, last: u8, this_host, lease_ttl| HostInfo {
            record: HostRecord {
                name: name.into(),
                underlay_ip: [192, 168, 56, last].into(),
                subnet: format!("10.103.{last}.0/24").parse().unwrap(),
                vtep_mac: format!("02:2a:c0:a8:38:{last:02x}"),
                mode: (last == 4).then_some(Mode::Ebpf),
                version: "0.1.0".into(),
            },
            lease_ttl,
            this_host,
        };
        let out = render(&[
            host("h1", 4, true, Some(86_000)),
            host("h2", 5, false, None),
        ]);
        assert_eq!(
            out,
            "NAME            UNDERLAY IP   SUBNET         MODE  LEASE LEFT\n\
             h1 (this host)  192.168.56.4  10.103.4.0/24  ebpf      23h53m\n\
             h2              192.168.56.5  10.103.5.0/24  -              ?\n"
        );
    }
}
