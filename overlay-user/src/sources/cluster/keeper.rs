//! Keeping this host's etcd lease alive, and the lease id the keeper, the
//! registry and the API's view share.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sources::cluster::client::Store;
use crate::sources::cluster::ClusterError;

/// The lease shared by the [`Keeper`], the registry and the API's view.
#[derive(Debug, Default)]
pub struct LeaseState {
    inner: Mutex<LeaseInner>,
    /// Signalled when the keeper finds the lease gone.
    pub lost: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct LeaseInner {
    id: i64,
    renewed: Option<std::time::Instant>,
}

impl LeaseState {
    /// The etcd lease id (0: none yet).
    pub fn id(&self) -> i64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).id
    }

    /// Bind to a new lease.
    pub fn set_id(&self, id: i64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.id = id;
        inner.renewed = Some(std::time::Instant::now());
    }

    fn renewed(&self) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).renewed =
            Some(std::time::Instant::now());
    }
}

/// Keeps the etcd lease alive: renews it every third of its TTL (at least
/// every second, at most every 10 minutes) and signals [`LeaseState::lost`]
/// when etcd no longer knows it. Unreachable etcd is the registry's concern.
pub struct Keeper {
    task: tokio::task::JoinHandle<()>,
}

impl Keeper {
    /// Start keeping `state`'s lease alive.
    pub fn start(store: Store, state: Arc<LeaseState>, ttl: u64) -> Keeper {
        let period =
            Duration::from_secs(ttl / 3).clamp(Duration::from_secs(1), Duration::from_secs(600));
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let id = state.id();
                if id == 0 {
                    continue;
                }
                match store
                    .call("renewing the lease", |mut c| async move {
                        c.lease_keep_alive(id).await
                    })
                    .await
                {
                    Ok(_) => state.renewed(),
                    Err(ClusterError::Etcd { reason, .. }) if reason.contains("not found") => {
                        log::warn!(
                            "cluster: lease {id:x} expired or was revoked; registering again"
                        );
                        state.lost.notify_one();
                    }
                    Err(e) => log::debug!("cluster: renewing lease {id:x}: {e}"),
                }
            }
        });
        Keeper { task }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}
