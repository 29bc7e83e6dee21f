//! Private networks (`--network private`, `kiln run -p`), as rootless podman
//! makes them: the step gets a network namespace of its own, and a user-mode
//! forwarder on the host side gives it outbound access and publishes ports.
//! The forwarder is pasta (package passt, preferred) or slirp4netns, looked
//! up on PATH when the step starts; `KILN_NETWORK_HELPER` picks one.
//!
//! The helper process unshares the namespace and waits; the engine then
//! starts the forwarder for it and lets the helper go on (see
//! `child::spawn_helper`). The forwarder is a child of the engine that dies
//! with it (parent-death signal) and is killed when the step ends, so
//! nothing outlives the step.
//!
//! Inside, as with podman: pasta copies the host's addresses and routes and
//! answers DNS at 169.254.1.1, and connections to the gateway reach the
//! host's loopback; slirp4netns gives 10.0.2.100/24, DNS at 10.0.2.3, and
//! the host's loopback at 10.0.2.2. Either way the host is also
//! `host.containers.internal` (and `host.docker.internal`) in /etc/hosts.

mod etc_files;
mod listening;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::unistd::pipe2;
use serde::{Deserialize, Serialize};

use std::os::unix::fs::DirBuilderExt;
use std::sync::atomic::{AtomicU32, Ordering};

pub use crate::ports::{PortMapping, Proto};
use crate::spec::{Network, RunSpec};
use crate::sys;
pub use etc_files::hosts_file;
use etc_files::{default_gateway, resolv_conf};
use listening::check_listening;

/// Environment variable that picks the forwarder: `pasta` or `slirp4netns`.
pub const HELPER_ENV: &str = "KILN_NETWORK_HELPER";
/// The address pasta answers DNS on inside the namespace (podman's choice).
const PASTA_DNS: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// slirp4netns's fixed addresses: DNS, and the host's loopback.
const SLIRP_DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
const SLIRP_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// slirp4netns's API socket, in the run's network directory.
const API_SOCKET: &str = "slirp.sock";
/// How long a forwarder may take to set up the namespace.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Which user-mode forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelperKind {
    Pasta,
    Slirp4netns,
}

impl HelperKind {
    pub fn program(self) -> &'static str {
        match self {
            HelperKind::Pasta => "pasta",
            HelperKind::Slirp4netns => "slirp4netns",
        }
    }

    /// The Debian/Ubuntu package that installs it.
    pub fn package(self) -> &'static str {
        match self {
            HelperKind::Pasta => "passt",
            HelperKind::Slirp4netns => "slirp4netns",
        }
    }
}

