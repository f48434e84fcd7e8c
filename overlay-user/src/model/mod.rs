//! The model: plain data the other layers share, and its validation.
//!
//! Owns: peers ([`peer`]), endpoints ([`endpoint`]), the host's network
//! arithmetic ([`network`]), the cluster's overlay networks and their
//! endpoints ([`overlay_network`]) with their keys in the store and checks
//! ([`network_store`]), who reported an entry ([`source`]), the
//! changes sources report ([`change`]), the configuration schema
//! ([`config`], with its `[cluster]` section) and its limits ([`limits`]),
//! the cluster store's settings, host records and keys ([`cluster`]), the
//! data of attached containers ([`attach`]), status and counters
//! ([`status`]), and the strict parsers for what users type
//! ([`validation`]).
//!
//! Must not touch: I/O of any kind (no files, sockets, netlink or
//! dataplane), and nothing above it: the model does not know who stores,
//! forwards or reports its values.

pub mod attach;
pub mod change;
pub mod cluster;
pub mod config;
pub mod endpoint;
pub mod limits;
pub mod network;
pub mod network_store;
pub mod overlay_network;
pub mod peer;
pub mod source;
pub mod status;
pub mod validation;
