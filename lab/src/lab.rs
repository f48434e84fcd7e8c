//! The lab topology: an underlay bridge, hosts and containers, each in its
//! own network namespace, and the cleanup of all of it.

use std::fs::OpenOptions;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{ensure, Context, Result};

use crate::netns::{
    del_netns, disable_rp_filter, ip, kill_netns_pids, nsenter_command, sysctl, NETNS_DIR,
};
use crate::process::{terminate_all, ChildSlot, Proc, STOP_GRACE};
use crate::sweep::{ensure_bpffs, sweep_stale, BPFFS_ROOT};

/// Prefix of the per-lab temporary directories (`/tmp/overlay-lab-{id}`).
const TMP_PREFIX: &str = "/tmp/overlay-lab-";
/// Underlay network: hosts get 192.168.56.{3+i}/24.
pub const UNDERLAY_PREFIX: u8 = 24;
/// Overhead of VXLAN over IPv4 (outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14).
pub const VXLAN_OVERHEAD: u32 = 50;
/// Highest supported host count (subnet 10.103.250.0/24).
pub const MAX_HOSTS: usize = 25;
/// Highest container index on one host (address .254).
pub const MAX_CONTAINERS_PER_HOST: usize = 253;

static LAB_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Shape of a lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabSpec {
    /// Number of hosts (1..=25).
    pub hosts: usize,
    /// Containers created on each host at start (0..=253); more can be added
    /// with [`Lab::add_container`].
    pub containers_per_host: usize,
    /// MTU of the underlay (bridge `br0` and each host's `eth1`). The
    /// container side (`docker0`, veths, `eth0`) uses `underlay_mtu - 50`.
    pub underlay_mtu: u32,
    /// Prepare the hosts for a real dockerd ([`crate::Dockerd`]): no
    /// `docker0` and no containers of the lab's own (dockerd makes `docker0`
    /// with `--bip` = the host's gateway), and IP forwarding left off, so
    /// that dockerd turns it on and sets the FORWARD policy to DROP as on a
    /// fresh machine. `containers_per_host` must then be 0.
    pub docker: bool,
}

impl Default for LabSpec {
    /// 2 hosts with 2 containers each, underlay MTU 1500, no Docker.
    fn default() -> Self {
        LabSpec {
            hosts: 2,
            containers_per_host: 2,
            underlay_mtu: 1500,
            docker: false,
        }
    }
}

/// A simulated host: a network namespace attached to the underlay with a
/// Docker-like bridge for its containers.
#[derive(Debug, Clone)]
pub struct Host {
    /// 1-based host number.
    pub index: usize,
    /// Network namespace name (`{lab id}-h{index}`).
    pub ns: String,
    /// Underlay interface inside the host namespace (`eth1`).
    pub underlay_if: String,
    /// Name of the underlay veth peer in the underlay namespace (`h{index}`),
    /// a port of `br0`.
    pub underlay_peer: String,
    /// Address of `eth1`: 192.168.56.{3+index} (prefix [`UNDERLAY_PREFIX`]).
    pub underlay_ip: Ipv4Addr,
    /// MTU of `eth1`.
    pub underlay_mtu: u32,
    /// Container subnet in CIDR form, e.g. `"10.103.100.0/24"`.
    pub subnet: String,
    /// Network address of the container subnet, e.g. 10.103.100.0.
    pub subnet_addr: Ipv4Addr,
    /// Prefix length of the container subnet (24).
    pub subnet_prefix: u8,
    /// Gateway address (.1 of the subnet), held by the bridge.
    pub gateway: Ipv4Addr,
    /// Container bridge name (`docker0`).
    pub bridge: String,
    /// MTU of the bridge and of the container veths (`underlay_mtu - 50`).
    pub bridge_mtu: u32,
    /// Containers on this host, in creation order.
    pub containers: Vec<Container>,
}

