//! The overlay dataplane: one thin entry function per attach point, each
//! calling a `try_*` function that returns `Result<Verdict, DropReason>`;
//! one match turns that into the program's return code and counts every
//! drop under its reason (as Cilium's `bpf_overlay.c` does).
#![no_std]
#![no_main]

mod maps;
mod net;
mod observe;
mod packet;
mod tc;
mod underlay;
mod xdp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

/// Baselines for `cargo xtask bench`: the fixed cost of one BPF_PROG_TEST_RUN
/// iteration (timer, context), subtracted from the programs' own times.
/// Never attached by overlayd.
mod bench {
    use aya_ebpf::{
        bindings::{
            bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, xdp_action::XDP_PASS, BPF_F_ADJ_ROOM_FIXED_GSO,
            TC_ACT_OK, TC_ACT_SHOT,
        },
        helpers::generated::bpf_skb_change_head,
        macros::{classifier, xdp},
        programs::{TcContext, XdpContext},
    };

    #[classifier]
    pub fn ovl_bench_noop_tc(_ctx: TcContext) -> i32 {
        TC_ACT_OK
    }

    #[xdp]
    pub fn ovl_bench_noop_xdp(_ctx: XdpContext) -> u32 {
        XDP_PASS
    }

    /// The `bpf_skb_adjust_room` call of encapsulation alone (+50 bytes,
    /// the same flags), to attribute the encapsulation's cost.
    #[classifier]
    pub fn ovl_bench_adjust_grow(ctx: TcContext) -> i32 {
        match ctx.adjust_room(50, BPF_ADJ_ROOM_MAC, crate::tc::ENCAP_FLAGS) {
            Ok(()) => TC_ACT_OK,
            Err(_) => TC_ACT_SHOT,
        }
    }

    /// The `bpf_skb_adjust_room` call of decapsulation alone (-50 bytes).
    #[classifier]
    pub fn ovl_bench_adjust_shrink(ctx: TcContext) -> i32 {
        match ctx.adjust_room(-50, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO as u64) {
            Ok(()) => TC_ACT_OK,
            Err(_) => TC_ACT_SHOT,
        }
    }

    /// The `bpf_skb_change_head(50)` of encapsulation alone
    /// (`encap_resize = "head"`, a packet that is not segmented).
    #[classifier]
    pub fn ovl_bench_push_head(ctx: TcContext) -> i32 {
        // SAFETY: plain helper call on the program's own skb, no flags.
        match unsafe { bpf_skb_change_head(ctx.skb.skb, 50, 0) } {
            0 => TC_ACT_OK,
            _ => TC_ACT_SHOT,
        }
    }

    /// The two calls of `decap_resize = "two-step"` alone (+14, then -64).
    #[classifier]
    pub fn ovl_bench_adjust_two_step(ctx: TcContext) -> i32 {
        let flags = BPF_F_ADJ_ROOM_FIXED_GSO as u64;
        match ctx
            .adjust_room(14, BPF_ADJ_ROOM_MAC, flags)
            .and_then(|()| ctx.adjust_room(-64, BPF_ADJ_ROOM_MAC, flags))
        {
            Ok(()) => TC_ACT_OK,
            Err(_) => TC_ACT_SHOT,
        }
    }
}
