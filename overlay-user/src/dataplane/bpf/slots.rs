//! Slot arrays (`OVL_EP_SLOTS`, `OVL_NET_EP_SLOTS`): a hash's entries
//! again at an index the programs compute from the key, so that most
//! lookups are an array load the verifier inlines. The rules of
//! [`overlay_common::EndpointSlot`] live here once: the hash is written
//! before the slot and the slot cleared before the hash entry is removed,
//! a slot is only given to a key when it is empty or already that key's,
//! and at start every slot the hash does not back as it is is cleared.

use aya::maps::{Array, MapData};
use overlay_common::net::{net_endpoint_slot, NetEndpointSlot, NetKey};
use overlay_common::{endpoint_slot, EndpointSlot};

use super::maps::{err, take_map};
use crate::dataplane::DataplaneError;

/// An entry of a slot array: a key and the hash's value for it.
pub(super) trait Slot: aya::Pod + Default + PartialEq {
    /// What the hash is keyed by.
    type Key: PartialEq;
    /// This entry's key.
    fn key(&self) -> Self::Key;
    /// The index at which `key` belongs.
    fn index(key: &Self::Key) -> u32;
}

impl Slot for EndpointSlot {
    type Key = [u8; 4];
    fn key(&self) -> [u8; 4] {
        self.ip
    }
    fn index(key: &[u8; 4]) -> u32 {
        endpoint_slot(*key)
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
}

/// One slot array, owned.
pub(super) struct Slots<S: Slot> {
    array: Array<MapData, S>,
    name: &'static str,
}

impl<S: Slot> Slots<S> {
    /// Takes the array `name` out of a loaded object.
    pub fn take(ebpf: &mut aya::Ebpf, name: &'static str) -> Result<Self, DataplaneError> {
        Ok(Slots {
            array: Array::try_from(take_map(ebpf, name)?).map_err(err(name))?,
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
    /// in the hash.
    pub fn claim(&mut self, s: &S) -> Result<(), DataplaneError> {
        let i = S::index(&s.key());
        let held = self.get(i)?;
        if held != S::default() && held.key() != s.key() {
            return Ok(());
        }
        self.set(i, s)
    }

    /// Empties `key`'s slot if `key` holds it (before the hash entry goes).
    pub fn release(&mut self, key: &S::Key) -> Result<(), DataplaneError> {
        let i = S::index(key);
        if self.get(i)?.key() == *key {
            self.set(i, &S::default())?;
        }
        Ok(())
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
            if S::index(&s.key()) != i || !backed(&s)? {
                self.set(i, &S::default())?;
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
