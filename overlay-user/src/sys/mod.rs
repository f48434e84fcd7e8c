//! System helpers, the bottom layer: rtnetlink queries ([`netlink`]; the
//! main routing table in [`routes`]),
//! netlink inside another network namespace ([`netns`]), a bridge's tables
//! ([`bridge`]), veth plumbing into a namespace ([`veth`]), the Docker
//! Engine API client ([`docker`]), the endpoint hop's offloads (GRO, IPv4
//! BIG TCP sizes: [`offload`]), read-only probes of the host for
//! `overlayctl doctor` ([`probe`]: sysctls, firewall rules, UDP sockets,
//! VXLAN devices, ICMP echo, pinned BPF links), and their one error type
//! ([`error`]).
//!
//! Owns: talking to the kernel and to dockerd about interfaces, namespaces
//! and containers. Must not touch: anything of overlay's own (the model,
//! the dataplane, the agent, the control sources): these helpers know links,
//! MACs and containers, never peers, endpoints or where they came from.

pub mod bridge;
pub mod docker;
pub mod error;
pub mod netlink;
pub mod netns;
pub mod offload;
pub mod probe;
pub mod routes;
pub mod veth;
