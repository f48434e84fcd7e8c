//! Issue 17, point 2: the endpoint hop's settings (`tc_attach`,
//! `veth_gro`, `big_tcp`) each do what they say on the lab's devices, and
//! traffic still crosses the hosts intact with each.

use overlay_lab::{exec_ok, need_root_or_skip, ping, transfer, AgentOptions, LabSpec};
use overlay_tests::{cluster, Cluster};

/// Starts two eBPF hosts with `extra` in the config.
fn lab(extra: &str) -> Option<Cluster> {
    if !need_root_or_skip() {
        return None;
    }
    let opts = AgentOptions {
        extra: extra.to_string(),
        ..Default::default()
    };
    Some(cluster(LabSpec::default(), "ebpf", opts).unwrap())
}

/// Ping both ways and 64 MiB with equal SHA-256, encapsulated and
/// decapsulated by the programs (the counters moved by the packets).
fn traffic_passes(c: &Cluster) {
    let (a, b) = (c.lab.container(1, 1).clone(), c.lab.container(2, 1).clone());
    let before = c.agent(1).counter("encap_packets").unwrap();
    let ab = ping(&a.ns, b.ip, 3, None, false, 3).unwrap();
    assert_eq!(ab.received, 3, "ping host1 -> host2: {ab:?}");
    let ba = ping(&b.ns, a.ip, 3, None, false, 3).unwrap();
    assert_eq!(ba.received, 3, "ping host2 -> host1: {ba:?}");
    let t = transfer(&a.ns, &b.ns, b.ip, 64 << 20).unwrap();
    assert_eq!(t.bytes_received, 64 << 20);
    assert_eq!(t.sent_sha256, t.received_sha256, "64 MiB arrived intact");
    let after = c.agent(1).counter("encap_packets").unwrap();
    assert!(after > before + 6, "encap_packets {before} -> {after}");
    assert!(c.agent(2).counter("decap_packets").unwrap() > 3);
}

fn gro_of(ns: &str, dev: &str) -> String {
    let out = exec_ok(ns, &["ethtool", "-k", dev]).unwrap();
    out.lines()
        .find_map(|l| l.strip_prefix("generic-receive-offload: "))
        .unwrap_or_else(|| panic!("no GRO line in ethtool -k {dev}: {out}"))
        .trim()
        .to_string()
}

#[test]
fn veth_gro_turns_gro_on_on_the_host_side_veths() {
    let Some(c) = lab("veth_gro = true\n") else {
        return;
    };
    for h in c.lab.hosts() {
        for ct in c.lab.containers().filter(|ct| ct.host == h.index) {
            assert_eq!(
                gro_of(&h.ns, &ct.host_veth),
                "on",
                "{} on host {}",
                ct.host_veth,
                h.index
            );
        }
    }
    traffic_passes(&c);
    let Some(plain) = lab("") else { return };
    let h = plain.lab.host(1);
    let ct = plain.lab.container(1, 1);
    assert_eq!(
        gro_of(&h.ns, &ct.host_veth),
        "off",
        "default: GRO left as it was"
    );
}

#[test]
fn tc_attach_clsact_uses_a_cls_bpf_filter_and_tcx_a_link() {
    let Some(c) = lab("tc_attach = \"clsact\"\n") else {
        return;
    };
    let h = c.lab.host(1);
    let veth = &c.lab.container(1, 1).host_veth;
    for (dev, prog) in [
        (veth.as_str(), "ovl_from_container"),
        (h.underlay_if.as_str(), "ovl_from_underlay"),
    ] {
        let filters = exec_ok(&h.ns, &["tc", "filter", "show", "dev", dev, "ingress"]).unwrap();
        assert!(
            filters.contains(prog) && filters.contains("direct-action"),
            "tc filter show dev {dev} ingress: {filters}"
        );
        let net = exec_ok(&h.ns, &["bpftool", "net", "show", "dev", dev]).unwrap();
        assert!(
            !net.contains("tcx/ingress"),
            "bpftool net show dev {dev}: {net}"
        );
        assert!(
            net.contains(&format!("{dev}(")) && net.contains(prog),
            "{net}"
        );
    }
    assert!(
        !pinned_links(&c).iter().any(|n| n.starts_with("port-")),
        "no TCX link pinned for a port with clsact: {:?}",
        pinned_links(&c)
    );
    let st = c.agent(1).status().unwrap();
    assert!(
        !st.to_string().contains("no clsact filter"),
        "status reports the filters attached: {st}"
    );
    traffic_passes(&c);
    drop(c);

    let Some(c) = lab("tc_attach = \"tcx\"\n") else {
        return;
    };
    let h = c.lab.host(1);
    let veth = &c.lab.container(1, 1).host_veth;
    // bpftool 7.1 does not list TCX links: the pinned link is the proof.
    assert!(
        pinned_links(&c).iter().any(|n| n.starts_with("port-")),
        "{:?}",
        pinned_links(&c)
    );
    let filters = exec_ok(&h.ns, &["tc", "filter", "show", "dev", veth, "ingress"]).unwrap();
    assert!(!filters.contains("ovl_from_container"), "{filters}");
    traffic_passes(&c);
}

/// `(gso_ipv4_max_size, gro_ipv4_max_size)` of `dev` in `ns`, read over
/// rtnetlink (iproute2 6.1's `ip -d link` does not print them).
/// The names of host 1's pinned links (`pin_dir/v<N>/links`).
fn pinned_links(c: &Cluster) -> Vec<String> {
    let dir = c.lab.bpffs_dir().join("h1");
    let mut names = Vec::new();
    for v in std::fs::read_dir(&dir).unwrap().flatten() {
        if let Ok(links) = std::fs::read_dir(v.path().join("links")) {
            names.extend(
                links
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
    }
    names
}

fn sizes(ns: &str, dev: &str) -> (Option<u32>, Option<u32>) {
    use overlay_user::sys::{netlink, netns, offload};
    let dev = dev.to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = rt
        .block_on(netns::run_in(&netns::named(ns), move |h| {
            Box::pin(async move {
                let link = netlink::link_by_name(&h, &dev).await?;
                offload::ip_sizes(&h, link.index).await
            })
        }))
        .unwrap()
        .unwrap();
    (s.gso_ipv4_max, s.gro_ipv4_max)
}

#[test]
fn big_tcp_raises_the_ipv4_sizes_of_the_host_veth_and_the_underlay() {
    let Some(c) = lab("big_tcp = true\n") else {
        return;
    };
    let h = c.lab.host(1);
    let ct = c.lab.container(1, 1);
    for (ns, dev) in [
        (h.ns.as_str(), ct.host_veth.as_str()),
        (h.ns.as_str(), h.underlay_if.as_str()),
    ] {
        assert_eq!(
            sizes(ns, dev),
            (Some(185_000), Some(185_000)),
            "gso/gro_ipv4_max_size of {dev} in {ns}"
        );
    }
    // The container's end is left as it was (see docs/operations.md).
    assert_eq!(sizes(&ct.ns, &ct.iface), (Some(65536), Some(65536)));
    traffic_passes(&c);
    drop(c);
    let Some(plain) = lab("") else { return };
    let h = plain.lab.host(1);
    let d = sizes(&h.ns, &plain.lab.container(1, 1).host_veth);
    assert_eq!(d, (Some(65536), Some(65536)), "default");
}
