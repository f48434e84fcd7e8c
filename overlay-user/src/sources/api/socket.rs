//! The API's socket: created with mode 0600 from its first instant, and
//! who may talk on it (root only, by the peer's credentials).

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

use crate::sources::api::wire::ApiError;

/// The socket's mode: owner (root) only.
pub const SOCKET_MODE: u32 = 0o600;

/// Listen on `path`: create its directory, refuse a socket someone answers
/// on, and put a socket of mode 0600 there atomically.
///
/// The socket is bound inside a private directory (mode 0700) next to
/// `path`, set to 0600 there, and renamed into place, so it never exists
/// at `path` with a wider mode and nobody else can connect to it while it
/// is being set up. The process-wide umask is not touched. A stale socket
/// (one nobody answers on) is replaced by the rename.
pub async fn bind(path: &Path) -> Result<UnixListener, ApiError> {
    let berr = |source| ApiError::Bind {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(berr)?;
            dir.to_owned()
        }
        None => PathBuf::from("."),
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).await.is_ok() {
                return Err(ApiError::InUse {
                    path: path.to_owned(),
                });
            }
            log::info!("replacing stale socket {}", path.display());
        }
        Ok(_) => {
            return Err(ApiError::NotASocket {
                path: path.to_owned(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(berr(e)),
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let private = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    // Left over by a crashed start of this very pid: remove it.
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(berr)?;
    let inner = private.join("s");
    let bound = (|| {
        let listener = UnixListener::bind(&inner)?;
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(SOCKET_MODE))?;
        std::fs::rename(&inner, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&inner);
    let _ = std::fs::remove_dir(&private);
    bound.map_err(berr)
}

/// Root (uid 0) only, by the credentials the kernel recorded at connect
/// time (SO_PEERCRED).
pub fn check_peer(stream: &UnixStream) -> Result<(), ApiError> {
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == 0 => Ok(()),
        Ok(cred) => Err(ApiError::NotRoot { uid: cred.uid() }),
        Err(e) => Err(ApiError::NoCredentials {
            reason: e.to_string(),
        }),
    }
}
