//! Real etcd members on lab hosts, for the cluster store's tests.
//!
//! [`Etcd::start`] runs one `etcd` per given host, inside that host's
//! network namespace (through [`Lab::spawn`]), listening for clients on
//! `http(s)://<underlay IP>:2379` and for peers on `:2380`, with its data
//! directory under the lab's temp dir; several members form one cluster.
//! With [`EtcdOptions::tls`] the client URLs are https:// with certificates
//! made by [`TlsFiles::generate`] (openssl), and clients must present one
//! signed by the same CA. Dropping the [`Etcd`] stops every member and
//! removes their directories; the lab's drop stops them too.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::{nsenter_command, Lab, Proc};

/// How long a member (or the whole cluster) gets to answer after a start.
pub const ETCD_START_TIMEOUT: Duration = Duration::from_secs(30);

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        || ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(program).is_file())
}

/// What is missing to run etcd in the lab (empty: nothing).
pub fn etcd_missing() -> Vec<&'static str> {
    let mut missing = Vec::new();
    for (program, package) in [
        ("etcd", "etcd-server"),
        ("etcdctl", "etcd-client"),
        ("openssl", "openssl"),
    ] {
        if !on_path(program) {
            missing.push(package);
        }
    }
    missing
}

/// Call first in every test that runs etcd. Returns `true` when running as
/// root with etcd, etcdctl and openssl installed. Otherwise: with `CI` set
/// to `true` (or `1`) it panics loudly (`cargo xtask setup` installs them);
/// without it, it prints why it skips to stderr and returns `false`.
pub fn need_etcd_or_skip() -> bool {
    if !crate::need_root_or_skip() {
        return false;
    }
    let missing = etcd_missing();
    if missing.is_empty() {
        return true;
    }
    let ci = crate::is_ci();
    let msg = format!(
        "this test runs a real etcd but these are missing: {} (apt-get install -y {}, or `cargo xtask setup`)",
        missing.join(", "),
        missing.join(" ")
    );
    if ci {
        panic!("!!! overlay-lab: {msg}; CI=true, refusing to skip !!!");
    }
    eprintln!("skipping: {msg}");
    false
}

/// Certificates for an etcd with TLS: a CA, a server certificate for the
/// members' addresses, a client certificate, and a second CA that signed
/// nothing of it (to test a wrong CA).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA's certificate (PEM).
    pub ca: PathBuf,
    /// The server certificate (PEM), for every member's address.
    pub server_cert: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
    /// A client certificate signed by the CA.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    /// Another CA's certificate, which signed none of these.
    pub wrong_ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running openssl")?;
    ensure!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl TlsFiles {
    /// Make the certificates in `dir` for servers at `ips`.
    pub fn generate(dir: &Path, ips: &[std::net::Ipv4Addr]) -> Result<TlsFiles> {
        std::fs::create_dir_all(dir)?;
        for ca in ["ca", "wrong-ca"] {
            openssl(
                dir,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=overlay-lab {ca}"),
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.pem"),
                ],
            )?;
        }
        let sans: Vec<String> = ips
            .iter()
            .map(|ip| format!("IP:{ip}"))
            .chain(["IP:127.0.0.1".to_string(), "DNS:localhost".to_string()])
            .collect();
        std::fs::write(
            dir.join("server.ext"),
            format!(
                "subjectAltName={}\nextendedKeyUsage=serverAuth,clientAuth\n",
                sans.join(",")
            ),
        )?;
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")?;
        for who in ["server", "client"] {
            openssl(
                dir,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    &format!("/CN=overlay-lab {who}"),
                    "-keyout",
                    &format!("{who}.key"),
                    "-out",
                    &format!("{who}.csr"),
                ],
            )?;
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{who}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    &format!("{who}.ext"),
                    "-out",
                    &format!("{who}.pem"),
                ],
            )?;
        }
        Ok(TlsFiles {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            wrong_ca: dir.join("wrong-ca.pem"),
        })
    }
}

