//! The bench's modes: what carries the client container's traffic, and
//! the agent settings each runs with.

use anyhow::{Context, Result};
use overlay_lab::AgentOptions;

/// One way of carrying the client container's traffic to the server container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// Host to host over the underlay, no containers: the limit.
    Host,
    /// No encapsulation: each host routes the other's container subnet via its underlay address.
    Plain,
    /// Docker's default without an overlay: DNAT to a published port, MASQUERADE out.
    Iptables,
    /// Our kernel path: one VXLAN device, neighbour/FDB/route per peer.
    Kernel,
    /// Our BPF dataplane, default configuration.
    Ebpf,
    /// BPF with the XDP program in generic (skb) mode.
    EbpfXdpGeneric,
    /// BPF with XDP in native (driver) mode.
    EbpfXdpNative,
    /// BPF with `xdp = "decap"` (XDP decapsulates before GRO), GRO on the underlay.
    EbpfXdpDecap,
    /// BPF with `deliver = "veth"` (through the veth's NAPI), GRO on in the
    /// containers, TSO off on the host-side veths.
    EbpfDeliverVeth,
    /// BPF with the from-container program on the bridge instead of each veth.
    EbpfBridge,
    /// BPF setting a tunnel key and redirecting to a collect-metadata VXLAN device.
    EbpfEncapDevice,
    /// BPF, a container pair on one overlay network (VNI 4096) across the hosts.
    EbpfNet,
    /// The same pair on the kernel dataplane's network (bridge + VXLAN device per VNI).
    KernelNet,
    /// Docker's own overlay driver (swarm mode), a container pair across the hosts.
    DockerOverlay,
    /// BPF with `tc_attach = "clsact"` (cls_bpf filters instead of TCX links).
    EbpfClsact,
    /// BPF with `veth_gro = true` (NAPI GRO on the host side of the endpoint veths).
    EbpfGro,
    /// BPF with `big_tcp = true` (IPv4 BIG TCP on the endpoint veths and the underlay).
    EbpfBigTcp,
    /// BPF with `tunnel_gro = false` (no collect-metadata VXLAN device on
    /// the port, so the underlay's GRO cannot merge VXLAN before tc).
    EbpfNoTunnelGro,
    /// BPF with `encap_resize = "adjust-room"` (`bpf_skb_adjust_room` for
    /// every packet, not `bpf_skb_change_head` for unsegmented non-TCP ones).
    EbpfAdjustRoom,
    /// BPF with macvlan containers on the underlay (no veth hop).
    EbpfMacvlan,
}

