//! The rules of the overlay networks (issue 12): NAT out through the host,
//! FORWARD accepts for a network's own traffic, isolation between networks.
//!
//! Two chains of overlayd's own, each hooked once from the top of its
//! built-in chain and rewritten to match the networks:
//!
//! ```text
//! -t filter -N OVERLAY-NETS
//! -t filter -I FORWARD 1 -m comment --comment overlayd -j OVERLAY-NETS
//! -t nat -N OVERLAY-NAT
//! -t nat -I POSTROUTING 1 -m comment --comment overlayd -j OVERLAY-NAT
//! ```
//!
//! For network S (its subnet) whose containers' packets enter the host
//! stack on `ING` (the kernel dataplane's bridge `ovb<vni>`, or `ovn+`, the
//! BPF dataplane's host veths), in this order (`iptables -S` spelling):
//!
//! ```text
//! ! -s S -i ING -j DROP                                  forged source (own ingress only)
//! -i ING -o ING -j ACCEPT                                 within the network (own ingress only)
//! -d S -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT   replies (NAT)
//! -d S -j DROP                                            isolation: nothing else gets in
//! -s S -i ING -j ACCEPT                                   leaving the network, to be NATed
//! ```
//!
//! every forged-source rule first, every network's three middle rules next,
//! the leaving rules last: so a packet from one network to another's subnet
//! meets the other's DROP before its own ACCEPT (isolation, counted per
//! network), and only traffic to outside every network goes out. The NAT
//! chain masquerades what leaves: `-s S ! -d S -j MASQUERADE` per network,
//! which is what `docker_gwbridge` gives Docker's overlay containers.
//!
//! "Own ingress" is a device that carries that network only (the kernel's
//! bridge): there a source outside S is forged, and bridged traffic between
//! the network's containers (netfilter sees it when `br_netfilter` is
//! loaded, as Docker loads it) is accepted. The BPF dataplane delivers
//! within a network without netfilter and checks sources in its programs.

use std::collections::BTreeSet;

use ipnet::Ipv4Net;

use super::ipt::{chain_rules, ipt_err};
use crate::dataplane::DataplaneError;

/// The filter chain of the networks' FORWARD rules.
pub const NETS_CHAIN: &str = "OVERLAY-NETS";

/// The nat chain of the networks' MASQUERADE rules.
pub const NAT_CHAIN: &str = "OVERLAY-NAT";

/// The BPF dataplane's ingress: any network endpoint's host veth (`ovn` + id).
pub const VETH_INGRESS: &str = "ovn+";

/// What the rules of one overlay network are made from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetworkRules {
    /// The network's VNI (for messages; networks are told apart by it).
    pub vni: u32,
    /// The network's subnet.
    pub subnet: Ipv4Net,
    /// The interface (or iptables wildcard, `ovn+`) its containers'
    /// packets enter the host stack on.
    pub ingress: String,
    /// Whether `ingress` carries this network only (the kernel's bridge):
    /// then sources outside the subnet arriving there are dropped, and
    /// traffic bridged or routed back out on it is accepted.
    pub own_ingress: bool,
}

impl NetworkRules {
    /// A network behind a bridge of its own (kernel dataplane: `ovb<vni>`).
    pub fn bridge(vni: u32, subnet: Ipv4Net, bridge: &str) -> NetworkRules {
        NetworkRules {
            vni,
            subnet: subnet.trunc(),
            ingress: bridge.to_string(),
            own_ingress: true,
        }
    }

    /// A network whose containers sit behind host veths `ovn…` that the
    /// BPF dataplane serves (sources checked by its programs).
    pub fn veths(vni: u32, subnet: Ipv4Net) -> NetworkRules {
        NetworkRules {
            vni,
            subnet: subnet.trunc(),
            ingress: VETH_INGRESS.to_string(),
            own_ingress: false,
        }
    }
}

/// The FORWARD hook of [`NETS_CHAIN`], as `iptables -S FORWARD` prints it.
pub fn nets_hook() -> String {
    format!("-m comment --comment overlayd -j {NETS_CHAIN}")
}

/// The POSTROUTING hook of [`NAT_CHAIN`], as `iptables -t nat -S` prints it.
pub fn nat_hook() -> String {
    format!("-m comment --comment overlayd -j {NAT_CHAIN}")
}

