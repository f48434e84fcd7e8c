//! overlayd's configuration (the TOML file's schema) and its validation.
//! Plain data: reading the file is the config source's job
//! (`sources::config::load`). The `[cluster]` section is in [`cluster`].

pub mod cluster;
pub mod dns;
pub mod docker;
mod raw;

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::model::limits::{check_learn_limit, ApiConfig};
use crate::model::network::{gateway_of, overlaps, MAX_SUBNET_PREFIX, MAX_VNI};
use crate::model::validation::{
    check_network, check_peer_subnet, check_underlay_ip, parse_vtep_mac, InputError,
};
use cluster::ClusterConfig;
use dns::DnsConfig;
pub use docker::DockerConfig;

/// Where the from-container program is attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachPoint {
    /// tc ingress on every host-side veth plugged into the bridge (skips the bridge).
    #[default]
    Veth,
    /// tc ingress on the bridge device itself (one attach point).
    Bridge,
}

impl fmt::Display for AttachPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachPoint::Veth => "veth",
            AttachPoint::Bridge => "bridge",
        })
    }
}

/// The `dataplane` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DataplaneChoice {
    /// Try BPF; if it cannot be loaded, use the kernel's VXLAN device.
    #[default]
    Auto,
    /// BPF only; fail if it cannot be loaded.
    Ebpf,
    /// The kernel's VXLAN device, routes, neighbour and FDB entries.
    Kernel,
}

/// How the BPF dataplane encapsulates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncapMode {
    /// The tc program writes the outer headers itself (`bpf_skb_adjust_room`)
    /// and redirects to the underlay interface.
    #[default]
    Bpf,
    /// The tc program sets a tunnel key and redirects to a collect-metadata
    /// VXLAN device (`ovl.md`), which builds the outer headers (Cilium's way).
    Device,
}

/// How the BPF dataplane hands a decapsulated packet to its container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliverMode {
    /// `bpf_redirect_peer`: straight into the container's namespace, no
    /// queue, no GRO (each underlay frame reaches the container's stack on
    /// its own).
    #[default]
    Peer,
    /// `bpf_redirect` to the host-side veth: through the veth's transmit
    /// path, so the container side's NAPI merges the frames of a flow (GRO)
    /// when GRO is on in the container (`ethtool -K eth0 gro on`); without
    /// it, through the backlog queue.
    Veth,
}

impl fmt::Display for EncapMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncapMode::Bpf => "bpf",
            EncapMode::Device => "device",
        })
    }
}

impl fmt::Display for DeliverMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeliverMode::Peer => "peer",
            DeliverMode::Veth => "veth",
        })
    }
}

/// How the BPF dataplane removes the 50 bytes of outer headers when it
/// decapsulates (`decap_resize`; overlay_common's `CONFIG_F_DECAP_TWO_STEP`
/// explains the two).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecapResize {
    /// Whichever is faster on this CPU, timed at start with
    /// BPF_PROG_TEST_RUN (`dataplane::bpf::calibrate`); `two-step` only
    /// when at least 5 % faster.
    #[default]
    Auto,
    /// One `bpf_skb_adjust_room(-50)`.
    OneStep,
    /// `bpf_skb_adjust_room(+14)`, then `(-64)`.
    TwoStep,
}

impl DecapResize {
    /// Whether decapsulation resizes in two steps, when the setting says so
    /// itself; `None` for `auto`, which the dataplane measures.
    pub fn fixed(self) -> Option<bool> {
        match self {
            DecapResize::Auto => None,
            DecapResize::OneStep => Some(false),
            DecapResize::TwoStep => Some(true),
        }
    }
}

impl fmt::Display for DecapResize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecapResize::Auto => "auto",
            DecapResize::OneStep => "one-step",
            DecapResize::TwoStep => "two-step",
        })
    }
}

