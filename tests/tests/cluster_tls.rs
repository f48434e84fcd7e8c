//! TLS to etcd (issue 11, point 6): etcd started with generated
//! certificates (https:// client URLs, client certificates required);
//! `cluster init` and the agents connect with a CA, a client certificate and
//! its key, and find each other. A wrong CA fails with an error that says so.

use std::time::Duration;

use overlay_lab::{
    agent_config, need_etcd_or_skip, nsenter_command, Binaries, Etcd, EtcdOptions, Lab, LabSpec,
    Overlayd, TlsFiles,
};
use overlay_tests::{cluster_init, cluster_opts, ctl_on, wait_cluster_peers};

#[test]
fn https_with_client_certificates_and_a_wrong_ca() {
    if !need_etcd_or_skip() {
        return;
    }
    let lab = Lab::new(LabSpec {
        hosts: 2,
        containers_per_host: 0,
        ..Default::default()
    })
    .unwrap();
    let bins = Binaries::locate().unwrap();
    let tls = TlsFiles::generate(&lab.dir().join("tls"), &[lab.host(1).underlay_ip]).unwrap();
    let etcd = Etcd::start(
        &lab,
        &[1],
        &EtcdOptions {
            tls: Some(tls.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        etcd.endpoints(),
        vec!["https://192.168.56.4:2379".to_string()]
    );
    let out = cluster_init(&lab, 1, &bins, &etcd, "10.103.0.0/16", 24).unwrap();
    assert!(
        out.contains("cluster settings written to /overlay/config"),
        "{out}"
    );

    // A wrong CA: cluster init and overlayd say so.
    let (ca, cert, key) = (
        tls.wrong_ca.display().to_string(),
        tls.client_cert.display().to_string(),
        tls.client_key.display().to_string(),
    );
    let out = ctl_on(
        &lab,
        2,
        &bins,
        &[
            "cluster",
            "init",
            "--etcd",
            "https://192.168.56.4:2379",
            "--pool",
            "10.103.0.0/16",
            "--subnet-len",
            "24",
            "--vni",
            "42",
            "--ca-file",
            &ca,
            "--cert-file",
            &cert,
            "--key-file",
            &key,
        ],
    )
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let expected = format!(
        "etcd's certificate is not signed by the CA in cluster.ca_file {ca}; expected the CA that signed it"
    );
    assert!(
        err.starts_with("error: TLS handshake with etcd at https://192.168.56.4:2379 failed: "),
        "{err}"
    );
    assert!(
        err.contains("UnknownIssuer") && err.contains(&expected),
        "{err}"
    );

    let good = cluster_opts(&etcd, 2, "kernel", false, "timeout = 1\n");
    let wrong = agent_config(&lab, 2, &good).replace(&tls.ca.display().to_string(), &ca);
    let cfg = lab.dir().join("h2-wrong-ca.toml");
    std::fs::write(&cfg, wrong).unwrap();
    let out = nsenter_command(&lab.host(2).ns, &bins.overlayd.display().to_string())
        .arg("--config")
        .arg(&cfg)
        .arg("--socket")
        .arg(lab.dir().join("h2-wrong.sock"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("TLS handshake with etcd at https://192.168.56.4:2379 failed"),
        "{err}"
    );
    assert!(err.contains(&expected), "{err}");
    assert!(err.contains("no saved lease"), "{err}");

    // The right CA and client certificate: both hosts find each other.
    let a1 = Overlayd::start(&lab, 1, &bins, &cluster_opts(&etcd, 1, "ebpf", false, "")).unwrap();
    let a2 = Overlayd::start(&lab, 2, &bins, &good).unwrap();
    wait_cluster_peers(&a1, &["10.103.200.0/24"], Duration::from_secs(10)).unwrap();
    wait_cluster_peers(&a2, &["10.103.100.0/24"], Duration::from_secs(10)).unwrap();
    let st: serde_json::Value =
        serde_json::from_str(&a2.ctl_ok(&["--json", "cluster", "status"]).unwrap()).unwrap();
    assert_eq!(st["connected"], true, "{st}");
    assert_eq!(st["member"], "m1 (https://192.168.56.4:2379)", "{st}");
}
