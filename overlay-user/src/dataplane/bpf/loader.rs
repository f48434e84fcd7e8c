//! Loading the object, pinning maps and links in bpffs, attaching programs.
//!
//! Layout under the pin directory (default /sys/fs/bpf/overlay):
//! `maps/OVL_*` (kept across restarts, so peers and endpoints survive) and
//! `links/<name>` (one per attach point, replaced atomically on restart so
//! forwarding never stops).

use std::path::{Path, PathBuf};

use aya::programs::{
    links::{FdLink, PinnedLink},
    tc::TcAttachOptions,
    LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode,
};
use aya::{Ebpf, EbpfLoader};
use overlay_common::programs;

use crate::dataplane::DataplaneError;

/// The eBPF object built from overlay-ebpf by build.rs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/overlay.o"));

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Makes sure `pin_dir` lies on a bpffs, mounting one at /sys/fs/bpf if
/// nothing is mounted there yet, and creates `pin_dir/{maps,links}`.
pub fn ensure_bpffs(pin_dir: &Path) -> Result<(), DataplaneError> {
    let fail = |reason: String| DataplaneError::Bpffs {
        path: pin_dir.to_path_buf(),
        reason,
    };
    let root = Path::new("/sys/fs/bpf");
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
    std::fs::create_dir_all(pin_dir.join("maps"))
        .and_then(|_| std::fs::create_dir_all(pin_dir.join("links")))
        .map_err(|e| fail(format!("creating directories: {e}")))?;
    if !is_bpffs(pin_dir) {
        return Err(fail(
            "not on a BPF filesystem (mount -t bpf bpf /sys/fs/bpf)".into(),
        ));
    }
    Ok(())
}

fn is_bpffs(p: &Path) -> bool {
    nix::sys::statfs::statfs(p)
        .map(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
        .unwrap_or(false)
}

/// Loads the object and every program (the verifier runs here). With a pin
/// directory, maps are reused from `pin_dir/maps` or pinned there.
pub fn load(pin_dir: Option<&Path>) -> Result<Ebpf, DataplaneError> {
    let mut loader = EbpfLoader::new();
    let maps_dir;
    if let Some(dir) = pin_dir {
        maps_dir = dir.join("maps");
        loader.default_map_pin_directory(&maps_dir);
    }
    let mut ebpf = loader.load(OBJECT)?;
    for name in [programs::FROM_CONTAINER, programs::FROM_UNDERLAY] {
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

/// Pinned links under `pin_dir/links`.
pub struct Links {
    dir: PathBuf,
}

impl Links {
    /// Links under `pin_dir/links`.
    pub fn new(pin_dir: &Path) -> Self {
        Self {
            dir: pin_dir.join("links"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Names of the links pinned now.
    pub fn pinned(&self) -> Vec<String> {
        std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Attaches `prog` to tc ingress of `ifname` through TCX and pins the
    /// link as `name`. A link already pinned under that name is updated in
    /// place (atomic program replacement: no packet sees no program).
    pub fn attach_tc(
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

    /// Detaches the link pinned as `name` (removing its pin); absent is fine.
    pub fn detach(&self, name: &str) {
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

/// Removes every pin of ours under `pin_dir` and the directory itself.
pub fn remove_pins(pin_dir: &Path) -> std::io::Result<()> {
    let links = Links::new(pin_dir);
    for name in links.pinned() {
        links.detach(&name);
    }
    match std::fs::remove_dir_all(pin_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
