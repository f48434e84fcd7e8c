//! `cargo xtask fuzz`: the full run of the BPF fuzz test (issue 10): every
//! program against the host-side reference model on 100,000 packets per
//! side by default, seeded and reproducible. `cargo xtask test` runs the
//! same test with 4,000.

use anyhow::Result;

/// Runs `overlay-user`'s `bpf_fuzz` test with `packets` per side and `seed`.
pub fn run(packets: u64, seed: u64) -> Result<()> {
    eprintln!("xtask: fuzzing every program with {packets} packets per side, seed {seed}");
    let mut c = crate::cargo();
    c.args([
        "test",
        "-p",
        "overlay-user",
        "--test",
        "bpf_fuzz",
        "--",
        "--nocapture",
    ]);
    c.env("OVERLAY_FUZZ_PACKETS", packets.to_string());
    c.env("OVERLAY_FUZZ_SEED", seed.to_string());
    crate::run(c)
}
