//! `overlayctl status`: a health summary (dataplane and its programs, the
//! store, Docker, drops of the last minute), then settings, table sizes,
//! counters and drops.

use std::collections::BTreeMap;

use overlay_common::{Counter, DropReason};
use overlay_user::model::status::{mode_name, Status};
use overlay_user::sources::api::{Request, Response};

use crate::output::{print_json, table, Align};
use crate::{unexpected, CtlError, Ctx};

/// Mode, settings, table sizes, counters and drops.
#[derive(clap::Args, Debug)]
#[command(
    long_about = "Start with a health summary: the dataplane and whether its programs are \
attached where expected, the cluster store's connection, the Docker connection (with [docker]), \
and the drops of the last minute (from counters overlayd samples every 5 s; the window is \
shorter while overlayd has run less than a minute). Then show the dataplane mode and why it runs (the setting, or for `auto` whether \
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

/// The health summary's rows: the dataplane and its programs, the store,
/// Docker, the drops of the last minute.
fn health_rows(s: &Status) -> Vec<Vec<String>> {
    let h = &s.health;
    let mode = mode_name(s.mode);
    let missing: Vec<String> = h
        .programs
        .iter()
        .filter(|p| !p.attached)
        .map(|p| format!("{} on {}", p.program, p.ifname))
        .collect();
    let dataplane = if h.programs.is_empty() {
        format!("{mode} (no programs to attach)")
    } else if missing.is_empty() {
        format!(
            "{mode}, {} programs attached where expected",
            h.programs.len()
        )
    } else {
        format!(
            "{mode}, NOT attached: {} (overlayctl doctor says more)",
            missing.join(", ")
        )
    };
    let store = match &s.cluster {
        None => "not used (no [cluster])".to_string(),
        Some(c) => match (&c.last_error, c.connected) {
            (Some(e), _) => format!("DOWN: {e}"),
            (None, true) => "connected".into(),
            (None, false) => "connecting".into(),
        },
    };
    let docker = match &h.docker {
        None => "not followed (no [docker])".to_string(),
        Some(d) if d.connected => d.detail.clone(),
        Some(d) => format!("DOWN: {}", d.detail),
    };
    let mut drops = format!("{} in the last {} s", h.drops_recent, h.drops_window_secs);
    if !h.drops_recent_by_reason.is_empty() {
        let by: Vec<String> = h
            .drops_recent_by_reason
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        drops.push_str(&format!(" ({})", by.join(", ")));
    }
    vec![
        vec!["dataplane".into(), dataplane],
        vec!["store".into(), store],
        vec!["docker".into(), docker],
        vec!["drops".into(), drops],
    ]
}

fn render(s: &Status) -> String {
    let mut out = table(
        &[("HEALTH", Align::Left), ("STATE", Align::Left)],
        &health_rows(s),
    );
    out.push('\n');
    out.push_str(&render_settings(s));
    out
}

fn render_settings(s: &Status) -> String {
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
    if let Some(p) = &s.path {
        let on = |b: bool| if b { "on" } else { "off" }.to_string();
        // After xdp, before the table sizes.
        let at = settings.len() - 2;
        settings.splice(
            at..at,
            [
                vec!["encap".into(), p.encap.to_string()],
                vec!["deliver".into(), p.deliver.to_string()],
                vec!["tc attach".into(), p.tc_attach.to_string()],
                vec!["tunnel gro".into(), p.tunnel_gro_text().into()],
                vec!["veth gro".into(), on(p.veth_gro)],
                vec!["big tcp".into(), on(p.big_tcp)],
            ],
        );
    }
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
    use overlay_user::model::config::{AttachPoint, DeliverMode, EncapMode, TcAttach, XdpMode};
    use overlay_user::model::status::{Mode, PathSettings, Stats};

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
            path: None,
            peers: 1,
            endpoints: 3,
            networks: 0,
            net_endpoints: 0,
            stats,
            cluster: None,
            health: Default::default(),
        };
        let out = render(&s);
        assert!(
            out.starts_with(
                "HEALTH     STATE\n\
                 dataplane  kernel (no programs to attach)\n\
                 store      not used (no [cluster])\n\
                 docker     not followed (no [docker])\n\
                 drops      0 in the last 0 s\n\n"
            ),
            "{out}"
        );
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
        assert!(
            !out.contains("tunnel gro"),
            "kernel mode has no BPF path: {out}"
        );

        // The BPF path's settings sit between xdp and the table sizes.
        let mut path = PathSettings {
            encap: EncapMode::Bpf,
            deliver: DeliverMode::Peer,
            tc_attach: TcAttach::Tcx,
            tunnel_gro: true,
            tunnel_device: true,
            veth_gro: false,
            big_tcp: true,
        };
        let ebpf = Status {
            mode: Mode::Ebpf,
            path: Some(path.clone()),
            ..s.clone()
        };
        let out = render(&ebpf);
        assert!(
            out.contains(
                "xdp          generic\n\
                 encap        bpf\n\
                 deliver      peer\n\
                 tc attach    tcx\n\
                 tunnel gro   on (ovl.md)\n\
                 veth gro     off\n\
                 big tcp      on\n\
                 peers        1\n"
            ),
            "{out}"
        );
        path.tunnel_device = false;
        let out = render(&Status {
            path: Some(path),
            ..ebpf
        });
        assert!(
            out.contains("tunnel gro   set, but ovl.md could not be made (see overlayd's log)\n"),
            "{out}"
        );
    }
}
