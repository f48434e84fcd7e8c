//! The overlay dataplane: one thin entry function per attach point, each
//! calling a `try_*` function that returns `Result<Verdict, DropReason>`;
//! one match turns that into the program's return code and counts every
//! drop under its reason (as Cilium's `bpf_overlay.c` does).
#![no_std]
#![no_main]

mod maps;
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
        bindings::{xdp_action::XDP_PASS, TC_ACT_OK},
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
}