/// The rules of [`NETS_CHAIN`] for `nets`, in order, as `iptables -S` prints them.
pub fn nets_chain(nets: &BTreeSet<NetworkRules>) -> Vec<String> {
    let mut out = Vec::new();
    for n in nets.iter().filter(|n| n.own_ingress) {
        out.push(format!("! -s {} -i {} -j DROP", n.subnet, n.ingress));
    }
    for n in nets {
        if n.own_ingress {
            out.push(format!("-i {0} -o {0} -j ACCEPT", n.ingress));
        }
        out.push(format!(
            "-d {} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            n.subnet
        ));
        out.push(format!("-d {} -j DROP", n.subnet));
    }
    for n in nets {
        out.push(format!("-s {} -i {} -j ACCEPT", n.subnet, n.ingress));
    }
    dedup(out)
}

/// The rules of [`NAT_CHAIN`] for `nets`, in order, as `iptables -t nat -S` prints them.
pub fn nat_chain(nets: &BTreeSet<NetworkRules>) -> Vec<String> {
    dedup(
        nets.iter()
            .map(|n| format!("-s {0} ! -d {0} -j MASQUERADE", n.subnet))
            .collect(),
    )
}

/// `rules` without repeats (two entries for one subnet, say), first kept.
fn dedup(rules: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    rules
        .into_iter()
        .filter(|r| seen.insert(r.clone()))
        .collect()
}

/// One change [`plan`] asks for, by rule number (1-based, as iptables counts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `-I CHAIN n spec`.
    Insert(usize, String),
    /// `-D CHAIN n`.
    Delete(usize),
}

/// The steps that turn chain `have` into `wanted` with every wanted rule in
/// place before a rule in its way goes, keeping rules (and their counters)
/// that are already right. A rule that is not wanted goes if `prune` or if
/// it is in `gone` (rules of networks removed since the start); otherwise
/// it stays where it is.
pub fn plan(have: &[String], wanted: &[String], prune: bool, gone: &[String]) -> Vec<Step> {
    let mut cur = have.to_vec();
    let mut steps = Vec::new();
    let (mut p, mut w) = (0, 0);
    let goes = |r: &String| prune || gone.contains(r);
    while w < wanted.len() {
        match cur.get(p) {
            Some(c) if *c == wanted[w] => {
                p += 1;
                w += 1;
            }
            Some(c) if !wanted[w..].contains(c) => {
                if goes(c) {
                    steps.push(Step::Delete(p + 1));
                    cur.remove(p);
                } else {
                    p += 1;
                }
            }
            _ => {
                steps.push(Step::Insert(p + 1, wanted[w].clone()));
                cur.insert(p, wanted[w].clone());
                p += 1;
                w += 1;
            }
        }
    }
    // What follows the last wanted rule is not wanted; from the end, so
    // that the numbers before stay valid.
    for i in (p..cur.len()).rev() {
        if goes(&cur[i]) {
            steps.push(Step::Delete(i + 1));
        }
    }
    steps
}

/// Makes `chain` of `table` hold `wanted` (see [`plan`]); returns how many rules changed.
fn sync_chain(
    ipt: &iptables::IPTables,
    table: &str,
    chain: &str,
    wanted: &[String],
    prune: bool,
    gone: &[String],
) -> Result<usize, DataplaneError> {
    if !ipt
        .chain_exists(table, chain)
        .map_err(ipt_err(format!("-t {table} -L {chain}")))?
    {
        ipt.new_chain(table, chain)
            .map_err(ipt_err(format!("-t {table} -N {chain}")))?;
    }
    let have = chain_rules(ipt, table, chain)?;
    let steps = plan(&have, wanted, prune, gone);
    for step in &steps {
        match step {
            Step::Insert(n, spec) => ipt
                .insert(table, chain, spec, *n as i32)
                .map_err(ipt_err(format!("-t {table} -I {chain} {n} {spec}")))?,
            Step::Delete(n) => {
                let what = format!("-t {table} -D {chain} {n}");
                let out = ipt
                    .execute(table, &format!("-D {chain} {n}"))
                    .map_err(ipt_err(what.clone()))?;
                if !out.status.success() {
                    return Err(DataplaneError::Iptables {
                        what,
                        reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    });
                }
            }
        }
    }
    Ok(steps.len())
}