impl Host {
    /// Container `j` (1-based). Panics if there is no such container.
    pub fn container(&self, j: usize) -> &Container {
        self.containers
            .iter()
            .find(|c| c.index == j)
            .unwrap_or_else(|| panic!("host {} has no container {j}", self.index))
    }
}

/// A simulated container: its own network namespace with `eth0` plugged into
/// its host's bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// 1-based container number on its host.
    pub index: usize,
    /// 1-based number of the host it lives on.
    pub host: usize,
    /// Network namespace name (`{lab id}-h{host}c{index}`).
    pub ns: String,
    /// Interface inside the container (`eth0`).
    pub iface: String,
    /// Address of `eth0`: subnet .(1+index).
    pub ip: Ipv4Addr,
    /// Prefix length of `eth0`'s address (24).
    pub prefix: u8,
    /// Default gateway (the host bridge's address).
    pub gateway: Ipv4Addr,
    /// Host-side veth peer (`veth{index}`), a port of the host's bridge.
    pub host_veth: String,
    /// MAC address of `eth0`, Docker-style `02:42:` + the four IP bytes.
    pub mac: String,
}

/// A running lab. Everything it created (namespaces, and with them every
/// interface; spawned processes; its temp dir and bpffs dir) is removed when
/// it is dropped, including during a panic unwind.
#[derive(Debug)]
pub struct Lab {
    id: String,
    spec: LabSpec,
    underlay_ns: String,
    hosts: Vec<Host>,
    dir: PathBuf,
    bpffs: PathBuf,
    /// Every namespace this lab created (or tried to), in creation order.
    namespaces: Vec<String>,
    children: Mutex<Vec<ChildSlot>>,
    file_counter: AtomicU64,
}

/// Subnet third octet for host `i`: 1 → 100, 2 → 200, 3 → 150, otherwise
/// 10·i, except that 10, 15 and 20 (which would collide with hosts 1–3) use
/// 105, 155 and 205.
pub fn host_subnet_octet(i: usize) -> u8 {
    match i {
        1 => 100,
        2 => 200,
        3 => 150,
        10 | 15 | 20 => (10 * i + 5) as u8,
        _ => (10 * i) as u8,
    }
}

/// Underlay address of host `i` (192.168.56.{3+i}).
pub fn host_underlay_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 56, (3 + i) as u8)
}

