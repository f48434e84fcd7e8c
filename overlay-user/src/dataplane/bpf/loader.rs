//! Loading the object, pinning maps and links in bpffs, attaching programs.
//!
//! Layout under the pin directory (default /sys/fs/bpf/overlay), versioned
//! by the map layout ([`overlay_common::MAPS_VERSION`]):
//! `v<N>/maps/OVL_*` (kept across restarts, so peers and endpoints survive)
//! and `v<N>/links/<name>` (one per attach point, replaced atomically on
//! restart so forwarding never stops). Pins of another layout (directly in
//! the pin directory, as before versioning, or under another `v<N>`) are
//! refused ([`check_layout`]); only our own pins are ever removed
//! ([`remove_pins`]).

use std::path::{Component, Path, PathBuf};

use std::collections::BTreeMap;
use std::sync::Mutex;

use aya::programs::{
    links::{FdLink, PinnedLink},
    tc::{self, NlOptions, TcAttachOptions},
    LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode,
};
use aya::{Ebpf, EbpfLoader};
use overlay_common::{maps as map_names, programs, MAPS_VERSION};

use crate::dataplane::DataplaneError;
use crate::model::config::TcAttach;

/// The eBPF object built from overlay-ebpf by build.rs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/overlay.o"));

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Where bpffs is mounted (by overlayd, if nothing is).
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// The link of the from-underlay program on the underlay interface.
pub const LINK_UNDERLAY: &str = "underlay-tc";
/// The link of the XDP program on the underlay interface.
pub const LINK_XDP: &str = "underlay-xdp";
/// The link of the from-container program on the bridge (`attach = "bridge"`).
pub const LINK_BRIDGE: &str = "bridge-tc";
/// Links of the from-container program on bridge ports: `port-<ifindex>`.
pub const PORT_PREFIX: &str = "port-";

/// Links of the from-net-container program on network ports: `net-<ifindex>`.
pub const NET_PORT_PREFIX: &str = "net-";

/// Every map the object pins: all of `maps/` that is ours.
pub const MAP_NAMES: [&str; 20] = [
    map_names::CONFIG,
    map_names::PEERS,
    map_names::PEER_HOSTS,
    map_names::PEER_SLOTS,
    map_names::ENDPOINTS,
    map_names::ENDPOINT_SLOTS,
    map_names::COUNTERS,
    map_names::DROPS,
    map_names::PORT_LEARNED,
    overlay_common::net::maps::NETWORKS,
    overlay_common::net::maps::SUBNETS,
    overlay_common::net::maps::ENDPOINTS,
    overlay_common::net::maps::ENDPOINT_SLOTS,
    overlay_common::net::maps::PORTS,
    overlay_common::net::maps::PORT_SLOTS,
    overlay_common::observe::maps::EVENTS,
    overlay_common::observe::maps::MONITOR,
    overlay_common::observe::maps::MONITOR_STATE,
    overlay_common::observe::maps::PEER_STATS,
    overlay_common::observe::maps::PEER_RX_TICK,
];

