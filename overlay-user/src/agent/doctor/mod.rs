//! `overlayctl doctor`: checks of this host that overlayd makes, since it
//! knows the settings, the peers and the dataplane and runs in the host's
//! network namespace: MTUs, `ip_forward`, rp_filter, the VXLAN port (other
//! VXLAN devices, sockets, firewall rules), the bridge's address and
//! Docker's `--bip`, the peers' hosts on the underlay (ICMP echo, ARP), and
//! whether the pinned programs are attached.
//!
//! The tables are read under the core's lock, then released: the probes
//! (up to 1.5 s for the peers) never hold up the sources.
//!
//! Owns: gathering what the checks need (the agent's tables and the
//! dataplane's attachments, then read-only probes through `sys::probe` and
//! `sys::netlink`) and the pure checks with their diagnoses and fixes
//! ([`checks`]). Must not touch: anything on the host (it only reads;
//! the fixes are for the operator to run), the dataplane's maps, and the
//! control sources.

pub mod checks;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::agent::handle::Core;
use crate::model::config::Config;
use crate::model::doctor::{AttachmentState, Finding};
use crate::model::source::Source;
use crate::model::status::{mode_name, Mode};
use crate::sys::netlink::{self, NeighbourState};
use crate::sys::probe;
use checks::MtuOf;

/// How long the peers' hosts have to answer.
pub const PEER_TIMEOUT: Duration = Duration::from_millis(1500);

/// What the checks need from the agent, read under its lock.
struct Snapshot {
    cfg: Config,
    mode: Mode,
    /// Peers: subnet -> (underlay address, source).
    peers: BTreeMap<Ipv4Net, (Ipv4Addr, Source)>,
    /// Endpoints: address -> (host-side interface, source).
    endpoints: BTreeMap<Ipv4Addr, (String, Source)>,
    attachments: Vec<AttachmentState>,
    /// The VXLAN devices the dataplane made.
    own_devices: Vec<String>,
    /// The dataplane's VXLAN filter chain, if it keeps one.
    filter_chain: Option<&'static str>,
}

/// Every check, in a fixed order; problems carry their fix.
pub async fn run(core: &Core) -> Vec<Finding> {
    let snap = {
        let a = core.lock().await;
        let dp = a.dataplane();
        Snapshot {
            cfg: a.config().clone(),
            mode: a.mode(),
            peers: a
                .peers()
                .iter()
                .map(|(n, p)| (*n, (p.spec.underlay_ip, p.source)))
                .collect(),
            endpoints: a
                .endpoints()
                .iter()
                .map(|(ip, e)| (*ip, (e.spec.ifname.clone(), e.source)))
                .collect(),
            attachments: dp.attachments(),
            own_devices: dp.own_devices(),
            filter_chain: dp.vxlan_filter_chain(),
        }
    };
    let handle = match netlink::connect() {
        Ok(h) => h,
        Err(e) => {
            return vec![Finding::problem(
                "netlink",
                format!("cannot query this host: {e}"),
                "run overlayd as root (CAP_NET_ADMIN)",
            )]
        }
    };
    let mut out = Vec::new();
    out.extend(mtu(&handle, &snap).await);
    out.push(match probe::sysctl(&["net", "ipv4", "ip_forward"]) {
        Ok(v) => checks::ip_forward(&v),
        Err(e) => not_checked("ip_forward", e),
    });
    out.extend(rp_filter(&handle, &snap).await);
    out.extend(vxlan_port(&handle, &snap).await);
    out.extend(firewall(&snap).await);
    out.extend(addresses(&handle, &snap).await);
    out.extend(peers(&handle, &snap).await);
    let restart = restart_command();
    out.extend(checks::programs(
        mode_name(snap.mode),
        &snap.attachments,
        &restart,
    ));
    out
}

/// A check whose probe failed: not a finding about the host, said as such.
fn not_checked(check: &str, e: impl std::fmt::Display) -> Finding {
    Finding::ok(check, format!("not checked: {e}"))
}

/// How to restart this overlayd, which attaches every program again.
fn restart_command() -> String {
    let pid = std::process::id();
    format!(
        "restart overlayd (it attaches every program again at start): kill -TERM {pid}, then {}",
        probe::own_command_line()
    )
}

