//! Mode `docker-overlay`: Docker's own overlay driver (swarm mode, the
//! system the seeds use) as a baseline. One dockerd per lab host (each in
//! its host's network namespace with its own data root, exec root and
//! socket: [`Dockerd`]); host 1 runs `docker swarm init`, host 2 joins;
//! an attachable overlay network; one busybox container (`sleep`) per
//! host on it. The traffic tools run from the host inside each container's
//! network namespace (`/proc/PID/ns/net`), so the image needs nothing.
//!
//! Everything lives in the lab: the swarm's state is under each dockerd's
//! data root, which [`Dockerd`]'s drop removes with its containers,
//! mounts (the overlay driver's namespace files under the exec root) and
//! cgroups; the lab's drop does it again for anything left. One thing is
//! not: libnetwork writes the hosts and resolv.conf files of a swarm
//! network's load-balancer sandbox to a fixed path,
//! `/var/lib/docker/network/files/lb_<network id>`, whatever the data
//! root; [`DockerPair`]'s drop removes that directory after the dockerds,
//! and the directories above it up to /var/lib/docker when they are empty.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use overlay_lab::{DockerOptions, Dockerd, Lab};

/// Docker network name and subnet of the pair.
const NETWORK: &str = "ovlbench";
const SUBNET: &str = "10.103.240.0/24";
/// Where libnetwork puts the files of sandboxes that belong to no
/// container (a fixed path in Docker 20.10's libnetwork, not under the data root).
const SANDBOX_FILES: &str = "/var/lib/docker/network/files";

/// The running pair. Drop it before the lab (it holds the dockerds).
pub(super) struct DockerPair {
    /// Held for their drop, which removes the swarm, containers and all.
    dockers: Vec<Dockerd>,
    /// The load-balancer sandbox's files outside the data root, once the
    /// network exists (see the module's doc).
    lb_files: Option<PathBuf>,
    pub(super) client_ns: String,
    pub(super) server_ns: String,
    pub(super) server_ip: Ipv4Addr,
}

impl Drop for DockerPair {
    fn drop(&mut self) {
        // Never panic here: this runs during unwinding too.
        self.dockers.clear();
        if let Some(dir) = &self.lb_files {
            let _ = std::fs::remove_dir_all(dir);
            // Then the parents this left empty (remove_dir fails on a
            // directory with anything in it, such as another run's files).
            let mut p: &Path = dir;
            while let Some(parent) = p.parent() {
                if !parent.starts_with("/var/lib/docker") || std::fs::remove_dir(parent).is_err() {
                    break;
                }
                p = parent;
            }
        }
    }
}

/// Starts both dockerds, forms the swarm, creates the network and the two
/// containers; the lab must be made with `docker: true`.
pub(super) fn setup(lab: &Lab) -> Result<DockerPair> {
    let opts = DockerOptions::default();
    // From here on, dropping `pair` (also on an early return) removes it all.
    let mut pair = DockerPair {
        dockers: Vec::new(),
        lb_files: None,
        client_ns: String::new(),
        server_ns: String::new(),
        server_ip: Ipv4Addr::UNSPECIFIED,
    };
    for h in 1..=2 {
        let d = Dockerd::start(lab, h, &opts)?;
        d.import_busybox()?;
        pair.dockers.push(d);
    }
    let dockers = &pair.dockers;
    let (h1, h2) = (lab.host(1), lab.host(2));
    let (ip1, ip2) = (h1.underlay_ip.to_string(), h2.underlay_ip.to_string());
    let manager = format!("{ip1}:2377");
    dockers[0]
        .cli_ok(&[
            "swarm",
            "init",
            "--advertise-addr",
            &ip1,
            "--listen-addr",
            &manager,
        ])
        .context("swarm init on host 1")?;
    let token = dockers[0].cli_ok(&["swarm", "join-token", "-q", "worker"])?;
    dockers[1]
        .cli_ok(&[
            "swarm",
            "join",
            "--token",
            &token,
            "--advertise-addr",
            &ip2,
            "--listen-addr",
            &format!("{ip2}:2377"),
            &manager,
        ])
        .context("swarm join on host 2")?;
    let id = dockers[0].cli_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--attachable",
        "--subnet",
        SUBNET,
        NETWORK,
    ])?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!("docker network create printed {id:?}, not a network id");
    }
    pair.lb_files = Some(Path::new(SANDBOX_FILES).join(format!("lb_{id}")));
    let net = ["--network", NETWORK];
    dockers[0].run("ovc1", &net, &["sleep", "3600"])?;
    // The worker learns the attachable network from the manager: retry
    // briefly while it does not know it yet.
    let start = Instant::now();
    loop {
        match dockers[1].run("ovc2", &net, &["sleep", "3600"]) {
            Ok(_) => break,
            Err(e) if start.elapsed() < Duration::from_secs(20) => {
                eprint!("(worker: {e:#}; again) ");
                let _ = dockers[1].cli(&["rm", "-f", "ovc2"]);
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e).context("container on the swarm worker"),
        }
    }
    let format = format!("{{{{(index .NetworkSettings.Networks \"{NETWORK}\").IPAddress}}}}");
    let ip = dockers[1].inspect("ovc2", &format)?;
    let server_ip: Ipv4Addr = ip
        .parse()
        .with_context(|| format!("ovc2 has no address on {NETWORK}: {ip:?}"))?;
    if !server_ip.to_string().starts_with("10.103.240.") {
        bail!("ovc2 got {server_ip}, outside {SUBNET}");
    }
    let client_ns = dockers[0].container_netns("ovc1")?;
    let server_ns = dockers[1].container_netns("ovc2")?;
    pair.client_ns = client_ns;
    pair.server_ns = server_ns;
    pair.server_ip = server_ip;
    Ok(pair)
}
