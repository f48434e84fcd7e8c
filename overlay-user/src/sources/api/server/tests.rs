//! The server against a fake dataplane: requests, the raw protocol, the
//! socket and the limits.

use super::*;
use crate::agent::testing::{core, temp_dir, Call, FakeDataplane};
use crate::model::attach::{Attachment, Detachment};
use crate::sources::api::client::call;
use crate::sources::api::socket::bind;
use crate::sources::SourceError;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

/// No attach source in these tests.
struct NoPlumbing;

#[async_trait::async_trait]
impl Plumber for NoPlumbing {
    async fn attach(
        &self,
        _core: &Core,
        _target: Target,
        _address: &str,
        _mtu: Option<u32>,
    ) -> Result<Attachment, SourceError> {
        unreachable!("no attach in these tests")
    }
    async fn attach_network(
        &self,
        _core: &Core,
        _target: Target,
        _network: &str,
        _ip: Option<Ipv4Addr>,
        _mtu: Option<u32>,
    ) -> Result<Attachment, SourceError> {
        unreachable!("no attach in these tests")
    }
    async fn detach(&self, _core: &Core, _target: Target) -> Result<Detachment, SourceError> {
        unreachable!("no detach in these tests")
    }
}

async fn server(name: &str) -> (PathBuf, FakeDataplane, tokio::task::JoinHandle<()>) {
    server_with(name, Limits::default()).await
}

async fn server_with(
    name: &str,
    limits: Limits,
) -> (PathBuf, FakeDataplane, tokio::task::JoinHandle<()>) {
    let dir = temp_dir(name);
    let (core, dp, _) = core(dir.join("state")).await;
    let sock = dir.join("run/overlayd.sock");
    let listener = bind(&sock).await.unwrap();
    let api = Api {
        core,
        plumber: Arc::new(NoPlumbing),
        cluster: None,
        networks: None,
    };
    let task = tokio::spawn(serve(listener, api, limits));
    (sock, dp, task)
}

fn err(message: &str) -> Response {
    Response::Error {
        message: message.into(),
    }
}

