//! `overlayctl peer`: other hosts' container subnets.

use std::net::Ipv4Addr;

use clap::Subcommand;
use ipnet::Ipv4Net;

use overlay_user::model::observe::PeerTraffic;
use overlay_user::model::validation::{format_mac, parse_cidr, parse_underlay_ip, parse_vtep_mac};
use overlay_user::sources::api::{Request, Response};

use crate::output::{print_json, table, Align};
use crate::{unexpected, CtlError, Ctx};

/// Other hosts' container subnets.
#[derive(clap::Args, Debug)]
#[command(
    long_about = "Other hosts' container subnets. Traffic from this host's containers to a \
peer's subnet is encapsulated in VXLAN and sent to the peer's underlay address.",
    after_help = "Examples:\n  \
overlayctl peer add 10.103.200.0/24 192.168.56.5\n  \
overlayctl peer list\n  \
overlayctl peer del 10.103.200.0/24"
)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Route a remote host's container subnet through the overlay.
    #[command(
        long_about = "Route a remote host's container subnet through the overlay.\n\n\
SUBNET must be a network address (no host bits) that overlaps neither this host's subnet nor \
another peer's. Adding a SUBNET that is already a peer replaces it. The remote VTEP MAC is \
derived from UNDERLAY_IP and the VNI (02:VV:A:B:C:D) unless --vtep-mac gives it.",
        after_help = "Examples:\n  \
overlayctl peer add 10.103.200.0/24 192.168.56.5\n  \
overlayctl peer add 10.103.201.0/24 192.168.56.6 --vtep-mac 02:2a:c0:a8:38:06"
    )]
    Add {
        /// The remote container subnet, e.g. 10.103.200.0/24.
        #[arg(value_parser = parse_cidr)]
        subnet: Ipv4Net,
        /// The remote host's underlay address, e.g. 192.168.56.5.
        #[arg(value_parser = parse_underlay_ip)]
        underlay_ip: Ipv4Addr,
        /// The remote VTEP's MAC, for hosts not running overlayd (e.g. 02:2a:c0:a8:38:05).
        #[arg(long, value_name = "MAC", value_parser = parse_vtep_mac)]
        vtep_mac: Option<[u8; 6]>,
    },
    /// Stop routing a remote subnet through the overlay.
    #[command(after_help = "Example:\n  overlayctl peer del 10.103.200.0/24")]
    Del {
        /// The peer's subnet, exactly as listed by `overlayctl peer list`.
        #[arg(value_parser = parse_cidr)]
        subnet: Ipv4Net,
    },
    /// List the peers with their VTEP MAC, where they come from and their traffic.
    #[command(
        long_about = "List the peers: subnet, underlay address, VTEP MAC (\"derived\" when \
computed from the underlay address), source (config, api, ...), and the traffic to and from \
the peer's host since it was added: packets and bytes (inner frames) sent and received, and \
how long ago the last packet came from it (\"never\"; \"-\" where the dataplane does not count, \
the kernel dataplane). Subnets behind one host show that host's traffic.",
        after_help = "Examples:\n  overlayctl peer list\n  overlayctl --json peer list"
    )]
    List,
}

/// TX/RX packets and bytes and the age of the last received packet.
fn traffic_columns(t: Option<&PeerTraffic>) -> Vec<String> {
    let Some(t) = t else {
        return vec!["-".into(); 5];
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let last = match t.last_rx_unix_ms {
        None => "never".to_string(),
        Some(ms) => format!("{:.1}s ago", now_ms.saturating_sub(ms) as f64 / 1000.0),
    };
    vec![
        t.tx_packets.to_string(),
        t.tx_bytes.to_string(),
        t.rx_packets.to_string(),
        t.rx_bytes.to_string(),
        last,
    ]
}

/// Run `overlayctl peer ...`.
pub async fn run(ctx: &Ctx, args: Args) -> Result<(), CtlError> {
    match args.command {
        Command::Add {
            subnet,
            underlay_ip,
            vtep_mac,
        } => {
            let req = Request::PeerAdd {
                subnet: subnet.to_string(),
                underlay_ip: underlay_ip.to_string(),
                vtep_mac: vtep_mac.as_ref().map(format_mac),
            };
            ctx.change(req, format!("peer {subnet} via {underlay_ip} added"))
                .await
        }
        Command::Del { subnet } => {
            let req = Request::PeerDel {
                subnet: subnet.to_string(),
            };
            ctx.change(req, format!("peer {subnet} deleted")).await
        }
        Command::List => match ctx.request(Request::PeerList).await? {
            Response::Peers(peers) if ctx.json => {
                print_json(&peers);
                Ok(())
            }
            Response::Peers(peers) => {
                let rows: Vec<Vec<String>> = peers
                    .iter()
                    .map(|p| {
                        vec![
                            p.subnet.to_string(),
                            p.underlay_ip.to_string(),
                            if p.vtep_mac_derived {
                                format!("{} (derived)", p.vtep_mac)
                            } else {
                                p.vtep_mac.clone()
                            },
                            p.source.to_string(),
                        ]
                        .into_iter()
                        .chain(traffic_columns(p.traffic.as_ref()))
                        .collect()
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &[
                            ("SUBNET", Align::Left),
                            ("UNDERLAY IP", Align::Left),
                            ("VTEP MAC", Align::Left),
                            ("SOURCE", Align::Left),
                            ("TX PKTS", Align::Right),
                            ("TX BYTES", Align::Right),
                            ("RX PKTS", Align::Right),
                            ("RX BYTES", Align::Right),
                            ("LAST RX", Align::Left),
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
