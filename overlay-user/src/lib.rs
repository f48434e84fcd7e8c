//! The overlay agent's library, in layers from the bottom up; each module
//! may use its own layer and those below, never one above (`cargo xtask
//! lint` checks it):
//!
//! - [`sys`]: system helpers (netlink, network namespaces, veths, bridge
//!   tables, the Docker API client);
//! - [`model`]: plain data and its validation (peers, endpoints, networks,
//!   sources, the config schema);
//! - [`dataplane`]: the `Dataplane` trait, its BPF and kernel
//!   implementations, and the choice between them;
//! - [`agent`]: the core: desired state from all sources, reconciled into
//!   the dataplane, persisted;
//! - [`sources`]: the control sources, peers of each other: config file,
//!   API, Docker events, attach, discovery.
//!
//! The binaries (`overlayd`, `overlayctl`) sit on top.

pub mod agent;
pub mod dataplane;
pub mod model;
pub mod sources;
pub mod sys;
