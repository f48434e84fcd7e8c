//! Modes `ebpf-net` and `kernel-net`: a container pair on one overlay
//! network (VNI 4096, 10.103.240.0/24) across the two hosts, on the BPF
//! dataplane or the kernel one (a bridge and a VXLAN device per network). Each
//! container is a namespace with `eth0` whose host-side veth is `ovn…`;
//! each host's dataplane is told the network and both endpoints by the
//! `netsetup` example (run in the host's namespace), which leaves the
//! pinned programs forwarding.

use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};
use overlay_lab::{agent_config, exec_ok, nsenter_command, AgentOptions, Lab};

const VNI: u32 = 4096;
const SUBNET: &str = "10.103.240.0/24";
const GATEWAY: &str = "10.103.240.1";

/// Builds the `netsetup` example (release).
fn build() -> Result<std::path::PathBuf> {
    let root = crate::root();
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .args([
                "build",
                "--release",
                "-q",
                "-p",
                "overlay-user",
                "--example",
                "netsetup",
            ])
            .status()?;
    if !status.success() {
        bail!("building netsetup failed");
    }
    Ok(crate::target_dir().join("release/examples/netsetup"))
}

struct Member {
    host: usize,
    ns: String,
    ip: Ipv4Addr,
    mac: String,
    veth: String,
    ifindex: u32,
}

fn member(lab: &mut Lab, host: usize, last: u8, mtu: u32) -> Result<Member> {
    let name = format!("net{host}");
    let ns = lab.add_namespace(&name)?;
    let host_ns = lab.host(host).ns.clone();
    let veth = format!("ovn{name}");
    let ip = Ipv4Addr::new(10, 103, 240, last);
    let mac = format!("02:42:0a:67:f0:{last:02x}");
    let mtu = mtu.to_string();
    exec_ok(
        &host_ns,
        &[
            "ip", "link", "add", &veth, "mtu", &mtu, "type", "veth", "peer", "name", "eth0", "mtu",
            &mtu, "netns", &ns,
        ],
    )?;
    exec_ok(&ns, &["ip", "link", "set", "eth0", "address", &mac, "up"])?;
    exec_ok(
        &ns,
        &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
    )?;
    exec_ok(&ns, &["ip", "route", "add", "default", "via", GATEWAY])?;
    exec_ok(&host_ns, &["ip", "link", "set", &veth, "up"])?;
    let line = exec_ok(&host_ns, &["ip", "-o", "link", "show", "dev", &veth])?;
    let ifindex = line
        .split(':')
        .next()
        .and_then(|s| s.trim().parse().ok())
        .with_context(|| format!("ifindex of {veth} in {line:?}"))?;
    Ok(Member {
        host,
        ns,
        ip,
        mac,
        veth,
        ifindex,
    })
}

/// Sets the pair up; returns (client namespace, server namespace, server address).
pub(super) fn setup(lab: &mut Lab, dataplane: &str) -> Result<(String, String, Ipv4Addr)> {
    let netsetup = build()?;
    let mtu = lab.host(1).bridge_mtu;
    let members = [member(lab, 1, 2, mtu)?, member(lab, 2, 3, mtu)?];
    for host in 1..=2 {
        let cfg = lab.dir().join(format!("netsetup-h{host}.toml"));
        let opts = AgentOptions {
            dataplane: Some(dataplane.into()),
            ..Default::default()
        };
        std::fs::write(&cfg, agent_config(lab, host, &opts))?;
        let mut args: Vec<String> = vec![
            netsetup.display().to_string(),
            "--config".into(),
            cfg.display().to_string(),
            "--network".into(),
            format!("{VNI},{SUBNET},{GATEWAY}"),
        ];
        for m in &members {
            if m.host == host {
                args.push("--local".into());
                args.push(format!("{VNI},{},{},{},{}", m.ip, m.mac, m.veth, m.ifindex));
            } else {
                args.push("--remote".into());
                args.push(format!(
                    "{VNI},{},{},{}",
                    m.ip,
                    m.mac,
                    lab.host(m.host).underlay_ip
                ));
            }
        }
        // In the host's network namespace only (nsenter --net): `ip netns
        // exec` would also give netsetup a private mount namespace with a
        // fresh /sys, where the dataplane mounts its own bpffs; the pins
        // (and with them the attached programs) would vanish when netsetup
        // exits.
        let out = nsenter_command(&lab.host(host).ns, &args[0])
            .args(&args[1..])
            .stdin(std::process::Stdio::null())
            .output()
            .with_context(|| format!("running netsetup on host {host}"))?;
        if !out.status.success() {
            bail!(
                "netsetup on host {host}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let [client, server] = members;
    Ok((client.ns, server.ns, server.ip))
}
