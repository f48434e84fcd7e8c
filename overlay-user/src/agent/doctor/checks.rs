//! The checks of `overlayctl doctor` as pure functions of what the probes
//! saw: each returns findings with the exact diagnosis and fix.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::model::doctor::{AttachmentState, Finding};
use crate::model::source::Source;

/// The VXLAN overhead: outer Ethernet, IPv4, UDP and VXLAN headers.
const OVERHEAD: u32 = overlay_common::VXLAN_OVERHEAD;

/// An interface whose MTU matters: its name, MTU and what it is.
pub struct MtuOf {
    /// The interface.
    pub ifname: String,
    /// Its MTU.
    pub mtu: u32,
    /// "bridge" or "container 10.103.100.2".
    pub what: String,
    /// Docker made it: the fix is dockerd's `--mtu`.
    pub docker: bool,
}

/// The bridge's and the containers' MTU against the underlay's minus 50.
pub fn mtu(underlay: &str, underlay_mtu: u32, ifaces: &[MtuOf]) -> Vec<Finding> {
    let limit = underlay_mtu.saturating_sub(OVERHEAD);
    let mut out: Vec<Finding> = ifaces
        .iter()
        .filter(|i| i.mtu > limit)
        .map(|i| {
            let fix = if i.docker {
                format!("dockerd --mtu={limit} (or \"mtu\": {limit} in /etc/docker/daemon.json), then restart the containers")
            } else {
                format!("ip link set dev {} mtu {limit}", i.ifname)
            };
            Finding::problem(
                "mtu",
                format!(
                    "{} {} has MTU {}, above the underlay {underlay}'s {underlay_mtu} - {OVERHEAD} = {limit}: \
                     its packets of more than {limit} bytes do not fit the underlay once encapsulated",
                    i.what, i.ifname, i.mtu
                ),
                fix,
            )
        })
        .collect();
    if out.is_empty() {
        out.push(Finding::ok(
            "mtu",
            format!(
                "{} at most {limit} (underlay {underlay} {underlay_mtu} - {OVERHEAD})",
                match ifaces.len() {
                    0 => "no bridge or container interfaces".to_string(),
                    1 => format!("{} is", ifaces[0].ifname),
                    n => format!("{n} interfaces (bridge and containers) are"),
                }
            ),
        ));
    }
    out
}

/// `net.ipv4.ip_forward`.
pub fn ip_forward(value: &str) -> Finding {
    if value == "0" {
        Finding::problem(
            "ip_forward",
            "net.ipv4.ip_forward = 0: the kernel does not route between the containers and the underlay \
             (the kernel dataplane needs it, and so does container traffic to anything but a peer)",
            "sysctl -w net.ipv4.ip_forward=1",
        )
    } else {
        Finding::ok("ip_forward", format!("net.ipv4.ip_forward = {value}"))
    }
}

/// Reverse-path filtering on `ifname`: the kernel applies the larger of
/// `all` and the interface's own value; 1 (strict) drops what arrives on
/// an interface that is not the route back to its source.
pub fn rp_filter(ifname: &str, all: u8, own: u8) -> Finding {
    let effective = all.max(own);
    if effective != 1 {
        let mode = if effective == 0 { "off" } else { "loose" };
        return Finding::ok(
            "rp_filter",
            format!("{ifname}: {effective} ({mode}; all {all}, {ifname} {own})"),
        );
    }
    let cause = if own == 1 {
        format!("net.ipv4.conf.{ifname}.rp_filter = 1 (strict)")
    } else {
        format!(
            "net.ipv4.conf.all.rp_filter = 1 makes {ifname} strict (the kernel applies the larger of all and {ifname}'s {own})"
        )
    };
    Finding::problem(
        "rp_filter",
        format!(
            "{cause}: packets arriving on {ifname} whose source is routed out of another interface are dropped, \
             such as decapsulated traffic from peer containers and VXLAN from peers over asymmetric routes"
        ),
        // Loose is 2, and max(all, 2) = 2 whatever `all` is.
        format!("sysctl -w net.ipv4.conf.{ifname}.rp_filter=2"),
    )
}

/// Another VXLAN device on overlay's port.
pub fn vxlan_device(name: &str, vni: Option<u32>, port: u16) -> Finding {
    let vni = vni.map_or("collect-metadata".to_string(), |v| format!("VNI {v}"));
    Finding::problem(
        "vxlan_port",
        format!(
            "VXLAN device {name} ({vni}) also uses UDP port {port}, overlay's VXLAN port: \
             the two overlays' packets collide (Docker swarm's overlay uses 4789)"
        ),
        format!(
            "ip link del {name} (if it is a leftover), or vxlan_port = {} in overlayd's config on every host",
            if port == 4789 { 8472 } else { 4789 }
        ),
    )
}