/// How the BPF dataplane makes room for the 50 bytes of outer headers when
/// it encapsulates (`encap_resize`; overlay_common's
/// `CONFIG_F_ENCAP_PUSH_HEAD` explains the two).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EncapResize {
    /// `bpf_skb_change_head(50)` for an unsegmented packet other than TCP,
    /// `bpf_skb_adjust_room(+50)` for the rest
    /// (`overlay_common::encap_pushes_head`).
    #[default]
    Head,
    /// `bpf_skb_adjust_room(+50)` for every packet: the skb records the
    /// outer and inner headers as encapsulated, for tools that read them
    /// on the underlay's egress.
    AdjustRoom,
}

impl fmt::Display for EncapResize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncapResize::Head => "head",
            EncapResize::AdjustRoom => "adjust-room",
        })
    }
}

/// How the XDP program is attached to the underlay interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Generic (skb) mode: works on every driver, but copies every non-linear
    /// (GSO) skb into a linear buffer first, which costs throughput.
    Generic,
    /// Native (driver) mode: drops hostile VXLAN before an skb exists. On a
    /// veth it turns off the large-packet path (measured: 0.36 x plain).
    Native,
    /// Native mode, and the XDP program decapsulates VXLAN for local
    /// endpoints itself before the driver's GRO, which then merges the
    /// inner TCP segments (what the kernel's VXLAN device gets from its GRO
    /// cells); tc only redirects the merged frame into the container. For
    /// underlays that deliver MTU-sized frames (real NICs; docs/benchmarks.md).
    Decap,
    /// No XDP program; the tc program makes the same checks with the same
    /// drop reasons. The default: fastest in `cargo xtask bench` (docs/benchmarks.md).
    #[default]
    Off,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Generic => "generic",
            XdpMode::Native => "native",
            XdpMode::Decap => "decap",
            XdpMode::Off => "off",
        })
    }
}

/// How the tc programs are attached (`tc_attach`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcAttach {
    /// TCX links (kernel 6.6+), pinned in bpffs and replaced atomically on restart.
    #[default]
    Tcx,
    /// The legacy way: a `clsact` qdisc with a direct-action cls_bpf filter
    /// (netlink), not pinned: replaced by delete and add on restart.
    Clsact,
}

impl fmt::Display for TcAttach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TcAttach::Tcx => "tcx",
            TcAttach::Clsact => "clsact",
        })
    }
}

/// One `[[peers]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The remote host's container subnet.
    #[serde(deserialize_with = "de_net")]
    pub subnet: Ipv4Net,
    /// The remote host's underlay address.
    pub underlay_ip: Ipv4Addr,
    /// The remote VTEP MAC, for hosts whose MAC does not follow our rule.
    #[serde(default)]
    pub vtep_mac: Option<String>,
}

