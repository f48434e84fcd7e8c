//! The bits of [`crate::Config::flags`]: which of the dataplane's ways
//! overlayd chose from its settings.

/// `Config::flags`: an XDP program on the underlay checks VXLAN frames before
/// tc. Informational: tc repeats every check, since XDP can be detached
/// under it.
pub const CONFIG_F_XDP_VALIDATES: u32 = 1;
/// `Config::flags`: the from-container program runs on each container's own
/// veth, so it may learn a container's endpoint (IP, MAC, veth) from the
/// first packet it sends to a peer. Not with `attach = "bridge"`, where the
/// port a packet came from is not known.
pub const CONFIG_F_LEARN_ENDPOINTS: u32 = 2;
/// `Config::flags`: the from-container program runs on each container's own
/// veth (`attach = "veth"`), so a packet's source address must be bound to
/// the port it came in on. Without it (`attach = "bridge"`) the source must
/// lie in this host's subnet and match the endpoint's MAC where known.
pub const CONFIG_F_PER_PORT: u32 = 4;
/// `Config::flags` (`xdp = "decap"`): the XDP program on the underlay
/// decapsulates VXLAN for local endpoints itself (`bpf_xdp_adjust_head`)
/// and passes the inner frame on, so the driver's GRO merges the inner
/// TCP segments; the endpoint's ifindex travels to tc in the XDP metadata
/// ([`crate::XdpDecapMeta`]), where `ovl_from_underlay` redirects it into the
/// container.
pub const CONFIG_F_XDP_DECAP: u32 = 8;
/// `Config::flags` (`deliver = "veth"`): decapsulated packets go to the
/// endpoint's host-side veth with `bpf_redirect` (its transmit path, where
/// the container side's NAPI can merge them: GRO) instead of
/// `bpf_redirect_peer`.
pub const CONFIG_F_DELIVER_VETH: u32 = 16;
/// `Config::flags` (`decap_resize = "two-step"`): decapsulation removes
/// the 50 bytes in two calls, `bpf_skb_adjust_room(+14)` then `(-64)`,
/// instead of one `(-50)`. Shrinking moves the outer Ethernet header
/// forward by the bytes removed, and on a CPU with FSRM the kernel's
/// `memmove` is a `rep movsb`, which (measured with perf here) took 27 ns
/// for those 14 bytes moved 50 forward. The grow moves them 14 bytes back
/// (5 ns), the shrink 64 forward (13 ns); both calls together measured
/// 39 to 40 ns against 53 to 55 ns for the one (docs/benchmarks.md).
/// Elsewhere it is the other way round (an AMD EPYC, Zen 4, also with
/// FSRM: 110 ns for the two against 49 ns for the one), so overlayd's
/// `decap_resize = "auto"` times both at start and sets this flag only
/// when the two steps are faster.
pub const CONFIG_F_DECAP_TWO_STEP: u32 = 32;
/// `Config::flags` (`encap_resize = "head"`, the default): encapsulation
/// makes room for the outer headers with `bpf_skb_change_head(50)`, which
/// only pushes the packet's start back, instead of
/// `bpf_skb_adjust_room(+50)` (which moves the Ethernet header and records
/// the inner headers' offsets and the tunnel for segmentation), for the
/// packets [`encap_pushes_head`] picks. Measured with `BPF_PROG_TEST_RUN`
/// on an AMD EPYC (Zen 4): 33 ns for the push against 73 ns for the grow
/// (docs/benchmarks.md).
///
/// The push leaves the skb's network header on the inner IPv4 header and
/// the skb unmarked as encapsulated; the redirect to the underlay reads
/// neither, and a NIC asked to complete a checksum finds the inner UDP
/// header where `csum_start` says.
pub const CONFIG_F_ENCAP_PUSH_HEAD: u32 = 64;

/// Whether encapsulation pushes the head (`bpf_skb_change_head`) rather
/// than growing the packet (`bpf_skb_adjust_room`), for a packet of inner
/// IP protocol `proto` under `flags`; `gso_size` reads the packet's GSO
/// segment size (three loads in a program), only when the rest allows:
///
/// - only with [`CONFIG_F_ENCAP_PUSH_HEAD`];
/// - never for a segmented (GSO) packet: `adjust_room` alone marks it for
///   tunnel segmentation;
/// - never for TCP: TCP sends clones of the skbs it keeps for
///   retransmission, with their headers released to the clone.
///   `adjust_room` checks only that the header is not shared
///   (`skb_cow_head`) and writes in place; `change_head` copies any clone
///   (`skb_cow`), an allocation and copy per segment.
#[inline(always)]
pub fn encap_pushes_head(flags: u32, proto: u8, gso_size: impl FnOnce() -> u32) -> bool {
    flags & CONFIG_F_ENCAP_PUSH_HEAD != 0 && proto != crate::vxlan::IPPROTO_TCP && gso_size() == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_the_head_only_for_unsegmented_packets_other_than_tcp() {
        let on = CONFIG_F_ENCAP_PUSH_HEAD;
        for (flags, proto, gso, want) in [
            (on, 17, 0, true),     // UDP
            (on, 1, 0, true),      // ICMP
            (on, 47, 0, true),     // GRE, any other protocol
            (on, 6, 0, false),     // TCP: its skbs are clones
            (on, 17, 1400, false), // UDP GSO
            (on, 6, 1448, false),  // TCP GSO
            (0, 17, 0, false),     // encap_resize = "adjust-room"
            (CONFIG_F_PER_PORT, 17, 0, false),
        ] {
            assert_eq!(
                encap_pushes_head(flags, proto, || gso),
                want,
                "flags {flags:#x}, proto {proto}, gso_size {gso}"
            );
        }
    }
}
