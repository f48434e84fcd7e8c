//! Installs what the build and the tests need, and says what it installs.
//! When everything is present it does nothing and prints one line.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Debian packages the tests and the demo use.
pub const APT_PACKAGES: &[&str] = &[
    "iproute2",
    "iputils-ping",
    // arping -U: a host announcing a new MAC (tests of changes while running).
    "iputils-arping",
    "tcpdump",
    "tshark",
    "iperf3",
    "ethtool",
    "bpftool",
    "python3",
    // capsh: the fallback test runs overlayd without CAP_BPF.
    "libcap2-bin",
    // The Docker tests run real dockerd instances (with containerd and runc)
    // and import an image made from busybox-static; overlayd's kernel mode
    // adds FORWARD rules with iptables.
    "docker.io",
    "busybox-static",
    "iptables",
    // The cluster store's tests run real etcd members (etcd 3.4) and use
    // etcdctl; openssl makes their TLS certificates. The etcd-client crate
    // builds its gRPC code with protoc, which needs the well-known types
    // (google/protobuf/*.proto) of libprotobuf-dev: protobuf-compiler only
    // recommends it, and recommends are not installed.
    "etcd-server",
    "etcd-client",
    "openssl",
    "protobuf-compiler",
    "libprotobuf-dev",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn ensure() -> Result<()> {
    let mut did = Vec::new();
    if ensure_rust_src()? {
        did.push("rust-src for nightly");
    }
    if ensure_bpf_linker()? {
        did.push("bpf-linker");
    }
    if ensure_apt()? {
        did.push("apt packages");
    }
    if did.is_empty() {
        eprintln!("xtask: toolchain and packages present");
    } else {
        eprintln!("xtask: installed {}", did.join(", "));
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

fn ensure_rust_src() -> Result<bool> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .unwrap_or_default();
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(false);
    }
    // The machine's nightly is kept as it is (bpf-linker is built against its
    // LLVM); only its rust-src component is added.
    eprintln!("xtask: installing the nightly toolchain's rust-src (for -Z build-std=core)");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
        .context("the `nightly` toolchain must be installed (rustup toolchain list)")?;
    Ok(true)
}

fn ensure_bpf_linker() -> Result<bool> {
    // bpf-linker must use the nightly's own LLVM; the nightly ships it as a
    // shared library in its sysroot. Point LLVM_PREFIX at a folder whose
    // lib/libLLVM.so links to it (kept under ~/.cache: the binary's rpath).
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("rustc +nightly --print sysroot")?;
    let lib = PathBuf::from(sysroot.trim()).join("lib");
    let llvm = std::fs::read_dir(&lib)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libLLVM.so."))
        })
        .with_context(|| format!("no libLLVM.so.* in {}", lib.display()))?;
    let major = llvm
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .unwrap_or("")
        .to_string();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let prefix = PathBuf::from(home).join(".cache").join("overlay-llvm");
    std::fs::create_dir_all(prefix.join("lib"))?;
    // lib/libLLVM.so for the build, and the library's own file name (its
    // SONAME) for the dynamic loader at run time through the binary's RUNPATH.
    for name in [
        std::ffi::OsStr::new("libLLVM.so"),
        llvm.file_name().unwrap(),
    ] {
        let link = prefix.join("lib").join(name);
        if std::fs::read_link(&link).ok().as_deref() != Some(llvm.as_path()) {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&llvm, &link)?;
        }
    }
    let have = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if have.contains(BPF_LINKER_VERSION) {
        return Ok(false);
    }
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against {} (about 2 minutes)",
        llvm.display()
    );
    run(Command::new("cargo")
        .env("LLVM_PREFIX", &prefix)
        .env_remove("RUSTUP_TOOLCHAIN")
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{major}")))?;
    Ok(true)
}

fn ensure_apt() -> Result<bool> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_some_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }
    eprintln!("xtask: installing apt packages: {}", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing))?;
    Ok(true)
}
