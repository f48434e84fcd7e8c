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
//! cgroups; the lab's drop does it again for anything left.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use overlay_lab::{DockerOptions, Dockerd, Lab};

/// Docker network name and subnet of the pair.
const NETWORK: &str = "ovlbench";
const SUBNET: &str = "10.103.240.0/24";

/// The running pair. Drop it before the lab (it holds the dockerds).
pub(super) struct DockerPair {
    /// Held for their drop, which removes the swarm, containers and all.
    _dockers: Vec<Dockerd>,
    pub(super) client_ns: String,
    pub(super) server_ns: String,
    pub(super) server_ip: Ipv4Addr,
}

/// Starts both dockerds, forms the swarm, creates the network and the two
/// containers; the lab must be made with `docker: true`.
pub(super) fn setup(lab: &Lab) -> Result<DockerPair> {
    let opts = DockerOptions::default();
    let mut dockers = Vec::new();
    for h in 1..=2 {
        let d = Dockerd::start(lab, h, &opts)?;
        d.import_busybox()?;
        dockers.push(d);
    }
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
    dockers[0].cli_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--attachable",
        "--subnet",
        SUBNET,
        NETWORK,
    ])?;
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
    Ok(DockerPair {
        _dockers: dockers,
        client_ns,
        server_ns,
        server_ip,
    })
}