/// The whole file. With a `[cluster]` section, `subnet`, `vni` and
/// `vxlan_port` may be left out: they are then [`Pending`] until the
/// cluster gives them ([`Config::apply_cluster`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "raw::RawConfig")]
pub struct Config {
    /// The interface that carries VXLAN (e.g. "eth1").
    pub underlay_interface: String,
    /// This host's underlay address; default: the first IPv4 address on `underlay_interface`.
    #[serde(default)]
    pub underlay_ip: Option<Ipv4Addr>,
    /// This host's container subnet.
    #[serde(deserialize_with = "de_net")]
    pub subnet: Ipv4Net,
    /// The bridge local containers attach to (e.g. "docker0").
    pub bridge: String,
    /// VXLAN network identifier (1..=16777215).
    pub vni: u32,
    /// VXLAN UDP port.
    #[serde(default = "default_port")]
    pub vxlan_port: u16,
    /// Where the BPF programs' maps and links are pinned.
    #[serde(default = "default_pin_dir")]
    pub pin_dir: PathBuf,
    /// Where state added through the API is kept across restarts.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Where the from-container program is attached.
    #[serde(default)]
    pub attach: AttachPoint,
    /// Which dataplane forwards packets: `auto` (BPF, else the kernel's VXLAN device), `ebpf` or `kernel`.
    #[serde(default)]
    pub dataplane: DataplaneChoice,
    /// XDP mode on the underlay interface.
    #[serde(default)]
    pub xdp: XdpMode,
    /// How the BPF dataplane builds the outer headers.
    #[serde(default)]
    pub encap: EncapMode,
    /// How the BPF dataplane hands decapsulated packets to containers.
    #[serde(default)]
    pub deliver: DeliverMode,
    /// How the tc programs are attached: TCX links or a clsact qdisc's filter.
    #[serde(default)]
    pub tc_attach: TcAttach,
    /// How decapsulation removes the outer headers: `auto`, `one-step`, `two-step`.
    #[serde(default)]
    pub decap_resize: DecapResize,
    /// How encapsulation makes room for the outer headers: `head`, `adjust-room`.
    #[serde(default)]
    pub encap_resize: EncapResize,
    /// NAPI GRO on the host side of every endpoint veth the BPF dataplane serves.
    #[serde(default = "default_veth_gro")]
    pub veth_gro: bool,
    /// IPv4 BIG TCP: `gso_ipv4_max_size`/`gro_ipv4_max_size` raised to
    /// [`BIG_TCP_SIZE`] on both ends of every endpoint veth and on the underlay.
    #[serde(default = "default_big_tcp")]
    pub big_tcp: bool,
    /// Keeps a collect-metadata VXLAN device (`ovl.md`) on the VXLAN port
    /// with `encap = "bpf"` too, so that the kernel's UDP tunnel GRO merges
    /// the VXLAN frames of a flow on the underlay (where it runs NAPI GRO,
    /// as NICs do) before the tc program decapsulates them.
    #[serde(default = "default_tunnel_gro")]
    pub tunnel_gro: bool,
    /// How many endpoints the from-container program may learn on one port
    /// (`attach = "veth"`); 0 turns learning off.
    #[serde(default = "default_learn_limit")]
    pub learn_limit: u32,
    /// Where overlayd serves Prometheus metrics (`/metrics`); off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Static peers.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Docker integration.
    #[serde(default)]
    pub docker: DockerConfig,
    /// Limits of the local API.
    #[serde(default)]
    pub api: ApiConfig,
    /// The cluster store: lease the subnet and find the other hosts in etcd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
    /// The names resolver for the overlay networks' containers (off unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsConfig>,
    /// Which of `subnet`, `vni` and `vxlan_port` the file left out, to come from the cluster.
    #[serde(skip)]
    pub pending: Pending,
}

/// The IPv4 GSO/GRO size `big_tcp = true` sets (the kernel's BIG TCP
/// documentation and Cilium use 185000 too).
pub const BIG_TCP_SIZE: u32 = 185_000;

/// `veth_gro`'s default.
pub fn default_veth_gro() -> bool {
    false
}

/// `big_tcp`'s default.
pub fn default_big_tcp() -> bool {
    false
}

/// `tunnel_gro`'s default: on (issue 17: 1.8x on one stream over a
/// NIC-like underlay, level on veth; docs/benchmarks.md).
pub fn default_tunnel_gro() -> bool {
    true
}

/// Values the file left out because `[cluster]` provides them; until then
/// the fields hold placeholders that [`Config::validate`] does not check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    /// `subnet`: leased from the pool.
    pub subnet: bool,
    /// `vni`: the cluster's.
    pub vni: bool,
    /// `vxlan_port`: the cluster's.
    pub vxlan_port: bool,
}

/// Deserialize a CIDR, with [`InputError::NotCidr`]'s message on failure.
/// Host bits are accepted here and reported by [`Config::validate`] with the field name.
fn de_net<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Ipv4Net, D::Error> {
    let value = String::deserialize(de)?;
    value.parse().map_err(|_| {
        serde::de::Error::custom(InputError::NotCidr {
            value: value.clone(),
        })
    })
}

