//! `decap_resize = "auto"`: which way of removing the outer headers is
//! faster on this CPU, timed at start with `BPF_PROG_TEST_RUN` (as the
//! kernel times its RAID6 and XOR routines at boot and keeps the fastest).
//!
//! The two ways cost very differently from one CPU to the next, and no CPU
//! flag tells which wins: on an Intel Xeon with FSRM the two steps measured
//! 39 ns against 53 ns for the one; on an AMD EPYC (Zen 4), also with FSRM,
//! 110 ns against 49 ns (docs/benchmarks.md).

use aya::programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions};
use aya::Ebpf;
use overlay_common::programs;

use super::loader;
use crate::dataplane::DataplaneError;
use crate::model::config::DecapResize;

/// Single runs per variant and round; rounds alternate the variants.
const RUNS: u32 = 200;
const ROUNDS: u32 = 5;
/// The two steps are taken only when at least this much faster (a tie,
/// within the timer's noise, keeps the simpler single call).
const MARGIN: f64 = 0.95;

/// What the timing found, for the log and `progbench`. Both times include
/// the test runner's own cost per run (the same for both).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResizeTiming {
    /// `bpf_skb_adjust_room(-50)` alone, ns per run (the fastest round's mean).
    pub one_step_ns: f64,
    /// `(+14)` then `(-64)`, ns per run (the fastest round's mean).
    pub two_step_ns: f64,
}

impl ResizeTiming {
    /// Whether decapsulation should resize in two steps.
    pub fn two_step(&self) -> bool {
        self.two_step_ns < self.one_step_ns * MARGIN
    }
}

/// A VXLAN frame as the underlay delivers it: outer Ethernet, IPv4, UDP
/// and VXLAN headers, then an inner Ethernet, IPv4 and TCP header (the
/// resize helpers look at the outer IPv4 header only).
fn vxlan_frame() -> Vec<u8> {
    let mut f = Vec::with_capacity(104);
    // Outer Ethernet: to and from locally administered MACs, IPv4.
    f.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
    // Outer IPv4: 20 bytes, total 90, UDP, 192.0.2.1 -> 192.0.2.2.
    f.extend_from_slice(&[
        0x45, 0, 0, 90, 0, 0, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2,
    ]);
    // UDP to 4789, length 70, no checksum; VXLAN with the I flag, VNI 1.
    f.extend_from_slice(&[0x12, 0xb5, 0x12, 0xb5, 0, 70, 0, 0]);
    f.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 1, 0]);
    // Inner Ethernet, IPv4 (40 bytes, TCP) and a TCP header.
    f.extend_from_slice(&[2, 0, 0, 0, 0, 4, 2, 0, 0, 0, 0, 3, 0x08, 0x00]);
    f.extend_from_slice(&[
        0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 1, 1,
    ]);
    f.extend_from_slice(&[
        0x30, 0x39, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0xff, 0xff,
    ]);
    f.extend_from_slice(&[0, 0, 0, 0]);
    f
}

/// Loads `name` unless it is loaded; true when this call loaded it.
fn ensure_loaded(ebpf: &mut Ebpf, name: &'static str) -> Result<bool, DataplaneError> {
    let prog: &mut SchedClassifier = loader::program(ebpf, name)?;
    match prog.load() {
        Ok(()) => Ok(true),
        Err(ProgramError::AlreadyLoaded) => Ok(false),
        Err(source) => Err(DataplaneError::Program {
            program: name,
            source,
        }),
    }
}

/// The mean of `RUNS` single runs of `name` on `frame`, in ns.
fn mean_ns(ebpf: &mut Ebpf, name: &'static str, frame: &[u8]) -> Result<f64, DataplaneError> {
    let prog: &mut SchedClassifier = loader::program(ebpf, name)?;
    let mut out = vec![0u8; frame.len() + 128];
    let mut total = 0u128;
    for _ in 0..RUNS {
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat: 1,
                ..Default::default()
            })
            .map_err(|source| DataplaneError::Program {
                program: name,
                source,
            })?;
        // TC_ACT_OK: the resize worked; anything else is no measurement.
        if r.return_value != 0 {
            return Err(DataplaneError::Other(format!(
                "{name} returned {} on a test frame, expected 0 (TC_ACT_OK)",
                r.return_value
            )));
        }
        total += r.duration.as_nanos();
    }
    Ok(total as f64 / f64::from(RUNS))
}

/// Times both ways of removing the outer headers on a VXLAN frame (about
/// 2,000 test runs, a few milliseconds). The two timing programs are
/// loaded for it and unloaded after, unless they were loaded before.
pub fn time_decap_resize(ebpf: &mut Ebpf) -> Result<ResizeTiming, DataplaneError> {
    let names = [
        programs::BENCH_ADJUST_SHRINK,
        programs::BENCH_ADJUST_TWO_STEP,
    ];
    let mut loaded_here = Vec::new();
    for name in names {
        if ensure_loaded(ebpf, name)? {
            loaded_here.push(name);
        }
    }
    let frame = vxlan_frame();
    let mut best = [f64::MAX; 2];
    let timed = (0..ROUNDS).try_for_each(|_| {
        for (i, name) in names.into_iter().enumerate() {
            best[i] = best[i].min(mean_ns(ebpf, name, &frame)?);
        }
        Ok::<_, DataplaneError>(())
    });
    for name in loaded_here {
        if let Ok(prog) = loader::program::<SchedClassifier>(ebpf, name) {
            if let Err(e) = prog.unload() {
                log::debug!("unloading {name}: {e}");
            }
        }
    }
    timed?;
    Ok(ResizeTiming {
        one_step_ns: best[0],
        two_step_ns: best[1],
    })
}

/// Whether decapsulation resizes in two steps under `setting`, timed for
/// `auto` (one step when the timing fails); the choice is logged.
pub(super) fn decap_two_step(setting: DecapResize, ebpf: &mut Ebpf) -> bool {
    let steps = |two: bool| if two { "two steps" } else { "one step" };
    if let Some(two) = setting.fixed() {
        log::info!(
            "decapsulation resizes in {} (decap_resize = {setting})",
            steps(two)
        );
        return two;
    }
    match time_decap_resize(ebpf) {
        Ok(t) => {
            log::info!(
                "decapsulation resizes in {} (decap_resize = auto: measured {:.0} ns for one step, {:.0} ns for two)",
                steps(t.two_step()),
                t.one_step_ns,
                t.two_step_ns
            );
            t.two_step()
        }
        Err(e) => {
            log::warn!(
                "decapsulation resizes in one step (decap_resize = auto, but timing the two ways failed: {e})"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_steps_only_when_clearly_faster() {
        let t = |one, two| ResizeTiming {
            one_step_ns: one,
            two_step_ns: two,
        };
        assert!(t(53.0, 39.0).two_step(), "Xeon with FSRM");
        assert!(!t(49.0, 110.0).two_step(), "EPYC (Zen 4)");
        assert!(!t(50.0, 48.0).two_step(), "within 5 %: one step");
    }

    #[test]
    fn the_test_frame_is_vxlan_of_its_stated_lengths() {
        let f = vxlan_frame();
        assert_eq!(f.len(), 104);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]) as usize, f.len() - 14);
        assert_eq!(u16::from_be_bytes([f[38], f[39]]) as usize, f.len() - 34);
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), 4789);
        assert_eq!(u16::from_be_bytes([f[66], f[67]]) as usize, f.len() - 64);
    }
}
