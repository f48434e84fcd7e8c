//! The underlay side of the bench: the NIC-like option (segmentation
//! offloads off on each host's `eth1`, so that receivers see MTU-sized
//! frames as from a real NIC instead of the veth's 64 KB GSO packets), and
//! the frame counters that show what the receiver got. GRO stays on at
//! each `eth1`, as on a NIC.

use anyhow::{Context, Result};
use overlay_lab::{exec, exec_ok, Lab};

/// The features `--nic-like` turns off: (`ethtool -K` name, `ethtool -k` name).
pub(super) const NIC_LIKE_FEATURES: [(&str, &str); 3] = [
    ("tso", "tcp-segmentation-offload"),
    ("gso", "generic-segmentation-offload"),
    ("tx-udp_tnl-segmentation", "tx-udp_tnl-segmentation"),
];

/// Which of [`NIC_LIKE_FEATURES`] are off on one host's underlay after
/// `ethtool -K`: (feature, off) in the order of the list.
pub(super) type FeatureState = Vec<(String, bool)>;

/// Runs `ethtool -K eth1 FEATURE off` for each feature on every host of
/// the lab (one call per feature: a feature the device cannot change must
/// not stop the others), then reads `ethtool -k eth1` back and returns, per
/// host, which features are off.
pub(super) fn nic_like(lab: &Lab) -> Result<Vec<FeatureState>> {
    let mut all = Vec::new();
    for h in lab.hosts() {
        for (short, _) in NIC_LIKE_FEATURES {
            // Failure is allowed here; what counts is the state read below.
            let _ = exec(&h.ns, &["ethtool", "-K", &h.underlay_if, short, "off"])?;
        }
        lab.underlay_gro_like_a_nic(h.index)?;
        let shown = exec_ok(&h.ns, &["ethtool", "-k", &h.underlay_if])?;
        if !shown
            .lines()
            .any(|l| l.trim() == "generic-receive-offload: on")
        {
            anyhow::bail!("{}: GRO did not turn on on {}", h.ns, h.underlay_if);
        }
        all.push(features_off(&shown));
    }
    Ok(all)
}

/// Parses `ethtool -k` output: for each of [`NIC_LIKE_FEATURES`], whether
/// it reads `off` (a feature missing from the output counts as not off).
pub(super) fn features_off(ethtool_k: &str) -> FeatureState {
    NIC_LIKE_FEATURES
        .iter()
        .map(|(short, long)| {
            let off = ethtool_k.lines().any(|l| {
                l.trim()
                    .strip_prefix(long)
                    .and_then(|r| r.strip_prefix(':'))
                    .is_some_and(|v| v.trim().starts_with("off"))
            });
            (short.to_string(), off)
        })
        .collect()
}

/// (bytes, packets) received so far on `ifname` in namespace `ns`.
pub(super) fn rx_counters(ns: &str, ifname: &str) -> Result<(u64, u64)> {
    let out = exec_ok(ns, &["ip", "-s", "-j", "link", "show", "dev", ifname])?;
    parse_rx(&out).with_context(|| format!("rx counters of {ifname} in {ns}: {out}"))
}

pub(super) fn parse_rx(ip_s_j: &str) -> Option<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(ip_s_j).ok()?;
    let rx = &v.get(0)?["stats64"]["rx"];
    Some((rx["bytes"].as_u64()?, rx["packets"].as_u64()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_which_features_are_off() {
        let k = "Features for eth1:\n\
                 tcp-segmentation-offload: off\n\
                 \ttx-tcp-segmentation: off\n\
                 generic-segmentation-offload: on\n\
                 tx-udp_tnl-segmentation: off [fixed]\n";
        assert_eq!(
            features_off(k),
            vec![
                ("tso".to_string(), true),
                ("gso".to_string(), false),
                ("tx-udp_tnl-segmentation".to_string(), true),
            ]
        );
        assert!(features_off("").iter().all(|(_, off)| !off));
    }

    #[test]
    fn reads_rx_counters() {
        let j = r#"[{"ifindex":2,"ifname":"eth1","stats64":{"rx":{"bytes":3028,"packets":2,"errors":0},"tx":{"bytes":1,"packets":1}}}]"#;
        assert_eq!(parse_rx(j), Some((3028, 2)));
        assert_eq!(parse_rx("[]"), None);
    }
}