/// A UDP socket on overlay's port that is not a VXLAN device's.
pub fn udp_socket(port: u16, sockets: usize) -> Finding {
    Finding::problem(
        "vxlan_port",
        format!(
            "{sockets} UDP socket(s) of a process are bound to port {port}, overlay's VXLAN port: \
             it receives no VXLAN, or takes overlay's"
        ),
        format!(
            "stop the process bound to it (ss -lunp 'sport = :{port}' names it), or choose another vxlan_port on every host"
        ),
    )
}

/// Whether one `iptables -S INPUT` rule drops UDP to `port` from any of `peers`.
fn drops_vxlan(rule: &str, port: u16, underlay: &str, peers: &BTreeSet<Ipv4Addr>) -> bool {
    let words: Vec<&str> = rule.split_whitespace().collect();
    let arg = |flag: &str| {
        words
            .iter()
            .position(|w| *w == flag)
            .and_then(|i| words.get(i + 1).copied())
    };
    if words.first() != Some(&"-A") || !matches!(arg("-j"), Some("DROP" | "REJECT")) {
        return false;
    }
    if words.contains(&"!") {
        return false;
    }
    if arg("-p").is_some_and(|p| p != "udp" && p != "17") {
        return false;
    }
    if arg("-i").is_some_and(|i| i != underlay) {
        return false;
    }
    let port_ok = match (arg("--dport"), arg("--dports")) {
        (Some(p), _) => port_in(p, port),
        (None, Some(list)) => list.split(',').any(|p| port_in(p, port)),
        (None, None) => true,
    };
    let source_ok = match arg("-s") {
        None => true,
        Some(s) => s
            .split(',')
            .filter_map(|n| n.parse::<Ipv4Net>().ok())
            .any(|n| peers.iter().any(|p| n.contains(p))),
    };
    port_ok && source_ok
}

/// Whether `spec` ("4789" or "4000:5000") holds `port`.
fn port_in(spec: &str, port: u16) -> bool {
    match spec.split_once(':') {
        Some((a, b)) => {
            matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a <= port && port <= b)
        }
        None => spec.parse() == Ok(port),
    }
}

/// The INPUT chain's rules (`iptables -S INPUT`) against VXLAN to `port`.
pub fn iptables_input(
    rules: &[String],
    port: u16,
    underlay: &str,
    peers: &BTreeSet<Ipv4Addr>,
) -> Vec<Finding> {
    rules
        .iter()
        .filter(|r| drops_vxlan(r, port, underlay, peers))
        .map(|r| {
            Finding::problem(
                "firewall",
                format!("iptables rule `{r}` drops VXLAN (UDP {port}) from the peers before it reaches overlay"),
                format!("iptables -D {}", &r[3..]),
            )
        })
        .collect()
}

/// The VXLAN filter chain (`iptables -S OVERLAY-VXLAN`): one RETURN per peer host.
pub fn vxlan_filter(rules: &[String], chain: &str, peers: &BTreeSet<Ipv4Addr>) -> Vec<Finding> {
    peers
        .iter()
        .filter(|p| {
            let want = format!("-A {chain} -s {p}/32 -j RETURN");
            !rules.contains(&want)
        })
        .map(|p| {
            Finding::problem(
                "firewall",
                format!("the VXLAN filter (iptables chain {chain}) has no RETURN rule for peer host {p}: its VXLAN is dropped"),
                format!("iptables -I {chain} 1 -s {p}/32 -j RETURN"),
            )
        })
        .collect()
}

/// nftables rules (`nft -a list ruleset`) in input hooks that drop UDP to
/// `port`, outside the tables iptables manages (`ip filter`, checked with
/// iptables).
pub fn nft_input(ruleset: &str, port: u16) -> Vec<Finding> {
    let mut out = Vec::new();
    let (mut table, mut chain, mut input) = (String::new(), String::new(), false);
    for line in ruleset.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("table ") {
            table = rest.split(" {").next().unwrap_or(rest).to_string();
        } else if let Some(rest) = line.strip_prefix("chain ") {
            chain = rest.split(" {").next().unwrap_or(rest).to_string();
            input = false;
        } else if line.contains("hook input") {
            input = true;
        } else if input && table != "ip filter" && is_drop_of(line, port) {
            let rule = line.split(" # handle ").next().unwrap_or(line);
            let handle = line.rsplit(" # handle ").next().unwrap_or("?");
            out.push(Finding::problem(
                "firewall",
                format!("nftables rule `{rule}` (table {table}, chain {chain}) drops VXLAN (UDP {port}) before it reaches overlay"),
                format!("nft delete rule {table} {chain} handle {handle}"),
            ));
        }
    }
    out
}