/// Whether `name` is the name of a link pin of ours.
pub fn is_our_link(name: &str) -> bool {
    let numbered = |prefix| {
        name.strip_prefix(prefix)
            .is_some_and(|n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    matches!(name, LINK_UNDERLAY | LINK_XDP | LINK_BRIDGE)
        || numbered(PORT_PREFIX)
        || numbered(NET_PORT_PREFIX)
}

/// Where this build pins under `pin_dir`: `v<MAPS_VERSION>`.
pub fn versioned_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join(format!("v{MAPS_VERSION}"))
}

/// Refuses a `pin_dir` under which removing our pins could harm other
/// tools: a relative path or one with `..`, and the root of a BPF
/// filesystem (`/sys/fs/bpf` itself, also through a symlink, or any other
/// bpffs mount point), where every tool pins. Checks nothing else (whether
/// it is on a bpffs is [`ensure_bpffs`]'s business).
pub fn check_pin_dir(pin_dir: &Path) -> Result<(), DataplaneError> {
    let plain = pin_dir.is_absolute()
        && pin_dir
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !plain {
        return Err(DataplaneError::PinDirPath {
            path: pin_dir.to_path_buf(),
        });
    }
    let root = || DataplaneError::PinDirIsRoot {
        path: pin_dir.to_path_buf(),
    };
    // Lexically (trailing slashes and `.` are gone in components()), then
    // with the symlinks of the part that exists resolved.
    let lexical: PathBuf = pin_dir.components().collect();
    if lexical == Path::new(BPFFS_ROOT) {
        return Err(root());
    }
    let existing = nearest_existing(pin_dir);
    if let Ok(real) = std::fs::canonicalize(&existing) {
        let rest = pin_dir.strip_prefix(&existing).unwrap_or(Path::new(""));
        let real = real.join(rest);
        if real == Path::new(BPFFS_ROOT) {
            return Err(root());
        }
        if rest.as_os_str().is_empty() && is_bpffs(&real) && is_mount_root(&real) {
            return Err(root());
        }
    }
    Ok(())
}

/// Whether `p` is the root of the filesystem it is on (another device
/// than its parent's, or `/`).
fn is_mount_root(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(parent) = p.parent() else {
        return true;
    };
    match (std::fs::metadata(p), std::fs::metadata(parent)) {
        (Ok(m), Ok(pm)) => m.dev() != pm.dev(),
        _ => false,
    }
}

/// `p`, or its nearest ancestor that exists.
fn nearest_existing(p: &Path) -> PathBuf {
    p.ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

/// Refuses pins of another map layout in `pin_dir`: `maps` or `links`
/// directly in it (releases before the layout was versioned) or a `v<N>`
/// of another `N`. Their programs may still be forwarding with maps this
/// build would misread; they are left for the overlayd that made them to
/// remove (`--cleanup`), or for the operator.
pub fn check_layout(pin_dir: &Path) -> Result<(), DataplaneError> {
    let Ok(entries) = std::fs::read_dir(pin_dir) else {
        return Ok(());
    };
    let ours = format!("v{MAPS_VERSION}");
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            let versioned = name
                .strip_prefix('v')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            (versioned && *name != ours) || name == "maps" || name == "links"
        })
        .map(|name| pin_dir.join(name))
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    found.sort();
    Err(DataplaneError::PinLayout {
        pin_dir: pin_dir.to_path_buf(),
        found,
    })
}

/// Makes sure `pin_dir` lies on a bpffs, mounting one at /sys/fs/bpf if
/// nothing is mounted there yet, refuses a bad `pin_dir`
/// ([`check_pin_dir`]) or pins of another layout ([`check_layout`]), and
/// creates `pin_dir/v<N>/{maps,links}`. Nothing is created off a bpffs.
pub fn ensure_bpffs(pin_dir: &Path) -> Result<(), DataplaneError> {
    check_pin_dir(pin_dir)?;
    let fail = |reason: String| DataplaneError::Bpffs {
        path: pin_dir.to_path_buf(),
        reason,
    };
    let root = Path::new(BPFFS_ROOT);
    if pin_dir.starts_with(root) && !is_bpffs(root) {
        std::fs::create_dir_all(root)
            .map_err(|e| fail(format!("creating {}: {e}", root.display())))?;
        nix::mount::mount(
            Some("bpf"),
            root,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| fail(format!("mounting bpffs at {}: {e}", root.display())))?;
    }
    if !is_bpffs(&nearest_existing(pin_dir)) {
        return Err(fail(
            "not on a BPF filesystem (mount -t bpf bpf /sys/fs/bpf)".into(),
        ));
    }
    check_layout(pin_dir)?;
    let dir = versioned_dir(pin_dir);
    std::fs::create_dir_all(dir.join("maps"))
        .and_then(|_| std::fs::create_dir_all(dir.join("links")))
        .map_err(|e| fail(format!("creating directories: {e}")))?;
    Ok(())
}

