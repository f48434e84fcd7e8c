//! Docker events, a control source: containers join the overlay by themselves.
//!
//! The [`Watcher`](watcher::Watcher) follows the Docker Engine API (through bollard, never the
//! `docker` CLI). When a container starts, or is connected to a network, it
//! registers the container's endpoints on the watched networks whose address
//! lies in this host's subnet: address, MAC, and the host-side veth. That
//! veth is found from inside the container's network namespace: the
//! interface with the endpoint's MAC names its peer's ifindex (IFLA_LINK),
//! which is the host side. When a container dies, its endpoints go.
//!
//! On every (re)connection the watcher first reconciles with the containers
//! that run now (adding what is missing, removing Docker endpoints of
//! containers that are gone) and then follows the events from shortly before
//! the listing, so nothing that happened while it was away or while it
//! listed is missed. If the socket goes away, forwarding continues; the
//! watcher retries with backoff (at most [`MAX_BACKOFF`](watcher::MAX_BACKOFF) apart) and logs
//! once per change between connected and disconnected.
//!
//! Owns: picking a container's endpoints out of Docker's answer
//! ([`containers`]) and following Docker ([`watcher`]). The API client
//! itself is [`crate::sys::docker`]. Must not touch: the other sources
//! (an attached container's endpoint is recognised by its interface name,
//! [`crate::model::attach`]) and the dataplane.

pub mod containers;
pub mod watcher;
