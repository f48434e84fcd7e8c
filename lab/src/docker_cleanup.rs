//! Removing what dockerd instances of the lab leave behind: their
//! processes (by command line and cgroup), mounts under their directories
//! and their cgroups. Used by [`crate::Dockerd`]'s drop, [`crate::Lab`]'s
//! drop and [`crate::sweep_stale`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Remove what dockers of lab `lab_id` (dirs under `lab_dir`) left behind.
/// Best effort, never fails; used by [`crate::Lab`]'s drop and the sweep.
pub(crate) fn remove_leftovers(lab_id: &str, lab_dir: &Path) {
    remove_docker_leftovers(lab_dir, &format!("/{lab_id}-h"));
}

/// Kill processes whose command line names `dir` (dockerd, containerd, shims)
/// or whose cgroup path starts with `cgroup_prefix` (the containers), unmount
/// everything under `dir`, remove those cgroups.
pub(crate) fn remove_docker_leftovers(dir: &Path, cgroup_prefix: &str) {
    let dir_s = dir.display().to_string();
    let me = std::process::id() as i32;
    let mut victims = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if pid == me || pid == 1 {
                continue;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            let cgroups =
                std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            let in_cgroup = cgroups.lines().any(|l| {
                l.splitn(3, ':')
                    .nth(2)
                    .is_some_and(|p| p.starts_with(cgroup_prefix))
            });
            if in_cgroup || cmdline.contains(&dir_s) {
                victims.push(pid);
            }
        }
    }
    for &p in &victims {
        // SAFETY: plain syscall.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && victims.iter().any(|&p| alive(p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    unmount_below(dir);
    remove_cgroups(cgroup_prefix);
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Decode the octal escapes of /proc/self/mountinfo (`\040` for a space).
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at or below `dir`, deepest first.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mount(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found.dedup();
    found
}

fn unmount_below(dir: &Path) {
    if dir.as_os_str().is_empty() || dir == Path::new("/") {
        return;
    }
    for _ in 0..10 {
        let mounts = mounts_below(dir);
        if mounts.is_empty() {
            return;
        }
        for m in mounts {
            let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            // SAFETY: valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Remove the cgroups `/sys/fs/cgroup/*/{prefix}*` (and in a cgroup2 root), deepest first.
fn remove_cgroups(prefix: &str) {
    let name_prefix = prefix.trim_start_matches('/');
    if name_prefix.is_empty() {
        return;
    }
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    for root in roots {
        let Ok(rd) = std::fs::read_dir(&root) else {
            continue;
        };
        for e in rd.flatten() {
            let matches = e
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(name_prefix));
            if matches && e.path().is_dir() {
                rmdir_tree(&e.path());
            }
        }
    }
}

fn rmdir_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Cgroups of labs whose process died (`ovl{pid}x{n}-h{i}`), with their processes.
pub(crate) fn sweep_stale_cgroups(is_stale: impl Fn(&str) -> bool) {
    let mut stale = std::collections::BTreeSet::new();
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        for ctrl in rd.flatten() {
            let Ok(inner) = std::fs::read_dir(ctrl.path()) else {
                continue;
            };
            for e in inner.flatten() {
                if let Some(n) = e.file_name().to_str() {
                    if let Some((id, _)) = n.split_once("-h") {
                        if n.starts_with("ovl") && is_stale(id) {
                            stale.insert(id.to_string());
                        }
                    }
                }
            }
        }
    }
    for id in stale {
        remove_leftovers(&id, &PathBuf::from(format!("/tmp/overlay-lab-{id}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mount("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mount("/plain"), "/plain");
        assert_eq!(unescape_mount("/x\\134y"), "/x\\y");
    }
}
