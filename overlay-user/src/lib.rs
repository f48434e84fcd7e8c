//! The overlay agent's library: configuration, dataplanes, control sources and API.

pub mod bpf;
pub mod config;
pub mod dataplane;
pub mod netlink;