async fn mtu(handle: &rtnetlink::Handle, snap: &Snapshot) -> Vec<Finding> {
    let cfg = &snap.cfg;
    let underlay = match netlink::link_by_name(handle, &cfg.underlay_interface).await {
        Ok(l) => l,
        Err(e) => return vec![not_checked("mtu", e)],
    };
    let mut ifaces = Vec::new();
    // An empty bridge has the kernel's default MTU (1500) and takes its
    // ports' smallest as they join: only a bridge with ports counts.
    let bridge = netlink::link_by_name(handle, &cfg.bridge).await.ok();
    let mut with_ports = None;
    if let Some(b) = bridge {
        if !netlink::bridge_ports(handle, b.index)
            .await
            .unwrap_or_default()
            .is_empty()
        {
            with_ports = Some(b);
        }
    }
    if let Some(b) = with_ports {
        ifaces.push(MtuOf {
            ifname: b.name,
            mtu: b.mtu,
            what: "bridge".into(),
            docker: false,
        });
    }
    for (ip, (ifname, source)) in &snap.endpoints {
        if let Ok(l) = netlink::link_by_name(handle, ifname).await {
            ifaces.push(MtuOf {
                ifname: l.name,
                mtu: l.mtu,
                what: format!("container {ip}'s interface"),
                docker: *source == Source::Docker,
            });
        }
    }
    checks::mtu(&underlay.name, underlay.mtu, &ifaces)
}

/// The interfaces decapsulated traffic or VXLAN enters the host by.
async fn rp_filter(handle: &rtnetlink::Handle, snap: &Snapshot) -> Vec<Finding> {
    let cfg = &snap.cfg;
    let mut names = vec![cfg.underlay_interface.clone(), cfg.bridge.clone()];
    // The kernel mode's devices decapsulate; the BPF mode's `ovl.md` only
    // listens (tc decapsulates on the underlay before its socket is reached).
    if snap.mode == Mode::Kernel {
        names.extend(snap.own_devices.iter().cloned());
    }
    let all = match probe::sysctl(&["net", "ipv4", "conf", "all", "rp_filter"]) {
        Ok(v) => v.parse::<u8>().unwrap_or(0),
        Err(e) => return vec![not_checked("rp_filter", e)],
    };
    let mut out = Vec::new();
    for name in names {
        if netlink::link_by_name(handle, &name).await.is_err() {
            continue;
        }
        if let Ok(own) = probe::sysctl(&["net", "ipv4", "conf", &name, "rp_filter"]) {
            out.push(checks::rp_filter(&name, all, own.parse().unwrap_or(0)));
        }
    }
    out
}

async fn vxlan_port(handle: &rtnetlink::Handle, snap: &Snapshot) -> Vec<Finding> {
    let port = snap.cfg.vxlan_port;
    let devices = match probe::vxlan_devices(handle).await {
        Ok(d) => d,
        Err(e) => return vec![not_checked("vxlan_port", e)],
    };
    let on_port: Vec<_> = devices.iter().filter(|d| d.port == port).collect();
    let mut out: Vec<Finding> = on_port
        .iter()
        .filter(|d| !snap.own_devices.contains(&d.name))
        .map(|d| checks::vxlan_device(&d.name, d.vni, port))
        .collect();
    if on_port.is_empty() {
        match probe::udp_sockets_on(port) {
            Ok(0) => {}
            Ok(n) => out.push(checks::udp_socket(port, n)),
            Err(e) => out.push(not_checked("vxlan_port", e)),
        }
    }
    if out.is_empty() {
        out.push(Finding::ok(
            "vxlan_port",
            format!("UDP port {port}: no other VXLAN device or socket uses it"),
        ));
    }
    out
}

fn peer_hosts(snap: &Snapshot) -> BTreeSet<Ipv4Addr> {
    snap.peers.values().map(|(ip, _)| *ip).collect()
}

async fn firewall(snap: &Snapshot) -> Vec<Finding> {
    let port = snap.cfg.vxlan_port;
    let underlay = snap.cfg.underlay_interface.clone();
    let hosts = peer_hosts(snap);
    let filter_chain = snap.filter_chain;
    let probed = tokio::task::spawn_blocking(move || {
        let input = probe::iptables_rules("INPUT");
        let chain = filter_chain.map(probe::iptables_rules);
        let nft = probe::nft_ruleset();
        (input, chain, nft)
    })
    .await;
    let Ok((input, chain, nft)) = probed else {
        return vec![not_checked("firewall", "the probe's task failed")];
    };
    let mut out = Vec::new();
    let mut checked = Vec::new();
    match input {
        Ok(Some(rules)) => {
            out.extend(checks::iptables_input(&rules, port, &underlay, &hosts));
            checked.push("iptables INPUT");
        }
        Ok(None) => {}
        Err(e) => out.push(not_checked("firewall", e)),
    }
    match (filter_chain, chain) {
        (Some(name), Some(Ok(Some(rules)))) => {
            out.extend(checks::vxlan_filter(&rules, name, &hosts));
            checked.push("the VXLAN filter");
        }
        (Some(name), Some(Ok(None))) => out.push(Finding::problem(
            "firewall",
            format!("the VXLAN filter (iptables chain {name}) is missing: VXLAN is accepted from any host"),
            "restart overlayd, which installs it again".to_string(),
        )),
        (_, Some(Err(e))) => out.push(not_checked("firewall", e)),
        _ => {}
    }
    match nft {
        Ok(Some(ruleset)) => {
            out.extend(checks::nft_input(&ruleset, port));
            checked.push("nftables input hooks");
        }
        Ok(None) => {}
        Err(e) => out.push(not_checked("firewall", e)),
    }
    if out.is_empty() {
        out.push(Finding::ok(
            "firewall",
            format!(
                "nothing drops VXLAN (UDP {port}) from the peers ({})",
                if checked.is_empty() {
                    "no iptables or nft here".to_string()
                } else {
                    format!("checked {}", checked.join(", "))
                }
            ),
        ));
    }
    out
}

