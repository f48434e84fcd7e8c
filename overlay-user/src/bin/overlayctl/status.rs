//! `overlayctl status`: settings, table sizes, counters and drops.

use std::collections::BTreeMap;

use overlay_common::{Counter, DropReason};
use overlay_user::model::status::{mode_name, Status};
use overlay_user::sources::api::{Request, Response};

use crate::output::{print_json, table, Align};
use crate::{unexpected, CtlError, Ctx};

/// Mode, settings, table sizes, counters and drops.
#[derive(clap::Args, Debug)]
#[command(
    long_about = "Show the dataplane mode and why it runs (the setting, or for `auto` whether \
the eBPF programs loaded and if not, why), this host's settings, the number of peers and \
endpoints, with [cluster] the cluster store's state (connected or the last error), and the \
dataplane's packet counters and drops (by reason), summed over CPUs. In kernel mode the \
counters are the VXLAN device's (vxlan_rx_packets, ...), read once a second. With --json, \
print the status object as overlayd sends it.",
    after_help = "Examples:\n  \
overlayctl status\n  \
overlayctl --json status | jq .stats.drops"
)]
pub struct Args {}

/// Run `overlayctl status`.
pub async fn run(ctx: &Ctx, _args: Args) -> Result<(), CtlError> {
    match ctx.request(Request::Status).await? {
        Response::Status(status) if ctx.json => print_json(&status),
        Response::Status(status) => print!("{}", render(&status)),
        other => return Err(unexpected(&other)),
    }
    Ok(())
}

/// Known names first, in the dataplane's index order, then any others.
fn ordered<'a>(values: &'a BTreeMap<String, u64>, known: &[&'a str]) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = known
        .iter()
        .filter_map(|name| {
            values
                .get(*name)
                .map(|v| vec![name.to_string(), v.to_string()])
        })
        .collect();
    rows.extend(
        values
            .iter()
            .filter(|(name, _)| !known.contains(&name.as_str()))
            .map(|(name, v)| vec![name.clone(), v.to_string()]),
    );
    rows
}

fn render(s: &Status) -> String {
    let settings = vec![
        vec!["mode".into(), mode_name(s.mode).into()],
        vec![
            "mode reason".into(),
            s.mode_reason.clone().unwrap_or_else(|| "-".into()),
        ],
        vec![
            "subnet".into(),
            format!("{} (gateway {})", s.subnet, s.gateway),
        ],
        vec![
            "underlay".into(),
            format!("{} ({})", s.underlay_interface, s.underlay_ip),
        ],
        vec!["vtep mac".into(), s.vtep_mac.clone()],
        vec!["bridge".into(), s.bridge.clone()],
        vec!["vni".into(), s.vni.to_string()],
        vec!["vxlan port".into(), s.vxlan_port.to_string()],
        vec!["attach".into(), s.attach.to_string()],
        vec!["xdp".into(), s.xdp.to_string()],
        vec!["peers".into(), s.peers.to_string()],
        vec!["endpoints".into(), s.endpoints.to_string()],
    ];
    let mut settings = settings;
    if s.networks > 0 || s.net_endpoints > 0 {
        settings.push(vec![
            "networks".into(),
            format!("{} ({} endpoints)", s.networks, s.net_endpoints),
        ]);
    }
    if let Some(c) = &s.cluster {
        let state = match (&c.last_error, c.connected) {
            (Some(e), _) => format!("{} other hosts; {e}", c.hosts),
            (None, true) => format!(
                "connected{}, revision {}, {} other hosts",
                c.member
                    .as_ref()
                    .map(|m| format!(" to {m}"))
                    .unwrap_or_default(),
                c.revision,
                c.hosts
            ),
            (None, false) => format!("connecting, {} other hosts", c.hosts),
        };
        settings.push(vec!["cluster store".into(), state]);
    }
    let mut out = table(
        &[("SETTING", Align::Left), ("VALUE", Align::Left)],
        &settings,
    );
    let counters: Vec<&str> = Counter::ALL.iter().map(|c| c.name()).collect();
    out.push('\n');
    out.push_str(&table(
        &[("COUNTER", Align::Left), ("VALUE", Align::Right)],
        &ordered(&s.stats.counters, &counters),
    ));
    let drops: Vec<&str> = DropReason::ALL.iter().map(|d| d.name()).collect();
    out.push('\n');
    out.push_str(&table(
        &[("DROP REASON", Align::Left), ("PACKETS", Align::Right)],
        &ordered(&s.stats.drops, &drops),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlay_user::model::config::{AttachPoint, XdpMode};
    use overlay_user::model::status::{Mode, Stats};

    #[test]
    fn renders() {
        let mut stats = Stats::default();
        stats.counters.insert("zzz_extra".into(), 1);
        stats.counters.insert("encap_bytes".into(), 123456);
        stats.counters.insert("encap_packets".into(), 7);
        stats.drops.insert("unknown_vni".into(), 2);
        let s = Status {
            mode: Mode::Kernel,
            mode_reason: Some("auto: eBPF unavailable: no bpffs".into()),
            subnet: "10.103.100.0/24".parse().unwrap(),
            gateway: "10.103.100.1".parse().unwrap(),
            underlay_interface: "eth1".into(),
            underlay_ip: "192.168.56.4".parse().unwrap(),
            vtep_mac: "02:2a:c0:a8:38:04".into(),
            bridge: "docker0".into(),
            vni: 42,
            vxlan_port: 4789,
            attach: AttachPoint::Veth,
            xdp: XdpMode::Generic,
            peers: 1,
            endpoints: 3,
            networks: 0,
            net_endpoints: 0,
            stats,
            cluster: None,
        };
        let out = render(&s);
        assert!(out.contains("mode         kernel\n"), "{out}");
        assert!(
            out.contains("mode reason  auto: eBPF unavailable: no bpffs\n"),
            "{out}"
        );
        assert!(out.contains("underlay     eth1 (192.168.56.4)\n"), "{out}");
        assert!(out.contains(
            "COUNTER         VALUE\nencap_packets       7\nencap_bytes    123456\nzzz_extra           1\n"
        ), "{out}");
        assert!(
            out.contains("DROP REASON  PACKETS\nunknown_vni        2\n"),
            "{out}"
        );
    }
}
