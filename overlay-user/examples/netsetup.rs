//! Sets up overlay networks on the dataplane of the host (network
//! namespace) it runs in, for `cargo xtask bench` (modes `ebpf-net` and
//! `kernel-net`): starts the dataplane `--config` chooses (as overlayd
//! does), adds the networks and endpoints given, and stops without
//! cleanup, so the pinned programs (or the kernel devices) forward on
//! their own.
//! With `--cleanup`, removes everything instead.
//! Run it in the host's network namespace only (`nsenter --net=...`), not
//! with `ip netns exec`: that also gives it a private mount namespace whose
//! fresh /sys gets a bpffs of its own, and the pins die with the process.
//!
//! Usage: netsetup --config FILE [--network VNI,SUBNET,GATEWAY]...
//!   [--local VNI,IP,MAC,IFNAME,IFINDEX]... [--remote VNI,IP,MAC,HOST]... [--cleanup]

use anyhow::{bail, Context, Result};
use overlay_user::agent::tables::resolve_underlay_ip;
use overlay_user::dataplane::select;
use overlay_user::model::config::Config;
use overlay_user::model::overlay_network::{NetEndpointSpec, NetLocation, NetworkSpec};
use overlay_user::model::validation::parse_mac;
use overlay_user::sys::netlink::RtNetlink;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut config = None;
    let mut networks = Vec::new();
    let mut endpoints = Vec::new();
    let mut cleanup = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--config" => config = Some(value()?.clone()),
            "--network" => {
                let v: Vec<&str> = value()?.split(',').collect();
                let [vni, subnet, gateway] = v[..] else {
                    bail!("--network VNI,SUBNET,GATEWAY");
                };
                networks.push(NetworkSpec {
                    name: format!("net{vni}"),
                    vni: vni.parse()?,
                    subnet: subnet.parse()?,
                    gateway: gateway.parse()?,
                });
            }
            "--local" => {
                let v: Vec<&str> = value()?.split(',').collect();
                let [vni, ip, mac, ifname, ifindex] = v[..] else {
                    bail!("--local VNI,IP,MAC,IFNAME,IFINDEX");
                };
                endpoints.push(NetEndpointSpec {
                    vni: vni.parse()?,
                    ip: ip.parse()?,
                    mac: parse_mac(mac).map_err(anyhow::Error::msg)?,
                    location: NetLocation::Local {
                        ifname: ifname.into(),
                        ifindex: ifindex.parse()?,
                    },
                });
            }
            "--remote" => {
                let v: Vec<&str> = value()?.split(',').collect();
                let [vni, ip, mac, host] = v[..] else {
                    bail!("--remote VNI,IP,MAC,HOST");
                };
                endpoints.push(NetEndpointSpec {
                    vni: vni.parse()?,
                    ip: ip.parse()?,
                    mac: parse_mac(mac).map_err(anyhow::Error::msg)?,
                    location: NetLocation::Remote {
                        host: host.parse()?,
                    },
                });
            }
            "--cleanup" => cleanup = true,
            other => bail!("unknown argument {other}"),
        }
    }
    let path = config.context("--config FILE is required")?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let cfg = Config::parse(&text).with_context(|| format!("parsing {path}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let underlay_ip = resolve_underlay_ip(&cfg, &RtNetlink::connect()?).await?;
        let mut dp = select::start(&cfg, underlay_ip, cfg.dataplane)
            .await?
            .dataplane;
        for n in &networks {
            dp.add_network(n).await?;
        }
        for e in &endpoints {
            dp.add_net_endpoint(e).await?;
        }
        dp.shutdown(cleanup).await?;
        Ok(())
    })
}
