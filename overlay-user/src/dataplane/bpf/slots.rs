//! Slot arrays (`OVL_EP_SLOTS`, `OVL_NET_EP_SLOTS`, `OVL_NET_PORT_SLOTS`,
//! `OVL_PEER_SLOTS`): a hash's entries
//! again at an index the programs compute from the key, so that most
//! lookups are an array load the verifier inlines. The rules of
//! [`overlay_common::EndpointSlot`] live here once: the hash is written
//! before the slot and the slot cleared before the hash entry is removed,
//! a slot is only given to a key when it is empty or already that key's,
//! and at start every slot the hash does not back as it is is cleared.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use aya::maps::{Array, MapData};
use ipnet::Ipv4Net;
use overlay_common::net::{net_endpoint_slot, net_port_slot, NetEndpointSlot, NetKey, NetPortSlot};
use overlay_common::peer_slot::{peer_slot, PeerSlot};
use overlay_common::{endpoint_slot, EndpointSlot, PeerValue};

use crate::dataplane::DataplaneError;

/// Turns a map error into the dataplane's, naming the map.
pub(super) fn err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, source }
}

/// An entry of a slot array: a key and the hash's value for it.
pub(super) trait Slot: aya::Pod + Default + PartialEq {
    /// What the hash is keyed by.
    type Key: PartialEq;
    /// This entry's key.
    fn key(&self) -> Self::Key;
    /// The index at which `key` belongs.
    fn index(key: &Self::Key) -> u32;
    /// This entry with a key no lookup at its index can match (the
    /// complement of its own, which belongs elsewhere): what the slot holds
    /// while its value is written or kept for a program still reading it.
    fn without_key(&self) -> Self;
}

impl Slot for EndpointSlot {
    type Key = [u8; 4];
    fn key(&self) -> [u8; 4] {
        self.ip
    }
    fn index(key: &[u8; 4]) -> u32 {
        endpoint_slot(*key)
    }
    fn without_key(&self) -> Self {
        EndpointSlot {
            ip: self.ip.map(|b| !b),
            ..*self
        }
    }
}

impl Slot for NetEndpointSlot {
    type Key = NetKey;
    fn key(&self) -> NetKey {
        self.key
    }
    fn index(key: &NetKey) -> u32 {
        net_endpoint_slot(key.ip)
    }
    fn without_key(&self) -> Self {
        NetEndpointSlot {
            key: NetKey {
                ip: self.key.ip.map(|b| !b),
                ..self.key
            },
            ..*self
        }
    }
}

impl Slot for NetPortSlot {
    type Key = u32;
    fn key(&self) -> u32 {
        self.ifindex
    }
    fn index(key: &u32) -> u32 {
        net_port_slot(*key)
    }
    fn without_key(&self) -> Self {
        NetPortSlot {
            ifindex: !self.ifindex,
            ..*self
        }
    }
}

impl Slot for PeerSlot {
    type Key = [u8; 4];
    fn key(&self) -> [u8; 4] {
        self.block
    }
    fn index(key: &[u8; 4]) -> u32 {
        peer_slot(*key)
    }
    fn without_key(&self) -> Self {
        PeerSlot {
            block: self.block.map(|b| !b),
            ..*self
        }
    }
}

/// The /24 blocks whose `OVL_PEER_SLOTS` entry a change of peer `subnet`
/// can change: all of a /16 to a /24, the one a longer subnet lies in, none
/// of a shorter one (its blocks are never slotted for it, and a longer
/// subnet's stay that one's).
pub(super) fn peer_blocks(subnet: Ipv4Net) -> Vec<Ipv4Addr> {
    let len = subnet.prefix_len();
    if len < 16 {
        return Vec::new();
    }
    let first = u32::from(subnet.network()) & 0xffff_ff00;
    let count = 1u32 << 24u8.saturating_sub(len);
    (0..count)
        .map(|i| Ipv4Addr::from(first + (i << 8)))
        .collect()
}

/// What `OVL_PEERS` (whose content is `table`) answers for every address
/// of the /24 block `block`, when that is one answer worth a slot: the
/// longest subnet covering the block, if it is a /16 to a /24 and no
/// longer subnet lies inside the block.
pub(super) fn block_answer(
    table: &BTreeMap<Ipv4Net, PeerValue>,
    block: Ipv4Addr,
) -> Option<PeerValue> {
    let last = Ipv4Addr::from(u32::from(block) | 0xff);
    let inside = Ipv4Net::new(block, 25).ok()?..=Ipv4Net::new(last, 32).ok()?;
    if table.range(inside).any(|(n, _)| n.prefix_len() > 24) {
        return None;
    }
    (16..=24).rev().find_map(|len| {
        let covering = Ipv4Net::new(block, len).ok()?.trunc();
        table.get(&covering).copied()
    })
}

/// One slot array, owned.
pub(super) struct Slots<S: Slot> {
    array: Array<MapData, S>,
    name: &'static str,
}

impl<S: Slot> Slots<S> {
    /// The array `name`, taken out of a loaded object.
    pub fn new(map: aya::maps::Map, name: &'static str) -> Result<Self, DataplaneError> {
        Ok(Slots {
            array: Array::try_from(map).map_err(err(name))?,
            name,
        })
    }

    fn get(&self, i: u32) -> Result<S, DataplaneError> {
        self.array.get(&i, 0).map_err(err(self.name))
    }

    fn set(&mut self, i: u32, s: &S) -> Result<(), DataplaneError> {
        self.array.set(i, s, 0).map_err(err(self.name))
    }

