//! Low-level helpers for working with named network namespaces
//! (the ones `ip netns` keeps under `/run/netns`).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use anyhow::{anyhow, bail, Context, Result};

/// Directory where `ip netns` keeps its namespace handles.
pub const NETNS_DIR: &str = "/run/netns";

/// Path of the handle of the named network namespace (`/run/netns/NS`).
/// An absolute path (e.g. a container's `/proc/PID/ns/net`) is taken as is,
/// so every helper that takes a namespace name also takes such a path.
pub fn netns_path(ns: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(ns)
}

/// Run a command inside a namespace as `ip netns exec NS args...` and return
/// its [`Output`] whatever its exit status (stdin is `/dev/null`).
///
/// `ip netns exec` also gives the command a private mount namespace with a
/// fresh `/sys`, which hides the bpffs mounted at `/sys/fs/bpf`; use
/// [`nsenter_command`] (or [`crate::Lab::spawn`]) for anything that needs
/// pinned BPF objects.
///
/// `ns` may also be a path such as a container's `/proc/PID/ns/net`, which
/// `ip netns exec` does not take: the command then runs through
/// [`nsenter_command`] (network namespace only, the caller's /sys).
pub fn exec(ns: &str, args: &[&str]) -> Result<Output> {
    if args.is_empty() {
        bail!("exec in {ns}: empty command");
    }
    let mut cmd = if ns.starts_with('/') {
        let mut c = nsenter_command(ns, args[0]);
        c.args(&args[1..]);
        c
    } else {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(args);
        c
    };
    cmd.stdin(Stdio::null());
    cmd.output()
        .with_context(|| format!("running `ip netns exec {ns} {}`", args.join(" ")))
}

/// Like [`exec`], but fails (with the exit status, stdout and stderr in the
/// error message) unless the command exits with status 0. Returns stdout.
pub fn exec_ok(ns: &str, args: &[&str]) -> Result<String> {
    let out = exec(ns, args)?;
    check_output(&format!("ip netns exec {ns} {}", args.join(" ")), out)
}

/// A [`Command`] that runs `program` in the *network* namespace `ns` only,
/// via `nsenter --net=/run/netns/NS -- program`. Unlike `ip netns exec` it
/// keeps the caller's mount namespace, so `/sys/fs/bpf` pins stay visible.
/// Add arguments with [`Command::args`].
pub fn nsenter_command(ns: &str, program: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns_path(ns).display()))
        .arg("--")
        .arg(program);
    cmd
}

/// Run `f` on a fresh thread that has joined the network namespace `ns`
/// (with `setns(2)`), and return its result. Sockets created inside `f`
/// belong to `ns` and can be used from any thread afterwards. A panic in `f`
/// is propagated to the caller.
pub fn run_in_netns<T, F>(ns: &str, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let handle =
        File::open(netns_path(ns)).with_context(|| format!("opening network namespace {ns}"))?;
    std::thread::scope(|s| {
        let joined = std::thread::Builder::new()
            .name(format!("netns-{ns}"))
            .spawn_scoped(s, move || -> Result<T> {
                // SAFETY: plain syscall on a valid fd; only affects this thread.
                let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    bail!(
                        "setns into network namespace {ns}: {}",
                        std::io::Error::last_os_error()
                    );
                }
                Ok(f())
            })
            .context("spawning netns thread")?
            .join();
        match joined {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Set a sysctl inside network namespace `ns`, e.g.
/// `sysctl(ns, "net.ipv4.ip_forward", "1")`. The key may use dots or
/// slashes (use slashes if a component, like an interface name, has a dot).
pub fn sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    let path = sysctl_path(key);
    run_in_netns(ns, || std::fs::write(&path, value))?
        .with_context(|| format!("setting {key}={value} in {ns}"))
}

/// Read a sysctl inside network namespace `ns` (trimmed).
pub fn sysctl_get(ns: &str, key: &str) -> Result<String> {
    let path = sysctl_path(key);
    let v = run_in_netns(ns, || std::fs::read_to_string(&path))?
        .with_context(|| format!("reading {key} in {ns}"))?;
    Ok(v.trim().to_string())
}

fn sysctl_path(key: &str) -> PathBuf {
    let rel = if key.contains('/') {
        key.trim_start_matches('/').to_string()
    } else {
        key.replace('.', "/")
    };
    PathBuf::from("/proc/sys").join(rel)
}

/// Run `ip args...` in the current (caller's) namespace context; fails with a
/// descriptive error on non-zero exit. Always pass `-n NS` to act on a lab
/// namespace: nothing of the lab is ever created in the root namespace.
pub(crate) fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `ip {}`", args.join(" ")))?;
    check_output(&format!("ip {}", args.join(" ")), out)
}

/// Turn a finished [`Output`] into stdout or a descriptive error.
pub(crate) fn check_output(what: &str, out: Output) -> Result<String> {
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(anyhow!(
        "`{what}` failed ({}):\nstderr: {}\nstdout: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    ))
}

/// Process ids whose network namespace is `ns` (as `ip netns pids NS`).
pub(crate) fn netns_pids(ns: &str) -> Vec<i32> {
    let Ok(out) = Command::new("ip")
        .args(["netns", "pids", ns])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// SIGKILL every process living in `ns` (never the current process) and wait
/// briefly for them to disappear. Best effort; never fails.
pub(crate) fn kill_netns_pids(ns: &str) {
    let me = std::process::id() as i32;
    let pids: Vec<i32> = netns_pids(ns).into_iter().filter(|&p| p != me).collect();
    if pids.is_empty() {
        return;
    }
    for &p in &pids {
        // SAFETY: plain syscall.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < deadline
        && pids
            .iter()
            .any(|p| std::path::Path::new(&format!("/proc/{p}")).exists() && !is_zombie(*p))
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Delete a named network namespace (`ip netns del`), ignoring errors.
pub(crate) fn del_netns(ns: &str) {
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Set rp_filter=0 on every interface of `ns` (plus `all` and `default`).
pub(crate) fn disable_rp_filter(ns: &str) -> Result<()> {
    run_in_netns(ns, || -> std::io::Result<()> {
        for entry in std::fs::read_dir("/proc/sys/net/ipv4/conf")? {
            std::fs::write(entry?.path().join("rp_filter"), "0")?;
        }
        Ok(())
    })?
    .with_context(|| format!("disabling rp_filter in {ns}"))
}
