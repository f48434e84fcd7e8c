//! The VXLAN filter (`OVERLAY-VXLAN`: VXLAN accepted only from peer hosts)
//! and the FORWARD/POSTROUTING rules of the per-host VXLAN device.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::ipt::{chain_rules, ipt_err};
use crate::dataplane::DataplaneError;

/// One rule: table, chain, rule specification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// `filter` or `nat`.
    pub table: &'static str,
    /// `FORWARD` or `POSTROUTING`.
    pub chain: &'static str,
    /// The match and target, as iptables takes them.
    pub spec: String,
}

/// The chain of the VXLAN filter.
pub const VXLAN_CHAIN: &str = "OVERLAY-VXLAN";

/// The INPUT rule that sends UDP to the VXLAN port `port` through
/// [`VXLAN_CHAIN`], as `iptables -S` prints it (without `-A INPUT`).
pub fn vxlan_hook(port: u16) -> String {
    format!("-p udp -m udp --dport {port} -m comment --comment overlayd -j {VXLAN_CHAIN}")
}

/// The rules of [`VXLAN_CHAIN`] for the peer hosts `peers`, in order, as
/// `iptables -S` prints them: a RETURN per peer host, then DROP.
pub fn vxlan_chain(peers: &BTreeSet<Ipv4Addr>) -> Vec<String> {
    peers
        .iter()
        .map(|ip| format!("-s {ip}/32 -j RETURN"))
        .chain([DROP.to_string()])
        .collect()
}

const DROP: &str = "-j DROP";

/// The FORWARD and POSTROUTING rules for overlay device `device`.
pub fn rules(device: &str) -> Vec<Rule> {
    vec![
        Rule {
            table: "filter",
            chain: "FORWARD",
            spec: format!("-i {device} -m comment --comment overlayd -j ACCEPT"),
        },
        Rule {
            table: "filter",
            chain: "FORWARD",
            spec: format!("-o {device} -m comment --comment overlayd -j ACCEPT"),
        },
        Rule {
            table: "nat",
            chain: "POSTROUTING",
            spec: format!("-o {device} -m comment --comment overlayd -j RETURN"),
        },
    ]
}

pub(super) fn ensure_forward(
    ipt: &iptables::IPTables,
    device: &str,
) -> Result<usize, DataplaneError> {
    let mut added = 0;
    for r in rules(device) {
        let what = format!("-t {} -I {} 1 {}", r.table, r.chain, r.spec);
        if !ipt
            .exists(r.table, r.chain, &r.spec)
            .map_err(ipt_err(what.clone()))?
        {
            ipt.insert(r.table, r.chain, &r.spec, 1)
                .map_err(ipt_err(what))?;
            added += 1;
        }
    }
    Ok(added)
}