    /// Puts `s` (already in the hash) in its slot if that is empty or
    /// holds `s`'s key; another key keeps its slot, and `s` is then found
    /// in the hash. An array write is not atomic, so no write changes a
    /// slot's key and its value at once: the key is taken away (the old
    /// value kept for a program still reading it), the new value written
    /// without the key, and the key put back alone. A program that finds
    /// the key thus reads a value written before it.
    pub fn claim(&mut self, s: &S) -> Result<(), DataplaneError> {
        let i = S::index(&s.key());
        let held = self.get(i)?;
        if held == *s {
            return Ok(());
        }
        if held != S::default() {
            if held.key() != s.key() {
                return Ok(());
            }
            self.set(i, &held.without_key())?;
        }
        self.set(i, &s.without_key())?;
        self.set(i, s)
    }

    /// Empties `key`'s slot if `key` holds it (before the hash entry goes):
    /// first the key alone, then the value.
    pub fn release(&mut self, key: &S::Key) -> Result<(), DataplaneError> {
        let i = S::index(key);
        let held = self.get(i)?;
        if held != S::default() && held.key() == *key {
            self.clear(i, &held)?;
        }
        Ok(())
    }

    /// Empties slot `i`, which holds `held`: the key first, then the value.
    fn clear(&mut self, i: u32, held: &S) -> Result<(), DataplaneError> {
        self.set(i, &held.without_key())?;
        self.set(i, &S::default())
    }

    /// Clears every slot that is in the wrong place or whose entry
    /// `backed` (the hash's answer) does not confirm: left by a run that
    /// stopped between the two writes, or by one without slots. Returns
    /// how many. Clearing is always safe: the programs then use the hash.
    pub fn sweep(
        &mut self,
        mut backed: impl FnMut(&S) -> Result<bool, DataplaneError>,
    ) -> Result<usize, DataplaneError> {
        let mut cleared = 0;
        for i in 0..self.array.len() {
            let s = self.get(i)?;
            if s == S::default() {
                continue;
            }
            if S::index(&s.key()) != i {
                // A key that does not belong here (a placeholder left by a
                // run that stopped mid-write): no lookup matches it.
                self.set(i, &S::default())?;
                cleared += 1;
            } else if !backed(&s)? {
                self.clear(i, &s)?;
                cleared += 1;
            }
        }
        Ok(cleared)
    }
}

/// `map.get(key)`, with a missing key as `None`.
pub(super) fn lookup<K: aya::Pod, V: aya::Pod>(
    map: &aya::maps::HashMap<MapData, K, V>,
    key: &K,
    name: &'static str,
) -> Result<Option<V>, DataplaneError> {
    match map.get(key, 0) {
        Ok(v) => Ok(Some(v)),
        Err(aya::maps::MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(err(name)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn peer(host: u8) -> PeerValue {
        PeerValue {
            underlay_ip: [192, 168, 56, host],
            ..Default::default()
        }
    }

    #[test]
    fn blocks_of_a_peer_subnet() {
        assert_eq!(
            peer_blocks(net("10.103.100.0/24")),
            vec![ip("10.103.100.0")]
        );
        assert_eq!(
            peer_blocks(net("10.103.100.128/26")),
            vec![ip("10.103.100.0")]
        );
        assert_eq!(
            peer_blocks(net("10.103.100.7/32")),
            vec![ip("10.103.100.0")]
        );
        let b = peer_blocks(net("10.103.4.0/22"));
        assert_eq!(
            b,
            ["10.103.4.0", "10.103.5.0", "10.103.6.0", "10.103.7.0"].map(ip)
        );
        assert_eq!(peer_blocks(net("10.103.0.0/16")).len(), 256);
        assert_eq!(peer_blocks(net("10.103.0.0/16"))[255], ip("10.103.255.0"));
        assert!(peer_blocks(net("10.96.0.0/12")).is_empty());
    }

    #[test]
    fn a_block_gets_the_longest_covering_subnet_unless_a_longer_one_is_inside() {
        let mut t = BTreeMap::new();
        let b = ip("10.103.100.0");
        assert_eq!(block_answer(&t, b), None, "no peer");
        t.insert(net("10.0.0.0/8"), peer(1));
        assert_eq!(block_answer(&t, b), None, "only a /8: left to the trie");
        t.insert(net("10.103.0.0/16"), peer(2));
        assert_eq!(block_answer(&t, b), Some(peer(2)));
        t.insert(net("10.103.100.0/22"), peer(3));
        assert_eq!(block_answer(&t, b), Some(peer(3)));
        t.insert(net("10.103.100.0/24"), peer(4));
        assert_eq!(block_answer(&t, b), Some(peer(4)));
        assert_eq!(block_answer(&t, ip("10.103.101.0")), Some(peer(3)));
        assert_eq!(block_answer(&t, ip("10.103.104.0")), Some(peer(2)));
        // A longer subnet inside: the trie answers two ways in the block.
        t.insert(net("10.103.100.192/26"), peer(5));
        assert_eq!(block_answer(&t, b), None);
        assert_eq!(block_answer(&t, ip("10.103.101.0")), Some(peer(3)));
        t.remove(&net("10.103.100.192/26"));
        t.insert(net("10.103.100.255/32"), peer(6));
        assert_eq!(block_answer(&t, b), None, "a /32 at the block's end");
        t.remove(&net("10.103.100.255/32"));
        t.insert(net("10.103.99.255/32"), peer(6));
        assert_eq!(
            block_answer(&t, b),
            Some(peer(4)),
            "next door does not count"
        );
    }
}
