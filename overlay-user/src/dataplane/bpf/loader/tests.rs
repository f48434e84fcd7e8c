//! Tests of the pin directory rules and link names.

use super::*;

fn message(pin_dir: &str) -> String {
    check_pin_dir(Path::new(pin_dir)).unwrap_err().to_string()
}

#[test]
fn pin_dir_must_be_below_a_bpffs_root() {
    let root = "pin_dir /sys/fs/bpf is the root of a BPF filesystem, where every tool pins; \
                expected a directory of overlayd's own below it, like /sys/fs/bpf/overlay";
    assert_eq!(message("/sys/fs/bpf"), root);
    for same in ["/sys/fs/bpf/", "/sys/fs/bpf/.", "/sys//fs/bpf"] {
        assert!(
            message(same).contains("is the root of a BPF filesystem"),
            "{same}"
        );
    }
    for bad in [
        "overlay",
        "sys/fs/bpf/overlay",
        "/sys/fs/bpf/overlay/..",
        "/sys/fs/bpf/../bpf",
    ] {
        assert_eq!(
            message(bad),
            format!("pin_dir {bad} is not an absolute path without `..`; expected one like /sys/fs/bpf/overlay"),
        );
    }
    // Through a symlink.
    let link = std::env::temp_dir().join(format!("overlay-pin-link-{}", std::process::id()));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/sys/fs/bpf", &link).unwrap();
    assert!(message(link.to_str().unwrap()).contains("is the root of a BPF filesystem"));
    std::fs::remove_file(&link).unwrap();
    for good in [
        "/sys/fs/bpf/overlay",
        "/sys/fs/bpf/overlay/",
        "/sys/fs/bpf/a/b",
        "/tmp/pins",
    ] {
        check_pin_dir(Path::new(good)).unwrap();
    }
}

#[test]
fn our_link_names() {
    for ours in [
        "underlay-tc",
        "underlay-xdp",
        "bridge-tc",
        "port-1",
        "port-4242",
        "net-7",
    ] {
        assert!(is_our_link(ours), "{ours}");
    }
    for theirs in [
        "port-",
        "port-x",
        "port-1a",
        "net-",
        "net-x",
        "cilium_tc",
        "maps",
        "links",
        "OVL_PEERS",
    ] {
        assert!(!is_our_link(theirs), "{theirs}");
    }
}