#[tokio::test]
async fn server_and_client() {
    let (sock, dp, task) = server("api").await;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let add = Request::PeerAdd {
        subnet: "10.103.201.0/24".into(),
        underlay_ip: "192.168.56.6".into(),
        vtep_mac: None,
    };
    assert_eq!(call(&sock, &add).await.unwrap(), Response::Ok);
    assert_eq!(
        dp.take(),
        vec![Call::AddPeer(PeerSpec {
            subnet: "10.103.201.0/24".parse().unwrap(),
            underlay_ip: Ipv4Addr::new(192, 168, 56, 6),
            vtep_mac: None
        })]
    );

    let Response::Peers(peers) = call(&sock, &Request::PeerList).await.unwrap() else {
        panic!("not a peer list");
    };
    let listed: Vec<_> = peers
        .iter()
        .map(|p| (p.subnet.to_string(), p.source))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("10.103.200.0/24".to_string(), Source::Config),
            ("10.103.201.0/24".to_string(), Source::Api)
        ]
    );
    assert_eq!(peers[1].vtep_mac, "02:2a:c0:a8:38:06");
    assert!(peers[1].vtep_mac_derived);

    // Overlap: refused, nothing reaches the dataplane.
    let overlap = Request::PeerAdd {
        subnet: "10.103.201.0/25".into(),
        underlay_ip: "192.168.56.7".into(),
        vtep_mac: None,
    };
    assert_eq!(
        call(&sock, &overlap).await.unwrap(),
        err("peer subnet 10.103.201.0/25 overlaps peer subnet 10.103.201.0/24 (via 192.168.56.6); delete that peer first or choose a disjoint subnet")
    );
    let bad = Request::PeerAdd {
        subnet: "10.103.202.1/24".into(),
        underlay_ip: "192.168.56.7".into(),
        vtep_mac: Some("zz".into()),
    };
    assert_eq!(
        call(&sock, &bad).await.unwrap(),
        err("10.103.202.1/24 has host bits set; expected a network address like 10.103.202.0/24")
    );
    let bad_mac = Request::PeerAdd {
        subnet: "10.103.202.0/24".into(),
        underlay_ip: "192.168.56.7".into(),
        vtep_mac: Some("zz".into()),
    };
    assert_eq!(
        call(&sock, &bad_mac).await.unwrap(),
        err("\"zz\" is not a MAC address; expected six hex bytes like 02:2a:c0:a8:38:05")
    );
    assert_eq!(dp.take(), vec![]);

    let del = Request::PeerDel {
        subnet: "10.103.201.0/24".into(),
    };
    assert_eq!(call(&sock, &del).await.unwrap(), Response::Ok);
    assert_eq!(
        dp.take(),
        vec![Call::DelPeer("10.103.201.0/24".parse().unwrap())]
    );
    assert_eq!(
        call(&sock, &del).await.unwrap(),
        err("no peer for 10.103.201.0/24")
    );

    // Endpoints.
    let ep = Request::EndpointAdd {
        ip: "10.103.100.2".into(),
        dev: "veth1".into(),
    };
    assert_eq!(call(&sock, &ep).await.unwrap(), Response::Ok);
    let Response::Endpoints(eps) = call(&sock, &Request::EndpointList).await.unwrap() else {
        panic!("not an endpoint list");
    };
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].mac.as_deref(), Some("02:42:00:00:00:02"));
    assert_eq!(eps[0].source, Source::Api);
    let missing = Request::EndpointAdd {
        ip: "10.103.100.9".into(),
        dev: "nosuch0".into(),
    };
    assert_eq!(
        call(&sock, &missing).await.unwrap(),
        err("no interface named nosuch0")
    );
    let bad_ip = Request::EndpointDel {
        ip: "10.103.100".into(),
    };
    assert_eq!(
        call(&sock, &bad_ip).await.unwrap(),
        err("\"10.103.100\" is not an IPv4 address; expected a dotted quad like 192.168.56.5")
    );
    let del_ep = Request::EndpointDel {
        ip: "10.103.100.2".into(),
    };
    assert_eq!(call(&sock, &del_ep).await.unwrap(), Response::Ok);

    let Response::Status(status) = call(&sock, &Request::Status).await.unwrap() else {
        panic!("not a status");
    };
    assert_eq!(status.peers, 1);
    assert_eq!(status.endpoints, 0);
    assert_eq!(status.cluster, None);
    for req in [
        Request::Hosts,
        Request::ClusterStatus,
        Request::HostRm { name: "h2".into() },
    ] {
        assert_eq!(call(&sock, &req).await.unwrap(), err(NO_CLUSTER));
    }
    for req in [
        Request::NetworkList,
        Request::NetworkRm { name: "web".into() },
        Request::NetworkInspect { name: "web".into() },
        Request::NetworkCreate {
            name: "web".into(),
            subnet: None,
            gateway: None,
            vni: None,
        },
    ] {
        assert_eq!(
            call(&sock, &req).await.unwrap(),
            err("networks need a cluster store: add [cluster] etcd = [\"http://HOST:2379\"] to the config")
        );
    }

    task.abort();
}