/// [`de_net`] for an optional field.
fn de_opt_net<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<Ipv4Net>, D::Error> {
    de_net(de).map(Some)
}

impl Config {
    /// Parse TOML text without validating it.
    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// Check every value; the first problem found is returned.
    pub fn validate(&self) -> Result<(), InputError> {
        check_ifname("underlay_interface", &self.underlay_interface)?;
        check_ifname("bridge", &self.bridge)?;
        if !self.pending.vni && (self.vni == 0 || self.vni > MAX_VNI) {
            return Err(InputError::Vni(self.vni));
        }
        if self.vxlan_port == 0 {
            return Err(InputError::Port);
        }
        if !self.pending.subnet {
            check_network(self.subnet).map_err(|source| InputError::Field {
                field: "subnet".into(),
                source: Box::new(source),
            })?;
            if self.subnet.prefix_len() > MAX_SUBNET_PREFIX {
                return Err(InputError::SubnetTooSmall(self.subnet));
            }
        }
        if let Some(ip) = self.underlay_ip {
            check_underlay_ip(ip).map_err(|source| InputError::Field {
                field: "underlay_ip".into(),
                source: Box::new(source),
            })?;
        }
        for (index, peer) in self.peers.iter().enumerate() {
            let field = |name: &str| format!("peers[{index}].{name}");
            check_peer_subnet(peer.subnet).map_err(|source| InputError::Field {
                field: field("subnet"),
                source: Box::new(source),
            })?;
            if !self.pending.subnet && overlaps(peer.subnet, self.subnet) {
                return Err(InputError::PeerOverlapsOwn {
                    index,
                    peer: peer.subnet,
                    own: self.subnet,
                });
            }
            if let Some((other_index, other)) = self.peers[..index]
                .iter()
                .enumerate()
                .find(|(_, other)| overlaps(peer.subnet, other.subnet))
            {
                return Err(InputError::PeersOverlap {
                    index,
                    peer: peer.subnet,
                    other_index,
                    other: other.subnet,
                });
            }
            check_underlay_ip(peer.underlay_ip).map_err(|source| InputError::Field {
                field: field("underlay_ip"),
                source: Box::new(source),
            })?;
            if Some(peer.underlay_ip) == self.underlay_ip {
                return Err(InputError::PeerIsSelf {
                    index,
                    ip: peer.underlay_ip,
                });
            }
            if let Some(mac) = &peer.vtep_mac {
                parse_vtep_mac(mac).map_err(|source| InputError::Field {
                    field: field("vtep_mac"),
                    source: Box::new(source),
                })?;
            }
        }
        check_learn_limit(self.learn_limit, self.subnet)?;
        self.docker.validate(self.cluster.is_some())?;
        self.api.validate()?;
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        if let Some(dns) = &self.dns {
            dns.validate()?;
            if self.cluster.is_none() {
                return Err(InputError::Dns {
                    field: "listen",
                    value: dns.listen.to_string(),
                    problem: "is set without a [cluster] section",
                    expected: "a [cluster] section too: the names come from the cluster store",
                });
            }
        }
        Ok(())
    }

    /// Fill in what the cluster gives (the leased subnet, its VNI and port)
    /// and check the result again.
    pub fn apply_cluster(
        &mut self,
        subnet: Ipv4Net,
        vni: u32,
        port: u16,
    ) -> Result<(), InputError> {
        self.subnet = subnet;
        self.vni = vni;
        self.vxlan_port = port;
        self.pending = Pending::default();
        self.validate()
    }

    /// The gateway address of this host's subnet (the first host address, .1 in a /24).
    pub fn gateway(&self) -> Ipv4Addr {
        gateway_of(self.subnet)
    }
}

fn check_ifname(field: &'static str, value: &str) -> Result<(), InputError> {
    let ok = !value.is_empty()
        && value.len() <= 15
        && value != "."
        && value != ".."
        && !value
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(InputError::InterfaceName {
            field,
            value: value.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests;