/// The MAC the lab gives a container of address `ip`: 02:42 and the
/// address's four octets, as Docker does.
pub fn container_mac(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

impl Lab {
    /// Build the lab described by `spec`. Needs root. Sweeps leftovers of dead
    /// processes first; on failure everything created so far is removed.
    pub fn new(spec: LabSpec) -> Result<Lab> {
        crate::require_root()?;
        ensure!(
            (1..=MAX_HOSTS).contains(&spec.hosts),
            "hosts must be in 1..={MAX_HOSTS}, got {}",
            spec.hosts
        );
        ensure!(
            spec.containers_per_host <= MAX_CONTAINERS_PER_HOST,
            "containers_per_host must be at most {MAX_CONTAINERS_PER_HOST}"
        );
        ensure!(
            !spec.docker || spec.containers_per_host == 0,
            "a lab for dockerd (docker: true) has no containers of its own; set containers_per_host to 0"
        );
        ensure!(
            (VXLAN_OVERHEAD + 68..=65535).contains(&spec.underlay_mtu),
            "underlay_mtu {} out of range",
            spec.underlay_mtu
        );
        sweep_stale();
        ensure_bpffs()?;

        let id = format!(
            "ovl{}x{}",
            std::process::id(),
            LAB_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Lab {
            underlay_ns: format!("{id}-ul"),
            dir: PathBuf::from(format!("{TMP_PREFIX}{id}")),
            bpffs: Path::new(BPFFS_ROOT).join(&id),
            id,
            spec: spec.clone(),
            hosts: Vec::new(),
            namespaces: Vec::new(),
            children: Mutex::new(Vec::new()),
            file_counter: AtomicU64::new(0),
        };
        // From here on, `lab` going out of scope on error cleans everything up.
        lab.build()
            .with_context(|| format!("building lab {}", lab.id))?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<()> {
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let _ = std::fs::remove_dir_all(&self.bpffs);
        std::fs::create_dir_all(&self.bpffs)
            .with_context(|| format!("creating {}", self.bpffs.display()))?;

        let ul = self.underlay_ns.clone();
        self.create_ns(&ul)?;
        let mtu = self.spec.underlay_mtu.to_string();
        ip(&[
            "-n", &ul, "link", "add", "br0", "mtu", &mtu, "type", "bridge",
        ])?;
        ip(&["-n", &ul, "link", "set", "br0", "up"])?;

        for i in 1..=self.spec.hosts {
            self.add_host(i)?;
        }
        for i in 1..=self.spec.hosts {
            for _ in 0..self.spec.containers_per_host {
                self.add_container(i)?;
            }
        }
        Ok(())
    }

    /// Create a namespace (recorded first, so Drop deletes it even if a later
    /// step fails), bring `lo` up and disable IPv6 in it.
    fn create_ns(&mut self, ns: &str) -> Result<()> {
        self.namespaces.push(ns.to_string());
        ip(&["netns", "add", ns])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        // IPv6 is not used by the lab; disabling it keeps captures free of
        // router solicitations, MLD reports and DAD. Ignore kernels without it.
        for key in [
            "net.ipv6.conf.all.disable_ipv6",
            "net.ipv6.conf.default.disable_ipv6",
        ] {
            let _ = sysctl(ns, key, "1");
        }
        Ok(())
    }

    fn add_host(&mut self, i: usize) -> Result<()> {
        let ns = format!("{}-h{i}", self.id);
        self.create_ns(&ns)?;
        let ul = self.underlay_ns.clone();
        let mtu = self.spec.underlay_mtu;
        let bridge_mtu = mtu - VXLAN_OVERHEAD;
        let underlay_ip = host_underlay_ip(i);
        let octet = host_subnet_octet(i);
        let subnet_addr = Ipv4Addr::new(10, 103, octet, 0);
        let gateway = Ipv4Addr::new(10, 103, octet, 1);
        let peer = format!("h{i}");

        sysctl(&ns, "net.ipv4.conf.all.rp_filter", "0")?;
        sysctl(&ns, "net.ipv4.conf.default.rp_filter", "0")?;
        if !self.spec.docker {
            sysctl(&ns, "net.ipv4.ip_forward", "1")?;
        }

        let (mtu_s, bmtu_s) = (mtu.to_string(), bridge_mtu.to_string());
        // Both veth ends are created directly in their namespaces.
        ip(&[
            "-n", &ns, "link", "add", "eth1", "mtu", &mtu_s, "type", "veth", "peer", "name", &peer,
            "mtu", &mtu_s, "netns", &ul,
        ])?;
        ip(&["-n", &ul, "link", "set", &peer, "master", "br0", "up"])?;
        let cidr = format!("{underlay_ip}/{UNDERLAY_PREFIX}");
        ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth1"])?;
        ip(&["-n", &ns, "link", "set", "eth1", "up"])?;

        if !self.spec.docker {
            ip(&[
                "-n", &ns, "link", "add", "docker0", "mtu", &bmtu_s, "type", "bridge",
            ])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{gateway}/24"),
                "dev",
                "docker0",
            ])?;
            ip(&["-n", &ns, "link", "set", "docker0", "up"])?;
        }
        disable_rp_filter(&ns)?;

        self.hosts.push(Host {
            index: i,
            ns,
            underlay_if: "eth1".into(),
            underlay_peer: peer,
            underlay_ip,
            underlay_mtu: mtu,
            subnet: format!("{subnet_addr}/24"),
            subnet_addr,
            subnet_prefix: 24,
            gateway,
            bridge: "docker0".into(),
            bridge_mtu,
            containers: Vec::new(),
        });
        Ok(())
    }

    /// Add one more container to host `host` (1-based), with the next free
    /// index (and address .(1+index)). Returns a copy of its description,
    /// which is also added to [`Host::containers`].
    pub fn add_container(&mut self, host: usize) -> Result<Container> {
        ensure!(
            !self.spec.docker,
            "lab {} is prepared for dockerd: run containers with docker instead",
            self.id
        );
        let h = self
            .hosts
            .iter()
            .find(|h| h.index == host)
            .with_context(|| format!("lab {} has no host {host}", self.id))?;
        let j = h.containers.iter().map(|c| c.index).max().unwrap_or(0) + 1;
        ensure!(
            j <= MAX_CONTAINERS_PER_HOST,
            "host {host} is full ({MAX_CONTAINERS_PER_HOST} containers)"
        );
        let host_ns = h.ns.clone();
        let o = h.subnet_addr.octets();
        let ip_addr = Ipv4Addr::new(o[0], o[1], o[2], (1 + j) as u8);
        let c = Container {
            index: j,
            host,
            ns: format!("{}-h{host}c{j}", self.id),
            iface: "eth0".into(),
            ip: ip_addr,
            prefix: h.subnet_prefix,
            gateway: h.gateway,
            host_veth: format!("veth{j}"),
            mac: container_mac(ip_addr),
        };
        let mtu = h.bridge_mtu.to_string();

        self.create_ns(&c.ns)?;
        ip(&[
            "-n",
            &c.ns,
            "link",
            "add",
            "eth0",
            "mtu",
            &mtu,
            "address",
            &c.mac,
            "type",
            "veth",
            "peer",
            "name",
            &c.host_veth,
            "mtu",
            &mtu,
            "netns",
            &host_ns,
        ])?;
        ip(&[
            "-n",
            &host_ns,
            "link",
            "set",
            &c.host_veth,
            "master",
            "docker0",
            "up",
        ])?;
        let cidr = format!("{}/{}", c.ip, c.prefix);
        ip(&["-n", &c.ns, "addr", "add", &cidr, "dev", "eth0"])?;
        ip(&["-n", &c.ns, "link", "set", "eth0", "up"])?;
        ip(&[
            "-n",
            &c.ns,
            "route",
            "add",
            "default",
            "via",
            &c.gateway.to_string(),
        ])?;
        disable_rp_filter(&host_ns)?;

        let h = self
            .hosts
            .iter_mut()
            .find(|h| h.index == host)
            .expect("host exists");
        h.containers.push(c.clone());
        Ok(c)
    }

    /// Create one more network namespace, `{lab id}-{suffix}`, with `lo` up
    /// and IPv6 off, and nothing else in it; it is deleted with the lab.
    pub fn add_namespace(&mut self, suffix: &str) -> Result<String> {
        ensure!(
            !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_alphanumeric()),
            "namespace suffix {suffix:?} must be letters and digits"
        );
        let ns = format!("{}-{suffix}", self.id);
        ensure!(
            !self.namespaces.contains(&ns),
            "lab {} already has namespace {ns}",
            self.id
        );
        self.create_ns(&ns)?;
        Ok(ns)
    }

    /// Unique id of this lab (`ovl{pid}x{n}`); every namespace name starts
    /// with it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The spec the lab was built from.
    pub fn spec(&self) -> &LabSpec {
        &self.spec
    }

    /// All hosts, host 1 first.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Host `i` (1-based). Panics if there is no such host.
    pub fn host(&self, i: usize) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.index == i)
            .unwrap_or_else(|| panic!("lab {} has no host {i}", self.id))
    }

    /// Container `j` on host `i` (both 1-based). Panics if absent.
    pub fn container(&self, i: usize, j: usize) -> &Container {
        self.host(i).container(j)
    }

    /// Every container of every host.
    pub fn containers(&self) -> impl Iterator<Item = &Container> {
        self.hosts.iter().flat_map(|h| h.containers.iter())
    }

    /// Name of the underlay namespace (holds bridge `br0`).
    pub fn underlay_ns(&self) -> &str {
        &self.underlay_ns
    }

    /// Every namespace the lab created, in creation order.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// Per-lab temporary directory (`/tmp/overlay-lab-{id}`) for sockets,
    /// configs, logs and captures. Removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Per-lab bpffs pin root, `/sys/fs/bpf/overlay-lab/{id}`. It exists
    /// (re-created here if another bpffs was since mounted over
    /// `/sys/fs/bpf`, hiding it); [`Lab::new`] mounted bpffs on
    /// `/sys/fs/bpf` if it was not. Removed on drop.
    pub fn bpffs_dir(&self) -> PathBuf {
        let _ = std::fs::create_dir_all(&self.bpffs);
        self.bpffs.clone()
    }

    /// A fresh file name in [`Lab::dir`]: `{stem}-{n}.{ext}`.
    pub(crate) fn unique_path(&self, stem: &str, ext: &str) -> PathBuf {
        let n = self.file_counter.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{stem}-{n}.{ext}"))
    }

    /// Track a child so that dropping the lab stops it.
    pub(crate) fn track(&self, slot: ChildSlot) {
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(slot);
    }

    /// Start a long-running process in the *network* namespace `ns` only
    /// (`nsenter --net=/run/netns/NS -- args...`, so bpffs pins stay visible),
    /// in its own process group, with stdin from /dev/null and stdout+stderr
    /// appended to `lab.dir()/log_name`.
    ///
    /// The returned guard stops the process when dropped; the lab stops it
    /// too when the lab is dropped.
    pub fn spawn(&self, ns: &str, args: &[&str], log_name: &str) -> Result<Proc> {
        ensure!(!args.is_empty(), "spawn in {ns}: empty command");
        ensure!(
            !log_name.is_empty() && !log_name.contains('/'),
            "log name {log_name:?} must be a plain file name"
        );
        ensure!(
            Path::new(NETNS_DIR).join(ns).exists(),
            "no network namespace {ns}"
        );
        let log_path = self.dir.join(log_name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut cmd = nsenter_command(ns, args[0]);
        cmd.args(&args[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning `{}` in {ns}", args.join(" ")))?;
        let pid = child.id();
        let slot = Arc::new(Mutex::new(child));
        self.track(slot.clone());
        Ok(Proc {
            slot,
            pid,
            log_path,
            ns: ns.to_string(),
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Never panic here: this runs during unwinding too.
        let children =
            std::mem::take(&mut *self.children.lock().unwrap_or_else(|e| e.into_inner()));
        terminate_all(&children, libc::SIGTERM, STOP_GRACE);
        // Whatever dockerd left (containers, shims, mounts, cgroups), in case
        // a Dockerd guard did not run; never descend into a mount below.
        crate::docker_cleanup::remove_leftovers(&self.id, &self.dir);
        for ns in self.namespaces.iter().rev() {
            kill_netns_pids(ns);
        }
        for ns in self.namespaces.iter().rev() {
            del_netns(ns);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.bpffs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for i in 1..=MAX_HOSTS {
            assert!(seen.insert(host_subnet_octet(i)), "host {i}");
        }
        assert_eq!(host_subnet_octet(1), 100);
        assert_eq!(host_subnet_octet(2), 200);
        assert_eq!(host_subnet_octet(3), 150);
        assert_eq!(host_subnet_octet(4), 40);
        assert_eq!(host_underlay_ip(1), Ipv4Addr::new(192, 168, 56, 4));
        assert_eq!(
            container_mac(Ipv4Addr::new(10, 103, 100, 2)),
            "02:42:0a:67:64:02"
        );
    }
}
