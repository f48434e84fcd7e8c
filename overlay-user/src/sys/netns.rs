//! Netlink requests inside another network namespace (a container's).
//!
//! A netlink socket belongs to the network namespace of the thread that
//! opened it. [`run_in`] starts a dedicated OS thread, moves that thread
//! (only) into the target namespace with `setns(2)`, opens an rtnetlink
//! connection there on a current-thread tokio runtime of its own, and runs
//! the given future on it. No thread of the caller's runtime ever changes
//! namespace.

use std::fs::File;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use rtnetlink::Handle;

use crate::sys::error::SysError;

/// A future run inside a namespace: it gets a netlink handle opened there.
pub type NsFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The network namespace file of process `pid`.
pub fn of_pid(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}

/// The file of the named network namespace `name` (as `ip netns` keeps them).
pub fn named(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Open a namespace file (to pass to rtnetlink's `setns_by_fd`, or to [`run_in_file`]).
pub fn open(path: &Path) -> Result<File, SysError> {
    File::open(path).map_err(|source| SysError::NetnsOpen {
        path: path.to_owned(),
        source,
    })
}

/// Run `f` with a netlink handle inside the network namespace at `path`.
pub async fn run_in<T, F>(path: &Path, f: F) -> Result<T, SysError>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> NsFuture<T> + Send + 'static,
{
    let file = open(path)?;
    run_in_file(path, file, f).await
}

/// Like [`run_in`], with the namespace file already open.
pub async fn run_in_file<T, F>(path: &Path, file: File, f: F) -> Result<T, SysError>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> NsFuture<T> + Send + 'static,
{
    let path = path.to_owned();
    let setup = {
        let path = path.clone();
        move |reason: String| SysError::NetnsSetup { path, reason }
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread_path = path.clone();
    std::thread::Builder::new()
        .name("overlay-netns".into())
        .spawn(move || {
            let result = (|| {
                // SAFETY: plain syscall on an fd we own; it only moves this thread.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(SysError::NetnsEnter {
                        path: thread_path.clone(),
                        source: std::io::Error::last_os_error(),
                    });
                }
                let setup_err = |reason: String| SysError::NetnsSetup {
                    path: thread_path.clone(),
                    reason,
                };
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| setup_err(format!("runtime: {e}")))?;
                rt.block_on(async {
                    let (conn, handle, _) = rtnetlink::new_connection()
                        .map_err(|e| setup_err(format!("netlink socket: {e}")))?;
                    let conn = tokio::spawn(conn);
                    let out = f(handle).await;
                    conn.abort();
                    Ok(out)
                })
            })();
            let _ = tx.send(result);
        })
        .map_err(|e| setup(format!("thread: {e}")))?;
    rx.await.map_err(|_| SysError::NetnsSetup {
        path,
        reason: "the helper thread panicked".into(),
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs no privileges: "entering" our own namespace is allowed for root
    /// only, so without root only the open error path is checked.
    #[tokio::test]
    async fn missing_namespace_is_named() {
        let e = run_in(Path::new("/run/netns/no-such-ns-overlay"), |_h| {
            Box::pin(async {})
        })
        .await
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot open network namespace /run/netns/no-such-ns-overlay: "),
            "{e}"
        );
    }

    #[tokio::test]
    async fn runs_in_own_namespace_as_root() {
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let names = run_in(&of_pid(std::process::id()), |h| {
            Box::pin(async move { crate::sys::netlink::links(&h).await.map(|l| l.len()) })
        })
        .await
        .unwrap()
        .unwrap();
        assert!(names >= 1);
    }
}
