//! [`Core`], the handle through which every control source reports to the
//! agent: changes go in through [`Core::apply`] (or [`CoreGuard::apply`]
//! for several under one lock), the tables are read through the guard.
//! Nothing else changes the tables or reaches the dataplane.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use tokio::sync::{Mutex, MutexGuard};
use tracing::Instrument;

use crate::agent::error::AgentError;
use crate::agent::state::State;
use crate::agent::tables::Agent;
use crate::model::change::Change;
use crate::model::source::Source;

/// The agent, shared by the sources. Cloning it clones the handle.
#[derive(Clone)]
pub struct Core {
    agent: Arc<Mutex<Agent>>,
    reconcile: Reconciles,
}

/// How long reconciling took, in seconds, by `kind`: `change` (one change
/// validated and given to the dataplane) or `refresh` (the periodic
/// housekeeping). Shared: cloning it clones the handle.
pub type Reconciles = Family<Vec<(String, String)>, Histogram, fn() -> Histogram>;

fn reconcile_histogram() -> Histogram {
    // 50 µs to about 13 s.
    Histogram::new(exponential_buckets(0.00005, 4.0, 10))
}

impl Core {
    /// Hands `agent` over to the sources.
    pub fn new(agent: Agent) -> Core {
        Core {
            agent: Arc::new(Mutex::new(agent)),
            reconcile: Family::new_with_constructor(reconcile_histogram),
        }
    }

    /// Exclusive access: read the tables, report several changes at once.
    pub async fn lock(&self) -> CoreGuard<'_> {
        CoreGuard {
            agent: self.agent.lock().await,
            reconcile: &self.reconcile,
        }
    }

    /// The reconcile durations measured so far.
    pub fn reconciles(&self) -> &Reconciles {
        &self.reconcile
    }

    /// Report one change from `source`; on an error nothing was changed.
    pub async fn apply(&self, source: Source, change: Change) -> Result<(), AgentError> {
        self.lock().await.apply(source, change).await
    }

    /// Re-apply the peers and endpoints of the state file (after the
    /// config source's peers); entries that fail are logged and skipped.
    pub async fn restore(&self, saved: State) {
        self.agent.lock().await.restore(saved).await
    }

    /// After the sources that report at start (the config file, then
    /// [`Core::restore`]): remove from the dataplane what an earlier run
    /// left there and no source owns now. A source that brings peers at
    /// start must have reported them before.
    pub async fn forget_unowned(&self) {
        self.agent.lock().await.forget_unowned().await
    }

    /// Stop the dataplane; with `cleanup`, remove everything it made.
    pub async fn shutdown(&self, cleanup: bool) -> Result<(), AgentError> {
        self.agent.lock().await.shutdown(cleanup).await
    }
}

/// The agent while locked: [`Agent`]'s read methods through `Deref`,
/// changes through [`CoreGuard::apply`].
pub struct CoreGuard<'a> {
    agent: MutexGuard<'a, Agent>,
    reconcile: &'a Reconciles,
}

impl Deref for CoreGuard<'_> {
    type Target = Agent;

    fn deref(&self) -> &Agent {
        &self.agent
    }
}

impl CoreGuard<'_> {
    /// Report one change from `source`; on an error nothing was changed.
    pub async fn apply(&mut self, source: Source, change: Change) -> Result<(), AgentError> {
        let span = reconcile_span(source, &change);
        let start = Instant::now();
        let r = self.agent.apply(source, change).instrument(span).await;
        self.observe("change", start);
        r
    }

    fn observe(&self, kind: &str, start: Instant) {
        self.reconcile
            .get_or_create(&vec![("kind".to_string(), kind.to_string())])
            .observe(start.elapsed().as_secs_f64());
    }

    /// The dataplane's periodic housekeeping (next-hop MACs, new ports, a
    /// vanished device); problems are logged once each. In a `refresh` span.
    pub async fn refresh(&mut self) {
        let span = tracing::debug_span!("refresh");
        let start = Instant::now();
        self.agent.refresh().instrument(span).await;
        self.observe("refresh", start);
    }

    /// A source's report on its connection to Docker, for `overlayctl status`.
    pub fn set_docker_connection(&mut self, connection: crate::model::status::Connection) {
        self.agent.set_docker_connection(connection)
    }

    /// Log a problem of a periodic task as a warning, once while it repeats.
    pub fn warn_once(&mut self, message: String) {
        self.agent.note_tick_error(message)
    }
}

/// The span a change is applied in: `reconcile`, with who reported it and
/// what it is (`add_peer`, `del_endpoint`, ...); its events (the peer or
/// endpoint change, a refusal) carry both.
fn reconcile_span(source: Source, change: &Change) -> tracing::Span {
    tracing::info_span!("reconcile", source = source.name(), change = change.kind())
}