/// A forwarder found on PATH.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarder {
    pub kind: HelperKind,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(
        "a private network (--network private, -p) needs pasta or slirp4netns, and neither is on PATH: \
         install one with `sudo apt-get install passt` (pasta, preferred) or `sudo apt-get install slirp4netns`"
    )]
    NoHelper,
    #[error("{HELPER_ENV}={0:?} is not a network helper kiln knows: use pasta or slirp4netns, or unset it")]
    UnknownHelper(String),
    #[error(
        "{HELPER_ENV} asks for {}, which is not on PATH: install it with `sudo apt-get install {}`, or unset {HELPER_ENV}",
        .0.program(), .0.package()
    )]
    HelperMissing(HelperKind),
    #[error(
        "a private network needs /dev/net/tun, and it cannot be opened ({0}): as root, load the module \
         (`modprobe tun`) and give the device its usual mode (`chmod 0666 /dev/net/tun`)"
    )]
    Tun(#[source] io::Error),
    #[error("start {program} for the private network")]
    Spawn {
        program: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{program} could not set up the private network: {detail}")]
    Failed { program: &'static str, detail: String },
    #[error("prepare {} for the private network", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("publish {mapping}: {detail}")]
    Publish { mapping: String, detail: String },
}

/// The forwarder to use: `KILN_NETWORK_HELPER`'s, else pasta, else slirp4netns.
pub fn find() -> Result<Forwarder, NetworkError> {
    find_with(std::env::var(HELPER_ENV).ok().as_deref(), std::env::var_os("PATH").as_deref())
}

fn find_with(wanted: Option<&str>, path: Option<&std::ffi::OsStr>) -> Result<Forwarder, NetworkError> {
    let lookup = |kind: HelperKind| on_path(kind.program(), path).map(|path| Forwarder { kind, path });
    match wanted.map(str::trim).filter(|w| !w.is_empty()) {
        Some(name) => {
            let kind = match name {
                "pasta" | "passt" => HelperKind::Pasta,
                "slirp4netns" => HelperKind::Slirp4netns,
                other => return Err(NetworkError::UnknownHelper(other.to_string())),
            };
            lookup(kind).ok_or(NetworkError::HelperMissing(kind))
        }
        None => lookup(HelperKind::Pasta).or_else(|| lookup(HelperKind::Slirp4netns)).ok_or(NetworkError::NoHelper),
    }
}

/// Every forwarder on PATH (for `kiln info`).
pub fn available() -> Vec<Forwarder> {
    let path = std::env::var_os("PATH");
    [HelperKind::Pasta, HelperKind::Slirp4netns]
        .into_iter()
        .filter_map(|kind| on_path(kind.program(), path.as_deref()).map(|path| Forwarder { kind, path }))
        .collect()
}

/// Whether /dev/net/tun can be opened, which both forwarders need.
pub fn tun_usable() -> Result<(), NetworkError> {
    fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun").map(drop).map_err(NetworkError::Tun)
}

fn on_path(program: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    let path = path?;
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file() && nix::unistd::access(p.as_path(), nix::unistd::AccessFlags::X_OK).is_ok())
}

impl Forwarder {
    /// The nameserver the namespace's /etc/resolv.conf names.
    pub fn dns(&self) -> IpAddr {
        IpAddr::V4(match self.kind {
            HelperKind::Pasta => PASTA_DNS,
            HelperKind::Slirp4netns => SLIRP_DNS,
        })
    }

    /// Where the namespace reaches the host's loopback: pasta maps the
    /// gateway it copies from the host; slirp4netns has a fixed one.
    pub fn host_address(&self) -> Option<IpAddr> {
        match self.kind {
            HelperKind::Pasta => default_gateway().map(IpAddr::V4),
            HelperKind::Slirp4netns => Some(IpAddr::V4(SLIRP_HOST)),
        }
    }

    /// Writes the namespace's `resolv.conf` and `hosts` into `dir`: the
    /// forwarder's DNS address, the host's search domains and options; the
    /// host's hosts file plus the host's names.
    pub fn write_etc_files(&self, dir: &Path) -> Result<(), NetworkError> {
        let host_resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let host_hosts = fs::read_to_string("/etc/hosts").unwrap_or_else(|_| "127.0.0.1\tlocalhost\n".into());
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            fs::write(&path, text).map_err(|source| NetworkError::Io { path, source })
        };
        write("resolv.conf", resolv_conf(&host_resolv, self.dns()))?;
        write("hosts", hosts_file(&host_hosts, self.host_address()))
    }

    /// Starts the forwarder for the network namespace of process `pid` and
    /// returns once the namespace is configured and `ports` are published.
    /// `dir` holds its files while it runs.
    pub(crate) fn start(&self, pid: u32, ports: &[PortMapping], dir: &Path) -> Result<Running, NetworkError> {
        tun_usable()?;
        match self.kind {
            HelperKind::Pasta => self.start_pasta(pid, ports, dir),
            HelperKind::Slirp4netns => self.start_slirp(pid, ports, dir),
        }
    }

    fn start_pasta(&self, pid: u32, ports: &[PortMapping], dir: &Path) -> Result<Running, NetworkError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| NetworkError::Io { path, source }
        };
        // pasta drops every capability but a few before it opens the
        // namespace, and then may not open /proc/PID/ns/net of a process
        // with more: bind it to a file first, as podman does.
        let netns = dir.join("netns");
        File::create(&netns).map_err(io(&netns))?;
        let mut running = Running { child: None, mounted: None, files: vec![netns.clone()], exit: None };
        nix::mount::mount(
            Some(Path::new(&format!("/proc/{pid}/ns/net"))),
            &netns,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| NetworkError::Io { path: netns.clone(), source: e.into() })?;
        running.mounted = Some(netns.clone());
        let pidfile = dir.join("pasta.pid");
        let log = dir.join("pasta.log");
        running.files.extend([pidfile.clone(), log.clone()]);
        let mut cmd = Command::new(&self.path);
        // In the foreground, so it stays kiln's child and dies with it; it
        // writes the pid file once the namespace is configured.
        cmd.args(["--foreground", "--config-net", "--quiet", "--runas", "0:0"]);
        cmd.args(["--dns-forward", &PASTA_DNS.to_string()]);
        for proto in [Proto::Tcp, Proto::Udp] {
            let flag = if proto == Proto::Tcp { "-t" } else { "-u" };
            let mine: Vec<&PortMapping> = ports.iter().filter(|p| p.proto == proto).collect();
            if mine.is_empty() {
                cmd.args([flag, "none"]);
            }
            for p in mine {
                let addr = p.host_ip.map(|ip| format!("{ip}/")).unwrap_or_default();
                cmd.args([flag.to_string(), format!("{addr}{}:{}", p.host_port, p.container_port)]);
            }
        }
        cmd.args(["-T", "none", "-U", "none"]);
        cmd.arg("--netns").arg(&netns).arg("--pid").arg(&pidfile);
        let logf = File::create(&log).map_err(io(&log))?;
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(logf);
        // Its own process group: a terminal's Ctrl-C is kiln's to handle
        // (the command may ignore it and keep serving).
        cmd.process_group(0);
        sys::die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|source| NetworkError::Spawn { program: "pasta", source })?;
        running.child = Some(child);
        let start = Instant::now();
        loop {
            if fs::metadata(&pidfile).map(|m| m.len() > 0).unwrap_or(false) {
                let pid = running.child.as_ref().map_or(0, Child::id);
                check_listening(pid, ports)?;
                return Ok(running);
            }
            if let Some(status) = running.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let detail = log_text(&log, status);
                return Err(NetworkError::Failed { program: "pasta", detail });
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err(NetworkError::Failed { program: "pasta", detail: "not ready after 30 s".into() });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn start_slirp(&self, pid: u32, ports: &[PortMapping], dir: &Path) -> Result<Running, NetworkError> {
        if let Some(p) = ports.iter().find(|p| p.host_ip.is_some_and(|ip| ip.is_ipv6())) {
            return Err(NetworkError::Publish {
                mapping: p.to_string(),
                detail: "slirp4netns publishes on IPv4 addresses only; install passt (pasta) for IPv6".into(),
            });
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| NetworkError::Io { path, source }
        };
        let api = dir.join(API_SOCKET);
        let log = dir.join("slirp4netns.log");
        let mut running = Running { child: None, mounted: None, files: vec![api.clone(), log.clone()], exit: None };
        let pipe = |e: nix::Error| NetworkError::Spawn { program: "slirp4netns", source: e.into() };
        let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC).map_err(pipe)?;
        let (exit_r, exit_w) = pipe2(OFlag::O_CLOEXEC).map_err(pipe)?;
        let mut cmd = Command::new(&self.path);
        cmd.args(["--configure", "--mtu=65520", "--ready-fd=3", "--exit-fd=4", "--enable-sandbox", "--enable-seccomp"]);
        if !ports.is_empty() {
            // A socket path has at most 107 bytes, and the store's may be
            // longer: slirp4netns makes it relative to its working directory.
            cmd.current_dir(dir).args(["--api-socket", API_SOCKET]);
        }
        cmd.arg(pid.to_string()).arg("tap0");
        let logf = File::create(&log).map_err(io(&log))?;
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(logf);
        cmd.process_group(0);
        sys::die_with_parent(&mut cmd);
        sys::pass_fds(&mut cmd, vec![(ready_w, 3), (exit_r, 4)]);
        let spawned = cmd.spawn();
        drop(cmd);
        let child = spawned.map_err(|source| NetworkError::Spawn { program: "slirp4netns", source })?;
        running.child = Some(child);
        // It exits when this end closes (with the step, or with kiln).
        running.exit = Some(File::from(exit_w));
        let mut ready = String::new();
        let _ = File::from(ready_r).read_to_string(&mut ready);
        if !ready.starts_with('1') {
            let status = running.child.as_mut().map(|c| c.wait()).and_then(Result::ok);
            let detail = status.map(|s| log_text(&log, s)).unwrap_or_else(|| "it did not start".into());
            return Err(NetworkError::Failed { program: "slirp4netns", detail });
        }
        if !ports.is_empty() {
            // Reached through a descriptor of the directory, whatever its length.
            let dir_fd = File::open(dir).map_err(io(dir))?;
            let short = PathBuf::from(format!("/proc/self/fd/{}/{API_SOCKET}", dir_fd.as_raw_fd()));
            for p in ports {
                slirp_publish(&short, p)?;
            }
        }
        Ok(running)
    }
}

