//! The endpoint hop's device behind one interface, [`EndpointDevice`]:
//! what the BPF dataplane does to a container's host-side device when it
//! starts serving it (`veth_gro`, `big_tcp`), and to the underlay. Today
//! the only implementation is [`Veth`]; a netkit endpoint (kernels with
//! `CONFIG_NETKIT`) would be a second one, chosen where [`for_config`] is.
//! With `big_tcp`, only our end and the underlay are raised here: see
//! [`Veth::prepare`].
//!
//! Nothing is restored when an endpoint goes: the device goes with its
//! container. With a setting off, devices are left as they are, except
//! that BIG TCP sizes of our own value (185000) are put back to 64 KB;
//! GRO a previous run turned on stays on until the veth is re-created.

use crate::dataplane::DataplaneError;
use crate::model::config::{Config, BIG_TCP_SIZE};
use crate::sys::netlink::Handle;
use crate::sys::offload::{self, GSO_LEGACY_MAX_SIZE};

/// What the dataplane does to an endpoint's device and to the underlay.
#[async_trait::async_trait]
pub trait EndpointDevice: Send + Sync {
    /// The device kind this implementation serves ("veth").
    fn kind(&self) -> &'static str;
    /// Prepares the host-side device `ifname` (ifindex `index`) of an
    /// endpoint the dataplane now serves.
    async fn prepare(
        &self,
        handle: &Handle,
        index: u32,
        ifname: &str,
    ) -> Result<(), DataplaneError>;
    /// Prepares the underlay interface.
    async fn prepare_underlay(
        &self,
        handle: &Handle,
        index: u32,
        ifname: &str,
    ) -> Result<(), DataplaneError>;
}

/// A veth pair: the container's end in its namespace, ours on the bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Veth {
    /// `veth_gro`: NAPI GRO on our end.
    pub gro: bool,
    /// `big_tcp`: IPv4 GSO/GRO maximum sizes of our end (and the underlay).
    pub big_tcp: bool,
}

/// The endpoint device for `cfg`.
pub fn for_config(cfg: &Config) -> Box<dyn EndpointDevice> {
    Box::new(Veth {
        gro: cfg.veth_gro,
        big_tcp: cfg.big_tcp,
    })
}

fn failed(ifname: &str, e: impl ToString) -> DataplaneError {
    DataplaneError::Interface {
        name: ifname.to_string(),
        reason: e.to_string(),
    }
}

/// The IPv4 sizes a device should get: [`BIG_TCP_SIZE`] with `big_tcp`;
/// without, 64 KB again only where our own size is found (a size someone
/// else chose stays), else nothing.
fn wanted_size(big_tcp: bool, now: &offload::IpSizes) -> Option<u32> {
    match (big_tcp, now.gso_ipv4_max) {
        (true, _) => Some(BIG_TCP_SIZE),
        (false, Some(BIG_TCP_SIZE)) => Some(GSO_LEGACY_MAX_SIZE),
        (false, _) => None,
    }
}

/// Reads the IPv4 sizes of `index` and sets them as [`wanted_size`] says.
async fn apply_sizes(
    handle: &Handle,
    index: u32,
    ifname: &str,
    big_tcp: bool,
) -> Result<(), DataplaneError> {
    let now = offload::ip_sizes(handle, index)
        .await
        .map_err(|e| failed(ifname, e))?;
    let Some(size) = wanted_size(big_tcp, &now) else {
        return Ok(());
    };
    if now.gso_ipv4_max == Some(size) && now.gro_ipv4_max == Some(size) {
        return Ok(());
    }
    offload::set_ip_sizes(handle, index, size)
        .await
        .map_err(|e| failed(ifname, e))
}

#[async_trait::async_trait]
impl EndpointDevice for Veth {
    fn kind(&self) -> &'static str {
        "veth"
    }

    /// GRO on our end with `gro`; the IPv4 sizes of our end only. The
    /// container's end (whose size decides how large its TCP sends are)
    /// lives in its namespace: reaching it from here with
    /// `IFLA_TARGET_NETNSID` would not change it but move the link of that
    /// index in our namespace there (the kernel's do_setlink). It is left
    /// to whoever makes the veth.
    async fn prepare(
        &self,
        handle: &Handle,
        index: u32,
        ifname: &str,
    ) -> Result<(), DataplaneError> {
        if self.gro {
            offload::set_gro(ifname, true).map_err(|e| failed(ifname, e))?;
        }
        apply_sizes(handle, index, ifname, self.big_tcp).await
    }

    async fn prepare_underlay(
        &self,
        handle: &Handle,
        index: u32,
        ifname: &str,
    ) -> Result<(), DataplaneError> {
        apply_sizes(handle, index, ifname, self.big_tcp).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_raised_with_big_tcp_and_only_ours_put_back() {
        let at = |gso| offload::IpSizes {
            gso_ipv4_max: gso,
            ..Default::default()
        };
        assert_eq!(wanted_size(true, &at(Some(65536))), Some(BIG_TCP_SIZE));
        assert_eq!(wanted_size(false, &at(Some(BIG_TCP_SIZE))), Some(65536));
        assert_eq!(wanted_size(false, &at(Some(65536))), None);
        assert_eq!(wanted_size(false, &at(Some(100_000))), None);
        assert_eq!(wanted_size(false, &at(None)), None);
    }
}
