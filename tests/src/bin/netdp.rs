//! A dataplane driven by hand, for lab tests of the overlay networks before
//! (or without) the agent carrying them: starts the dataplane the config
//! asks for (as overlayd does, in the namespace it runs in), then carries
//! out the commands appended to a file, one JSON object a line, and prints
//! `ok N` or `err N: MESSAGE` for the N-th (from 1). Refreshes every second.
//!
//! ```text
//! netdp CONFIG COMMANDS
//! {"add_network": {"name": "web", "vni": 4096, "subnet": "10.104.1.0/24", "gateway": "10.104.1.1"}}
//! {"add_endpoint": {"vni": 4096, "ip": "10.104.1.2", "mac": [2,0,0,0,0,1], "location": {"local": {"ifname": "n1", "ifindex": 7}}}}
//! {"del_endpoint": [4096, "10.104.1.2"]}
//! {"del_network": 4096}
//! {"add_peer": {"subnet": "10.103.100.0/24", "underlay_ip": "192.168.56.4", "vtep_mac": null}}
//! {"del_peer": "10.103.100.0/24"}
//! "peer_traffic"              (prints `traffic N: JSON`, the per-peer-host counters)
//! {"shutdown": true}          (with cleanup; false: without)
//! ```

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use overlay_user::agent::tables::resolve_underlay_ip;
use overlay_user::dataplane::{select, Dataplane};
use overlay_user::model::config::Config;
use overlay_user::model::overlay_network::{NetEndpointSpec, NetworkSpec};
use overlay_user::model::peer::PeerSpec;
use overlay_user::sys::netlink::RtNetlink;
use serde::Deserialize;

/// One command.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Command {
    AddNetwork(NetworkSpec),
    DelNetwork(u32),
    AddEndpoint(NetEndpointSpec),
    DelEndpoint(u32, std::net::Ipv4Addr),
    AddPeer(PeerSpec),
    DelPeer(ipnet::Ipv4Net),
    PeerTraffic,
    Shutdown(bool),
}

async fn apply(dp: &mut dyn Dataplane, n: usize, cmd: Command) -> Result<bool> {
    match cmd {
        Command::AddNetwork(n) => dp.add_network(&n).await?,
        Command::DelNetwork(vni) => dp.del_network(vni).await?,
        Command::AddEndpoint(ep) => dp.add_net_endpoint(&ep).await?,
        Command::DelEndpoint(vni, ip) => dp.del_net_endpoint(vni, ip).await?,
        Command::AddPeer(p) => dp.add_peer(&p).await?,
        Command::DelPeer(subnet) => dp.del_peer(subnet).await?,
        Command::PeerTraffic => {
            println!(
                "traffic {n}: {}",
                serde_json::to_string(&dp.peer_traffic()?)?
            );
        }
        Command::Shutdown(cleanup) => {
            dp.shutdown(cleanup).await?;
            return Ok(true);
        }
    }
    Ok(false)
}

#[tokio::main]
async fn main() -> Result<()> {
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Info)
        .filter_module("netlink_packet_route", log::LevelFilter::Error)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let [_, config, commands] = args.as_slice() else {
        bail!("usage: netdp CONFIG COMMANDS");
    };
    let text = std::fs::read_to_string(config).with_context(|| format!("reading {config}"))?;
    let cfg = Config::parse(&text)?;
    cfg.validate()?;
    let net = RtNetlink::connect()?;
    let underlay_ip = resolve_underlay_ip(&cfg, &net).await?;
    let started = select::start(&cfg, underlay_ip, cfg.dataplane).await?;
    let mut dp = started.dataplane;
    println!("started {:?}: {}", dp.mode(), started.reason);
    let file = std::fs::File::open(commands).with_context(|| format!("opening {commands}"))?;
    let mut lines = std::io::BufReader::new(file);
    let mut n = 0;
    let mut line = String::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_refresh = std::time::Instant::now();
    loop {
        tick.tick().await;
        // A line written in parts is read on until its end.
        lines.read_line(&mut line)?;
        if line.ends_with('\n') {
            n += 1;
            let text = std::mem::take(&mut line);
            let outcome = match serde_json::from_str::<Command>(text.trim()) {
                Ok(cmd) => apply(&mut *dp, n, cmd).await,
                Err(e) => Err(e.into()),
            };
            match outcome {
                Ok(done) => {
                    println!("ok {n}");
                    std::io::stdout().flush()?;
                    if done {
                        return Ok(());
                    }
                }
                Err(e) => println!("err {n}: {e:#}"),
            }
            std::io::stdout().flush()?;
            continue;
        }
        if last_refresh.elapsed() >= Duration::from_secs(1) {
            last_refresh = std::time::Instant::now();
            if let Err(e) = dp.refresh().await {
                log::warn!("refresh: {e}");
            }
        }
    }
}