fn is_drop_of(rule: &str, port: u16) -> bool {
    let verdict = rule.contains(" drop") || rule.contains(" reject") || rule.starts_with("drop");
    let p = port.to_string();
    let udp = rule.split("udp dport").nth(1).is_some_and(|rest| {
        let rest = rest.trim_start();
        match rest.strip_prefix('{') {
            Some(set) => set
                .split('}')
                .next()
                .unwrap_or("")
                .split(',')
                .any(|x| x.trim() == p),
            None => rest.split_whitespace().next() == Some(p.as_str()),
        }
    });
    verdict && udp
}

/// This host's bridge against its subnet: it must carry the gateway.
pub fn bridge_address(
    bridge: &str,
    addrs: &[(Ipv4Addr, u8)],
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    docker: bool,
) -> Finding {
    let want = format!("{gateway}/{}", subnet.prefix_len());
    if addrs.contains(&(gateway, subnet.prefix_len())) {
        return Finding::ok(
            "bridge_address",
            format!("{bridge} has {want}, this host's gateway"),
        );
    }
    let have: Vec<String> = addrs.iter().map(|(a, l)| format!("{a}/{l}")).collect();
    let fix = if docker {
        format!("dockerd --bip={want} (or \"bip\": \"{want}\" in /etc/docker/daemon.json), then restart dockerd")
    } else {
        let mut cmds: Vec<String> = have
            .iter()
            .map(|a| format!("ip addr del {a} dev {bridge}"))
            .collect();
        cmds.push(format!("ip addr add {want} dev {bridge}"));
        cmds.join(" && ")
    };
    Finding::problem(
        "bridge_address",
        format!(
            "bridge {bridge} has {}, not this host's gateway {want} (subnet {subnet}): \
             its containers are not in the subnet the peers route to this host",
            if have.is_empty() {
                "no IPv4 address".to_string()
            } else {
                have.join(", ")
            }
        ),
        fix,
    )
}

/// Docker's default bridge network (`dockerd --bip`) against this host's subnet.
pub fn docker_bip(
    docker_subnet: &str,
    gateway: Option<&str>,
    subnet: Ipv4Net,
    own_gateway: Ipv4Addr,
) -> Finding {
    let want = format!("{own_gateway}/{}", subnet.prefix_len());
    let same = docker_subnet.parse::<Ipv4Net>().ok() == Some(subnet)
        && gateway.is_none_or(|g| g == own_gateway.to_string());
    if same {
        return Finding::ok(
            "docker_bip",
            format!("Docker's bridge network is {docker_subnet}, this host's subnet"),
        );
    }
    Finding::problem(
        "docker_bip",
        format!(
            "Docker's bridge network is {docker_subnet} (gateway {}), not this host's subnet {subnet}: \
             dockerd's --bip does not match, so its containers get addresses the peers do not route here",
            gateway.unwrap_or("-")
        ),
        format!("dockerd --bip={want} (or \"bip\": \"{want}\" in /etc/docker/daemon.json), then restart dockerd"),
    )
}

/// A peer whose host does not answer on the underlay.
pub fn peer_unreachable(
    subnet: Ipv4Net,
    underlay_ip: Ipv4Addr,
    source: Source,
    how: &str,
) -> Finding {
    let fix = match source {
        Source::Config => format!(
            "remove the [[peers]] entry {subnet} from overlayd's config file and restart overlayd"
        ),
        Source::Cluster => format!(
            "overlayctl hosts rm NAME (the host with underlay address {underlay_ip} in overlayctl hosts)"
        ),
        _ => format!("overlayctl peer del {subnet}"),
    };
    Finding::problem(
        "peer",
        format!(
            "peer {subnet} ({source}): its host {underlay_ip} does not answer on the underlay ({how}); \
             traffic to {subnet} is lost. If the host is up, check the underlay between the two; if it is gone for good, remove the peer"
        ),
        fix,
    )
}

/// The dataplane's attachments; `restart` is how to restart overlayd.
pub fn programs(mode: &str, states: &[AttachmentState], restart: &str) -> Vec<Finding> {
    if states.is_empty() {
        return vec![Finding::ok(
            "programs",
            format!("the {mode} dataplane attaches no programs"),
        )];
    }
    let bad: Vec<Finding> = states
        .iter()
        .filter(|s| !s.attached)
        .map(|s| {
            Finding::problem(
                "programs",
                format!(
                    "{} is not attached to {}: {}",
                    s.program,
                    s.ifname,
                    s.problem.as_deref().unwrap_or("unknown")
                ),
                restart.to_string(),
            )
        })
        .collect();
    if !bad.is_empty() {
        return bad;
    }
    vec![Finding::ok(
        "programs",
        format!(
            "{} programs attached where expected ({})",
            states.len(),
            states
                .iter()
                .map(|s| format!("{} on {}", s.program, s.ifname))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )]
}

#[cfg(test)]
mod tests;
