//! The cluster store, a control source: hosts lease their subnets and find
//! each other through etcd (v3 API), flannel's model.
//!
//! - A host's lease is the key `<prefix>/subnets/<a.b.c.d>-<len>`, created
//!   with a create-if-absent transaction and bound to an etcd lease with a
//!   long TTL (24 h by default) that overlayd keeps alive. Its value is the
//!   host's record: name, underlay address, subnet, VTEP MAC, dataplane mode
//!   and version ([`HostRecord`](crate::model::cluster::HostRecord)). The
//!   lease is taken before the dataplane starts ([`lease::acquire`], from
//!   overlayd's start-up) and kept in `state_dir/cluster.json` with the
//!   last-known hosts ([`saved`]), so that a restart gets the same subnet
//!   back, also while etcd is down.
//! - The [`registry::ClusterSource`] keeps the record up to date, reads the
//!   prefix and watches it from the next revision: every other host's
//!   record becomes a peer with source `cluster`, and goes when the record
//!   goes (a clean leave revokes the lease, an expired lease deletes it).
//!   When etcd is unreachable forwarding goes on with the peers known; the
//!   outage is logged once, and when etcd is back the source reads
//!   everything again and watches from there. A watch cancelled by
//!   compaction leads to the same full resynchronisation.
//! - Overlay networks live in the store too (layout in
//!   [`crate::model::network_store`]): [`directory::Directory`] implements
//!   the [`NetworkDirectory`](crate::sources::NetworkDirectory) (creating
//!   and removing networks in [`networks`], addresses in [`ipam`], this
//!   host's endpoint records in [`endpoints`]), and the registry's sessions
//!   read and watch networks and the other hosts' endpoint records with
//!   the hosts ([`netwatch`]), reporting them to the core.
//! - [`view::ClusterHandle`] answers the API's questions (hosts, status,
//!   removing a dead host) through the [`ClusterView`](crate::sources::ClusterView)
//!   interface; `overlayctl cluster init` writes the settings through
//!   [`client::Store`].
//!
//! - [`netview`] follows the overlay networks and every host's endpoint
//!   records for the names resolver (a watch channel of
//!   [`NetworkView`](crate::model::overlay_network::NetworkView)).
//!
//! Owns: the etcd client with its TLS settings and error explanations
//! ([`client`]), leasing ([`lease`]) and keeping the lease alive
//! ([`keeper`]), the saved lease ([`saved`]), the
//! registry and its watch ([`registry`], networks in [`netwatch`]), the
//! API's view ([`view`]), the networks' directory ([`directory`],
//! [`networks`], [`ipam`], [`endpoints`]) and the networks' view for names
//! ([`netview`]).
//! Must not touch: the dataplane (peers go through the core) and the other
//! sources.

pub mod client;
pub mod directory;
pub mod endpoints;
pub mod ipam;
pub mod keeper;
pub mod lease;
pub mod netview;
pub mod netwatch;
pub mod networks;
pub mod registry;
pub mod saved;
pub mod view;

#[cfg(test)]
mod net_tests;
#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

use crate::model::validation::InputError;

