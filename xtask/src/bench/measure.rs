//! The measurements: iperf3 throughput, CPU time, `peer add` latency and
//! the per-packet cost of each program (progbench).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use overlay_lab::{exec_ok, AgentOptions, Binaries, Lab, LabSpec, Overlayd};

use super::IPERF_PORT;

pub(super) fn iperf_json(ns: &str, args: &[&str]) -> Result<serde_json::Value> {
    let out = exec_ok(ns, args)?;
    serde_json::from_str(&out).with_context(|| format!("iperf3 output: {out}"))
}

/// (Gbit/s received, bytes received) of a TCP run with `streams` streams.
pub(super) fn iperf_tcp(
    ns: &str,
    target: Ipv4Addr,
    streams: u32,
    dur: Duration,
) -> Result<(f64, f64)> {
    let v = iperf_json(
        ns,
        &[
            "iperf3",
            "-c",
            &target.to_string(),
            "-p",
            &IPERF_PORT.to_string(),
            "-J",
            "-t",
            &dur.as_secs().to_string(),
            "-P",
            &streams.to_string(),
        ],
    )?;
    let r = &v["end"]["sum_received"];
    Ok((
        r["bits_per_second"].as_f64().context("no sum_received")? / 1e9,
        r["bytes"].as_f64().context("no bytes")?,
    ))
}

/// Received packets per second of 64-byte UDP datagrams sent as fast as possible.
pub(super) fn iperf_udp64(ns: &str, target: Ipv4Addr, dur: Duration) -> Result<f64> {
    let v = iperf_json(
        ns,
        &[
            "iperf3",
            "-c",
            &target.to_string(),
            "-p",
            &IPERF_PORT.to_string(),
            "-J",
            "-u",
            "-b",
            "0",
            "-l",
            "64",
            "-t",
            &dur.as_secs().to_string(),
        ],
    )?;
    let s = &v["end"]["sum"];
    let packets = s["packets"].as_f64().context("no packets")?;
    let lost = s["lost_packets"].as_f64().unwrap_or(0.0);
    let secs = s["seconds"].as_f64().context("no seconds")?;
    Ok((packets - lost) / secs)
}

/// Busy CPU time of the whole machine (all hosts of the lab share its kernel).
pub(super) fn cpu_busy_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
    let busy: f64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| x)
        .take(8)
        .sum();
    let hz = 100.0; // USER_HZ
    Ok(busy / hz)
}

/// Milliseconds from running `overlayctl peer add` to the first packet of a
/// running stream arriving at the peer's container; median of `trials`.
pub(super) fn peer_add_latency(bins: &Binaries, trials: u32) -> Result<Vec<f64>> {
    use std::net::UdpSocket;
    use std::sync::atomic::{AtomicBool, Ordering};
    let lab = Lab::new(LabSpec {
        hosts: 2,
        containers_per_host: 1,
        ..Default::default()
    })?;
    let agents: Vec<Overlayd> = (1..=2)
        .map(|h| Overlayd::start(&lab, h, bins, &AgentOptions::default()))
        .collect::<Result<_>>()?;
    let (client, server) = (lab.container(1, 1).clone(), lab.container(2, 1).clone());
    let (h1, h2) = (lab.host(1).clone(), lab.host(2).clone());
    agents[1].ctl_ok(&["peer", "add", &h1.subnet, &h1.underlay_ip.to_string()])?;
    let mut results = Vec::new();
    for _ in 0..trials {
        let rx = overlay_lab::run_in_netns(&server.ns, || UdpSocket::bind("0.0.0.0:9999"))??;
        rx.set_read_timeout(Some(Duration::from_secs(3)))?;
        let tx = overlay_lab::run_in_netns(&client.ns, || UdpSocket::bind("0.0.0.0:0"))??;
        let stop = AtomicBool::new(false);
        let got = std::thread::scope(|s| -> Result<Duration> {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let _ = tx.send_to(b"x", (server.ip, 9999));
                    std::thread::sleep(Duration::from_micros(100));
                }
            });
            std::thread::sleep(Duration::from_millis(100));
            let t0 = Instant::now();
            let add = agents[0].ctl_ok(&["peer", "add", &h2.subnet, &h2.underlay_ip.to_string()]);
            let mut b = [0u8; 16];
            let r = rx.recv_from(&mut b).map(|_| t0.elapsed());
            stop.store(true, Ordering::Relaxed);
            add?;
            r.context("no packet within 3 s of peer add")
        })?;
        results.push(got.as_secs_f64() * 1e3);
        agents[0].ctl_ok(&["peer", "del", &h2.subnet])?;
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(results)
}

pub(super) fn progbench(runs: u32) -> Result<serde_json::Value> {
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
                "progbench",
            ])
            .status()?;
    if !status.success() {
        bail!("building progbench failed");
    }
    let out = std::process::Command::new(crate::target_dir().join("release/examples/progbench"))
        .args(["--runs", &runs.to_string()])
        .output()?;
    if !out.status.success() {
        bail!("progbench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

pub(super) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