#[tokio::test]
async fn raw_protocol() {
    let (sock, _dp, task) = server("api-raw").await;
    let stream = UnixStream::connect(&sock).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write
        .write_all(b"\"peer_list\"\n\nnot json\n\"status\"\n")
        .await
        .unwrap();
    let first = lines.next_line().await.unwrap().unwrap();
    assert!(
        first.starts_with(r#"{"peers":[{"subnet":"10.103.200.0/24""#),
        "{first}"
    );
    let second = lines.next_line().await.unwrap().unwrap();
    assert!(
        second.starts_with(r#"{"error":{"message":"invalid request: "#),
        "{second}"
    );
    let third = lines.next_line().await.unwrap().unwrap();
    assert!(third.starts_with(r#"{"status":{"mode":"ebpf""#), "{third}");
    task.abort();
}

#[tokio::test]
async fn bind_replaces_stale_and_refuses_live_sockets() {
    let dir = temp_dir("api-bind");
    let sock = dir.join("s.sock");
    let first = bind(&sock).await.unwrap();
    // Live: refused.
    let e = bind(&sock).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{} is in use: another overlayd is running; stop it or use --socket PATH",
            sock.display()
        )
    );
    drop(first);
    // Stale (the file remains, nobody listens): replaced.
    assert!(sock.exists());
    let _second = bind(&sock).await.unwrap();
    // Not a socket: refused.
    let file = dir.join("plain");
    std::fs::write(&file, "x").unwrap();
    assert!(matches!(
        bind(&file).await.unwrap_err(),
        ApiError::NotASocket { .. }
    ));
}

/// Reads everything until the server closes the connection.
async fn read_to_close(stream: UnixStream) -> String {
    let mut out = String::new();
    let mut reader = BufReader::new(stream);
    tokio::time::timeout(Duration::from_secs(5), reader.read_to_string(&mut out))
        .await
        .expect("the server closes the connection")
        .unwrap();
    out
}

#[tokio::test]
async fn idle_connections_time_out() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        max_connections: 64,
    };
    let (sock, _dp, task) = server_with("api-idle", limits).await;
    // A busy connection, one request every 100 ms for 1 s, is never cut.
    let stream = UnixStream::connect(&sock).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        write.write_all(b"\"peer_list\"\n").await.unwrap();
        let answer = lines.next_line().await.unwrap().unwrap();
        assert!(answer.starts_with(r#"{"peers":"#), "{answer}");
    }
    // Silence, or half a line, for longer than the timeout: told, then closed.
    let started = std::time::Instant::now();
    write.write_all(b"\"peer_").await.unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        rest.as_deref(),
        Some(
            r#"{"error":{"message":"closing the connection: idle for 300ms (api.idle_timeout_secs)"}}"#
        )
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(lines.next_line().await.unwrap(), None, "closed");
    let idle = UnixStream::connect(&sock).await.unwrap();
    assert_eq!(
        read_to_close(idle).await,
        "{\"error\":{\"message\":\"closing the connection: idle for 300ms (api.idle_timeout_secs)\"}}\n"
    );
    task.abort();
}

#[tokio::test]
async fn connections_are_capped() {
    let limits = Limits {
        idle_timeout: Duration::from_secs(30),
        max_connections: 2,
    };
    let (sock, _dp, task) = server_with("api-cap", limits).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let stream = UnixStream::connect(&sock).await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        write.write_all(b"\"status\"\n").await.unwrap();
        let answer = lines.next_line().await.unwrap().unwrap();
        assert!(answer.starts_with(r#"{"status":"#), "{answer}");
        held.push((lines, write));
    }
    let over = UnixStream::connect(&sock).await.unwrap();
    assert_eq!(
        read_to_close(over).await,
        "{\"error\":{\"message\":\"too many connections: overlayd serves at most 2 API \
connections at once (api.max_connections); close idle ones or try again\"}}\n"
    );
    // The client says the same.
    assert_eq!(
        call(&sock, &Request::Status).await.unwrap(),
        err(
            "too many connections: overlayd serves at most 2 API connections at once \
(api.max_connections); close idle ones or try again"
        )
    );
    // The held connections still work; closing one frees its slot.
    let (lines, write) = &mut held[0];
    write.write_all(b"\"peer_list\"\n").await.unwrap();
    assert!(lines.next_line().await.unwrap().is_some());
    held.pop();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match call(&sock, &Request::Status).await.unwrap() {
            Response::Status(_) => break,
            other => assert!(std::time::Instant::now() < deadline, "{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
}

/// Connects to `sock` from a forked child that became uid/gid 65534
/// (nobody), sends `"status"` and returns what it read, or the errno of a
/// refused connect.
fn status_as_nobody(sock: &std::path::Path) -> Result<String, i32> {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: zeroed sockaddr_un is valid; the path fits (checked).
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let path = sock.as_os_str().as_bytes();
    assert!(path.len() < addr.sun_path.len());
    for (d, s) in addr.sun_path.iter_mut().zip(path) {
        *d = *s as libc::c_char;
    }
    let mut fds = [0; 2];
    // SAFETY: a valid array of two fds.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let request = b"\"status\"\n";
    // SAFETY: the child makes only async-signal-safe system calls on data
    // prepared before the fork, then _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe {
            let out = fds[1];
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                libc::_exit(3);
            }
            let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if libc::connect(s, &addr as *const _ as *const libc::sockaddr, len) != 0 {
                let errno = [0xff, *libc::__errno_location() as u8];
                libc::write(out, errno.as_ptr().cast(), 2);
                libc::_exit(1);
            }
            libc::write(s, request.as_ptr().cast(), request.len());
            let mut buf = [0u8; 512];
            loop {
                let n = libc::read(s, buf.as_mut_ptr().cast(), buf.len());
                if n <= 0 {
                    break;
                }
                libc::write(out, buf.as_ptr().cast(), n as usize);
            }
            libc::_exit(0);
        }
    }
    assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
    // SAFETY: fds[0] is ours; fds[1] is closed here so EOF comes when the child exits.
    let mut got = Vec::new();
    unsafe {
        libc::close(fds[1]);
        std::fs::File::from_raw_fd(fds[0])
            .read_to_end(&mut got)
            .unwrap();
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
    match got.as_slice() {
        [0xff, errno] => Err(i32::from(*errno)),
        _ => Ok(String::from_utf8(got).unwrap()),
    }
}

#[tokio::test]
async fn non_root_peers_are_refused() {
    let (sock, _dp, task) = server("api-uid").await;
    // Mode 0600 keeps nobody out already.
    let s = sock.clone();
    let refused = tokio::task::spawn_blocking(move || status_as_nobody(&s))
        .await
        .unwrap();
    assert_eq!(refused, Err(libc::EACCES));
    // With the mode widened by hand, SO_PEERCRED still refuses it.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let s = sock.clone();
    let answer = tokio::task::spawn_blocking(move || status_as_nobody(&s))
        .await
        .unwrap();
    assert_eq!(
        answer,
        Ok(
            "{\"error\":{\"message\":\"permission denied: overlayd's API accepts requests \
from root (uid 0) only, not uid 65534\"}}\n"
                .to_string()
        )
    );
    // Root is still served.
    assert!(matches!(
        call(&sock, &Request::Status).await.unwrap(),
        Response::Status(_)
    ));
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_never_exists_with_a_wider_mode() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = temp_dir("api-mode");
    let sock = dir.join("overlayd.sock");
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (sock, stop) = (sock.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut seen, mut wrong) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                if let Ok(meta) = std::fs::symlink_metadata(&sock) {
                    seen += 1;
                    let mode = meta.permissions().mode() & 0o777;
                    if mode != 0o600 {
                        wrong.push(mode);
                    }
                }
            }
            (seen, wrong)
        })
    };
    for _ in 0..500 {
        let listener = bind(&sock).await.unwrap();
        let mode = std::fs::symlink_metadata(&sock)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(listener);
        std::fs::remove_file(&sock).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let (seen, wrong) = watcher.join().unwrap();
    assert!(seen > 0, "the watcher never saw the socket");
    assert_eq!(
        wrong,
        Vec::<u32>::new(),
        "modes seen at the path ({seen} looks)"
    );
    // Nothing is left beside it.
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn learned_endpoints_are_listed() {
    let (sock, dp, task) = server("api-learned").await;
    let learned = |ip: &str, ifname: &str, ifindex: u32| EndpointSpec {
        ip: ip.parse().unwrap(),
        ifname: ifname.into(),
        ifindex,
        mac: [2, 0x42, 10, 103, 100, ifindex as u8],
    };
    dp.learned.lock().unwrap().extend([
        learned("10.103.100.9", "veth2", 11),
        learned("10.103.100.3", "veth1", 10),
    ]);
    let ep = Request::EndpointAdd {
        ip: "10.103.100.5".into(),
        dev: "veth1".into(),
    };
    assert_eq!(call(&sock, &ep).await.unwrap(), Response::Ok);
    let list = |eps: Vec<EndpointInfo>| -> Vec<(String, String, Source)> {
        eps.into_iter()
            .map(|e| (e.ip.to_string(), e.dev, e.source))
            .collect()
    };
    let Response::Endpoints(eps) = call(&sock, &Request::EndpointList).await.unwrap() else {
        panic!("not an endpoint list");
    };
    assert_eq!(eps[0].mac.as_deref(), Some("02:42:0a:67:64:0a"));
    assert_eq!(
        list(eps),
        vec![
            ("10.103.100.3".into(), "veth1".into(), Source::Learned),
            ("10.103.100.5".into(), "veth1".into(), Source::Api),
            ("10.103.100.9".into(), "veth2".into(), Source::Learned),
        ]
    );
    // Registered by a source: listed once, with that source.
    let ep = Request::EndpointAdd {
        ip: "10.103.100.9".into(),
        dev: "veth2".into(),
    };
    assert_eq!(call(&sock, &ep).await.unwrap(), Response::Ok);
    let Response::Endpoints(eps) = call(&sock, &Request::EndpointList).await.unwrap() else {
        panic!("not an endpoint list");
    };
    assert_eq!(
        list(eps)[1..],
        [
            ("10.103.100.5".into(), "veth1".into(), Source::Api),
            ("10.103.100.9".into(), "veth2".into(), Source::Api),
        ]
    );
    // A learned endpoint can be deleted (its map entry goes); an unknown one not.
    dp.take();
    let del = |ip: &str| Request::EndpointDel { ip: ip.into() };
    assert_eq!(
        call(&sock, &del("10.103.100.3")).await.unwrap(),
        Response::Ok
    );
    assert_eq!(dp.take(), vec![Call::DelEndpoint(ip("10.103.100.3"))]);
    assert_eq!(
        call(&sock, &del("10.103.100.4")).await.unwrap(),
        err("no endpoint for 10.103.100.4")
    );
    assert_eq!(dp.take(), vec![]);
    task.abort();
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

mod monitor;
