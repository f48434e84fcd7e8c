//! Builds the eBPF object (overlay-ebpf) with the nightly toolchain and
//! bpf-linker, and leaves it in OUT_DIR for `include_bytes_aligned!`.
//!
//! `cargo xtask` installs what this needs (nightly's rust-src, bpf-linker).

use std::{env, path::PathBuf, process::Command};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("workspace root").to_path_buf();
    let ebpf = root.join("overlay-ebpf");
    let common = root.join("overlay-common");
    for p in [
        ebpf.join("src"),
        ebpf.join("Cargo.toml"),
        ebpf.join("Cargo.lock"),
        common.join("src"),
        common.join("Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let target_dir = root.join("target").join("ebpf");

    let mut cmd = Command::new("rustup");
    cmd.current_dir(&ebpf).args([
        "run",
        "nightly",
        "cargo",
        "build",
        "--release",
        "--locked",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--target-dir",
    ]);
    cmd.arg(&target_dir);
    // Nothing of the outer (stable, host) build may leak into the BPF build.
    for (key, _) in env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO")
            || k.starts_with("RUSTC")
            || k.starts_with("RUSTUP")
            || k == "RUSTFLAGS"
            || k == "RUSTDOCFLAGS"
        {
            cmd.env_remove(&key);
        }
    }
    let status = cmd.status().expect(
        "running `rustup run nightly cargo build` for overlay-ebpf (run `cargo xtask setup`)",
    );
    if !status.success() {
        panic!(
            "building overlay-ebpf failed ({status}); `cargo xtask setup` installs nightly rust-src and bpf-linker"
        );
    }
    let obj = target_dir
        .join("bpfel-unknown-none")
        .join("release")
        .join("overlay");
    std::fs::copy(&obj, out_dir.join("overlay.o"))
        .unwrap_or_else(|e| panic!("copying {}: {e}", obj.display()));
}