/// A private network being prepared for one run: the forwarder chosen and
/// the directory with its files (removed when dropped).
pub(crate) struct PrivateNet {
    forwarder: Forwarder,
    dir: PathBuf,
}

impl PrivateNet {
    /// For a spec with a private network: finds the forwarder and writes the
    /// namespace's resolv.conf and hosts; `None` for the other modes.
    pub(crate) fn prepare(spec: &RunSpec) -> Result<Option<PrivateNet>, NetworkError> {
        if spec.network != Network::Private {
            return Ok(None);
        }
        let forwarder = find()?;
        tun_usable()?;
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let parent = spec.scratch.clone().unwrap_or_else(std::env::temp_dir);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("kiln-net-{}-{n}", std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|source| NetworkError::Io { path: dir.clone(), source })?;
        let net = PrivateNet { forwarder, dir };
        net.forwarder.write_etc_files(&net.dir)?;
        Ok(Some(net))
    }

    /// `spec` with the namespace's own /etc files.
    pub(crate) fn spec(&self, spec: &RunSpec) -> RunSpec {
        RunSpec { etc_files: Some(self.dir.clone()), ..spec.clone() }
    }

    /// Starts the forwarder for process `pid`'s network namespace.
    pub(crate) fn start(&self, pid: u32, ports: &[PortMapping]) -> Result<Running, NetworkError> {
        self.forwarder.start(pid, ports, &self.dir)
    }
}