/// Makes sure `parent` of `table` jumps to our chain with `hook` (once, at
/// the top when added); returns how many rules changed.
fn ensure_hook(
    ipt: &iptables::IPTables,
    table: &str,
    parent: &str,
    hook: &str,
) -> Result<usize, DataplaneError> {
    let hooks = chain_rules(ipt, table, parent)?
        .iter()
        .filter(|r| *r == hook)
        .count();
    match hooks {
        0 => {
            ipt.insert(table, parent, hook, 1)
                .map_err(ipt_err(format!("-t {table} -I {parent} 1 {hook}")))?;
            Ok(1)
        }
        1 => Ok(0),
        n => {
            for _ in 1..n {
                ipt.delete(table, parent, hook)
                    .map_err(ipt_err(format!("-t {table} -D {parent} {hook}")))?;
            }
            Ok(n - 1)
        }
    }
}

/// Brings both chains and their hooks in line with `nets` (see [`plan`] for
/// `prune` and `gone`, the networks removed since the start). With no
/// networks and `prune`, removes the chains and hooks altogether. Returns
/// how many rules changed.
pub(super) fn sync_networks(
    ipt: &iptables::IPTables,
    nets: &BTreeSet<NetworkRules>,
    prune: bool,
    gone: &BTreeSet<NetworkRules>,
) -> Result<usize, DataplaneError> {
    if nets.is_empty() {
        if prune {
            return remove_networks(ipt);
        }
        if gone.is_empty() || !chains_exist(ipt)? {
            return Ok(0);
        }
    }
    let mut changed = 0;
    let chains = [
        ("filter", NETS_CHAIN, nets_chain(nets), nets_chain(gone)),
        ("nat", NAT_CHAIN, nat_chain(nets), nat_chain(gone)),
    ];
    for (table, chain, wanted, gone) in &chains {
        changed += sync_chain(ipt, table, chain, wanted, prune, gone)?;
    }
    // The hooks last, so the chains are complete before they see a packet.
    changed += ensure_hook(ipt, "filter", "FORWARD", &nets_hook())?;
    changed += ensure_hook(ipt, "nat", "POSTROUTING", &nat_hook())?;
    Ok(changed)
}

