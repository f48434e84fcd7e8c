//! `cargo xtask run`: two simulated hosts with two containers each,
//! overlayd on both, peers added with overlayctl, then a cross-host ping,
//! a transfer and the dataplane's counters. The lab is removed at the end,
//! also on failure.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use overlay_lab::{ping, transfer, AgentOptions, Binaries, Lab, LabSpec, Overlayd};

fn step(msg: &str) {
    println!("\n==> {msg}");
}

pub fn run(bins: &Path) -> Result<()> {
    overlay_lab::require_root().context("the demo creates network namespaces")?;
    let bins = Binaries::in_dir(bins)?;
    step("Creating a lab: 2 hosts on an underlay (192.168.56.0/24), 2 containers each");
    let lab = Lab::new(LabSpec::default())?;
    for h in lab.hosts() {
        println!(
            "    host {} ({}): underlay {} on eth1, containers {} on docker0: {}",
            h.index,
            h.ns,
            h.underlay_ip,
            h.subnet,
            h.containers
                .iter()
                .map(|c| c.ip.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    step("Starting overlayd on each host (BPF dataplane)");
    let mut agents = Vec::new();
    for h in 1..=2 {
        let a = Overlayd::start(&lab, h, &bins, &AgentOptions::default())?;
        println!(
            "    host {h}: overlayd pid {} api {}",
            a.proc.pid(),
            a.socket.display()
        );
        agents.push(a);
    }
    step("Adding peers with overlayctl");
    for a in &agents {
        for other in lab.hosts().iter().filter(|o| o.index != a.host) {
            println!(
                "    host {}$ overlayctl peer add {} {}",
                a.host, other.subnet, other.underlay_ip
            );
            a.ctl_ok(&["peer", "add", &other.subnet, &other.underlay_ip.to_string()])?;
        }
    }
    println!(
        "    host 1$ overlayctl peer list\n{}",
        indent(&agents[0].ctl_ok(&["peer", "list"])?)
    );

    let (a, b) = (lab.container(1, 1).clone(), lab.container(2, 1).clone());
    step(&format!("Ping {} (host 1) -> {} (host 2)", a.ip, b.ip));
    let r = ping(&a.ns, b.ip, 3, None, false, 2)?;
    println!("    {} sent, {} received", r.transmitted, r.received);
    step(&format!("Ping {} (host 2) -> {} (host 1)", b.ip, a.ip));
    let r = ping(&b.ns, a.ip, 3, None, false, 2)?;
    println!("    {} sent, {} received", r.transmitted, r.received);

    step(&format!(
        "Transferring 64 MiB over TCP {} -> {}",
        a.ip, b.ip
    ));
    let t0 = Instant::now();
    let t = transfer(&a.ns, &b.ns, b.ip, 64 << 20)?;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "    {} bytes in {secs:.2} s; sha256 sent {} received {} ({})",
        t.bytes_received,
        &t.sent_sha256[..16],
        &t.received_sha256[..16],
        if t.sent_sha256 == t.received_sha256 {
            "equal"
        } else {
            "DIFFERENT"
        }
    );

    for a in &agents {
        step(&format!("host {}$ overlayctl status", a.host));
        println!("{}", indent(&a.ctl_ok(&["status"])?));
    }
    step("Removing the lab");
    drop(agents);
    drop(lab);
    println!("    done: no namespace, interface or pin of the demo is left");
    Ok(())
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("      {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
