//! Pins (issue 10): maps and links live under `pin_dir/v<MAPS_VERSION>`,
//! pins of another layout are refused with a message that says what to do,
//! and removing our pins leaves every other pin where it is.

use std::path::Path;

#[path = "common/fixture.rs"]
mod fixture;
#[path = "common/packets.rs"]
mod packets;
use fixture::empty_fixture;
use overlay_common::{maps as names, MAPS_VERSION};
use overlay_user::dataplane::bpf::loader;

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn maps_are_pinned_under_the_versioned_dir_and_only_ours_are_removed() {
    let Some(f) = empty_fixture() else {
        return;
    };
    let pin_dir = f.pin_dir.clone();
    assert_eq!(entries(&pin_dir), [format!("v{MAPS_VERSION}")]);
    let mut ours: Vec<String> = loader::MAP_NAMES.iter().map(|s| s.to_string()).collect();
    ours.sort();
    let maps = pin_dir.join(format!("v{MAPS_VERSION}")).join("maps");
    assert_eq!(entries(&maps), ours, "the object pins exactly MAP_NAMES");

    // Another tool's pins beside ours, and one inside our maps directory.
    let mut other = loader::load(None).unwrap();
    let foreign = pin_dir.join("cilium_calls");
    other.take_map(names::PEERS).unwrap().pin(&foreign).unwrap();
    let inside = maps.join("not_ours");
    other.take_map(names::DROPS).unwrap().pin(&inside).unwrap();

    loader::remove_pins(&pin_dir).unwrap();
    assert_eq!(
        entries(&pin_dir),
        ["cilium_calls", &format!("v{MAPS_VERSION}")]
    );
    assert_eq!(entries(&maps), ["not_ours"]);
    assert!(!pin_dir.join(format!("v{MAPS_VERSION}/links")).exists());

    // With the others gone, our directories and pin_dir go too.
    std::fs::remove_file(&inside).unwrap();
    std::fs::remove_file(&foreign).unwrap();
    loader::remove_pins(&pin_dir).unwrap();
    assert!(!pin_dir.exists());
}

#[test]
fn pins_of_another_layout_are_refused() {
    let Some(f) = empty_fixture() else {
        return;
    };
    let old = f.pin_dir.join("old");
    // The layout before versioning: maps/ right in pin_dir, with a value
    // size that is not today's Config (a per-CPU u64 array).
    std::fs::create_dir_all(old.join("maps")).unwrap();
    let mut other = loader::load(None).unwrap();
    let config_pin = old.join("maps").join(names::CONFIG);
    other
        .take_map(names::COUNTERS)
        .unwrap()
        .pin(&config_pin)
        .unwrap();
    let e = loader::ensure_bpffs(&old).unwrap_err().to_string();
    let d = old.display();
    assert_eq!(
        e,
        format!(
            "pin_dir {d} holds pins of another map layout ({d}/maps), not this overlayd's v{MAPS_VERSION}; \
             its programs may still be forwarding. Stop that overlayd and run it once more with --cleanup, \
             or remove {d}/maps (which detaches its programs), then start again"
        )
    );
    // Nothing was created or removed.
    assert_eq!(entries(&old), ["maps"]);
    assert!(config_pin.exists());

    // Another version's directory, and the old one too.
    std::fs::create_dir_all(old.join("v1").join("links")).unwrap();
    let e = loader::check_layout(&old).unwrap_err().to_string();
    assert!(
        e.contains(&format!("({d}/maps, {d}/v1)"))
            && e.contains(&format!("remove {d}/maps and {d}/v1 ")),
        "{e}"
    );
    // Our own version is fine.
    std::fs::remove_file(&config_pin).unwrap();
    for dir in ["maps", "v1/links", "v1"] {
        std::fs::remove_dir(old.join(dir)).unwrap();
    }
    loader::ensure_bpffs(&old).unwrap();
    loader::check_layout(&old).unwrap();
    assert_eq!(entries(&old), [format!("v{MAPS_VERSION}")]);
}
