//! Real dockerd instances on lab hosts, and their complete removal.
//!
//! [`Dockerd::start`] runs `dockerd` inside a host's *network* namespace
//! only (`nsenter --net=...` through [`Lab::spawn`]; `ip netns exec` would
//! remount /sys and hide the cgroup mounts dockerd needs), with its own data
//! root, exec root, socket, pidfile and config file under the lab's temp
//! dir, `--bip` = the host's gateway, `--mtu` = the host's container MTU and
//! a cgroup parent named after the lab and host. Its default iptables
//! settings are kept (it sets the FORWARD policy to DROP in the host).
//!
//! Dropping the [`Dockerd`] (also while unwinding from a panic) removes its
//! containers, stops dockerd, kills what is left of containerd, the shims and
//! the container processes (found by command line and cgroup), unmounts
//! whatever is mounted under its directories, removes its cgroups and
//! deletes its directories (`docker_cleanup`). [`crate::Lab`]'s drop and [`crate::sweep_stale`]
//! do the same for anything a guard could not (a killed test process).
//!
//! With [`DockerOptions::plugin_dir`], dockerd runs in a private mount
//! namespace of its own (`unshare --mount --propagation private`) in which
//! a per-host directory (`docker-h<N>/plugins`) is bind-mounted over
//! `/run/docker/plugins`, where Docker looks for plugin sockets: each
//! simulated host's dockerd then finds its own host's overlayd as plugin
//! `ovl` (overlayd's `[docker] plugin_dir` points at that directory,
//! [`Dockerd::plugin_toml`]). The bind mount lives and dies with that
//! namespace, so nothing is left in the machine's mount table.
//!
//! The tests use the `docker` CLI (this is the lab, not the product) and an
//! image made from Debian's busybox-static ([`Dockerd::import_busybox`]).

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::{Lab, Proc};

/// The image [`Dockerd::import_busybox`] makes.
pub const BUSYBOX_IMAGE: &str = "ovl-busybox:latest";
/// Where Debian's busybox-static puts the binary.
pub const BUSYBOX: &str = "/bin/busybox";
/// How long dockerd gets to answer after a start.
pub const DOCKERD_START_TIMEOUT: Duration = Duration::from_secs(60);

/// The docker CLI: Debian's (matching dockerd) when installed.
pub fn docker_cli() -> PathBuf {
    let debian = Path::new("/usr/bin/docker");
    if debian.is_file() {
        debian.to_path_buf()
    } else {
        PathBuf::from("docker")
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        || ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(program).is_file())
}

/// What is missing to run dockerd in the lab (empty: nothing).
pub fn docker_missing() -> Vec<&'static str> {
    let mut missing = Vec::new();
    for (program, package) in [
        ("dockerd", "docker.io"),
        ("containerd", "containerd"),
        ("runc", "runc"),
        ("iptables", "iptables"),
        ("nsenter", "util-linux"),
        ("tar", "tar"),
    ] {
        if !on_path(program) {
            missing.push(package);
        }
    }
    if !Path::new(BUSYBOX).is_file() {
        missing.push("busybox-static");
    }
    if !docker_cli().is_file() && !on_path("docker") {
        missing.push("docker.io");
    }
    missing.dedup();
    missing
}

/// Call first in every test that runs dockerd. Returns `true` when running
/// as root with dockerd, containerd, runc and busybox installed. Otherwise:
/// with the environment variable `CI` set to `true` (or `1`) it panics
/// loudly (CI must run these tests: `cargo xtask setup` installs them);
/// without it, it prints why it skips to stderr and returns `false`.
pub fn need_docker_or_skip() -> bool {
    if !crate::need_root_or_skip() {
        return false;
    }
    let missing = docker_missing();
    if missing.is_empty() {
        return true;
    }
    let ci = crate::is_ci();
    let msg = format!(
        "this test runs a real dockerd but {} missing (apt-get install -y {}, or `cargo xtask setup`)",
        if missing.len() == 1 { "this is" } else { "these are" },
        missing.join(" ")
    );
    if ci {
        panic!("!!! overlay-lab: {msg}; CI=true, refusing to skip !!!");
    }
    eprintln!("skipping: {msg}");
    false
}

/// Settings of one dockerd.
#[derive(Debug, Clone, Default)]
pub struct DockerOptions {
    /// `--live-restore`: containers keep running while dockerd is down.
    pub live_restore: bool,
    /// Extra dockerd arguments.
    pub extra_args: Vec<String>,
    /// Run dockerd in a private mount namespace with a per-host plugin
    /// directory over /run/docker/plugins (see the module's doc).
    pub plugin_dir: bool,
}

