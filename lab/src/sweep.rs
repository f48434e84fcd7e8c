//! Leftovers of labs: the bpffs mount they share, and the sweep that
//! removes what labs of dead processes left (namespaces, bpffs dirs, temp
//! dirs, Docker's cgroups and mounts).

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

use crate::netns::{del_netns, kill_netns_pids, NETNS_DIR};

/// Root of the per-lab bpffs pin directories.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf/overlay-lab";
/// Where bpffs is (made to be) mounted.
pub const BPFFS_MOUNT: &str = "/sys/fs/bpf";

static BPFFS_LOCK: Mutex<()> = Mutex::new(());

/// Make sure bpffs is mounted at `/sys/fs/bpf` (mounting it if not) and
/// that `/sys/fs/bpf/overlay-lab` exists. Serialized within the process and,
/// via an flock on `/run/overlay-lab.lock`, across processes, so that two
/// labs never stack two bpffs mounts.
pub fn ensure_bpffs() -> Result<()> {
    let _g = BPFFS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let lockfile = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/run/overlay-lab.lock")
        .context("opening /run/overlay-lab.lock")?;
    // SAFETY: plain syscall; the lock is released when `lockfile` closes.
    if unsafe { libc::flock(lockfile.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!("flock: {}", std::io::Error::last_os_error());
    }
    if !bpffs_mounted() {
        std::fs::create_dir_all(BPFFS_MOUNT).ok();
        let src = c"bpf";
        let target = c"/sys/fs/bpf";
        let opts = c"mode=0700";
        // SAFETY: valid NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                src.as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        if rc != 0 {
            bail!(
                "mounting bpffs on {BPFFS_MOUNT}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    std::fs::create_dir_all(BPFFS_ROOT).with_context(|| format!("creating {BPFFS_ROOT}"))?;
    Ok(())
}

/// Whether `/sys/fs/bpf` is on a bpffs (statfs magic `BPF_FS_MAGIC`).
fn bpffs_mounted() -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    // SAFETY: statfs writes into the zeroed struct; path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c"/sys/fs/bpf".as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// The pid in a lab id or name `ovl{pid}x{n}...`, if it is one.
fn lab_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("ovl")?;
    let (pid, rest) = rest.split_once('x')?;
    let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) || digits == 0 {
        return None;
    }
    match rest[digits..].chars().next() {
        None | Some('-') => pid.parse().ok(),
        _ => None,
    }
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn is_stale(name: &str) -> bool {
    match lab_pid(name) {
        Some(pid) => pid != std::process::id() as i32 && pid > 0 && !pid_alive(pid),
        None => false,
    }
}

/// Remove leftovers of labs whose process no longer exists: namespaces
/// `ovl{pid}x*` (after killing whatever runs in them), bpffs dirs
/// `/sys/fs/bpf/overlay-lab/ovl{pid}x*` and temp dirs. Best effort.
/// Called by [`Lab::new`].
pub fn sweep_stale() {
    if let Ok(rd) = std::fs::read_dir(NETNS_DIR) {
        let mut stale: Vec<String> = rd
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| is_stale(n))
            .collect();
        // Containers before hosts before the underlay (longest names first).
        stale.sort_by_key(|n| std::cmp::Reverse(n.len()));
        for ns in &stale {
            kill_netns_pids(ns);
        }
        for ns in &stale {
            del_netns(ns);
        }
    }
    crate::docker_cleanup::sweep_stale_cgroups(is_stale);
    if let Ok(rd) = std::fs::read_dir(BPFFS_ROOT) {
        for e in rd.flatten() {
            if e.file_name().to_str().is_some_and(is_stale) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir("/tmp") {
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = name.strip_prefix("overlay-lab-") {
                if is_stale(id) {
                    crate::docker_cleanup::remove_leftovers(id, &e.path());
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lab_names() {
        assert_eq!(lab_pid("ovl123x4-h1c2"), Some(123));
        assert_eq!(lab_pid("ovl123x4"), Some(123));
        assert_eq!(lab_pid("ovl123x4-ul"), Some(123));
        assert_eq!(lab_pid("ovl123x-ul"), None);
        assert_eq!(lab_pid("ovlx4-ul"), None);
        assert_eq!(lab_pid("ovl12a3x4-ul"), None);
        assert_eq!(lab_pid("ovl123x4y"), None);
        assert_eq!(lab_pid("other"), None);
    }
}
