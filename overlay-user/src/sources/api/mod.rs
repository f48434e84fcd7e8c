//! The local API, a control source: newline-delimited JSON over a Unix socket.
//!
//! A client writes one [`Request`] per line and reads one [`Response`] per
//! line; a connection may carry any number of requests. Values arrive as
//! strings and are parsed here with the same strict parsers as the config
//! and the CLI, so a bad value is answered with a message that names it.
//!
//! ```text
//! > {"peer_add":{"subnet":"10.103.200.0/24","underlay_ip":"192.168.56.5","vtep_mac":null}}
//! < "ok"
//! > "peer_list"
//! < {"peers":[{"subnet":"10.103.200.0/24","underlay_ip":"192.168.56.5",...,"source":"api"}]}
//! > {"peer_del":{"subnet":"10.103.200.5/24"}}
//! < {"error":{"message":"10.103.200.5/24 has host bits set; expected a network address like 10.103.200.0/24"}}
//! ```
//!
//! Only root may talk on the socket (mode 0600 from its creation, and the
//! peer's uid checked with SO_PEERCRED); connections are capped and closed
//! when idle ([`Limits`], the config's `[api]` section).
//!
//! Owns: the wire format ([`wire`]), the socket and who may use it
//! ([`socket`]), the server ([`server`], overlay networks in
//! [`networks`]) and the client `overlayctl` uses ([`client`]).
//! Must not touch: the other sources (attach requests go through the
//! [`Plumber`](crate::sources::Plumber) it is given, network requests
//! through the [`NetworkDirectory`](crate::sources::NetworkDirectory)) and
//! the dataplane.

pub mod client;
pub mod networks;
pub mod server;
pub mod socket;
pub mod wire;

pub use client::call;
pub use server::{ApiSource, Limits};
pub use socket::bind;
pub use wire::{
    ApiError, EndpointInfo, NetEndpointInfo, NetworkDetail, NetworkInfo, PeerInfo, Request,
    Response, CLIENT_TIMEOUT, DEFAULT_SOCKET, MAX_LINE,
};
