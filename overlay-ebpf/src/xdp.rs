//! XDP on the underlay interface: early verdicts on VXLAN frames.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use overlay_common::{Counter, DropReason};

use crate::{
    maps::{self, count, count_drop},
    underlay::{classify, Underlay},
};

#[xdp]
pub fn ovl_xdp_underlay(ctx: XdpContext) -> u32 {
    match try_xdp_underlay(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            count_drop(reason);
            xdp_action::XDP_DROP
        }
    }
}

#[inline(always)]
fn try_xdp_underlay(ctx: &XdpContext) -> Result<u32, DropReason> {
    let Some(cfg) = maps::config() else {
        return Ok(xdp_action::XDP_PASS);
    };
    match classify(ctx, cfg)? {
        Underlay::Other => count(Counter::XdpOtherPass, 1),
        Underlay::Vxlan { .. } | Underlay::Net { .. } => count(Counter::XdpVxlanPass, 1),
    }
    Ok(xdp_action::XDP_PASS)
}