pub(super) fn remove_forward(
    ipt: &iptables::IPTables,
    device: &str,
) -> Result<usize, DataplaneError> {
    let mut removed = 0;
    for r in rules(device) {
        let what = format!("-t {} -D {} {}", r.table, r.chain, r.spec);
        while ipt
            .exists(r.table, r.chain, &r.spec)
            .map_err(ipt_err(what.clone()))?
        {
            ipt.delete(r.table, r.chain, &r.spec)
                .map_err(ipt_err(what.clone()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Makes [`VXLAN_CHAIN`] accept exactly `peers` (with `prune`; without it,
/// hosts an earlier run accepted stay until the agent has re-added its
/// peers) and drop the rest; with `hook`, also makes sure the chain exists
/// and INPUT sends UDP to `port` (only) through it. The DROP rule and its
/// counter stay in place. Returns how many rules changed.
pub(super) fn sync_vxlan(
    ipt: &iptables::IPTables,
    port: u16,
    peers: &BTreeSet<Ipv4Addr>,
    prune: bool,
    hook: bool,
) -> Result<usize, DataplaneError> {
    let mut changed = 0;
    if hook
        && !ipt
            .chain_exists("filter", VXLAN_CHAIN)
            .map_err(ipt_err(format!("-L {VXLAN_CHAIN}")))?
    {
        ipt.new_chain("filter", VXLAN_CHAIN)
            .map_err(ipt_err(format!("-N {VXLAN_CHAIN}")))?;
    }
    let wanted = vxlan_chain(peers);
    let have = chain_rules(ipt, "filter", VXLAN_CHAIN)?;
    if have != wanted {
        for spec in &wanted[..wanted.len() - 1] {
            if !have.contains(spec) {
                ipt.insert("filter", VXLAN_CHAIN, spec, 1)
                    .map_err(ipt_err(format!("-I {VXLAN_CHAIN} 1 {spec}")))?;
                changed += 1;
            }
        }
        if prune {
            for spec in have.iter().filter(|s| !wanted.contains(s)) {
                ipt.delete("filter", VXLAN_CHAIN, spec)
                    .map_err(ipt_err(format!("-D {VXLAN_CHAIN} {spec}")))?;
                changed += 1;
            }
        }
        // DROP last: anything appended after it by hand goes before it.
        let now = chain_rules(ipt, "filter", VXLAN_CHAIN)?;
        if now.last().map(String::as_str) != Some(DROP) {
            ipt.append("filter", VXLAN_CHAIN, DROP)
                .map_err(ipt_err(format!("-A {VXLAN_CHAIN} {DROP}")))?;
            changed += 1;
            for _ in now.iter().filter(|s| *s == DROP) {
                ipt.delete("filter", VXLAN_CHAIN, DROP)
                    .map_err(ipt_err(format!("-D {VXLAN_CHAIN} {DROP}")))?;
            }
        }
    }
    if !hook {
        return Ok(changed);
    }
    // The hook last, so the chain is complete before it sees a packet.
    let hook = vxlan_hook(port);
    let target = format!("-j {VXLAN_CHAIN}");
    let mut hooked = false;
    for spec in chain_rules(ipt, "filter", "INPUT")? {
        if spec == hook {
            hooked = true;
        } else if spec.ends_with(&target) {
            // Another port: left by an earlier configuration.
            ipt.delete("filter", "INPUT", &spec)
                .map_err(ipt_err(format!("-D INPUT {spec}")))?;
            changed += 1;
        }
    }
    if !hooked {
        ipt.insert("filter", "INPUT", &hook, 1)
            .map_err(ipt_err(format!("-I INPUT 1 {hook}")))?;
        changed += 1;
    }
    Ok(changed)
}

/// Unhooks and deletes [`VXLAN_CHAIN`]; returns how many rules went.
pub(super) fn remove_vxlan(ipt: &iptables::IPTables) -> Result<usize, DataplaneError> {
    let target = format!("-j {VXLAN_CHAIN}");
    let mut removed = 0;
    for spec in chain_rules(ipt, "filter", "INPUT")? {
        if spec.ends_with(&target) {
            ipt.delete("filter", "INPUT", &spec)
                .map_err(ipt_err(format!("-D INPUT {spec}")))?;
            removed += 1;
        }
    }
    if ipt
        .chain_exists("filter", VXLAN_CHAIN)
        .map_err(ipt_err(format!("-L {VXLAN_CHAIN}")))?
    {
        removed += chain_rules(ipt, "filter", VXLAN_CHAIN)?.len();
        ipt.flush_chain("filter", VXLAN_CHAIN)
            .map_err(ipt_err(format!("-F {VXLAN_CHAIN}")))?;
        ipt.delete_chain("filter", VXLAN_CHAIN)
            .map_err(ipt_err(format!("-X {VXLAN_CHAIN}")))?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_name_the_device() {
        let r = rules("ovl.42");
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[0].spec,
            "-i ovl.42 -m comment --comment overlayd -j ACCEPT"
        );
        assert_eq!((r[2].table, r[2].chain), ("nat", "POSTROUTING"));
    }

    #[test]
    fn vxlan_filter_rules() {
        let peers: BTreeSet<Ipv4Addr> = [[192, 168, 56, 6], [192, 168, 56, 5]]
            .into_iter()
            .map(Ipv4Addr::from)
            .collect();
        assert_eq!(
            vxlan_chain(&peers),
            [
                "-s 192.168.56.5/32 -j RETURN",
                "-s 192.168.56.6/32 -j RETURN",
                "-j DROP"
            ]
        );
        assert_eq!(vxlan_chain(&BTreeSet::new()), ["-j DROP"]);
        assert_eq!(
            vxlan_hook(8472),
            "-p udp -m udp --dport 8472 -m comment --comment overlayd -j OVERLAY-VXLAN"
        );
    }
}
