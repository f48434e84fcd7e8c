//! Mode `ebpf-macvlan` (an experiment): one container per host whose
//! `eth0` is a macvlan (bridge mode) of the underlay `eth1`, so no veth
//! hop. overlayd runs with `attach = "bridge"` (source checked by MAC);
//! the endpoint is registered on `eth1` with its MAC (taken from a
//! permanent neighbour entry on the bridge), and the agent's
//! `ovl_to_underlay` (loaded, not attached by overlayd) is attached to
//! `eth1`'s tc egress by hand (`tc ... object-pinned`).

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use overlay_lab::{container_mac, exec_ok, nsenter_command, Lab, Overlayd};

const LAST: u8 = 20;
/// `overlay_common::programs::TO_UNDERLAY` (xtask does not depend on it).
const TO_UNDERLAY: &str = "ovl_to_underlay";

/// The macvlan container of `host`: (namespace, address).
fn member(lab: &mut Lab, host: usize) -> Result<(String, Ipv4Addr)> {
    let h = lab.host(host).clone();
    let ns = lab.add_namespace(&format!("mv{host}"))?;
    let o = h.subnet_addr.octets();
    let ip = Ipv4Addr::new(o[0], o[1], o[2], LAST);
    let mac = container_mac(ip);
    let mtu = h.bridge_mtu.to_string();
    exec_ok(
        &h.ns,
        &[
            "ip",
            "link",
            "add",
            "mv0",
            "link",
            &h.underlay_if,
            "mtu",
            &mtu,
            "type",
            "macvlan",
            "mode",
            "bridge",
        ],
    )?;
    exec_ok(&h.ns, &["ip", "link", "set", "mv0", "netns", &ns])?;
    exec_ok(&ns, &["ip", "link", "set", "mv0", "name", "eth0"])?;
    exec_ok(&ns, &["ip", "link", "set", "eth0", "address", &mac, "up"])?;
    exec_ok(
        &ns,
        &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
    )?;
    let line = exec_ok(
        &h.ns,
        &["cat", &format!("/sys/class/net/{}/address", h.underlay_if)],
    )?;
    let gw_mac = line.trim().to_string();
    let gw = h.gateway.to_string();
    exec_ok(
        &ns,
        &[
            "ip",
            "neigh",
            "replace",
            &gw,
            "lladdr",
            &gw_mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ],
    )?;
    exec_ok(&ns, &["ip", "route", "add", "default", "via", &gw])?;
    exec_ok(
        &h.ns,
        &[
            "ip",
            "neigh",
            "replace",
            &ip.to_string(),
            "lladdr",
            &mac,
            "dev",
            &h.bridge,
            "nud",
            "permanent",
        ],
    )?;
    Ok((ns, ip))
}

/// Runs `args` in namespace `ns` (network only), or in ours.
fn run(ns: Option<&str>, args: &[&str]) -> Result<String> {
    let mut c = match ns {
        Some(ns) => nsenter_command(ns, args[0]),
        None => std::process::Command::new(args[0]),
    };
    let out = c.args(&args[1..]).output()?;
    anyhow::ensure!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The id of program `name` that process `pid` (overlayd) loaded: among the
/// programs its file descriptors hold (`/proc/PID/fdinfo`).
fn program_id(pid: u32, name: &str) -> Result<u64> {
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in std::fs::read_dir(&dir).with_context(|| dir.clone())? {
        let info = std::fs::read_to_string(entry?.path()).unwrap_or_default();
        let Some(id) = info
            .lines()
            .find_map(|l| l.strip_prefix("prog_id:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
        else {
            continue;
        };
        let out = run(
            None,
            &["bpftool", "-j", "prog", "show", "id", &id.to_string()],
        )?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        if v["name"].as_str() == Some(name) {
            return Ok(id);
        }
    }
    anyhow::bail!("overlayd (pid {pid}) holds no program {name}")
}

/// Sets the pair up with the agents already running (`attach = "bridge"`).
pub(super) fn setup(lab: &mut Lab, agents: &[Overlayd]) -> Result<(String, String, Ipv4Addr)> {
    let mut members = Vec::new();
    for (i, a) in agents.iter().enumerate() {
        let host = i + 1;
        let (ns, ip) = member(lab, host)?;
        let h = lab.host(host).clone();
        a.ctl_ok(&["endpoint", "add", &ip.to_string(), "--dev", &h.underlay_if])?;
        let id = program_id(a.proc.pid(), TO_UNDERLAY)?;
        let pin = lab.bpffs_dir().join(format!("h{host}-to-underlay"));
        let pin = pin.display().to_string();
        // Outside `ip netns exec`, whose fresh /sys has no bpffs.
        run(
            None,
            &["bpftool", "prog", "pin", "id", &id.to_string(), &pin],
        )?;
        let dev = h.underlay_if.as_str();
        run(Some(&h.ns), &["tc", "qdisc", "add", "dev", dev, "clsact"])?;
        run(
            Some(&h.ns),
            &[
                "tc",
                "filter",
                "add",
                "dev",
                dev,
                "egress",
                "bpf",
                "da",
                "object-pinned",
                &pin,
            ],
        )?;
        members.push((ns, ip));
    }
    let (client, server) = (members[0].clone(), members[1].clone());
    Ok((client.0, server.0, server.1))
}