async fn addresses(handle: &rtnetlink::Handle, snap: &Snapshot) -> Vec<Finding> {
    let cfg = &snap.cfg;
    let docker = cfg.docker.enabled;
    let mut out = Vec::new();
    match netlink::link_by_name(handle, &cfg.bridge).await {
        Ok(b) => match netlink::ipv4_addrs(handle, b.index).await {
            Ok(addrs) => out.push(checks::bridge_address(
                &cfg.bridge,
                &addrs,
                cfg.subnet,
                cfg.gateway(),
                docker,
            )),
            Err(e) => out.push(not_checked("bridge_address", e)),
        },
        Err(_) => out.push(Finding::problem(
            "bridge_address",
            format!(
                "bridge {} does not exist: no container of this host is reachable",
                cfg.bridge
            ),
            if docker {
                format!(
                    "start dockerd with --bip={}/{}",
                    cfg.gateway(),
                    cfg.subnet.prefix_len()
                )
            } else {
                format!(
                    "ip link add {b} type bridge && ip addr add {}/{} dev {b} && ip link set {b} up",
                    cfg.gateway(),
                    cfg.subnet.prefix_len(),
                    b = cfg.bridge
                )
            },
        )),
    }
    if docker && cfg.docker.networks.iter().any(|n| n == "bridge") {
        out.push(
            match probe::docker_network_ipv4(&cfg.docker.socket, "bridge").await {
                Ok(Some((subnet, gw))) => {
                    checks::docker_bip(&subnet, gw.as_deref(), cfg.subnet, cfg.gateway())
                }
                Ok(None) => Finding::ok("docker_bip", "Docker has no default bridge network"),
                Err(e) => Finding::problem(
                    "docker_bip",
                    format!("{e}: Docker's containers are not followed"),
                    format!(
                        "start dockerd (its API socket is {} in [docker] socket)",
                        cfg.docker.socket.display()
                    ),
                ),
            },
        );
    }
    out
}

async fn peers(handle: &rtnetlink::Handle, snap: &Snapshot) -> Vec<Finding> {
    let hosts: Vec<Ipv4Addr> = peer_hosts(snap).into_iter().collect();
    if hosts.is_empty() {
        return vec![Finding::ok("peer", "no peers to probe")];
    }
    let targets = hosts.clone();
    let answered =
        match tokio::task::spawn_blocking(move || probe::icmp_probe(&targets, 3, PEER_TIMEOUT))
            .await
        {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return vec![not_checked("peer", e)],
            Err(e) => return vec![not_checked("peer", e)],
        };
    let underlay = &snap.cfg.underlay_interface;
    let (on_link, neighbours) = match netlink::link_by_name(handle, underlay).await {
        Ok(l) => (
            netlink::ipv4_addrs(handle, l.index)
                .await
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(a, len)| Ipv4Net::new(a, len).ok())
                .collect::<Vec<_>>(),
            netlink::neighbours_v4(handle, l.index)
                .await
                .unwrap_or_default(),
        ),
        Err(_) => (Vec::new(), Vec::new()),
    };
    let mut out = Vec::new();
    let mut arp_only = Vec::new();
    for (subnet, (ip, source)) in &snap.peers {
        if answered.contains(ip) {
            continue;
        }
        let how = if on_link.iter().any(|n| n.contains(ip)) {
            let state = neighbours.iter().find(|n| n.ip == *ip).map(|n| n.state);
            match state {
                Some(NeighbourState::Failed | NeighbourState::Incomplete) | None => {
                    format!("no reply to ICMP echo, no ARP reply on {underlay}")
                }
                Some(_) => {
                    arp_only.push(*ip);
                    continue;
                }
            }
        } else {
            "no reply to ICMP echo".to_string()
        };
        out.push(checks::peer_unreachable(*subnet, *ip, *source, &how));
    }
    if out.is_empty() {
        let mut msg = format!(
            "{} of {} peer hosts answer on the underlay",
            answered.len(),
            hosts.len()
        );
        if !arp_only.is_empty() {
            msg.push_str(&format!(
                "; {} answer ARP but not ICMP echo (ICMP filtered?)",
                arp_only.len()
            ));
        }
        out.push(Finding::ok("peer", msg));
    }
    out
}
