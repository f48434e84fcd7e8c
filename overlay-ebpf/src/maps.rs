//! The maps, pinned by name so that overlayd's restarts keep their content.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray},
};
use overlay_common::{
    endpoint_slot,
    peer_slot::{block_of, peer_slot, PeerSlot, PEER_SLOTS as PEER_SLOTS_LEN},
    Config, Counter, DropReason, EndpointSlot, EndpointValue, PeerKey, PeerValue, ENDPOINT_SLOTS,
    MAX_ENDPOINTS, MAX_PEERS,
};

#[map(name = "OVL_CONFIG")]
pub static CONFIG: Array<Config> = Array::pinned(1, 0);

#[map(name = "OVL_PEERS")]
pub static PEERS: LpmTrie<PeerKey, PeerValue> = LpmTrie::pinned(MAX_PEERS, BPF_F_NO_PREALLOC);

#[map(name = "OVL_PEER_SLOTS")]
pub static PEER_SLOTS: Array<PeerSlot> = Array::pinned(PEER_SLOTS_LEN, 0);

#[map(name = "OVL_PEER_HOSTS")]
pub static PEER_HOSTS: HashMap<[u8; 4], u32> = HashMap::pinned(MAX_PEERS, 0);

#[map(name = "OVL_ENDPOINTS")]
pub static ENDPOINTS: HashMap<[u8; 4], EndpointValue> = HashMap::pinned(MAX_ENDPOINTS, 0);

#[map(name = "OVL_EP_SLOTS")]
pub static EP_SLOTS: Array<EndpointSlot> = Array::pinned(ENDPOINT_SLOTS, 0);

#[map(name = "OVL_COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(Counter::COUNT, 0);

#[map(name = "OVL_DROPS")]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::pinned(DropReason::COUNT, 0);

#[map(name = "OVL_PORT_LEARNED")]
pub static PORT_LEARNED: HashMap<u32, u64> = HashMap::pinned(MAX_ENDPOINTS, 0);

/// This host's settings, or `None` before overlayd wrote them (the
/// programs then leave every packet to the kernel and count it).
#[inline(always)]
pub fn config() -> Option<&'static Config> {
    match CONFIG.get(0) {
        Some(c) if c.underlay_ifindex != 0 => Some(c),
        _ => {
            count(Counter::NoConfigPass, 1);
            None
        }
    }
}

/// Adds `n` to a per-CPU counter.
#[inline(always)]
pub fn count(c: Counter, n: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: a per-CPU array slot is only touched by this CPU, and the
        // pointer is valid for the program's run.
        unsafe { *p += n };
    }
}

/// Counts one drop under `reason`.
#[inline(always)]
pub fn count_drop(reason: DropReason) {
    if let Some(p) = DROPS.get_ptr_mut(reason as u32) {
        // SAFETY: as in `count`.
        unsafe { *p += 1 };
    }
}

/// True when the underlay source address is a known peer host.
#[inline(always)]
pub fn is_peer_host(ip: &[u8; 4]) -> bool {
    // SAFETY: the value is only read for presence; no reference escapes.
    unsafe { PEER_HOSTS.get(ip).is_some() }
}

/// The peer entry whose subnet holds `ip`, if any: from the slot of its
/// /24 block in `OVL_PEER_SLOTS` (an array load the verifier inlines) when
/// overlayd filled it for that block, else from the `OVL_PEERS` LPM trie.
#[inline(always)]
pub fn peer_of(ip: [u8; 4]) -> Option<&'static PeerValue> {
    if let Some(s) = PEER_SLOTS.get(peer_slot(ip)) {
        if u32::from_ne_bytes(s.block) == u32::from_ne_bytes(block_of(ip))
            && u32::from_ne_bytes(s.value.underlay_ip) != 0
        {
            return Some(&s.value);
        }
    }
    PEERS.get(aya_ebpf::maps::lpm_trie::Key::new(32, ip))
}

/// The endpoint of local container address `ip`: from its slot in
/// `OVL_EP_SLOTS` (an array load the verifier inlines) when overlayd put it
/// there, else from `OVL_ENDPOINTS` (a hash lookup: endpoints the
/// from-container program learned, and the loser of a shared slot).
#[inline(always)]
pub fn endpoint(ip: &[u8; 4]) -> Option<EndpointValue> {
    if let Some(s) = EP_SLOTS.get(endpoint_slot(*ip)) {
        if u32::from_ne_bytes(s.ip) == u32::from_ne_bytes(*ip) && s.value.ifindex != 0 {
            return Some(s.value);
        }
    }
    // SAFETY: the value is copied out at once.
    unsafe { ENDPOINTS.get(ip) }.copied()
}
