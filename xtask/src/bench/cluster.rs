//! `cargo xtask bench --cluster`: the cluster store's scale. For 1,000 and
//! 5,000 host records: a fresh one-host lab with a real etcd and one
//! overlayd (BPF) in cluster mode; the `clusterbench` example writes the
//! records straight into etcd and measures the time from the last write
//! until the agent's BPF peer map holds all of them, then the time for a
//! change to one record to reach the map (20 changes). The agent's resident
//! memory is read from /proc before and after. Results go to their own
//! section of docs/benchmarks.md.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use overlay_lab::{
    nsenter_command, AgentOptions, Binaries, Etcd, EtcdOptions, Lab, LabSpec, Overlayd,
};

const START: &str = "<!-- cargo xtask bench --cluster: start (generated, do not edit) -->";
const END: &str = "<!-- cargo xtask bench --cluster: end -->";
/// Record counts measured.
const SIZES: [u32; 2] = [1_000, 5_000];
/// Changes to one record per size.
const CHANGES: u32 = 20;

/// One size's results.
struct Row {
    hosts: u32,
    write_s: f64,
    last_write_to_map_s: f64,
    first_write_to_map_s: f64,
    change_ms: Vec<f64>,
    rss_before_kib: u64,
    rss_after_kib: u64,
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

fn build_example(release: bool) -> Result<PathBuf> {
    let mut cmd = crate::cargo();
    cmd.args(["build", "-p", "overlay-user", "--example", "clusterbench"]);
    if release {
        cmd.arg("--release");
    }
    crate::run(cmd).context("building the clusterbench example")?;
    let profile = if release { "release" } else { "debug" };
    Ok(crate::target_dir()
        .join(profile)
        .join("examples/clusterbench"))
}

fn measure(bins: &Binaries, example: &Path, hosts: u32) -> Result<Row> {
    let lab = Lab::new(LabSpec {
        hosts: 1,
        containers_per_host: 0,
        ..Default::default()
    })?;
    let etcd = Etcd::start(&lab, &[1], &EtcdOptions::default())?;
    let ns = lab.host(1).ns.clone();
    let url = etcd.endpoints()[0].clone();
    let init = nsenter_command(&ns, &bins.overlayctl.display().to_string())
        .args([
            "cluster",
            "init",
            "--etcd",
            &url,
            "--pool",
            "10.0.0.0/8",
            "--subnet-len",
            "24",
            "--vni",
            "42",
        ])
        .output()?;
    if !init.status.success() {
        bail!("cluster init: {}", String::from_utf8_lossy(&init.stderr));
    }
    let opts = AgentOptions {
        dataplane: Some("ebpf".into()),
        cluster: Some(etcd.cluster_section("h1", "")),
        ..Default::default()
    };
    let agent = Overlayd::start(&lab, 1, bins, &opts)?;
    let pid = agent.proc.pid();
    let rss_before_kib = rss_kib(pid)?;
    let pin_dir = lab.bpffs_dir().join("h1");
    let out = nsenter_command(&ns, &example.display().to_string())
        .args(["--etcd", &url, "--pin-dir", &pin_dir.display().to_string()])
        .args([
            "--hosts",
            &hosts.to_string(),
            "--changes",
            &CHANGES.to_string(),
        ])
        .output()?;
    if !out.status.success() {
        bail!(
            "clusterbench: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            agent.proc.log()
        );
    }
    let rss_after_kib = rss_kib(pid)?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("clusterbench's JSON")?;
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    Ok(Row {
        hosts,
        write_s: f("write_s"),
        last_write_to_map_s: f("last_write_to_map_s"),
        first_write_to_map_s: f("first_write_to_map_s"),
        change_ms: v["change_ms"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_f64())
            .collect(),
        rss_before_kib,
        rss_after_kib,
    })
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn markdown(rows: &[Row], command: &str, build: &str, took: f64) -> String {
    let mut s = String::new();
    s.push_str("## Cluster store: from etcd records to the BPF peer map\n\n");
    s.push_str(&format!("Command: `{command}` ({build} build)  \nDate: {}  \nKernel: {}  \nCPU: {} ({} cores); run took {took:.0} s.\n\n",
        super::report::now_utc(), super::report::uname_r(), super::report::cpu_model(), super::report::num_cpus()));
    s.push_str("One lab host with a single etcd 3.4 member and one overlayd (BPF dataplane, `[cluster]`) in its namespace; a client in the same namespace writes N host records straight into etcd (transactions of 100 puts) and polls the agent's pinned `OVL_PEERS` map. A fresh lab, etcd and agent per N. Then 20 times: one record gets a new underlay address, timed from sending the put (etcd's commit included) until the map entry has it. Resident memory is overlayd's VmRSS before the records and after.\n\n");
    s.push_str("| records | writing them (s) | last write -> all in the map (s) | first write -> all in the map (s) | change -> map, median (ms) | change -> map, worst of 20 (ms) | overlayd RSS before -> after (MiB) |\n|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let worst = r.change_ms.iter().copied().fold(f64::NAN, f64::max);
        s.push_str(&format!(
            "| {} | {:.2} | {:.3} | {:.2} | {:.1} | {:.1} | {:.1} -> {:.1} |\n",
            r.hosts,
            r.write_s,
            r.last_write_to_map_s,
            r.first_write_to_map_s,
            median(&r.change_ms),
            worst,
            r.rss_before_kib as f64 / 1024.0,
            r.rss_after_kib as f64 / 1024.0
        ));
    }
    s.push_str("\nGoal: under 2 s from the last write until the map holds 1,000 records.\n");
    s
}

fn write_section(path: &Path, body: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let section = format!("{START}\n{body}{END}");
    let new = match (old.find(START), old.find(END)) {
        (Some(a), Some(b)) if b > a => format!("{}{}{}", &old[..a], section, &old[b + END.len()..]),
        _ => format!("{}\n\n{section}\n", old.trim_end()),
    };
    std::fs::write(path, new)?;
    Ok(())
}

/// Run the cluster measurement and print (and with `docs`, record) it.
pub fn run(bins: &Binaries, release: bool, docs: bool, command: &str) -> Result<()> {
    overlay_lab::require_root().context("the benchmark builds network namespaces")?;
    if !overlay_lab::etcd_missing().is_empty() {
        bail!(
            "etcd is missing: {}",
            overlay_lab::etcd_missing().join(", ")
        );
    }
    let example = build_example(release)?;
    let started = Instant::now();
    let mut rows = Vec::new();
    for hosts in SIZES {
        eprintln!("bench: {hosts} host records through etcd");
        let row = measure(bins, &example, hosts).with_context(|| format!("{hosts} records"))?;
        eprintln!(
            "bench: {hosts}: last write -> map {:.3} s, change median {:.1} ms, RSS {} -> {} KiB",
            row.last_write_to_map_s,
            median(&row.change_ms),
            row.rss_before_kib,
            row.rss_after_kib
        );
        rows.push(row);
    }
    let md = markdown(
        &rows,
        command,
        if release { "release" } else { "debug" },
        started.elapsed().as_secs_f64(),
    );
    println!("{md}");
    if docs {
        write_section(&crate::root().join("docs/benchmarks.md"), &md)?;
        eprintln!("bench: docs/benchmarks.md updated");
    }
    Ok(())
}
