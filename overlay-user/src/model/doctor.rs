//! What `overlayctl doctor` reports: one finding per check, and the state
//! of the dataplane's attachments that it and `overlayctl status` show.

use serde::{Deserialize, Serialize};

/// The outcome of one check of this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The check's name: `mtu`, `ip_forward`, `rp_filter`, `vxlan_port`,
    /// `firewall`, `bridge_address`, `docker_bip`, `peer`, `programs`.
    pub check: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was seen: why it is fine, or what is wrong and its effect.
    pub message: String,
    /// With a problem: the command that fixes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    /// A passed check.
    pub fn ok(check: &str, message: impl Into<String>) -> Finding {
        Finding {
            check: check.into(),
            ok: true,
            message: message.into(),
            fix: None,
        }
    }

    /// A problem and the command that fixes it.
    pub fn problem(check: &str, message: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            check: check.into(),
            ok: false,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

/// One program the dataplane expects attached, and whether it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentState {
    /// The program, e.g. `ovl_from_underlay`.
    pub program: String,
    /// The pinned link's name under `pin_dir/v<N>/links`, e.g. `underlay-tc`.
    pub link: String,
    /// The interface it belongs on.
    pub ifname: String,
    /// Whether the pinned link is attached to that interface.
    pub attached: bool,
    /// What is wrong when it is not: no pin, detached, on another interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}