/// Settings of an etcd cluster in the lab.
#[derive(Debug, Clone, Default)]
pub struct EtcdOptions {
    /// Serve clients over TLS with these files (and require client certificates).
    pub tls: Option<TlsFiles>,
    /// Extra etcd arguments for every member.
    pub extra_args: Vec<String>,
}

#[derive(Debug)]
struct Member {
    host: usize,
    ns: String,
    client_url: String,
    argv: Vec<String>,
    proc: Option<Proc>,
    starts: u32,
}

/// An etcd cluster on lab hosts; stopped and removed on drop.
#[derive(Debug)]
pub struct Etcd {
    members: Vec<Member>,
    dir: PathBuf,
    tls: Option<TlsFiles>,
}

impl Etcd {
    /// Start one member on each of `hosts` (1-based) of `lab` and wait until
    /// every member answers.
    pub fn start(lab: &Lab, hosts: &[usize], opts: &EtcdOptions) -> Result<Etcd> {
        ensure!(
            !hosts.is_empty(),
            "an etcd cluster needs at least one member"
        );
        let dir = lab.dir().join(format!(
            "etcd-{}",
            hosts
                .iter()
                .map(|h| h.to_string())
                .collect::<Vec<_>>()
                .join("-")
        ));
        std::fs::create_dir_all(&dir)?;
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        let peer = |h: usize| format!("http://{}:2380", lab.host(h).underlay_ip);
        let initial: Vec<String> = hosts.iter().map(|&h| format!("m{h}={}", peer(h))).collect();
        let mut members = Vec::new();
        for &h in hosts {
            let ip = lab.host(h).underlay_ip;
            let client_url = format!("{scheme}://{ip}:2379");
            let mut argv: Vec<String> = [
                "etcd",
                "--name",
                &format!("m{h}"),
                "--data-dir",
                &dir.join(format!("m{h}")).display().to_string(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer(h),
                "--initial-advertise-peer-urls",
                &peer(h),
                "--initial-cluster",
                &initial.join(","),
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                lab.id(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if let Some(tls) = &opts.tls {
                for (flag, path) in [
                    ("--cert-file", &tls.server_cert),
                    ("--key-file", &tls.server_key),
                    ("--trusted-ca-file", &tls.ca),
                ] {
                    argv.push(flag.into());
                    argv.push(path.display().to_string());
                }
                argv.push("--client-cert-auth".into());
            }
            argv.extend(opts.extra_args.iter().cloned());
            members.push(Member {
                host: h,
                ns: lab.host(h).ns.clone(),
                client_url,
                argv,
                proc: None,
                starts: 0,
            });
        }
        let mut etcd = Etcd {
            members,
            dir,
            tls: opts.tls.clone(),
        };
        for i in 0..etcd.members.len() {
            etcd.launch(lab, i)?;
        }
        etcd.wait_healthy(ETCD_START_TIMEOUT)?;
        Ok(etcd)
    }

    fn launch(&mut self, lab: &Lab, i: usize) -> Result<()> {
        let m = &mut self.members[i];
        let log = format!("etcd-m{}-{}.log", m.host, m.starts);
        m.starts += 1;
        let argv: Vec<&str> = m.argv.iter().map(String::as_str).collect();
        m.proc = Some(lab.spawn(&m.ns, &argv, &log)?);
        Ok(())
    }

    /// The client URLs, member by member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// The hosts the members run on, member by member.
    pub fn hosts(&self) -> Vec<usize> {
        self.members.iter().map(|m| m.host).collect()
    }

    /// The TLS files, if the members use TLS.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The endpoints as a TOML array: `["http://192.168.56.4:2379", ...]`.
    pub fn endpoints_toml(&self) -> String {
        let quoted: Vec<String> = self.endpoints().iter().map(|e| format!("{e:?}")).collect();
        format!("[{}]", quoted.join(", "))
    }

    /// Whether member `i` (0-based) runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].proc.as_ref().is_some_and(Proc::is_running)
    }

    /// Member `i`'s log (of its current start).
    pub fn log(&self, i: usize) -> String {
        self.members[i]
            .proc
            .as_ref()
            .map(Proc::log)
            .unwrap_or_default()
    }

    /// Kill member `i` with SIGKILL, as a crash would.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        if let Some(p) = self.members[i].proc.as_mut() {
            p.kill()?;
        }
        Ok(())
    }

