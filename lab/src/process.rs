//! Long-running processes started inside lab namespaces.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long a process gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// A child shared between its guard and the [`crate::Lab`] that tracks it.
/// `std::process::Child` caches the exit status once reaped, so repeated
/// waits/stops are harmless and a reaped pid is never signalled.
pub(crate) type ChildSlot = Arc<Mutex<Child>>;

pub(crate) fn lock(slot: &ChildSlot) -> MutexGuard<'_, Child> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

/// Signal the process group led by `child` unless the child was already
/// reaped. Returns `true` if the signal was sent.
pub(crate) fn signal_group(child: &mut Child, sig: i32) -> bool {
    match child.try_wait() {
        Ok(None) => {
            // Children are spawned with process_group(0): pgid == pid.
            // SAFETY: plain syscall.
            unsafe { libc::kill(-(child.id() as i32), sig) };
            true
        }
        _ => false,
    }
}

/// Stop every child: `sig` (usually SIGTERM) to each, wait up to `grace`
/// for all of them, then SIGKILL and reap the rest. Never panics.
pub(crate) fn terminate_all(slots: &[ChildSlot], sig: i32, grace: Duration) {
    for s in slots {
        signal_group(&mut lock(s), sig);
    }
    let deadline = Instant::now() + grace;
    loop {
        let running = slots
            .iter()
            .filter(|s| matches!(lock(s).try_wait(), Ok(None)))
            .count();
        if running == 0 || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for s in slots {
        let mut c = lock(s);
        if signal_group(&mut c, libc::SIGKILL) {
            let _ = c.wait();
        }
    }
}

/// Guard for a process started with [`crate::Lab::spawn`].
///
/// Dropping it stops the process (SIGTERM to its process group, SIGKILL
/// after [`STOP_GRACE`]) and reaps it. The owning lab also stops it when the
/// lab is dropped, whichever comes first.
#[derive(Debug)]
pub struct Proc {
    pub(crate) slot: ChildSlot,
    pub(crate) pid: u32,
    pub(crate) log_path: PathBuf,
    pub(crate) ns: String,
}

impl Proc {
    /// Process id (also its process-group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Namespace the process runs in.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// File receiving the process's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Current contents of the log file (lossy UTF-8; empty if unreadable).
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// `Some(status)` if the process has exited, `None` if still running.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>> {
        Ok(lock(&self.slot).try_wait()?)
    }

    /// Whether the process is still running.
    pub fn is_running(&self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Wait until the log contains `needle`. Fails if `timeout` passes or the
    /// process exits first (the error includes the log).
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return Ok(());
            }
            if let Some(st) = self.try_wait()? {
                // One last look: the line may have been written just before exit.
                if self.log().contains(needle) {
                    return Ok(());
                }
                bail!(
                    "process {} in {} exited ({st}) before logging {needle:?}; log:\n{}",
                    self.pid,
                    self.ns,
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {needle:?} from process {} in {}; log:\n{}",
                    self.pid,
                    self.ns,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for the process to exit by itself, at most `timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait()? {
                return Ok(Some(st));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Send SIGTERM (to the process group), wait up to [`STOP_GRACE`], then
    /// SIGKILL; returns the exit status. Calling it again returns the same
    /// status.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.stop_with(libc::SIGTERM)
    }

    /// Like [`Proc::stop`] but with a chosen first signal (e.g. `libc::SIGINT`).
    pub fn stop_with(&mut self, sig: i32) -> Result<ExitStatus> {
        terminate_all(std::slice::from_ref(&self.slot), sig, STOP_GRACE);
        lock(&self.slot)
            .wait()
            .with_context(|| format!("waiting for process {}", self.pid))
    }

    /// SIGKILL the process group at once and reap; returns the exit status.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        let mut c = lock(&self.slot);
        signal_group(&mut c, libc::SIGKILL);
        c.wait()
            .with_context(|| format!("waiting for process {}", self.pid))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        terminate_all(std::slice::from_ref(&self.slot), libc::SIGTERM, STOP_GRACE);
    }
}
