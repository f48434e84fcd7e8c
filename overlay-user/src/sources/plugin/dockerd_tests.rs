//! The plugin against a real dockerd (root, docker): a lab host's dockerd
//! in its private mount namespace finds the plugin in the host's plugin
//! directory; the store is the in-memory one of the unit tests and the
//! agent the fake one, which has not been told of the network (no cluster
//! watch here), so a container's `Join` is refused by the core and must
//! leave nothing behind.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use overlay_lab::{need_docker_or_skip, run_in_netns, DockerOptions, Dockerd, Lab, LabSpec};

use super::tests::FakeDirectory;
use super::*;
use crate::agent::testing;
use crate::model::overlay_network::NetworkRequest;

fn wait(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{what}: not within 2 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("{what}: {:?}", start.elapsed());
}

fn ovl_networks(d: &Dockerd) -> Vec<String> {
    d.cli_ok(&[
        "network",
        "ls",
        "--filter",
        "driver=ovl",
        "--format",
        "{{.Name}}",
    ])
    .unwrap()
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn a_real_dockerd_uses_the_plugin() {
    if !need_docker_or_skip() {
        return;
    }
    let lab = Lab::new(LabSpec {
        hosts: 1,
        containers_per_host: 0,
        docker: true,
        ..Default::default()
    })
    .unwrap();
    let d = Dockerd::start(
        &lab,
        1,
        &DockerOptions {
            plugin_dir: true,
            ..Default::default()
        },
    )
    .unwrap();
    d.import_busybox().unwrap();
    let host = lab.host(1).clone();
    let plugin_dir = d.plugin_dir().unwrap().to_path_buf();
    let dir = Arc::new(FakeDirectory::default());
    run_in_netns(&host.ns, || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (core, _dp, _net) = testing::core(testing::temp_dir("plugin-dockerd")).await;
            let settings = Settings {
                socket: plugin_dir.join("ovl.sock"),
                docker_socket: d.socket().to_path_buf(),
                host: "h1".into(),
                underlay_ip: host.underlay_ip,
                underlay_interface: host.underlay_if.clone(),
            };
            let source = PluginSource::new(dir.clone(), settings).unwrap();
            let task = tokio::spawn(Box::new(source).run(core));
            tokio::task::block_in_place(|| steps(&d, &dir));
            task.abort();
        });
    })
    .unwrap();
}

fn steps(d: &Dockerd, dir: &FakeDirectory) {
    // Docker's default IPAM is refused, naming what to add.
    let out = d
        .cli(&[
            "network",
            "create",
            "-d",
            "ovl",
            "--subnet",
            "10.110.9.0/24",
            "bad",
        ])
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(!out.status.success());
    assert!(
        stderr.contains("uses Docker's default IPAM (address space \"LocalDefault\"); the ovl network driver needs ovl's IPAM: add --ipam-driver ovl"),
        "{stderr}"
    );
    // Made with docker: stored under Docker's name, with its subnet and gateway.
    d.cli_ok(&[
        "network",
        "create",
        "-d",
        "ovl",
        "--ipam-driver",
        "ovl",
        "--subnet",
        "10.110.240.0/24",
        "--gateway",
        "10.110.240.254",
        "web",
    ])
    .unwrap();
    wait("web stored under its name", || {
        dir.networks.lock().unwrap().iter().any(|n| n.name == "web")
    });
    let web = dir.networks.lock().unwrap()[0].clone();
    assert_eq!(
        (web.subnet.to_string(), web.gateway),
        (
            "10.110.240.0/24".to_string(),
            Ipv4Addr::new(10, 110, 240, 254)
        )
    );
    // Without a subnet: one from the store's pool.
    d.cli_ok(&[
        "network",
        "create",
        "-d",
        "ovl",
        "--ipam-driver",
        "ovl",
        "api",
    ])
    .unwrap();
    wait("api stored under its name", || {
        dir.networks.lock().unwrap().iter().any(|n| n.name == "api")
    });
    let subnet = d
        .cli_ok(&[
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Subnet}}",
            "api",
        ])
        .unwrap();
    assert_eq!(subnet, "10.104.0.0/24");
    // Made in the store: created on Docker.
    tokio::runtime::Handle::current()
        .block_on(dir.create_network(NetworkRequest {
            name: "db".into(),
            subnet: Some("10.110.241.0/24".parse().unwrap()),
            ..Default::default()
        }))
        .unwrap();
    wait("db on Docker", || {
        ovl_networks(d).contains(&"db".to_string())
    });
    // A container: the fake agent refuses its endpoint; nothing stays.
    let out = d
        .cli(&[
            "run",
            "-d",
            "--network",
            "web",
            "--name",
            "c1",
            overlay_lab::BUSYBOX_IMAGE,
            "sleep",
            "60",
        ])
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        stderr.contains("remote: no overlay network with VNI 4096 on this host"),
        "{stderr}"
    );
    assert!(dir.held.lock().unwrap().is_empty(), "address not released");
    // Removed in Docker: gone from the store; gone from the store: gone from Docker.
    let _ = d.cli(&["rm", "-f", "c1"]);
    d.cli_ok(&["network", "rm", "web", "api"]).unwrap();
    assert!(dir.networks.lock().unwrap().iter().all(|n| n.name == "db"));
    dir.networks.lock().unwrap().clear();
    wait("db gone from Docker", || ovl_networks(d).is_empty());
}
