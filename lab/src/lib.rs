//! # overlay-lab: simulated hosts and containers in network namespaces
//!
//! Used by the end-to-end tests, the demo (`cargo xtask run`) and the
//! benchmark. [`Lab::new`] builds, entirely inside fresh network namespaces
//! (nothing is ever created in or linked to the root namespace):
//!
//! ```text
//!  {id}-ul      bridge br0 (MTU = underlay_mtu), ports h1, h2, ...
//!    │ veth h{i} <-> eth1
//!  {id}-h{i}    eth1 192.168.56.{3+i}/24, ip_forward=1, rp_filter=0,
//!               bridge docker0 = gateway 10.103.X.1/24 (MTU underlay_mtu-50),
//!               ports veth1, veth2, ...
//!    │ veth veth{j} <-> eth0
//!  {id}-h{i}c{j} eth0 10.103.X.(1+j)/24, MAC 02:42:0a:67:X:(1+j),
//!               default via 10.103.X.1
//! ```
//!
//! with X = 100 for host 1, 200 for host 2, 150 for host 3 and 10·i for
//! host i ≥ 4 (105, 155, 205 for hosts 10, 15, 20, which would collide).
//! Hosts have no routes to each other's container subnets: that is the
//! overlay's job. IPv6 is disabled in every lab namespace.
//!
//! The lab id is `ovl{pid}x{n}`, unique across threads and processes. Dropping
//! the [`Lab`] (also while unwinding from a panic) stops its processes and
//! deletes its namespaces, temp dir and bpffs dir; [`Lab::new`] also sweeps
//! leftovers of labs whose process has died.
//!
//! Helpers: [`exec`]/[`exec_ok`] run commands in a namespace, [`Lab::spawn`]
//! starts daemons (network namespace only, so bpffs pins stay visible),
//! [`ping`], [`transfer`] and [`arp_scan`] generate traffic in-process, and
//! [`Lab::capture`] + [`decode_vxlan`] capture and decode packets;
//! [`Dockerd`] and [`Etcd`] run real dockerd and etcd on lab hosts.
//!
//! ```no_run
//! use overlay_lab::{Lab, LabSpec, need_root_or_skip, ping};
//! if !need_root_or_skip() { return; }
//! let lab = Lab::new(LabSpec::default()).unwrap();
//! let (a, b) = (lab.container(1, 1), lab.container(1, 2));
//! let r = ping(&a.ns, b.ip, 3, None, false, 2).unwrap();
//! assert_eq!(r.received, 3);
//! ```

mod agent;
mod arp;
mod capture;
mod docker;
mod docker_cleanup;
mod etcd;
mod lab;
mod netns;
mod perf;
mod ping;
mod process;
mod sweep;
mod traffic;
mod underlay;

pub use agent::{agent_config, subnet_file, underlay_of, AgentOptions, Binaries, Overlayd};
pub use arp::{arp_scan, ArpScan};
pub use capture::{
    decode_vxlan, tshark_fields, Capture, DecodedPacket, CAPTURE_START_TIMEOUT, VXLAN_PORT,
};
pub use docker::{
    docker_cli, docker_missing, need_docker_or_skip, DockerOptions, Dockerd, BUSYBOX_IMAGE,
};
pub use etcd::{etcd_missing, need_etcd_or_skip, Etcd, EtcdOptions, TlsFiles, ETCD_START_TIMEOUT};
pub use lab::{
    container_mac, host_subnet_octet, host_underlay_ip, Container, Host, Lab, LabSpec,
    MAX_CONTAINERS_PER_HOST, MAX_HOSTS, UNDERLAY_PREFIX, VXLAN_OVERHEAD,
};
pub use netns::{
    exec, exec_ok, netns_path, nsenter_command, run_in_netns, sysctl, sysctl_get, NETNS_DIR,
};
pub use perf::{percentile, tcp_rr, tcp_rr_stats, RrStats};
pub use ping::{first_reply, ping, PingResult, PING_DEFAULT_SIZE, PING_INTERVAL};
pub use process::{Proc, STOP_GRACE};
pub use sweep::{ensure_bpffs, sweep_stale, BPFFS_MOUNT, BPFFS_ROOT};
pub use traffic::{
    pattern_sha256, transfer, transfer_with_timeout, PatternReader, Transfer, TRANSFER_TIMEOUT,
};

/// Whether this runs in CI (`CI` set to `true` or `1`), where a test that
/// lacks what it needs must fail loudly instead of skipping.
pub fn is_ci() -> bool {
    std::env::var("CI")
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1"))
        .unwrap_or(false)
}

/// Whether the current process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Fail unless running as root (the lab needs CAP_NET_ADMIN/CAP_SYS_ADMIN).
pub fn require_root() -> anyhow::Result<()> {
    if is_root() {
        Ok(())
    } else {
        anyhow::bail!("overlay-lab needs root (network namespaces, veths, bpffs)")
    }
}

/// Call first in every test that needs a lab. Returns `true` when running as
/// root. Otherwise: if the environment variable `CI` is `true` (or `1`) it
/// panics loudly, since CI must run these tests; if not, it prints
/// `skipping: needs root` to stderr and returns `false` (the test should then
/// return early).
pub fn need_root_or_skip() -> bool {
    if is_root() {
        return true;
    }
    let ci = is_ci();
    if ci {
        panic!("!!! overlay-lab: this test needs root but CI=true and we are not root — refusing to skip !!!");
    }
    eprintln!("skipping: needs root");
    false
}
