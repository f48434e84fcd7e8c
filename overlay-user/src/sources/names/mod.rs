//! The names resolver (`[dns]`): a DNS server in overlayd that answers the
//! names of the overlay networks' containers, the way Docker's embedded
//! resolver does on one host, but across hosts.
//!
//! Docker's embedded resolver (127.0.0.11 in every container on a
//! user-defined network) forwards every name it does not know, single-label
//! names included, to dockerd's `--dns` servers, from inside the
//! container's namespace: the query's source address is the container's
//! own, so it tells which network asks. The rules ([`table`]):
//!
//! - the asking address picks the network (the subnet it is in); an
//!   address outside every overlay network is REFUSED (not an open
//!   resolver);
//! - `name`, `alias` and `name.<network>` of that network are answered
//!   from its endpoint records (A; NOERROR without records for AAAA and
//!   other types; PTR for its addresses), with a short TTL;
//! - a single-label name or a name under an overlay network that the
//!   asker's network does not have is NXDOMAIN: names are per network;
//! - every other name is forwarded to the upstream resolvers ([`upstream`]:
//!   `[dns] upstream`, else /etc/resolv.conf of overlayd's namespace).
//!
//! The records come from the cluster store through a watch channel of
//! [`NetworkView`] (`NetworkDirectory::subscribe_view`): every change is
//! pushed, the table is rebuilt at once ([`server`]), and while the store is
//! down the last view stays. The DNS messages are hickory's (hickory-proto
//! and hickory-server): no packet is parsed here by hand; a message that
//! does not parse gets FORMERR, or nothing when even its header is cut.
//!
//! Owns: the name table and answer rules ([`table`]), the answers
//! ([`answer`]), forwarding ([`upstream`]), the UDP and TCP server
//! ([`server`]).
//! Must not touch: the agent core or the dataplane (it only reads the
//! records), the store (the cluster source keeps the view) and the other
//! sources.

pub mod answer;
pub mod server;
pub mod table;
pub mod upstream;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;

#[cfg(doc)]
use crate::model::overlay_network::NetworkView;

/// Errors of the names resolver; the messages are shown to users as is.
#[derive(Debug, thiserror::Error)]
pub enum NamesError {
    /// The listen address cannot be bound.
    #[error("cannot listen on dns.listen {addr} ({proto}): {source}; expected an address of this host whose port is free")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// `udp` or `tcp`.
        proto: &'static str,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// No upstream resolver is configured or found in /etc/resolv.conf.
    #[error("no upstream resolver: dns.upstream is empty and /etc/resolv.conf names none; names outside the overlay get SERVFAIL")]
    NoUpstream,
    /// No upstream resolver answered.
    #[error("no upstream resolver answered ({servers}): {reason}")]
    Upstream {
        /// The resolvers asked, comma-separated.
        servers: String,
        /// What went wrong with the last one.
        reason: String,
    },
    /// Too many questions are being forwarded at once.
    #[error("{limit} questions are already being forwarded; this one gets SERVFAIL")]
    Busy {
        /// The cap.
        limit: usize,
    },
}