impl Mode {
    pub(super) const ALL: [Mode; 20] = [
        Mode::Host,
        Mode::Plain,
        Mode::Iptables,
        Mode::Kernel,
        Mode::Ebpf,
        Mode::EbpfClsact,
        Mode::EbpfGro,
        Mode::EbpfBigTcp,
        Mode::EbpfNoTunnelGro,
        Mode::EbpfAdjustRoom,
        Mode::EbpfMacvlan,
        Mode::EbpfXdpGeneric,
        Mode::EbpfXdpNative,
        Mode::EbpfXdpDecap,
        Mode::EbpfDeliverVeth,
        Mode::EbpfBridge,
        Mode::EbpfEncapDevice,
        Mode::EbpfNet,
        Mode::KernelNet,
        Mode::DockerOverlay,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Mode::Host => "host",
            Mode::Plain => "plain",
            Mode::Iptables => "iptables",
            Mode::Kernel => "kernel",
            Mode::Ebpf => "ebpf",
            Mode::EbpfXdpGeneric => "ebpf-xdp-generic",
            Mode::EbpfXdpNative => "ebpf-xdp-native",
            Mode::EbpfXdpDecap => "ebpf-xdp-decap",
            Mode::EbpfDeliverVeth => "ebpf-deliver-veth",
            Mode::EbpfBridge => "ebpf-bridge",
            Mode::EbpfEncapDevice => "ebpf-encap-device",
            Mode::EbpfNet => "ebpf-net",
            Mode::KernelNet => "kernel-net",
            Mode::DockerOverlay => "docker-overlay",
            Mode::EbpfClsact => "ebpf-clsact",
            Mode::EbpfGro => "ebpf-gro",
            Mode::EbpfBigTcp => "ebpf-bigtcp",
            Mode::EbpfNoTunnelGro => "ebpf-no-tunnel-gro",
            Mode::EbpfAdjustRoom => "ebpf-adjust-room",
            Mode::EbpfMacvlan => "ebpf-macvlan",
        }
    }

    pub(super) fn describe(self) -> &'static str {
        match self {
            Mode::Host => "host to host over the underlay, no containers (the limit)",
            Mode::Plain => "plain routing between the containers, no encapsulation",
            Mode::Iptables => "Docker-style bridge + iptables DNAT/MASQUERADE, no overlay",
            Mode::Kernel => "overlay, kernel VXLAN device (dataplane = \"kernel\")",
            Mode::Ebpf => "overlay, BPF dataplane, default configuration (attach = \"veth\", xdp = \"off\", encap = \"bpf\", tunnel_gro = true, encap_resize = \"head\")",
            Mode::EbpfXdpGeneric => "overlay, BPF, xdp = \"generic\"",
            Mode::EbpfXdpNative => "overlay, BPF, xdp = \"native\"",
            Mode::EbpfXdpDecap => {
                "overlay, BPF, xdp = \"decap\" (XDP decapsulates before GRO; GRO on the underlay, as on a NIC)"
            }
            Mode::EbpfDeliverVeth => {
                "overlay, BPF, deliver = \"veth\" (bpf_redirect through the veth's NAPI; GRO on in the containers, TSO off on the host-side veths)"
            }
            Mode::EbpfBridge => "overlay, BPF, attach = \"bridge\"",
            Mode::EbpfEncapDevice => {
                "overlay, BPF, encap = \"device\" (tunnel key + collect-metadata VXLAN device)"
            }
            Mode::EbpfNet => {
                "overlay network (VNI 4096, one subnet across hosts), BPF: ARP in BPF, bpf_redirect_peer, no bridge"
            }
            Mode::KernelNet => {
                "overlay network (VNI 4096), kernel: bridge ovb4096 + VXLAN device ovx4096 (Docker's layout)"
            }
            Mode::DockerOverlay => {
                "Docker's own overlay driver: swarm mode (dockerd 20.10 per host), attachable overlay network, one container per host"
            }
            Mode::EbpfClsact => "overlay, BPF, tc_attach = \"clsact\" (cls_bpf on a clsact qdisc, not TCX)",
            Mode::EbpfGro => "overlay, BPF, veth_gro = true (NAPI GRO on the host-side veths)",
            Mode::EbpfBigTcp => {
                "overlay, BPF, big_tcp = true (gso/gro_ipv4_max_size 185000 on the host-side veths and the underlay)"
            }
            Mode::EbpfAdjustRoom => {
                "overlay, BPF, encap_resize = \"adjust-room\" (bpf_skb_adjust_room for every packet, not bpf_skb_change_head for unsegmented ones other than TCP)"
            }
            Mode::EbpfMacvlan => {
                "overlay, BPF, attach = \"bridge\", the containers on macvlans of the underlay (no veth hop): encapsulation on the underlay's tc egress, delivery by the macvlan's rx handler; an experiment: the bench registers the endpoints and attaches the program to the egress itself"
            }
            Mode::EbpfNoTunnelGro => {
                "overlay, BPF, tunnel_gro = false (no collect-metadata VXLAN device on the port: the underlay's GRO cannot merge VXLAN frames before tc decapsulates)"
            }
        }
    }

    pub(super) fn parse(s: &str) -> Result<Mode> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .with_context(|| {
                format!(
                    "unknown mode {s:?}; expected one of {}",
                    Mode::ALL.map(|m| m.name()).join(", ")
                )
            })
    }

    pub(super) fn agent(self) -> Option<AgentOptions> {
        let o = |dp: &str, xdp: Option<&str>, attach: Option<&str>| AgentOptions {
            dataplane: Some(dp.into()),
            xdp: xdp.map(Into::into),
            attach: attach.map(Into::into),
            ..Default::default()
        };
        match self {
            Mode::Host
            | Mode::Plain
            | Mode::Iptables
            | Mode::EbpfNet
            | Mode::KernelNet
            | Mode::DockerOverlay => None,
            Mode::Kernel => Some(o("kernel", None, None)),
            Mode::Ebpf => Some(o("ebpf", None, None)),
            Mode::EbpfXdpGeneric => Some(o("ebpf", Some("generic"), None)),
            Mode::EbpfXdpNative => Some(o("ebpf", Some("native"), None)),
            Mode::EbpfXdpDecap => Some(o("ebpf", Some("decap"), None)),
            Mode::EbpfDeliverVeth => Some(AgentOptions {
                extra: "deliver = \"veth\"\n".into(),
                ..o("ebpf", None, None)
            }),
            Mode::EbpfBridge | Mode::EbpfMacvlan => Some(o("ebpf", None, Some("bridge"))),
            Mode::EbpfEncapDevice => Some(AgentOptions {
                extra: "encap = \"device\"\n".into(),
                ..o("ebpf", None, None)
            }),
            Mode::EbpfClsact => Some(AgentOptions {
                extra: "tc_attach = \"clsact\"\n".into(),
                ..o("ebpf", None, None)
            }),
            Mode::EbpfGro => Some(AgentOptions {
                extra: "veth_gro = true\n".into(),
                ..o("ebpf", None, None)
            }),
            Mode::EbpfBigTcp => Some(AgentOptions {
                extra: "big_tcp = true\n".into(),
                ..o("ebpf", None, None)
            }),
            Mode::EbpfAdjustRoom => Some(AgentOptions {
                extra: "encap_resize = \"adjust-room\"\n".into(),
                ..o("ebpf", None, None)
            }),
            Mode::EbpfNoTunnelGro => Some(AgentOptions {
                extra: "tunnel_gro = false\n".into(),
                ..o("ebpf", None, None)
            }),
        }
    }
}
