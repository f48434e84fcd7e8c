//! The BPF_PROG_TEST_RUN fixture: the programs loaded with their maps
//! pinned in a directory of their own (removed on drop), the fixture host of
//! `packets.rs` installed, and runners that return verdict and output.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use overlay_common::programs;
use overlay_user::dataplane::bpf::{loader, maps::Maps};

use super::packets;

pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;
/// TC_ACT_UNSPEC (-1): on to the next program (tcx's TCX_NEXT).
pub const TC_ACT_NEXT: u32 = u32::MAX;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// A `struct __sk_buff` for BPF_PROG_TEST_RUN with `ingress_ifindex` (the
/// u32 at offset 36) and `ifindex` (offset 40: the device the skb is on;
/// 0 for the namespace's loopback) set.
pub fn skb_ctx(ingress_ifindex: u32, ifindex: u32) -> [u8; 192] {
    let mut ctx = [0u8; 192];
    ctx[36..40].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

pub struct Fixture {
    pub ebpf: aya::Ebpf,
    pub maps: Maps,
    pub pin_dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// The programs with the fixture host installed (config `flags`).
pub fn fixture(flags: u32) -> Option<Fixture> {
    let mut f = empty_fixture()?;
    packets::install(&mut f.maps, flags);
    Some(f)
}

/// The programs with empty maps: no config, no peers, no endpoints.
pub fn empty_fixture() -> Option<Fixture> {
    if !overlay_lab::need_root_or_skip() {
        return None;
    }
    static N: AtomicU32 = AtomicU32::new(0);
    let pin_dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/overlay-unit-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    overlay_lab::ensure_bpffs().expect("bpffs mounted");
    loader::ensure_bpffs(&pin_dir).expect("bpffs");
    let mut ebpf = loader::load(Some(&pin_dir)).expect("the verifier accepts every program");
    let maps = Maps::take(&mut ebpf).expect("maps");
    Some(Fixture {
        ebpf,
        maps,
        pin_dir,
    })
}

impl Fixture {
    pub fn run_tc(&mut self, name: &'static str, input: &[u8]) -> (u32, Vec<u8>) {
        self.run_tc_ctx(name, input, None)
    }

    /// Runs a tc program as if the packet came in on interface `ingress_ifindex`.
    pub fn run_tc_from(&mut self, name: &'static str, input: &[u8], ingress_ifindex: u32) -> u32 {
        self.run_tc_ctx(name, input, Some(&skb_ctx(ingress_ifindex, 0)))
            .0
    }

    /// Runs a tc program with the skb on device `ifindex` of the calling
    /// thread's network namespace.
    pub fn run_tc_on(&mut self, name: &'static str, input: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
        self.run_tc_ctx(name, input, Some(&skb_ctx(0, ifindex)))
    }

    /// Runs a tc program with `ctx`, if any, as its `struct __sk_buff`.
    pub fn run_tc_ctx(
        &mut self,
        name: &'static str,
        input: &[u8],
        ctx: Option<&[u8]>,
    ) -> (u32, Vec<u8>) {
        let prog: &mut SchedClassifier = loader::program(&mut self.ebpf, name).unwrap();
        let mut out = vec![0u8; input.len() + 256];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(input),
                data_out: Some(&mut out),
                ctx_in: ctx,
                repeat: 1,
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("test_run of {} bytes: {e}", input.len()));
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    /// The pinned map `name` of this fixture, opened on its own (to write
    /// what the facade never would).
    pub fn pinned_map(&self, name: &str) -> aya::maps::MapData {
        let path = loader::versioned_dir(&self.pin_dir).join("maps").join(name);
        aya::maps::MapData::from_pin(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    pub fn run_xdp(&mut self, input: &[u8]) -> (u32, Vec<u8>) {
        let prog: &mut Xdp = loader::program(&mut self.ebpf, programs::XDP_UNDERLAY).unwrap();
        let mut out = vec![0u8; input.len() + 256];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(input),
                data_out: Some(&mut out),
                repeat: 1,
                ..Default::default()
            })
            .expect("test_run");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    /// Runs a tc program as from `ingress_ifindex`; `None` when the kernel's
    /// test runner refuses the skb (EINVAL), a panic on any other error.
    pub fn try_run_tc_from(
        &mut self,
        name: &'static str,
        input: &[u8],
        ingress_ifindex: u32,
    ) -> Option<u32> {
        let prog: &mut SchedClassifier = loader::program(&mut self.ebpf, name).unwrap();
        let mut ctx = [0u8; 192];
        ctx[36..40].copy_from_slice(&ingress_ifindex.to_ne_bytes());
        let mut out = vec![0u8; input.len() + 256];
        match prog.test_run(TestRunOptions {
            data_in: Some(input),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            repeat: 1,
            ..Default::default()
        }) {
            Ok(r) => Some(r.return_value),
            Err(e) if format!("{e:?}").contains("code: 22") => None,
            Err(e) => panic!("test_run of {} bytes: {e:?}", input.len()),
        }
    }

    /// Runs the XDP program; `None` when the test runner refuses the frame.
    pub fn try_run_xdp(&mut self, input: &[u8]) -> Option<u32> {
        let prog: &mut Xdp = loader::program(&mut self.ebpf, programs::XDP_UNDERLAY).unwrap();
        let mut out = vec![0u8; input.len() + 256];
        match prog.test_run(TestRunOptions {
            data_in: Some(input),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        }) {
            Ok(r) => Some(r.return_value),
            Err(e) if format!("{e:?}").contains("code: 22") => None,
            Err(e) => panic!("XDP test_run of {} bytes: {e:?}", input.len()),
        }
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.maps.stats().unwrap().counters[name]
    }

    pub fn drops(&self, name: &str) -> u64 {
        self.maps.stats().unwrap().drops[name]
    }
}