    /// Stop member `i` with SIGTERM.
    pub fn stop(&mut self, i: usize) -> Result<()> {
        if let Some(p) = self.members[i].proc.as_mut() {
            p.stop()?;
        }
        Ok(())
    }

    /// Start member `i` again with its data (it rejoins its cluster).
    pub fn restart(&mut self, lab: &Lab, i: usize) -> Result<()> {
        ensure!(!self.is_running(i), "etcd member {i} still runs");
        // A restarted member finds its cluster in its data directory.
        let argv = &mut self.members[i].argv;
        if let Some(pos) = argv.iter().position(|a| a == "--initial-cluster-state") {
            argv[pos + 1] = "existing".into();
        }
        self.launch(lab, i)
    }

    /// `etcdctl` against the running members, from the first running member's host.
    pub fn etcdctl(&self, args: &[&str]) -> Result<Output> {
        let running: Vec<&Member> = self
            .members
            .iter()
            .filter(|m| m.proc.as_ref().is_some_and(Proc::is_running))
            .collect();
        let Some(first) = running.first() else {
            bail!("no etcd member runs");
        };
        let eps: Vec<&str> = running.iter().map(|m| m.client_url.as_str()).collect();
        let mut cmd = nsenter_command(&first.ns, "etcdctl");
        cmd.arg(format!("--endpoints={}", eps.join(",")))
            .arg("--dial-timeout=2s")
            .arg("--command-timeout=5s");
        if let Some(tls) = &self.tls {
            cmd.arg(format!("--cacert={}", tls.ca.display()))
                .arg(format!("--cert={}", tls.client_cert.display()))
                .arg(format!("--key={}", tls.client_key.display()));
        }
        cmd.args(args)
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running etcdctl {}", args.join(" ")))
    }

    /// Like [`Etcd::etcdctl`], failing with its output unless it exits 0; returns stdout.
    pub fn etcdctl_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.etcdctl(args)?;
        if !out.status.success() {
            bail!(
                "etcdctl {} failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Wait until every running member reports healthy.
    pub fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let out = self.etcdctl(&["endpoint", "health"]);
            if out.as_ref().is_ok_and(|o| o.status.success()) {
                return Ok(());
            }
            for (i, m) in self.members.iter().enumerate() {
                if m.proc.as_ref().is_some_and(|p| !p.is_running()) {
                    bail!("etcd member m{} exited:\n{}", m.host, self.log(i));
                }
            }
            if start.elapsed() > timeout {
                bail!(
                    "etcd not healthy after {timeout:?}: {:?}\n{}",
                    out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned()),
                    self.log(0)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The member (0-based) that leads now.
    pub fn leader(&self) -> Result<usize> {
        let out = self.etcdctl_ok(&["endpoint", "status", "-w", "json"])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("etcdctl endpoint status")?;
        for e in v.as_array().into_iter().flatten() {
            let status = &e["Status"];
            if status["leader"] == status["header"]["member_id"] {
                let ep = e["Endpoint"].as_str().unwrap_or_default();
                if let Some(i) = self.members.iter().position(|m| m.client_url == ep) {
                    return Ok(i);
                }
            }
        }
        bail!("no leader among the running members: {out}")
    }

    /// The `[cluster]` section for an overlayd named `name` on these members
    /// (with the client certificate when TLS is on), plus `extra` lines.
    pub fn cluster_section(&self, name: &str, extra: &str) -> String {
        let mut s = format!(
            "\n[cluster]\netcd = {}\nname = \"{name}\"\n",
            self.endpoints_toml()
        );
        if let Some(tls) = &self.tls {
            s.push_str(&format!(
                "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                tls.ca.display(),
                tls.client_cert.display(),
                tls.client_key.display()
            ));
        }
        s.push_str(extra);
        s
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let mut procs: Vec<Proc> = self
            .members
            .iter_mut()
            .filter_map(|m| m.proc.take())
            .collect();
        for p in &mut procs {
            let _ = p.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