impl Drop for PrivateNet {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Asks slirp4netns (API socket) to forward a host port, as podman does.
fn slirp_publish(api: &Path, p: &PortMapping) -> Result<(), NetworkError> {
    let fail = |detail: String| NetworkError::Publish { mapping: p.to_string(), detail };
    let request = serde_json::json!({
        "execute": "add_hostfwd",
        "arguments": {
            "proto": p.proto.name(),
            "host_addr": p.host_ip.map_or_else(|| "0.0.0.0".to_string(), |ip| ip.to_string()),
            "host_port": p.host_port,
            "guest_port": p.container_port,
        }
    });
    let mut sock = UnixStream::connect(api).map_err(|e| fail(format!("connect to slirp4netns: {e}")))?;
    sock.write_all(request.to_string().as_bytes()).map_err(|e| fail(format!("talk to slirp4netns: {e}")))?;
    let _ = sock.shutdown(std::net::Shutdown::Write);
    let mut answer = String::new();
    sock.read_to_string(&mut answer).map_err(|e| fail(format!("talk to slirp4netns: {e}")))?;
    let value: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
    match value.get("error") {
        None if value.get("return").is_some() => Ok(()),
        Some(err) => {
            let desc = err.get("desc").and_then(|d| d.as_str()).unwrap_or("refused");
            Err(fail(format!("{desc} (is the port in use?)")))
        }
        None => Err(fail(format!("unexpected answer {answer:?}"))),
    }
}

fn log_text(log: &Path, status: std::process::ExitStatus) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.contains("syslog") && !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(5)..].join("; ");
    if tail.is_empty() {
        format!("it exited with {status}")
    } else {
        format!("{tail} ({status})")
    }
}

/// The running forwarder: killed, reaped and its files removed when dropped.
pub(crate) struct Running {
    child: Option<Child>,
    /// The bind-mounted namespace file (pasta).
    mounted: Option<PathBuf>,
    files: Vec<PathBuf>,
    /// slirp4netns's exit pipe.
    exit: Option<File>,
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.exit.take());
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(netns) = self.mounted.take() {
            let _ = nix::mount::umount2(&netns, nix::mount::MntFlags::MNT_DETACH);
        }
        for f in &self.files {
            let _ = fs::remove_file(f);
        }
    }
}

#[cfg(test)]
mod tests;
