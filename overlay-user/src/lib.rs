//! The overlay agent's library: configuration, dataplanes, control sources and API.

pub mod agent;
pub mod api;
pub mod attach;
pub mod bpf;
pub mod config;
pub mod dataplane;
pub mod discovery;
pub mod docker;
pub mod firewall;
pub mod kernel;
pub mod netlink;
pub mod netns;
pub mod state;
