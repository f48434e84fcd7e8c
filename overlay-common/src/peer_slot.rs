//! `OVL_PEER_SLOTS`: the `OVL_PEERS` answer for whole /24 blocks, at a
//! slot the programs compute from the address, so that encapsulation and
//! the receive path's anti-spoofing check load an array entry (inlined by
//! the verifier) instead of walking the LPM trie (11 to 12 ns of each,
//! measured with perf).

use crate::PeerValue;

/// Entries of `OVL_PEER_SLOTS` (4,096 of 104 bytes: 416 KiB; a power of
/// two): one per /24 block of a /12.
pub const PEER_SLOTS: u32 = 4096;

/// An entry of `OVL_PEER_SLOTS`: for every address of the /24 block
/// `block`, the peer `OVL_PEERS` answers. overlayd fills a slot only when
/// that answer is the same for the whole block (the longest peer subnet
/// covering it is a /16 to a /24 and no longer one lies inside it), clears
/// the slots of the blocks whose answer a peer change changes before
/// changing `OVL_PEERS` and fills them after, gives a slot only to a block when it
/// is empty or already that block's, and never changes the block and the
/// value in one write (an array write is not atomic). On
/// an empty slot or another block in it, the programs ask `OVL_PEERS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerSlot {
    /// The block's first address (network order bytes, the last one 0).
    pub block: [u8; 4],
    /// Explicit padding to the 8-byte alignment of `value`.
    pub _pad: u32,
    /// The peer, as in `OVL_PEERS`; an all-zero `underlay_ip`: empty.
    pub value: PeerValue,
}

/// The `OVL_PEER_SLOTS` index of address `ip`: the low 12 bits of its /24
/// block number, so the blocks of one /12 never share a slot.
#[inline(always)]
pub const fn peer_slot(ip: [u8; 4]) -> u32 {
    (u32::from_be_bytes(ip) >> 8) & (PEER_SLOTS - 1)
}

/// The /24 block of `ip`: its first address.
#[inline(always)]
pub const fn block_of(ip: [u8; 4]) -> [u8; 4] {
    [ip[0], ip[1], ip[2], 0]
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)], Copy, integers, byte arrays and PeerValue (Pod),
// with explicit padding (the size test pins it).
unsafe impl aya::Pod for PeerSlot {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_slot_has_a_pinned_size() {
        assert_eq!(core::mem::size_of::<PeerSlot>(), 104);
        assert_eq!(core::mem::offset_of!(PeerSlot, value), 8);
        assert!(PEER_SLOTS.is_power_of_two());
    }

    #[test]
    fn peer_slot_is_the_block_number_s_low_bits() {
        assert_eq!(peer_slot([10, 103, 100, 7]), (103 % 16) * 256 + 100);
        assert_eq!(peer_slot([10, 103, 100, 255]), peer_slot([10, 103, 100, 0]));
        assert_eq!(
            peer_slot([10, 119, 100, 7]),
            peer_slot([10, 103, 100, 7]),
            "a /12 apart"
        );
        assert_ne!(peer_slot([10, 104, 100, 7]), peer_slot([10, 103, 100, 7]));
        assert_eq!(block_of([10, 103, 100, 7]), [10, 103, 100, 0]);
    }
}
