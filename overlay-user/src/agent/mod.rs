//! The agent core: the desired state reported by all control sources,
//! reconciled into the dataplane, and persisted.
//!
//! Owns: the tables of peers and endpoints with the source of each entry
//! and their validation ([`tables`]; overlay networks and their endpoints
//! in [`networks`], their tables in [`net_tables`]; the checks of a peer subnet against this
//! host's underlay and routing table in [`host_checks`]), the one handle
//! the sources report through ([`handle::Core`]), the state file
//! ([`state`]), the lock that keeps a second overlayd off the same state
//! and pin directories ([`lock`]) and the agent's errors ([`error`]).
//!
//! Must not touch: the control sources (they call the core, never the
//! other way round) and the dataplane's implementations (the core knows the
//! [`Dataplane`](crate::dataplane::Dataplane) trait only).

pub mod error;
pub mod handle;
pub mod host_checks;
pub mod lock;
pub mod net_tables;
pub mod networks;
pub mod state;
pub mod tables;

#[cfg(test)]
pub(crate) mod testing;
