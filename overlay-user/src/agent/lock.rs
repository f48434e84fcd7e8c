//! One overlayd per state directory and per pin directory. Two agents on
//! one machine sharing either would overwrite each other's state file, or
//! replace each other's programs and entries in the same pinned maps.
//!
//! Each is guarded by an `flock(2)`ed lock file holding the pid of the
//! agent that holds it: `state_dir/overlayd.lock`, and for the pin
//! directory (bpffs holds no regular files) `/run/overlay/pin_dir<path>.lock`
//! with the directory's path in the name. The kernel releases a lock when
//! its holder exits, even on SIGKILL, so a stale file never blocks a start.
//! The files are left in place on exit: removing one could let two agents
//! lock two different files of the same name.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::agent::error::AgentError;

/// The lock file's name in `state_dir`.
pub const LOCK_FILE: &str = "overlayd.lock";

/// Where the pin directories' lock files are.
pub const PIN_LOCK_DIR: &str = "/run/overlay";

/// The locks of one running agent; they are released when it is dropped
/// (or the process ends).
#[derive(Debug)]
pub struct InstanceLock {
    _files: Vec<File>,
}

/// Locks `state_dir` and `pin_dir` for this process, or names the running
/// overlayd that holds either.
pub fn acquire(state_dir: &Path, pin_dir: &Path) -> Result<InstanceLock, AgentError> {
    acquire_in(state_dir, pin_dir, Path::new(PIN_LOCK_DIR))
}

/// [`acquire`], with the pin directories' lock files in `pin_lock_dir`.
pub fn acquire_in(
    state_dir: &Path,
    pin_dir: &Path,
    pin_lock_dir: &Path,
) -> Result<InstanceLock, AgentError> {
    let state = lock_one(&state_dir.join(LOCK_FILE), "state_dir", state_dir)?;
    let pins = lock_one(
        &pin_lock_dir.join(pin_lock_name(pin_dir)),
        "pin_dir",
        pin_dir,
    )?;
    Ok(InstanceLock {
        _files: vec![state, pins],
    })
}

/// The lock file's name for `pin_dir`: `pin_dir` + its normalised path
/// with `/` as `-` and bytes other than letters, digits, `_` and `.` as
/// `%xx` (so distinct paths never share a name).
pub fn pin_lock_name(pin_dir: &Path) -> String {
    // One name however it is spelt: trailing slashes, `.`, symlinks.
    let mut path: PathBuf = pin_dir.components().collect();
    if let Ok(real) = std::fs::canonicalize(&path) {
        path = real;
    }
    let mut name = String::from("pin_dir");
    for &b in path.as_os_str().as_bytes() {
        match b {
            b'/' => name.push('-'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => name.push(b as char),
            _ => name.push_str(&format!("%{b:02x}")),
        }
    }
    if name.len() > 200 {
        // FNV-1a: stable across builds, unlike std's hasher.
        let hash = path
            .as_os_str()
            .as_bytes()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
        name.truncate(150);
        name.push_str(&format!("-{hash:016x}"));
    }
    name.push_str(".lock");
    name
}

fn lock_one(path: &Path, what: &'static str, dir: &Path) -> Result<File, AgentError> {
    let fail = |source| AgentError::Lock {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(fail)?;
    // SAFETY: flock on a descriptor this function owns; no memory involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(fail(e));
        }
        return Err(AgentError::AlreadyRunning {
            what,
            dir: dir.to_path_buf(),
            pid: holder(&mut file),
        });
    }
    let write = |file: &mut File| -> std::io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())
    };
    write(&mut file).map_err(fail)?;
    Ok(file)
}

/// The pid in a held lock file; the holder writes it just after locking,
/// so wait a little for it.
fn holder(file: &mut File) -> Option<u32> {
    for _ in 0..25 {
        let mut text = String::new();
        if file.rewind().is_ok() && file.read_to_string(&mut text).is_ok() {
            if let Ok(pid) = text.trim().parse() {
                return Some(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::testing::temp_dir;

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = temp_dir("lock");
        let (state, pins, locks) = (dir.join("state"), dir.join("pins"), dir.join("run"));
        let first = acquire_in(&state, &pins, &locks).unwrap();
        let me = std::process::id();
        assert_eq!(
            std::fs::read_to_string(state.join(LOCK_FILE)).unwrap(),
            format!("{me}\n")
        );
        // flock locks belong to the open file: a second open is refused
        // even in the same process.
        let e = acquire_in(&state, &dir.join("other-pins"), &locks).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "another overlayd (pid {me}) is running with state_dir {}; stop it first",
                state.display()
            )
        );
        let e = acquire_in(&dir.join("other-state"), &pins, &locks).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "another overlayd (pid {me}) is running with pin_dir {}; stop it first",
                pins.display()
            )
        );
        // The same directory spelt otherwise is the same lock.
        let e = acquire_in(&dir.join("s3"), &dir.join("./pins/"), &locks).unwrap_err();
        assert!(e.to_string().contains("with pin_dir"), "{e}");
        // Released with its holder; the stale pid is overwritten.
        drop(first);
        let _again = acquire_in(&state, &pins, &locks).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pin_lock_names_are_distinct() {
        assert_eq!(
            pin_lock_name(Path::new("/nonexistent/fs/bpf/overlay")),
            "pin_dir-nonexistent-fs-bpf-overlay.lock"
        );
        assert_eq!(
            pin_lock_name(Path::new("/nonexistent/fs/bpf/overlay/")),
            "pin_dir-nonexistent-fs-bpf-overlay.lock"
        );
        assert_ne!(
            pin_lock_name(Path::new("/nonexistent/a-b")),
            pin_lock_name(Path::new("/nonexistent/a/b"))
        );
        let long = format!("/nonexistent/{}", "x".repeat(400));
        let name = pin_lock_name(Path::new(&long));
        assert!(name.len() < 255 && name.ends_with(".lock"), "{name}");
        assert_ne!(name, pin_lock_name(Path::new(&format!("{long}y"))));
    }
}