/// Whether either chain exists.
fn chains_exist(ipt: &iptables::IPTables) -> Result<bool, DataplaneError> {
    for (table, chain) in [("filter", NETS_CHAIN), ("nat", NAT_CHAIN)] {
        if ipt
            .chain_exists(table, chain)
            .map_err(ipt_err(format!("-t {table} -L {chain}")))?
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Unhooks and deletes both chains; returns how many rules went.
pub(super) fn remove_networks(ipt: &iptables::IPTables) -> Result<usize, DataplaneError> {
    let mut removed = 0;
    for (table, parent, chain) in [
        ("filter", "FORWARD", NETS_CHAIN),
        ("nat", "POSTROUTING", NAT_CHAIN),
    ] {
        let target = format!("-j {chain}");
        for spec in chain_rules(ipt, table, parent)? {
            if spec.ends_with(&target) {
                ipt.delete(table, parent, &spec)
                    .map_err(ipt_err(format!("-t {table} -D {parent} {spec}")))?;
                removed += 1;
            }
        }
        if ipt
            .chain_exists(table, chain)
            .map_err(ipt_err(format!("-t {table} -L {chain}")))?
        {
            removed += chain_rules(ipt, table, chain)?.len();
            ipt.flush_chain(table, chain)
                .map_err(ipt_err(format!("-t {table} -F {chain}")))?;
            ipt.delete_chain(table, chain)
                .map_err(ipt_err(format!("-t {table} -X {chain}")))?;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> NetworkRules {
        NetworkRules::bridge(4096, "10.104.1.0/24".parse().unwrap(), "ovb4096")
    }

    fn db() -> NetworkRules {
        NetworkRules::bridge(4097, "10.104.2.0/24".parse().unwrap(), "ovb4097")
    }

    fn set(nets: &[NetworkRules]) -> BTreeSet<NetworkRules> {
        nets.iter().cloned().collect()
    }

    #[test]
    fn kernel_networks_rules() {
        assert_eq!(
            nets_chain(&set(&[web(), db()])),
            [
                "! -s 10.104.1.0/24 -i ovb4096 -j DROP",
                "! -s 10.104.2.0/24 -i ovb4097 -j DROP",
                "-i ovb4096 -o ovb4096 -j ACCEPT",
                "-d 10.104.1.0/24 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-d 10.104.1.0/24 -j DROP",
                "-i ovb4097 -o ovb4097 -j ACCEPT",
                "-d 10.104.2.0/24 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-d 10.104.2.0/24 -j DROP",
                "-s 10.104.1.0/24 -i ovb4096 -j ACCEPT",
                "-s 10.104.2.0/24 -i ovb4097 -j ACCEPT",
            ]
        );
        assert_eq!(
            nat_chain(&set(&[web(), db()])),
            [
                "-s 10.104.1.0/24 ! -d 10.104.1.0/24 -j MASQUERADE",
                "-s 10.104.2.0/24 ! -d 10.104.2.0/24 -j MASQUERADE",
            ]
        );
        assert!(nets_chain(&BTreeSet::new()).is_empty());
        assert_eq!(nets_hook(), "-m comment --comment overlayd -j OVERLAY-NETS");
        assert_eq!(nat_hook(), "-m comment --comment overlayd -j OVERLAY-NAT");
    }

    #[test]
    fn bpf_networks_rules() {
        // A host address in the subnet is cut to the network.
        let net = NetworkRules::veths(4096, "10.104.1.7/24".parse().unwrap());
        assert_eq!(net.subnet.to_string(), "10.104.1.0/24");
        assert_eq!(
            nets_chain(&set(&[net])),
            [
                "-d 10.104.1.0/24 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-d 10.104.1.0/24 -j DROP",
                "-s 10.104.1.0/24 -i ovn+ -j ACCEPT",
            ]
        );
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Applies `steps` to `have` as iptables would.
    fn apply(have: &[String], steps: &[Step]) -> Vec<String> {
        let mut cur = have.to_vec();
        for s in steps {
            match s {
                Step::Insert(n, spec) => cur.insert(n - 1, spec.clone()),
                Step::Delete(n) => {
                    cur.remove(n - 1);
                }
            }
        }
        cur
    }

    #[test]
    fn plans_keep_what_is_right() {
        let all = nets_chain(&set(&[web(), db()]));
        let one = nets_chain(&set(&[web()]));
        // Adding a network inserts its rules only.
        let steps = plan(&one, &all, true, &[]);
        assert_eq!(steps.len(), all.len() - one.len());
        assert!(steps.iter().all(|s| matches!(s, Step::Insert(..))));
        assert_eq!(apply(&one, &steps), all);
        // Removing one deletes its rules only.
        let steps = plan(&all, &one, true, &[]);
        assert_eq!(steps.len(), all.len() - one.len());
        assert!(steps.iter().all(|s| matches!(s, Step::Delete(_))));
        assert_eq!(apply(&all, &steps), one);
        // In line: nothing to do.
        assert!(plan(&all, &all, true, &[]).is_empty());
        // Rules in the wrong order, a foreign one, a repeat: fixed.
        let mixed = strings(&["x", &all[3], &all[0], &all[0]]);
        assert_eq!(apply(&mixed, &plan(&mixed, &all, true, &[])), all);
    }

    #[test]
    fn plans_before_keep_only_remove_what_went() {
        let web_rules = nets_chain(&set(&[web()]));
        let db_rules = nets_chain(&set(&[db()]));
        let all = nets_chain(&set(&[web(), db()]));
        // An earlier run's network (db) stays until pruning...
        let after = apply(&all, &plan(&all, &web_rules, false, &[]));
        assert_eq!(after, all);
        // ...unless it was removed since the start.
        let after = apply(&all, &plan(&all, &web_rules, false, &db_rules));
        assert_eq!(after, web_rules);
        // Missing rules are added in their places meanwhile.
        let partial = strings(&[&all[1], "x"]);
        let after = apply(&partial, &plan(&partial, &web_rules, false, &[]));
        for r in &web_rules {
            assert!(after.contains(r), "{r} missing from {after:?}");
        }
        assert!(after.contains(&"x".to_string()));
    }
}