fn is_bpffs(p: &Path) -> bool {
    nix::sys::statfs::statfs(p)
        .map(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
        .unwrap_or(false)
}

/// Loads the object and every program (the verifier runs here). With a pin
/// directory, maps are reused from `pin_dir/v<N>/maps` or pinned there;
/// without one, every map is new and unpinned.
pub fn load(pin_dir: Option<&Path>) -> Result<Ebpf, DataplaneError> {
    let mut loader = EbpfLoader::new();
    let maps_dir = match pin_dir {
        Some(dir) => versioned_dir(dir).join("maps"),
        // The object pins its maps by name, by default in the bpffs root
        // (where another build's maps of the same names would be reused):
        // pinned in a directory of this call's own instead, unpinned below.
        None => {
            static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = PathBuf::from(format!(
                "/sys/fs/bpf/overlay-unpinned-{}-{n}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir)
                .map_err(|e| DataplaneError::Other(format!("creating {}: {e}", dir.display())))?;
            dir
        }
    };
    loader.default_map_pin_directory(&maps_dir);
    let loaded = loader.load(OBJECT);
    if pin_dir.is_none() {
        // The maps live on in the object's file descriptors.
        if let Err(e) = std::fs::remove_dir_all(&maps_dir) {
            log::warn!("removing the temporary pins {}: {e}", maps_dir.display());
        }
    }
    let mut ebpf = loaded?;
    for name in [
        programs::FROM_CONTAINER,
        programs::FROM_UNDERLAY,
        programs::FROM_NET_CONTAINER,
        programs::TO_UNDERLAY,
    ] {
        let prog: &mut SchedClassifier = program(&mut ebpf, name)?;
        prog.load().map_err(|source| DataplaneError::Program {
            program: name,
            source,
        })?;
    }
    let xdp: &mut Xdp = program(&mut ebpf, programs::XDP_UNDERLAY)?;
    xdp.load().map_err(|source| DataplaneError::Program {
        program: programs::XDP_UNDERLAY,
        source,
    })?;
    Ok(ebpf)
}

/// A program of the object by name and type.
pub fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, DataplaneError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p = ebpf.program_mut(name).ok_or(DataplaneError::Program {
        program: name,
        source: aya::programs::ProgramError::NotLoaded,
    })?;
    p.try_into().map_err(|source| DataplaneError::Program {
        program: name,
        source,
    })
}

/// Pinned links under `pin_dir/v<N>/links`; with `tc_attach = "clsact"`,
/// the tc programs are filters of a clsact qdisc instead, which cannot be
/// pinned: those are kept by name in memory.
pub struct Links {
    dir: PathBuf,
    tc: TcAttach,
    /// clsact filters attached by this run: link name -> (interface, program).
    clsact: Mutex<BTreeMap<String, (String, &'static str)>>,
}

/// Removes the clsact ingress filters of `program` on `ifname`; none (or
/// no clsact qdisc, or no interface) is fine.
fn detach_filters(ifname: &str, program: &'static str) {
    match tc::qdisc_detach_program(ifname, TcAttachType::Ingress, program) {
        Ok(()) => log::debug!("clsact filter {program} removed from {ifname}"),
        Err(e) => log::debug!("no clsact filter {program} on {ifname}: {e}"),
    }
}

impl Links {
    /// Links under `pin_dir/v<N>/links`, tc programs attached the `tc` way.
    pub fn new(pin_dir: &Path, tc: TcAttach) -> Self {
        Self {
            dir: versioned_dir(pin_dir).join("links"),
            tc,
            clsact: Mutex::new(BTreeMap::new()),
        }
    }

    fn clsact_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (String, &'static str)>> {
        self.clsact.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The interface of the clsact filter this run attached as `name`.
    pub fn clsact_filter(&self, name: &str) -> Option<String> {
        self.clsact_map()
            .get(name)
            .map(|(ifname, _)| ifname.clone())
    }

    /// `tc_attach = "clsact"`: a clsact qdisc on `ifname` (kept if there)
    /// and a direct-action filter running `program_name` in place of
    /// any of ours before it; then a TCX link pinned as `name` goes.
    fn attach_clsact(
        &self,
        ebpf: &mut Ebpf,
        program_name: &'static str,
        ifname: &str,
        name: &str,
    ) -> Result<(), DataplaneError> {
        let prog: &mut SchedClassifier = program(ebpf, program_name)?;
        let fail = |reason: String| DataplaneError::Attach {
            program: program_name,
            ifname: ifname.to_string(),
            reason,
        };
        if let Err(e) = tc::qdisc_add_clsact(ifname) {
            let exists = matches!(&e, tc::TcError::NetlinkError(n) if n.raw_os_error() == Some(libc::EEXIST));
            if !exists {
                return Err(fail(format!("adding the clsact qdisc: {e}")));
            }
        }
        // A restart (or a re-attach) replaces our filter: delete, then add.
        detach_filters(ifname, program_name);
        let id = prog
            .attach_with_options(
                ifname,
                TcAttachType::Ingress,
                TcAttachOptions::Netlink(NlOptions::default()),
            )
            .map_err(|e| fail(e.to_string()))?;
        let link = prog.take_link(id).map_err(|e| fail(e.to_string()))?;
        // Dropping the link would delete the filter: it stays after we exit.
        std::mem::forget(link);
        self.detach_pin(name);
        self.clsact_map()
            .insert(name.to_string(), (ifname.to_string(), program_name));
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Names of the links pinned now, and of the clsact filters this run attached.
    pub fn pinned(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.extend(self.clsact_map().keys().cloned());
        names.sort();
        names.dedup();
        names
    }

    /// Attaches `prog` to tc ingress of `ifname` through TCX and pins the
    /// link as `name`. A link already pinned under that name is updated in
    /// place (atomic program replacement: no packet sees no program).
    /// With `tc_attach = "clsact"`, a clsact filter instead
    /// ([`Links::attach_clsact`]); with TCX, a clsact filter of ours on
    /// `ifname` (of an earlier run) goes once the link is attached.
    pub fn attach_tc(
        &self,
        ebpf: &mut Ebpf,
        program_name: &'static str,
        ifname: &str,
        name: &str,
    ) -> Result<(), DataplaneError> {
        if self.tc == TcAttach::Clsact {
            return self.attach_clsact(ebpf, program_name, ifname, name);
        }
        self.attach_tcx(ebpf, program_name, ifname, name)?;
        detach_filters(ifname, program_name);
        Ok(())
    }

    fn attach_tcx(
        &self,
        ebpf: &mut Ebpf,
        program_name: &'static str,
        ifname: &str,
        name: &str,
    ) -> Result<(), DataplaneError> {
        let prog: &mut SchedClassifier = program(ebpf, program_name)?;
        let fail = |reason: String| DataplaneError::Attach {
            program: program_name,
            ifname: ifname.to_string(),
            reason,
        };
        let path = self.path(name);
        let id = match PinnedLink::from_pin(&path) {
            Ok(old) => {
                let fd: FdLink = old
                    .unpin()
                    .map_err(|e| fail(format!("unpinning {}: {e}", path.display())))?;
                match fd.try_into() {
                    Ok(link) => match prog.attach_to_link(link) {
                        Ok(id) => id,
                        // The old link is defunct (its interface went away): attach anew.
                        Err(_) => prog
                            .attach_with_options(
                                ifname,
                                TcAttachType::Ingress,
                                TcAttachOptions::TcxOrder(LinkOrder::default()),
                            )
                            .map_err(|e| fail(e.to_string()))?,
                    },
                    Err(e) => {
                        return Err(fail(format!(
                            "pinned link {} is not a tc link: {e}",
                            path.display()
                        )))
                    }
                }
            }
            Err(_) => prog
                .attach_with_options(
                    ifname,
                    TcAttachType::Ingress,
                    TcAttachOptions::TcxOrder(LinkOrder::default()),
                )
                .map_err(|e| fail(e.to_string()))?,
        };
        let link = prog.take_link(id).map_err(|e| fail(e.to_string()))?;
        let fd: FdLink = link
            .try_into()
            .map_err(|e: aya::programs::links::LinkError| fail(e.to_string()))?;
        fd.pin(&path)
            .map_err(|e| fail(format!("pinning {}: {e}", path.display())))?;
        Ok(())
    }

    /// Attaches the XDP program to `ifname` in `mode` and pins the link as `name`.
    pub fn attach_xdp(
        &self,
        ebpf: &mut Ebpf,
        ifname: &str,
        mode: XdpMode,
        name: &str,
    ) -> Result<(), DataplaneError> {
        let program_name = programs::XDP_UNDERLAY;
        let prog: &mut Xdp = program(ebpf, program_name)?;
        let fail = |reason: String| DataplaneError::Attach {
            program: program_name,
            ifname: ifname.to_string(),
            reason,
        };
        // An XDP link cannot change mode in place: detach the old one first.
        self.detach(name);
        let id = prog.attach(ifname, mode).map_err(|e| fail(e.to_string()))?;
        let link = prog.take_link(id).map_err(|e| fail(e.to_string()))?;
        let fd: FdLink = link
            .try_into()
            .map_err(|e: aya::programs::links::LinkError| fail(e.to_string()))?;
        let path = self.path(name);
        fd.pin(&path)
            .map_err(|e| fail(format!("pinning {}: {e}", path.display())))?;
        Ok(())
    }

    /// Detaches the link pinned as `name` (removing its pin), or the
    /// clsact filter this run attached as `name`; absent is fine.
    pub fn detach(&self, name: &str) {
        if let Some((ifname, program)) = self.clsact_map().remove(name) {
            detach_filters(&ifname, program);
        }
        self.detach_pin(name);
    }

    /// Detaches every clsact filter this run attached.
    pub fn detach_clsact(&self) {
        let all = std::mem::take(&mut *self.clsact_map());
        for (ifname, program) in all.into_values() {
            detach_filters(&ifname, program);
        }
    }

    fn detach_pin(&self, name: &str) {
        let path = self.path(name);
        if let Ok(link) = PinnedLink::from_pin(&path) {
            let _detached_on_drop = link.unpin();
        } else if path.exists() {
            // Not a link (or unreadable): remove the file so it cannot confuse the next start.
            if let Err(e) = std::fs::remove_file(&path) {
                log::warn!("removing stale pin {}: {e}", path.display());
            }
        }
    }
}

/// Removes our pins under `pin_dir`: the links (which detaches them) and
/// the maps of [`MAP_NAMES`] under `v<N>`, then those directories and
/// `pin_dir` itself if nothing else is left in them. Other tools' pins, and
/// pins of another layout, stay. Absent pins are fine.
pub fn remove_pins(pin_dir: &Path) -> Result<(), DataplaneError> {
    check_pin_dir(pin_dir)?;
    let fail = |path: &Path, e: std::io::Error| DataplaneError::Bpffs {
        path: path.to_path_buf(),
        reason: format!("removing it: {e}"),
    };
    let links = Links::new(pin_dir, TcAttach::Tcx);
    for name in links.pinned() {
        if is_our_link(&name) {
            links.detach(&name);
        }
    }
    let dir = versioned_dir(pin_dir);
    for name in MAP_NAMES {
        let path = dir.join("maps").join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(&path, e)),
            _ => {}
        }
    }
    for path in [
        dir.join("links"),
        dir.join("maps"),
        dir,
        pin_dir.to_path_buf(),
    ] {
        match std::fs::remove_dir(&path) {
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTEMPTY) => {}
            Err(e) => return Err(fail(&path, e)),
            Ok(()) => {}
        }
    }
    Ok(())
}

/// Forwards the programs' log records (aya-log) to the `log` crate.
pub fn spawn_logger(
    logger: aya_log::EbpfLogger<&'static dyn log::Log>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // SAFETY: the logger owns its ring buffer's fd for as long as the
        // AsyncFd (which owns the logger) is registered.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
        };
        let Ok(mut fd) = registered else {
            return;
        };
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    })
}

#[cfg(test)]
mod tests;
