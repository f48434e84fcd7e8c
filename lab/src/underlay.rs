//! Device settings of the lab's underlay.

use anyhow::Result;

use crate::netns::exec_ok;
use crate::Lab;

impl Lab {
    /// Makes host `i`'s `eth1` receive through GRO, as a NIC does: GRO on
    /// at `eth1`, and TSO off on the bridge's port facing it, because veth
    /// runs its NAPI (where GRO happens) only for frames from a peer
    /// without TSO (the kernel's `veth_skb_is_eligible_for_gro`).
    pub fn underlay_gro_like_a_nic(&self, i: usize) -> Result<()> {
        let h = self.host(i);
        exec_ok(&h.ns, &["ethtool", "-K", &h.underlay_if, "gro", "on"])?;
        exec_ok(
            self.underlay_ns(),
            &["ethtool", "-K", &h.underlay_peer, "tso", "off"],
        )?;
        Ok(())
    }
}
