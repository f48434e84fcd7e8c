//! No harm to the host (issue 10): overlayd removes only the pins it made
//! (a foreign pin in its pin directory survives `--cleanup` and a
//! kernel-mode start), refuses a pin directory that is the root of a BPF
//! filesystem, and refuses the pins of another map layout with a message
//! that says what to do, changing nothing.

use std::path::{Path, PathBuf};
use std::process::Output;

use overlay_lab::{
    agent_config, need_root_or_skip, nsenter_command, AgentOptions, Binaries, Lab, LabSpec,
    Overlayd,
};

use overlay_common::MAPS_VERSION;

fn lab() -> Lab {
    Lab::new(LabSpec {
        hosts: 1,
        containers_per_host: 1,
        ..LabSpec::default()
    })
    .unwrap()
}

fn opts(mode: &str) -> AgentOptions {
    AgentOptions {
        dataplane: Some(mode.into()),
        ..AgentOptions::default()
    }
}

/// Host 1's config for `mode` with `pin_dir` instead of the lab's, written to a file.
fn config_with_pin_dir(lab: &Lab, mode: &str, pin_dir: &Path) -> PathBuf {
    let default = format!("pin_dir = \"{}\"", lab.bpffs_dir().join("h1").display());
    let text = agent_config(lab, 1, &opts(mode));
    assert!(text.contains(&default), "{text}");
    let path = lab.dir().join(format!("h1-{mode}-{}.toml", text.len()));
    let text = text.replace(&default, &format!("pin_dir = \"{}\"", pin_dir.display()));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs overlayd on host 1 to completion (at most 20 s).
fn run_overlayd(lab: &Lab, config: &Path) -> Output {
    let bins = Binaries::locate().unwrap();
    let mut cmd = nsenter_command(&lab.host(1).ns, "timeout");
    cmd.arg("20")
        .arg(&bins.overlayd)
        .arg("--config")
        .arg(config)
        .arg("--socket")
        .arg(lab.dir().join("h1-refused.sock"));
    cmd.output().unwrap()
}

/// `bpftool map create PATH ...`: a pin no overlayd made.
fn foreign_map(path: &Path, value_size: u32) {
    let out = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(path)
        .args(["type", "array", "key", "4", "value"])
        .arg(value_size.to_string())
        .args(["entries", "1", "name", "foreign"])
        .output()
        .unwrap();
    assert!(out.status.success(), "bpftool: {out:?}");
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_foreign_pin_survives_cleanup_and_a_kernel_mode_start() {
    if !need_root_or_skip() {
        return;
    }
    let lab = lab();
    let bins = Binaries::locate().unwrap();
    let pin_dir = lab.bpffs_dir().join("h1");
    std::fs::create_dir_all(&pin_dir).unwrap();
    let foreign = pin_dir.join("other_tool_map");
    foreign_map(&foreign, 8);

    let a = Overlayd::start(
        &lab,
        1,
        &bins,
        &AgentOptions {
            args: vec!["--cleanup".into()],
            ..opts("ebpf")
        },
    )
    .unwrap();
    let versioned = format!("v{MAPS_VERSION}");
    assert_eq!(entries(&pin_dir), ["other_tool_map", versioned.as_str()]);
    assert!(a.stop().unwrap().success());
    assert_eq!(entries(&pin_dir), ["other_tool_map"], "after --cleanup");

    // eBPF without cleanup, then kernel mode: our pins go, the foreign one stays.
    let a = Overlayd::start(&lab, 1, &bins, &opts("ebpf")).unwrap();
    a.stop().unwrap();
    assert_eq!(entries(&pin_dir), ["other_tool_map", versioned.as_str()]);
    let k = Overlayd::start(&lab, 1, &bins, &opts("kernel")).unwrap();
    assert_eq!(
        entries(&pin_dir),
        ["other_tool_map"],
        "after a kernel-mode start"
    );
    k.stop().unwrap();
    assert!(foreign.exists());
}

/// A bpffs of its own for one test, unmounted on drop.
struct PrivateBpffs(PathBuf);

impl PrivateBpffs {
    fn mount(dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a bpffs at {}", dir.display());
        PrivateBpffs(dir)
    }
}

impl Drop for PrivateBpffs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn sys_fs_bpf_is_refused_as_pin_dir() {
    if !need_root_or_skip() {
        return;
    }
    let lab = lab();
    // /sys/fs/bpf itself: refused before anything is touched, in every mode.
    for mode in ["auto", "ebpf", "kernel"] {
        let config = config_with_pin_dir(&lab, mode, Path::new("/sys/fs/bpf"));
        let out = run_overlayd(&lab, &config);
        assert_eq!(out.status.code(), Some(2), "{mode}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!(
                "error: config file {}: pin_dir /sys/fs/bpf is the root of a BPF filesystem, where every \
                 tool pins; expected a directory of overlayd's own below it, like /sys/fs/bpf/overlay\n",
                config.display()
            ),
            "{mode}"
        );
    }
    assert!(!Path::new("/sys/fs/bpf/v3").exists());
}

#[test]
fn another_bpffs_root_is_refused_as_pin_dir() {
    if !need_root_or_skip() {
        return;
    }
    let lab = lab();
    // Any other bpffs mount point, with another tool's pin in it (a bpffs of
    // this test's own, so that nothing else on the machine is at stake).
    let root = PrivateBpffs::mount(lab.dir().join("bpffs"));
    foreign_map(&root.0.join("other_tool_map"), 8);
    let before = entries(&root.0);
    assert!(before.contains(&"other_tool_map".to_string()), "{before:?}");
    for mode in ["kernel", "ebpf"] {
        let config = config_with_pin_dir(&lab, mode, &root.0);
        let out = run_overlayd(&lab, &config);
        assert_eq!(out.status.code(), Some(2), "{mode}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "pin_dir {} is the root of a BPF filesystem",
                root.0.display()
            )),
            "{mode}: {err}"
        );
        assert_eq!(entries(&root.0), before, "{mode}");
    }
}

#[test]
fn pins_of_another_map_layout_are_refused() {
    if !need_root_or_skip() {
        return;
    }
    let lab = lab();
    let pin_dir = lab.bpffs_dir().join("h1");
    // What a release before the versioned layout left: maps/ right in
    // pin_dir, its config of another size.
    std::fs::create_dir_all(pin_dir.join("maps")).unwrap();
    let old = pin_dir.join("maps").join("OVL_CONFIG");
    foreign_map(&old, 40);
    let d = pin_dir.display();
    for mode in ["auto", "ebpf", "kernel"] {
        let config = config_with_pin_dir(&lab, mode, &pin_dir);
        let out = run_overlayd(&lab, &config);
        assert_eq!(out.status.code(), Some(1), "{mode}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!(
                "error: pin_dir {d} holds pins of another map layout ({d}/maps), not this overlayd's \
                 v{MAPS_VERSION}; its programs may still be forwarding. Stop that overlayd and run it \
                 once more with --cleanup, or remove {d}/maps (which detaches its programs), then \
                 start again\n"
            ),
            "{mode}"
        );
        assert_eq!(entries(&pin_dir), ["maps"], "{mode}: nothing changed");
        assert!(old.exists());
    }
    // Once removed, overlayd starts.
    std::fs::remove_file(&old).unwrap();
    std::fs::remove_dir(pin_dir.join("maps")).unwrap();
    let bins = Binaries::locate().unwrap();
    let a = Overlayd::start(&lab, 1, &bins, &opts("ebpf")).unwrap();
    assert_eq!(a.status().unwrap()["mode"], "ebpf");
}
