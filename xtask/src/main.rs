//! `cargo xtask`: the project's commands.
//!
//! - `cargo xtask setup`: install what building and testing need, if missing.
//! - `cargo xtask run`: the demo (two simulated hosts, cross-host traffic).
//! - `cargo xtask run -- ARGS`: run overlayd with ARGS on this host.
//! - `cargo xtask lint`: architecture checks (no import circles, layers, file lengths).
//! - `cargo xtask test`: the lint, then every test (unit, BPF_PROG_TEST_RUN, end to end).
//! - `cargo xtask bench`: the dataplane against plain routing, iptables and kernel VXLAN.

mod bench;
mod demo;
mod fuzz;
mod lint;
mod setup;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, test and demo the overlay dataplane"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the nightly's rust-src, bpf-linker and the apt packages the tests use, if missing.
    Setup,
    /// Build everything (release), then run the demo; with `-- ARGS`, run overlayd with ARGS.
    Run {
        /// Arguments for overlayd (after `--`); none runs the two-host demo.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Measure the BPF dataplane against host to host, plain routing, Docker-style iptables,
    /// kernel VXLAN and Docker's own overlay driver.
    ///
    /// Builds a two-host lab per mode and round, interleaves the modes, and
    /// reports medians and ratios (to host to host, plain routing, kernel
    /// VXLAN and Docker's overlay) as markdown (also into docs/benchmarks.md,
    /// with an SVG chart). Needs root. A full run takes about 26 minutes.
    Bench {
        /// A short run (under 10 minutes with every mode): 1 round, 1 s per measurement.
        #[arg(long)]
        quick: bool,
        /// Rounds (default 5; 1 with --quick).
        #[arg(long)]
        rounds: Option<u32>,
        /// Seconds per traffic measurement (default 5; 1 with --quick).
        #[arg(long)]
        seconds: Option<u32>,
        /// Comma-separated modes: host (host to host, no containers), plain, iptables, kernel, ebpf, ebpf-xdp-generic, ebpf-xdp-native, ebpf-xdp-decap, ebpf-deliver-veth, ebpf-bridge, ebpf-encap-device, ebpf-net, kernel-net (a container pair on one overlay network), docker-overlay (Docker's overlay driver in swarm mode), ebpf-clsact, ebpf-gro, ebpf-bigtcp (the endpoint hop's settings, each against ebpf), ebpf-no-tunnel-gro (tunnel_gro = false, against ebpf), ebpf-adjust-room (encap_resize = "adjust-room", against ebpf).
        #[arg(long)]
        modes: Option<String>,
        /// Also write the results as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Do not rewrite docs/benchmarks.md and docs/benchmarks.svg.
        #[arg(long)]
        no_docs: bool,
        /// Skip the per-packet BPF_PROG_TEST_RUN measurement.
        #[arg(long)]
        no_progbench: bool,
        /// A NIC-like underlay: `ethtool -K eth1 tso off gso off
        /// tx-udp_tnl-segmentation off` on both hosts in every mode's lab, so
        /// that receivers see MTU-sized frames as from a real NIC rather than
        /// the veth's 64 KB GSO packets. The results go to a section of their
        /// own in docs/benchmarks.md (and docs/benchmarks-nic-like.svg).
        #[arg(long)]
        nic_like: bool,
        /// Use the debug binaries in target/debug instead of building release ones.
        #[arg(long)]
        debug: bool,
        /// Measure only the cluster store's scale instead: 1,000 and 5,000
        /// host records written to a real etcd, until one agent's BPF peer map
        /// holds them; a change to one record; the agent's memory.
        #[arg(long)]
        cluster: bool,
    },
    /// Check overlay-user's module graph (no import circles, no use of a higher
    /// layer, sources independent of each other) and that no source file is
    /// longer than 600 lines.
    Lint {
        /// Print overlay-user's module graph instead.
        #[arg(long)]
        graph: bool,
    },
    /// Fuzz every BPF program against the host-side reference model (needs root).
    ///
    /// Random and mutated packets (valid VXLAN with one field changed,
    /// truncations, IPv4 options, fragments, VLAN tags, IPv6, random bytes;
    /// container packets with every kind of source) through
    /// BPF_PROG_TEST_RUN; every verdict and drop reason must equal the
    /// model's. Seeded and reproducible; `cargo xtask test` runs 4,000.
    Fuzz {
        /// Packets per side (underlay frames, container packets).
        #[arg(long, default_value_t = 100_000)]
        packets: u64,
        /// Seed of the packet generator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Run the lint, then every test: unit tests, BPF program tests and end-to-end tests (needs root).
    Test {
        /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup::ensure(),
        Cmd::Run { args } => {
            setup::ensure()?;
            let bins = build_release()?;
            if args.is_empty() {
                demo::run(&bins)
            } else {
                let status = Command::new(bins.join("overlayd")).args(&args).status()?;
                std::process::exit(status.code().unwrap_or(1));
            }
        }
        Cmd::Bench {
            quick,
            rounds,
            seconds,
            modes,
            json,
            no_docs,
            no_progbench,
            nic_like,
            debug,
            cluster,
        } => {
            setup::ensure()?;
            let bins = if debug {
                build_debug()?
            } else {
                build_release()?
            };
            let command = format!(
                "cargo xtask bench {}",
                std::env::args().skip(2).collect::<Vec<_>>().join(" ")
            );
            if cluster {
                let bins = overlay_lab::Binaries::in_dir(&bins)?;
                return bench::cluster::run(&bins, !debug, !no_docs, command.trim());
            }
            bench::run(&bench::Opts {
                quick,
                rounds,
                seconds,
                modes,
                json,
                no_docs,
                no_progbench,
                nic_like,
                bins,
                command: command.trim().to_string(),
            })
        }
        Cmd::Lint { graph: true } => lint::print_graph(&root()),
        Cmd::Lint { graph: false } => lint::run(&root()),
        Cmd::Fuzz { packets, seed } => {
            setup::ensure()?;
            fuzz::run(packets, seed)
        }
        Cmd::Test { args } => {
            lint::run(&root())?;
            setup::ensure()?;
            test(&args)
        }
    }
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative to the workspace
/// root) when set, otherwise `target` in the workspace root.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => root().join(d),
        _ => root().join("target"),
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(mut cmd: Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

/// Builds the binaries in release mode and returns their directory.
fn build_release() -> Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "--release", "-p", "overlay-user", "--bins"]);
    run(c)?;
    Ok(target_dir().join("release"))
}

/// Builds the binaries in debug mode and returns their directory.
fn build_debug() -> Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "-p", "overlay-user", "--bins"]);
    run(c)?;
    Ok(target_dir().join("debug"))
}

fn test(extra: &[String]) -> Result<()> {
    use std::io::{BufRead, BufReader};
    // Binaries first: the end-to-end tests run them.
    let bins = build_debug()?;
    let mut c = cargo();
    c.args(["test", "--workspace", "--no-fail-fast"]);
    c.env("OVERLAY_BIN_DIR", bins);
    if !extra.is_empty() {
        c.arg("--").args(extra);
    }
    // Pass the output through and add up the results of every test binary,
    // so the run ends with one line that counts them all.
    c.stdout(std::process::Stdio::piped());
    let mut child = c.spawn().context("starting cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let n: u64 = n
                    .trim_start_matches(|c: char| !c.is_ascii_digit())
                    .parse()
                    .unwrap_or(0);
                match kind {
                    "passed" => passed += n,
                    "failed" => failed += n,
                    _ => {}
                }
            }
        }
    }
    let status = child.wait()?;
    println!("\n{passed} passed, {failed} failed");
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    Ok(())
}