/// A dockerd on a lab host. Stopped and removed with all it made on drop.
#[derive(Debug)]
pub struct Dockerd {
    host: usize,
    ns: String,
    dir: PathBuf,
    socket: PathBuf,
    cgroup: String,
    argv: Vec<String>,
    proc: Option<Proc>,
    starts: u32,
    plugin_dir: Option<PathBuf>,
}

impl Dockerd {
    /// Start dockerd on host `host` of `lab` (which must be made with
    /// `LabSpec { docker: true, .. }`) and wait until its API answers.
    pub fn start(lab: &Lab, host: usize, opts: &DockerOptions) -> Result<Dockerd> {
        ensure!(
            lab.spec().docker,
            "lab {} was not made for dockerd; use LabSpec {{ docker: true, containers_per_host: 0, .. }}",
            lab.id()
        );
        let h = lab.host(host);
        let dir = lab.dir().join(format!("docker-h{host}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = dir.join("daemon.json");
        std::fs::write(&config, "{}\n")?;
        let socket = dir.join("docker.sock");
        let cgroup = format!("{}-h{host}", lab.id());
        let mut argv: Vec<String> = vec![
            "dockerd".into(),
            "--config-file".into(),
            config.display().to_string(),
            "--data-root".into(),
            dir.join("root").display().to_string(),
            "--exec-root".into(),
            dir.join("exec").display().to_string(),
            "-H".into(),
            format!("unix://{}", socket.display()),
            "--pidfile".into(),
            dir.join("pid").display().to_string(),
            "--bip".into(),
            format!("{}/{}", h.gateway, h.subnet_prefix),
            "--mtu".into(),
            h.bridge_mtu.to_string(),
            "--cgroup-parent".into(),
            format!("/{cgroup}"),
        ];
        if opts.live_restore {
            argv.push("--live-restore".into());
        }
        argv.extend(opts.extra_args.iter().cloned());
        let plugin_dir = if opts.plugin_dir {
            let plugins = dir.join("plugins");
            std::fs::create_dir_all(&plugins)
                .with_context(|| format!("creating {}", plugins.display()))?;
            let mut wrapped: Vec<String> = [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                "mkdir -p /run/docker/plugins && mount --bind \"$0\" /run/docker/plugins && exec \"$@\"",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            wrapped.push(plugins.display().to_string());
            wrapped.append(&mut argv);
            argv = wrapped;
            Some(plugins)
        } else {
            None
        };
        let mut d = Dockerd {
            host,
            ns: h.ns.clone(),
            dir,
            socket,
            cgroup,
            argv,
            proc: None,
            starts: 0,
            plugin_dir,
        };
        d.launch(lab)?;
        Ok(d)
    }

    fn launch(&mut self, lab: &Lab) -> Result<()> {
        let _ = std::fs::remove_file(&self.socket);
        let log = format!("dockerd-h{}-{}.log", self.host, self.starts);
        self.starts += 1;
        let argv: Vec<&str> = self.argv.iter().map(String::as_str).collect();
        let proc = lab.spawn(&self.ns, &argv, &log)?;
        self.proc = Some(proc);
        self.wait_ready(DOCKERD_START_TIMEOUT)
    }

    fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if self.ping() {
                return Ok(());
            }
            if !self.is_running() {
                bail!(
                    "dockerd on host {} exited during start-up:\n{}",
                    self.host,
                    self.log()
                );
            }
            if start.elapsed() > timeout {
                bail!(
                    "dockerd on host {} not answering after {timeout:?}:\n{}",
                    self.host,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the API answers `GET /_ping` with OK.
    pub fn ping(&self) -> bool {
        let Ok(mut s) = UnixStream::connect(&self.socket) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.") && answer.contains(" 200 ") && answer.ends_with("OK")
    }

    /// Host number.
    pub fn host(&self) -> usize {
        self.host
    }

    /// The API socket (for overlayd's `[docker] socket`).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The directory this dockerd sees as /run/docker/plugins (with
    /// [`DockerOptions::plugin_dir`]).
    pub fn plugin_dir(&self) -> Option<&Path> {
        self.plugin_dir.as_deref()
    }

    /// overlayd's `[docker]` section for this dockerd: its API socket and,
    /// with [`DockerOptions::plugin_dir`], the plugin served into its plugin directory.
    pub fn plugin_toml(&self) -> String {
        let mut s = format!("[docker]\nsocket = \"{}\"\n", self.socket.display());
        if let Some(dir) = &self.plugin_dir {
            s.push_str(&format!(
                "plugin = true\nplugin_dir = \"{}\"\n",
                dir.display()
            ));
        }
        s
    }

    /// dockerd's directory (data root, exec root, socket, pidfile).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether dockerd runs.
    pub fn is_running(&self) -> bool {
        self.proc.as_ref().is_some_and(Proc::is_running)
    }

    /// dockerd's log (of the current start).
    pub fn log(&self) -> String {
        self.proc.as_ref().map(Proc::log).unwrap_or_default()
    }

    /// Kill dockerd with SIGKILL, as a crash would (its containerd dies
    /// with it; with live restore the containers keep running).
    pub fn kill(&mut self) -> Result<()> {
        if let Some(p) = self.proc.as_mut() {
            p.kill()?;
        }
        Ok(())
    }

    /// Start dockerd again with the same settings and wait for its API.
    pub fn restart(&mut self, lab: &Lab) -> Result<()> {
        ensure!(
            !self.is_running(),
            "dockerd on host {} still runs",
            self.host
        );
        self.launch(lab)
    }

    /// `docker -H unix://SOCKET ARGS...`.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        Command::new(docker_cli())
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running docker {}", args.join(" ")))
    }

    /// Like [`Dockerd::cli`], failing with the output unless it exits 0; returns stdout trimmed.
    pub fn cli_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.cli(args)?;
        if !out.status.success() {
            bail!(
                "docker {} on host {} failed ({}):\n{}{}",
                args.join(" "),
                self.host,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Import [`BUSYBOX_IMAGE`]: `/bin/busybox` and a link to it for every
    /// applet (not `busybox` itself), `ENV PATH=/bin`.
    pub fn import_busybox(&self) -> Result<()> {
        let rootfs = self.dir.join("busybox-rootfs");
        let _ = std::fs::remove_dir_all(&rootfs);
        for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "www", "root"] {
            std::fs::create_dir_all(rootfs.join(d))?;
        }
        std::fs::copy(BUSYBOX, rootfs.join("bin/busybox"))
            .with_context(|| format!("copying {BUSYBOX}"))?;
        let list = Command::new(BUSYBOX)
            .arg("--list")
            .output()
            .context("busybox --list")?;
        for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
            if applet != "busybox" && !applet.contains('/') {
                std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
            }
        }
        std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
        std::fs::write(rootfs.join("etc/group"), "root:x:0:\n")?;
        let tar = self.dir.join("busybox-rootfs.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .context("tar")?;
        ensure!(st.success(), "tar of the busybox rootfs failed: {st}");
        self.cli_ok(&[
            "import",
            "-c",
            "ENV PATH=/bin",
            &tar.display().to_string(),
            BUSYBOX_IMAGE,
        ])?;
        let _ = std::fs::remove_dir_all(&rootfs);
        let _ = std::fs::remove_file(&tar);
        Ok(())
    }

    /// `docker run -d --name NAME ARGS... IMAGE CMD...`; returns the container ID.
    pub fn run(&self, name: &str, args: &[&str], cmd: &[&str]) -> Result<String> {
        let mut all = vec!["run", "-d", "--name", name];
        all.extend_from_slice(args);
        all.push(BUSYBOX_IMAGE);
        all.extend_from_slice(cmd);
        self.cli_ok(&all)
    }

    /// `docker exec NAME CMD...` (whatever its exit status).
    pub fn exec(&self, name: &str, cmd: &[&str]) -> Result<Output> {
        let mut all = vec!["exec", name];
        all.extend_from_slice(cmd);
        self.cli(&all)
    }

    /// `docker inspect -f FORMAT NAME`, trimmed.
    pub fn inspect(&self, name: &str, format: &str) -> Result<String> {
        self.cli_ok(&["inspect", "-f", format, name])
    }

    /// The container's address on the default bridge network.
    pub fn container_ip(&self, name: &str) -> Result<Ipv4Addr> {
        let s = self.inspect(name, "{{.NetworkSettings.Networks.bridge.IPAddress}}")?;
        s.parse()
            .with_context(|| format!("container {name} has no bridge address: {s:?}"))
    }

    /// The PID of the container's init process (0 when it does not run).
    pub fn container_pid(&self, name: &str) -> Result<u32> {
        let s = self.inspect(name, "{{.State.Pid}}")?;
        s.parse()
            .with_context(|| format!("container {name}: pid {s:?}"))
    }

    /// The container's network namespace as a path every lab helper takes
    /// in place of a namespace name (`/proc/PID/ns/net`).
    pub fn container_netns(&self, name: &str) -> Result<String> {
        let pid = self.container_pid(name)?;
        ensure!(pid > 0, "container {name} does not run");
        Ok(format!("/proc/{pid}/ns/net"))
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Never panic here: this runs during unwinding too.
        if self.is_running() {
            if let Ok(out) = self.cli(&["ps", "-aq"]) {
                let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                if !ids.is_empty() {
                    let mut args = vec!["rm", "-f", "-v"];
                    args.extend(ids.iter().map(String::as_str));
                    let _ = self.cli(&args);
                }
            }
        }
        if let Some(mut p) = self.proc.take() {
            let _ = p.stop();
        }
        crate::docker_cleanup::remove_docker_leftovers(&self.dir, &format!("/{}", self.cgroup));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