/// Errors of the cluster store; the messages are shown to users as is.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A TLS file named in `[cluster]` cannot be read.
    #[error("cannot read cluster.{field} {}: {source}", path.display())]
    TlsFile {
        /// `ca_file`, `cert_file` or `key_file`.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// The etcd client refused the settings (a malformed URL or TLS option).
    #[error("etcd client for {endpoints}: {reason}")]
    Client {
        /// The endpoints.
        endpoints: String,
        /// What the client reported.
        reason: String,
    },
    /// No endpoint answered.
    #[error(
        "etcd at {endpoints} is unreachable: {reason}; expected a running etcd at cluster.etcd"
    )]
    Unreachable {
        /// The endpoints, comma-separated.
        endpoints: String,
        /// Why, per endpoint.
        reason: String,
    },
    /// The TLS handshake failed because etcd's certificate is not signed by the configured CA.
    #[error("TLS handshake with etcd at {endpoint} failed: {reason}; etcd's certificate is not signed by the CA in cluster.ca_file {}; expected the CA that signed it", ca_file.display())]
    WrongCa {
        /// The endpoint.
        endpoint: String,
        /// The CA file.
        ca_file: PathBuf,
        /// What the TLS library reported.
        reason: String,
    },
    /// etcd answered with an error.
    #[error("etcd: {what}: {reason}")]
    Etcd {
        /// What was asked, e.g. "reading /overlay/config".
        what: String,
        /// What etcd or the client reported.
        reason: String,
    },
    /// The cluster settings are missing.
    #[error("no cluster settings at {key} in etcd; expected `overlayctl cluster init --etcd URL --pool CIDR --subnet-len N --vni N` first")]
    NoSettings {
        /// The settings key.
        key: String,
    },
    /// Something in the store is not what overlayd wrote.
    #[error("{key} in etcd is not valid: {reason}")]
    BadValue {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// `cluster init` found other settings.
    #[error("etcd already holds other cluster settings at {key}: {differences}; use --force to overwrite them")]
    SettingsDiffer {
        /// The settings key.
        key: String,
        /// What differs, "pool A (given B), ...".
        differences: String,
    },
    /// A setting of this host's config contradicts the cluster's.
    #[error("this host's config sets {field} = {host}, but the cluster's settings at {key} say {field} = {cluster}; expected the same value, or leave {field} out")]
    Contradiction {
        /// `vni` or `vxlan_port`.
        field: &'static str,
        /// This host's value.
        host: String,
        /// The cluster's value.
        cluster: String,
        /// The settings key.
        key: String,
    },
    /// This host's configured subnet is not one of the pool's.
    #[error("subnet {subnet} is not one of the cluster's subnets; expected a /{len} inside the pool {pool}, or no subnet to lease one")]
    OutsidePool {
        /// The configured subnet.
        subnet: Ipv4Net,
        /// The pool.
        pool: Ipv4Net,
        /// The pool's subnet length.
        len: u8,
    },
    /// The subnet this host asks for is leased by another host.
    #[error("subnet {subnet} is held by host {holder} ({holder_ip}); expected a free subnet of the pool, or no subnet to lease one")]
    SubnetHeld {
        /// The subnet.
        subnet: Ipv4Net,
        /// The holder's name.
        holder: String,
        /// The holder's underlay address.
        holder_ip: Ipv4Addr,
    },
    /// Every subnet of the pool is leased.
    #[error("pool {pool} has no free /{len} subnet: all {count} are leased; expected a wider pool, or remove a dead host with `overlayctl hosts rm NAME`")]
    PoolExhausted {
        /// The pool.
        pool: Ipv4Net,
        /// The subnet length.
        len: u8,
        /// How many subnets it has.
        count: u64,
    },
    /// Another host is registered under this host's name.
    #[error("host name {name} is already registered by {holder_ip} for {subnet}; expected a unique [cluster] name per host")]
    NameTaken {
        /// The name.
        name: String,
        /// The other host's underlay address.
        holder_ip: Ipv4Addr,
        /// Its subnet.
        subnet: Ipv4Net,
    },
    /// `hosts rm` names no host.
    #[error("no host named {0} in the cluster store; expected a name from `overlayctl hosts`")]
    NoSuchHost(String),
    /// `hosts rm` names the host answering.
    #[error("{0} is this host; stop it with `overlayd --cleanup` to leave the cluster")]
    IsThisHost(String),
    /// The hostname cannot be used as this host's name.
    #[error("the hostname {hostname:?} cannot be this host's cluster name ({reason}); expected [cluster] name = \"...\"")]
    Hostname {
        /// The hostname read, if any.
        hostname: String,
        /// Why it is unusable.
        reason: String,
    },
    /// Neither etcd nor a saved lease: start-up cannot go on.
    #[error("{source}; and no saved lease in {}, so this host cannot start without etcd", path.display())]
    NoSavedLease {
        /// The saved lease's file.
        path: PathBuf,
        /// Why etcd could not be used.
        #[source]
        source: Box<ClusterError>,
    },
    /// The saved lease file cannot be read, parsed or written.
    #[error("saved lease {}: {reason}", path.display())]
    Saved {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The subnet file cannot be written.
    #[error("cannot write the subnet file {}: {source}", path.display())]
    SubnetFile {
        /// The file.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// A network of this name exists.
    #[error("network {name} already exists (VNI {vni}, subnet {subnet}); expected a new name, or `overlayctl network rm {name}` first")]
    NetworkExists {
        /// The name.
        name: String,
        /// Its VNI.
        vni: u32,
        /// Its subnet.
        subnet: Ipv4Net,
    },
    /// The VNI asked for is another network's, or the cluster's own.
    #[error("VNI {vni} is taken by {holder}; expected a free VNI, or no --vni to get one")]
    VniTaken {
        /// The VNI.
        vni: u32,
        /// "network NAME" or "the cluster's per-host overlay".
        holder: String,
    },
    /// The subnet asked for overlaps another network's or the hosts' pool.
    #[error("subnet {subnet} overlaps {other}; expected a subnet disjoint from every network's and from the hosts' pool")]
    SubnetTaken {
        /// The subnet.
        subnet: Ipv4Net,
        /// "network NAME (10.104.0.0/24)" or "the hosts' pool 10.103.0.0/16".
        other: String,
    },
    /// Nothing left to allocate: every VNI or every subnet of the pool is taken.
    #[error("{0}")]
    Exhausted(String),
    /// No network of this name.
    #[error(
        "no network named {0} in the cluster store; expected a name from `overlayctl network ls`"
    )]
    NoSuchNetwork(String),
    /// `network rm` while containers are on it.
    #[error("network {name} still has endpoints: {list}; expected none (stop or disconnect those containers first)")]
    NetworkInUse {
        /// The network.
        name: String,
        /// "10.104.0.2 (web-1 on h1), ...".
        list: String,
    },
    /// The address asked for is held.
    #[error("address {ip} on network {network} is held by {holder} on host {host}; expected a free address, or none to get one")]
    AddressHeld {
        /// The address.
        ip: Ipv4Addr,
        /// The network.
        network: String,
        /// Who holds it (a container or endpoint ID).
        holder: String,
        /// The host that asked for it.
        host: String,
    },
    /// Every address of the network is held.
    #[error("network {network} ({subnet}) has no free address: all {count} are held; expected a wider subnet, or release addresses")]
    NetworkFull {
        /// The network.
        network: String,
        /// Its subnet.
        subnet: Ipv4Net,
        /// How many addresses it has for containers.
        count: usize,
    },
    /// An endpoint record to publish names another host.
    #[error("endpoint record {ip} on network {network} names host {host} ({underlay_ip}); expected this host, {me} ({my_ip}), or empty fields to fill in")]
    NotThisHost {
        /// The network.
        network: String,
        /// The address.
        ip: Ipv4Addr,
        /// The host it names.
        host: String,
        /// The underlay address it names.
        underlay_ip: Ipv4Addr,
        /// This host's name.
        me: String,
        /// This host's underlay address.
        my_ip: Ipv4Addr,
    },
    /// This host has no etcd lease (etcd was unreachable at start and still is).
    #[error("this host is not registered in the cluster store yet (etcd unreachable since start); expected etcd back before endpoints can be published")]
    NoLease,
    /// The store kept changing under a transaction.
    #[error("{what}: the store kept changing under {tries} attempts; try again")]
    Contended {
        /// What was attempted.
        what: String,
        /// How many attempts.
        tries: u32,
    },
    /// A value given to the cluster's functions is not acceptable.
    #[error(transparent)]
    Input(#[from] InputError),
}

impl ClusterError {
    /// Whether etcd could not be reached at all (as opposed to refusing).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ClusterError::Unreachable { .. } | ClusterError::WrongCa { .. }
        )
    }
}
